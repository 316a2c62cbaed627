"""Tool calling as data: what the model is offered, what it asked for, and what came of it.

Shared by the providers (which turn a `ToolSpec` into their wire form and the server's calls into
`ToolCall` events), the engine (which asks for approval and runs the calls), the store (which saves
each round with its turn) and the renderers (the `⚙ name(args)` line). Plain data, no I/O: running a
tool is `llmchat.tools`' job, deciding whether it may run is the engine's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How a call ended: it ran and succeeded, it ran and failed (or could not run), the user (or the
#: lack of one) declined it, or Ctrl-C stopped it.
ToolStatus = Literal["ok", "error", "declined", "interrupted"]
TOOL_STATUSES: tuple[str, ...] = ("ok", "error", "declined", "interrupted")

#: The result sent to the model for a call nobody could approve (a pipe without a terminal, batch).
NO_APPROVER = "declined: no one to approve it (use --trust-tools or trust = true)"


def declined_by_user(reason: str | None) -> str:
    """The result the model reads when the user said no, with their reason when they gave one."""
    reason = (reason or "").strip()
    return f"declined by the user: {reason}" if reason else "declined by the user"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the person answered an approval: run it (`always`: and trust this tool for the session),
    or not, and why (the reason goes to the model)."""

    run: bool
    always: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is offered it, and where it comes from (shown in listings and approvals).

    `parameters` is a JSON Schema object (type "object", its properties, required), passed to the
    model unchanged: reshaping schemas has lost `required` in other clients.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    source: str = "builtin"  # "builtin", "command", "mcp:SERVER"
    trusted: bool = False

    def wire(self) -> dict[str, Any]:
        """The `{"type": "function", "function": {...}}` form both protocols take in `tools`."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked to run a tool: an event from the provider, complete (arguments assembled).

    `arguments` is the parsed JSON object; when the model's arguments were not a JSON object,
    `arguments` is empty, `raw_arguments` keeps what it sent and `error` says what was wrong: the
    engine reports that back to the model as the call's result instead of running anything.
    `id` is the server's call id (a provider makes one up, `call_N`, for a server that sends none).
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None
    error: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the OpenAI wire sends them back: a JSON string, `"{}"` when empty."""
        return json.dumps(dict(self.arguments), ensure_ascii=False) if self.arguments else "{}"

    def signature(self, limit: int = 120) -> str:
        """`weather(city="杭州", days=2)`: the one-line form of the call line and the approval."""
        parts = [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in self.arguments.items()]
        if self.error and self.raw_arguments:
            parts = [json.dumps(self.raw_arguments, ensure_ascii=False)]
        inner = ", ".join(parts)
        if len(inner) > limit:
            inner = inner[: limit - 1] + "…"
        return f"{self.name}({inner})"


def parse_arguments(text: str | None) -> tuple[dict[str, Any], str | None]:
    """A model's argument string -> (the object, None), or ({}, what was wrong with it).

    Empty means no arguments. Anything else must be a JSON object; invalid JSON is the model's
    mistake, reported back to it as the call's error, never a crash.
    """
    if text is None or not text.strip():
        return {}, None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {}, f"the arguments are not valid JSON ({exc.msg} at character {exc.pos}): {text[:200]}"
    except RecursionError:  # `[[[[…` thousands deep: the decoder gives up (not a ValueError)
        return {}, f"the arguments are nested too deeply to read: {text[:200]}"
    if not isinstance(value, dict):
        return {}, f"the arguments must be a JSON object, not {type(value).__name__}: {text[:200]}"
    return value, None


@dataclass(slots=True)
class ToolRecord:
    """One call and what came of it: saved with the turn, sent back to the model, shown in `--json`."""

    call: ToolCall
    status: ToolStatus
    result: str
    seconds: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The `--json` / export form: {"id", "name", "arguments", "status", "result", "seconds"}."""
        data: dict[str, Any] = {"id": self.call.id, "name": self.call.name, "arguments": dict(self.call.arguments),
                                "status": self.status, "result": self.result, "seconds": self.seconds}
        if self.call.error:
            data["raw_arguments"] = self.call.raw_arguments
            data["argument_error"] = self.call.error
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolRecord:
        """The inverse of `as_json` (the store and `history import`)."""
        status = data.get("status")
        call = ToolCall(id=str(data.get("id") or ""), name=str(data.get("name") or ""),
                        arguments=dict(data.get("arguments") or {}), raw_arguments=data.get("raw_arguments"),
                        error=data.get("argument_error"))
        seconds = data.get("seconds")
        return cls(call=call, status=status if status in TOOL_STATUSES else "error",  # type: ignore[arg-type]
                   result=str(data.get("result") or ""),
                   seconds=float(seconds) if isinstance(seconds, (int, float)) else None)


@dataclass(slots=True)
class ToolRound:
    """One model response that called tools: the text and reasoning it came with, and its calls' outcomes.

    An exchange's rounds come before its final answer; together they are what is re-sent (the
    assistant's tool-call message, then one tool message per call) on every later turn.
    """

    content: str = ""
    reasoning: str = ""
    calls: list[ToolRecord] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"content": self.content, "reasoning": self.reasoning, "calls": [c.as_json() for c in self.calls]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolRound:
        return cls(content=str(data.get("content") or ""), reasoning=str(data.get("reasoning") or ""),
                   calls=[ToolRecord.from_json(c) for c in data.get("calls") or [] if isinstance(c, Mapping)])
