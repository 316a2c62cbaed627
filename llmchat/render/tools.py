"""The words for a tool call and its outcome: one place, so the live turn and `history show` agree.

A call is drawn as two lines (tools.md §5):

    ⚙ weather(city="杭州")
    → 1 line, 28 chars in 0.40s

`call_line` gives the first, `outcome_line` the second (drawn dim on a terminal). Both return plain
text built from what the model and the tool wrote, so they are untrusted: a terminal writer passes
them through `core.safe_text.sanitize` (or `text_for`) before styling them; a pipe gets them exactly.
Standard library only: the plain view and `history show` in a pipe import this without Rich.
"""

from __future__ import annotations

from llmchat.core.tools import ToolCall, ToolRecord
from llmchat.render.usage import format_seconds

__all__ = ["CALL_MARK", "OUTCOME_MARK", "call_line", "outcome_line"]

CALL_MARK = "⚙"
OUTCOME_MARK = "→"
#: How much of an error result the outcome line quotes (its first line, cut here); the rest is saved.
ERROR_CHARS = 120


def call_line(call: ToolCall) -> str:
    """`⚙ name(key="value", …)`: the call as the model made it, arguments as JSON, cut to one line."""
    return f"{CALL_MARK} {call.signature()}"


def outcome_line(record: ToolRecord) -> str:
    """What came of a call, in one line:

    - ok: `→ 3 lines, 120 chars in 0.40s` (`no output` when the result is empty);
    - error: `→ error: ` and the first line of the result (the reason the tool or llmchat gave);
    - declined: `→ declined by the user: REASON`, `→ declined: no one to approve it …`: what the model was told;
    - interrupted: `→ interrupted` (Ctrl-C stopped it), with how long it had run when known.
    """
    took = f" in {format_seconds(record.seconds)}" if record.seconds is not None else ""
    if record.status == "ok":
        return f"{OUTCOME_MARK} {_size(record.result)}{took}"
    if record.status == "error":
        first = record.result.strip().split("\n", 1)[0].strip().removeprefix("error: ")
        if len(first) > ERROR_CHARS:
            first = first[: ERROR_CHARS - 1] + "…"
        return f"{OUTCOME_MARK} error: {first}" if first else f"{OUTCOME_MARK} error"
    if record.status == "interrupted":
        return f"{OUTCOME_MARK} interrupted" + (f" after {format_seconds(record.seconds)}" if record.seconds else "")
    said = " ".join(record.result.split())
    if said.startswith(("declined", "not run")):
        return f"{OUTCOME_MARK} {said[:ERROR_CHARS]}"
    return f"{OUTCOME_MARK} declined"


def _size(result: str) -> str:
    if not result:
        return "no output"
    lines = len(result.splitlines()) or 1
    return f"{lines} line{'s' * (lines != 1)}, {len(result):,} char{'s' * (len(result) != 1)}"
