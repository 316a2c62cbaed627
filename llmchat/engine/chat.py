"""The one loop that runs a turn of a conversation (`core.conversation`), shared by `ask`, the REPL and batch.

The APIs are stateless, so the history is resent every turn: the system prompt, then alternating
user and assistant messages. Reasoning is kept for display and storage but never sent back.
When the history outgrows the model's window, a `ContextPolicy` (context.py) replaces its oldest
exchanges with a summary or stops sending them; the exchanges themselves are never deleted, so the
transcript, `/history` and the store keep everything that was said.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from llmchat.core.conversation import Conversation, Exchange, tool_messages
from llmchat.core.errors import ContextTooLong, ProviderError, ToolsUnsupported
from llmchat.core.events import TurnResult
from llmchat.core.stops import Terminated
from llmchat.core.tools import ToolRecord
from llmchat.engine.tooling import (
    Approval,
    Nobody,
    NoTools,
    RoundInterrupted,
    Tools,
    bound_notice,
    run_calls,
    tell_notices,
)
from llmchat.engine.turn import Turn, drive

if TYPE_CHECKING:
    from llmchat.core.conversation import Message
    from llmchat.core.tools import ToolCall, ToolSpec
    from llmchat.providers import ChatOptions, Provider


class TurnView(Protocol):
    """What the turn loop draws on; `llmchat.render` provides the terminal and pipe versions.

    `tool_call` draws a call the model made (`⚙ name(args)`) before it is approved and run,
    `tool_done` its outcome; a view stops any live region in `tool_call`, so an approval prompt can
    use the terminal. A view may also have `flush()`, for text it holds back (the pipe view buffers pieces
    that arrive within milliseconds of each other): called before the answer's progress is saved."""

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def tool_call(self, call: ToolCall) -> None: ...
    def tool_done(self, record: ToolRecord) -> None: ...
    def close(self, result: TurnResult) -> None: ...


class TurnRecorder(Protocol):
    """Where turns are saved as they happen (the SQLite store); absent for `--no-save`.

    `question` runs before the request goes out and `answer` when the turn ends however it ends,
    so a crash mid-answer loses nothing that was already said. A recorder may also have
    `progress(conversation, exchange, answer, reasoning)`: called about once a second while the answer
    streams (PROGRESS_INTERVAL_S), so even SIGKILL loses at most the last second of it.
    """

    def question(self, conversation: Conversation, exchange: Exchange) -> None: ...
    def answer(self, conversation: Conversation, exchange: Exchange, result: TurnResult) -> None: ...


Notify = Callable[[str], None]


class ContextPolicy(Protocol):
    """Keeps the request within the model's window (context.py). Both calls run with the question
    being asked already appended, as the last exchange, without an answer yet."""

    def prepare(self, conversation: Conversation, notice: Notify) -> None:
        """Before the request: summarise or drop older exchanges if the strategy says so."""
        ...

    def shrink(self, conversation: Conversation, notice: Notify) -> bool:
        """The server said the request is too long: compact now; False when nothing can be dropped."""
        ...


Sleep = Callable[[float], None]

#: How often a streaming answer is saved as far as it got (one UPDATE of its row): what SIGKILL can lose.
PROGRESS_INTERVAL_S = 1.0
#: Model responses with tool calls one question may run, unless the profile says (max_tool_rounds).
MAX_TOOL_ROUNDS = 10


def offered_tools(tools: Tools | None, provider: Provider, model: str, notice: Notify) -> tuple[ToolSpec, ...]:
    """The tools to offer `model`: none when it cannot call tools (Ollama says so in /api/show, or the
    server refused them earlier this session), with one notice per model and session."""
    specs = tools.offered() if tools is not None else ()
    if not specs or tools is None:
        return ()
    if model in tools.unsupported:
        return ()
    capabilities = provider.capabilities(model)
    if capabilities is not None and "tools" not in capabilities:
        tools.unsupported.add(model)
        notice(f"{model} cannot call tools (its capabilities: {', '.join(sorted(capabilities)) or 'none'}); "
               "asking without them.")
        return ()
    return specs


def run_turn(
    conversation: Conversation,
    question: str,
    provider: Provider,
    options: ChatOptions,
    view: TurnView,
    *,
    retries: int = 2,
    sleep: Sleep = time.sleep,
    recorder: TurnRecorder | None = None,
    context: ContextPolicy | None = None,
    tools: Tools | None = None,
    approval: Approval | None = None,
    max_tool_rounds: int = MAX_TOOL_ROUNDS,
) -> tuple[TurnResult, ProviderError | None]:
    """Ask `question` in `conversation`, streaming into `view`; the exchange is appended to the history.

    Never raises for a failed call or Ctrl-C: both end the turn with the partial answer kept (and
    `result.interrupted` set), the view closed, and the error returned, so that every caller (a
    one-shot `ask`, the REPL that must survive) decides what to do without duplicating cleanup.
    SIGTERM/SIGHUP (`stops.Terminated`) and a closed stdout (`BrokenPipeError`) end the turn the same
    way, saved and marked, and are then re-raised: the process is ending.
    A rate limit, a server error or a stream the server ended unfinished (no finish_reason) is retried
    with backoff, visibly, while nothing was shown (text already on screen cannot be taken back). With a
    `context` policy the history is fitted to the window first, and a "too long" answer from the
    server makes it compact once and try again.

    With `tools`, the model may call them: each response with calls becomes a round (tooling.py: approved
    through `approval`, run, recorded), the results go back, and the next request follows, until a response
    without calls or `max_tool_rounds` rounds (tools.md §4). Ctrl-C during a round ends the turn with every
    call recorded. The rounds are the exchange's (`exchange.rounds`), saved and re-sent with it.
    """
    # The turn's images (`options.images`, sent on the question) stay with the exchange for later turns.
    exchange = Exchange(user=question, model=options.model, images=tuple(options.images))
    error: ProviderError | None = None
    shrunk = False
    ending: BaseException | None = None  # SIGTERM, SIGHUP or a closed stdout: re-raised once saved
    conversation.exchanges.append(exchange)
    if recorder is not None:
        recorder.question(conversation, exchange)

    turn = Turn(options.model, view, retries=retries)  # the accumulation, retry policy and timing (turn.py)

    def sent() -> list[Message]:
        """The history, the question, then this turn's tool rounds so far (`messages()` must see the
        exchange being asked without them, or it would send it as history and then again as the question)."""
        rounds, exchange.rounds = exchange.rounds, []
        try:
            messages = conversation.messages(question)
        finally:
            exchange.rounds = rounds
        for tool_round in turn.rounds:
            messages.extend(tool_messages(tool_round))
        return messages

    messages = sent()
    request = dataclasses.replace(options, tool_specs=offered_tools(tools, provider, options.model, turn.notice))
    tell_notices(tools, turn.notice)  # an MCP server that failed to start: said once, its tools not offered

    def compact(exc: ProviderError) -> bool:
        """A "too long" before any output: let the policy compact once, then ask again at once.
        A refusal of the tools: ask again without them (said once)."""
        nonlocal shrunk, messages, request
        if isinstance(exc, ToolsUnsupported) and request.tool_specs and not turn.output and tools is not None:
            tools.unsupported.add(options.model)
            turn.notice(f"{exc.message} Asking without tools.")
            request = dataclasses.replace(request, tool_specs=())
            return True
        if not isinstance(exc, ContextTooLong) or context is None or shrunk or turn.output:
            return False
        shrunk = True  # once: a second "too long" means the question itself does not fit
        if not context.shrink(conversation, turn.notice):
            return False
        messages = sent()
        return True

    progress = getattr(recorder, "progress", None)
    flush_view = getattr(view, "flush", None)  # a view that holds text back (a pipe's buffer) sends it first
    saved_at = time.monotonic()

    def save_progress(_event: object) -> None:
        """About once a second, the answer so far goes to the store: a SIGKILL loses at most that second.
        The view's pending text goes out before, so what a SIGKILL leaves saved was also shown."""
        nonlocal saved_at
        now = time.monotonic()
        if now - saved_at >= PROGRESS_INTERVAL_S:
            saved_at = now
            if flush_view is not None:
                flush_view()
            progress(conversation, exchange, "".join(turn.answer), "".join(turn.reasoning))

    interrupted = False
    try:
        if context is not None:
            context.prepare(conversation, turn.notice)  # may make a summary call: not part of this turn's timing
            messages = sent()
            turn.start()
        while True:
            error = drive(turn, lambda: provider.stream(messages, request), sleep=sleep, recover=compact,  # noqa: B023 - called in this iteration
                          each=save_progress if progress is not None else None)
            if error is not None or not turn.calls:
                break
            if (step := turn.next_round(max_tool_rounds)) is None:
                turn.notice(bound_notice(max_tool_rounds))
                break
            tool_round, calls = step
            began = time.monotonic()
            try:
                tool_round.calls = run_calls(calls, tools or NoTools(), approval or Nobody(view.notice), view)
            except RoundInterrupted as exc:
                tool_round.calls = exc.records
                raise
            finally:
                turn.tool_seconds += time.monotonic() - began
            if tell_notices(tools, turn.notice) and request.tool_specs:  # a server failed: its tools go
                request = dataclasses.replace(request, tool_specs=offered_tools(tools, provider, options.model,
                                                                                turn.notice))
            messages.extend(tool_messages(tool_round))
            exchange.rounds = list(turn.rounds)
            if progress is not None:  # the calls that ran survive a kill during the next request or tool
                progress(conversation, exchange, "", "")
        if flush_view is not None:  # what the view held back goes out while a closed pipe still counts
            flush_view()  # as the turn's interruption (below), as it did when every piece was flushed
    except ProviderError as exc:
        error = exc
    except KeyboardInterrupt as exc:  # Ctrl-C; or SIGTERM/SIGHUP, which end the process once saved
        interrupted = True
        cause = exc.__cause__ if isinstance(exc, RoundInterrupted) else exc  # Ctrl-C in a tool round, wrapped
        ending = cause if isinstance(cause, Terminated) else None
    except BrokenPipeError as exc:  # stdout's reader went away (`| head`): save what arrived, then leave
        interrupted = True
        ending = exc
    result = turn.finish(error, interrupted=interrupted)
    if turn.last_usage is not None and turn.last_usage.prompt:
        conversation.tokens.observe(messages, turn.last_usage.prompt)
    exchange.answer, exchange.reasoning, exchange.rounds = result.answer, result.reasoning, result.rounds
    exchange.interrupted, exchange.usage = result.interrupted, result.usage
    if recorder is not None:
        recorder.answer(conversation, exchange, result)
    if ending is not None:
        with contextlib.suppress(OSError):  # the pipe or the terminal may be gone: the answer is saved
            view.close(result)
        raise ending
    view.close(result)
    return result, error

