"""One round of tool calls: each call checked, approved (or not), run, and recorded, in order (tools.md §3-4).

The engine decides whether a call may run; the toolbox (`llmchat.tools`) runs it; an `Approval` asks
the person. Each front-end brings its own approval: the terminal one (the REPL, `ask` with a terminal,
also when stdin is a pipe, through /dev/tty), `Nobody` (no terminal at all, batch) which declines every
call that is not trusted. Every call the model made gets a record, whatever happens, because both
protocols require a result for each call before the conversation can go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from llmchat.core.tools import NO_APPROVER, Decision, ToolCall, ToolRecord, ToolSpec, ToolStatus, declined_by_user

if TYPE_CHECKING:
    from collections.abc import Callable


class Approval(Protocol):
    """Asks whether one call may run. Raises KeyboardInterrupt when the person stops the turn (Ctrl-C)."""

    def ask(self, spec: ToolSpec, call: ToolCall, description: str) -> Decision: ...


class Nobody:
    """No one is there to approve (no terminal, batch): untrusted calls are declined, with a notice."""

    declined_result = NO_APPROVER

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self._notice = notice

    def ask(self, spec: ToolSpec, call: ToolCall, description: str) -> Decision:
        if self._notice is not None:
            self._notice(f"Declined {spec.name}: no terminal to ask for approval "
                         "(use --trust-tools or trust = true in its config).")
        return Decision(run=False, reason=None)


class Tools(Protocol):
    """What the engine needs of a toolbox (`llmchat.tools.Toolbox` is the one). `unsupported` holds the
    models found unable to call tools this session, so each is said once and not offered tools again."""

    unsupported: set[str]

    def offered(self) -> tuple[ToolSpec, ...]: ...
    def spec(self, name: str) -> ToolSpec | None: ...
    def needs_approval(self, name: str) -> bool: ...
    def trust(self, name: str) -> None: ...
    def describe(self, call: ToolCall) -> str: ...
    def run(self, call: ToolCall) -> tuple[ToolStatus, str]: ...


def tell_notices(tools: Tools | None, notice: Callable[[str], None]) -> bool:
    """Show what a toolbox has to say (an MCP server that failed: once each); True when it said something.
    A toolbox without `notices` (NoTools, a test's) has nothing to say."""
    drain = getattr(tools, "notices", None)
    said = list(drain()) if drain is not None else []
    for text in said:
        notice(text)
    return bool(said)


class NoTools:
    """The toolbox of a turn that offers none: a call the model makes anyway gets "no such tool"."""

    def __init__(self) -> None:
        self.unsupported: set[str] = set()

    def offered(self) -> tuple[ToolSpec, ...]:
        return ()

    def spec(self, name: str) -> ToolSpec | None:
        return None

    def needs_approval(self, name: str) -> bool:
        return True

    def trust(self, name: str) -> None:
        return None

    def describe(self, call: ToolCall) -> str:
        return ""

    def run(self, call: ToolCall) -> tuple[str, str]:  # never reached: no call passes `spec`
        return "error", "no tools"


class ToolShows(Protocol):
    """Where the calls are drawn: the turn's view (`⚙ name(args)`, then the outcome)."""

    def tool_call(self, call: ToolCall) -> None: ...
    def tool_done(self, record: ToolRecord) -> None: ...


class RoundInterrupted(KeyboardInterrupt):
    """Ctrl-C during a round: `records` holds a record for every call (the stopped one and the rest
    `interrupted`), so the round can be saved and re-sent whole."""

    def __init__(self, records: list[ToolRecord]) -> None:
        super().__init__()
        self.records = records


def beyond_bound(turn_rounds: int, max_rounds: int, calls: Sequence[ToolCall]) -> list[ToolRecord] | None:
    """The records of a response's calls when this round would pass `max_rounds` (none of them runs, and
    each says why, so the history stays sendable), or None when the round may run (tools.md §4)."""
    if turn_rounds <= max_rounds:
        return None
    return [ToolRecord(call, "declined", f"not run: the limit of {_rounds(max_rounds, 'tool round')} for one "
                                         "question was reached") for call in calls]


def bound_notice(max_rounds: int) -> str:
    return (f"Stopped after {_rounds(max_rounds, 'round')} of tool calls (max_tool_rounds); ask again to let the "
            "model go on.")


def _rounds(count: int, noun: str) -> str:
    """"1 round", "3 rounds": max_tool_rounds = 1 is a setting people use."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run_calls(calls: Sequence[ToolCall], tools: Tools, approval: Approval, shows: ToolShows,
              clock: Callable[[], float] = time.monotonic) -> list[ToolRecord]:
    """Run one response's calls in order; a record for each. Ctrl-C (at the prompt or while a tool runs:
    the toolbox has killed it) raises `RoundInterrupted` with the records so far and the rest marked."""
    records: list[ToolRecord] = []
    offered = {spec.name for spec in tools.offered()}
    for position, call in enumerate(calls):
        try:
            records.append(_one(call, tools, offered, approval, shows, clock))
        except KeyboardInterrupt as exc:
            stopped = ToolRecord(call, "interrupted", "interrupted by the user")
            shows.tool_done(stopped)
            rest = [ToolRecord(later, "interrupted", "not run: the user interrupted the turn")
                    for later in calls[position + 1:]]
            raise RoundInterrupted([*records, stopped, *rest]) from exc
    return records


def _one(call: ToolCall, tools: Tools, offered: set[str], approval: Approval, shows: ToolShows,
         clock: Callable[[], float]) -> ToolRecord:
    shows.tool_call(call)
    spec = tools.spec(call.name) if call.name in offered else None
    if spec is None:
        names = ", ".join(sorted(offered)) or "none"
        record = ToolRecord(call, "error", f"error: there is no tool named {call.name!r} (the tools: {names})")
    elif call.error:
        record = ToolRecord(call, "error", f"error: {call.error}")
    else:
        record = _approved_run(spec, call, tools, approval, clock)
    shows.tool_done(record)
    return record


def _approved_run(spec: ToolSpec, call: ToolCall, tools: Tools, approval: Approval,
                  clock: Callable[[], float]) -> ToolRecord:
    if tools.needs_approval(spec.name):
        decision = approval.ask(spec, call, tools.describe(call))
        if not decision.run:
            result = getattr(approval, "declined_result", None) or declined_by_user(decision.reason)
            return ToolRecord(call, "declined", result)
        if decision.always:
            tools.trust(spec.name)
    started = clock()
    status, output = tools.run(call)
    return ToolRecord(call, status, output, seconds=round(clock() - started, 3))
