"""How a tool call and its outcome read, in one place: the live turn, the plain view and `history show`.

`⚙ weather(city="杭州")` then, dim, `→ 1 line, 28 chars in 0.4s` / `→ error: …` / `→ declined` /
`→ interrupted` (tools.md §5). Arguments and results are the model's and the tool's text: untrusted, so
callers sanitize them for a terminal (`core.safe_text`) like any model output.
"""

from __future__ import annotations

from llmchat.core.tools import ToolCall, ToolRecord

CALL_MARK = "⚙"


def call_line(call: ToolCall) -> str:
    """`⚙ name(key="value", …)`, the arguments cut to one line."""
    return f"{CALL_MARK} {call.signature()}"


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome_line(record: ToolRecord) -> str:
    """`→ 3 lines, 120 chars in 0.4s`, `→ error: <first line>`, `→ declined[: reason]`, `→ interrupted`."""
    took = f" in {record.seconds:.1f}s" if record.seconds is not None else ""
    if record.status == "ok":
        result = record.result
        lines = result.count("\n") + (1 if result and not result.endswith("\n") else 0)
        return f"→ {lines} line{'s' if lines != 1 else ''}, {len(result):,} chars{took}"
    if record.status == "declined":
        return f"→ {_one_line(record.result)}"
    if record.status == "interrupted":
        return "→ interrupted"
    message = record.result.removeprefix("error: ")
    return f"→ error: {_one_line(message)}{took}"
