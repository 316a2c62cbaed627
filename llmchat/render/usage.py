"""The one-line turn summary shared by the live and plain views.

Plain text, so the live view can dim it and the plain view can write it to stderr unchanged. Only
numbers the server reported (or the turn loop measured) appear: a missing field is left out rather
than shown as zero or estimated, because a wrong number is worse than none.
"""

from __future__ import annotations

from llmchat.core.events import TurnResult
from llmchat.core.pricing import Price

SEPARATOR = " · "
NOT_REPORTED = "tokens not reported by the server"


def arrived(result: TurnResult) -> bool:
    """Whether the server sent anything for this turn (a token, a usage report, a finish reason): when
    nothing did (an error before any output), the views print no usage line, which would say only "0.00s"."""
    return bool(result.answer or result.reasoning or result.usage is not None or result.finish_reason
                or result.timing.ttft_s is not None)


def format_usage(result: TurnResult, price: Price | None, *, unreported: bool = True) -> str:
    """Tokens, speed, time and cost of one turn on one line; "" when nothing at all is known.

    e.g. `22 in · 382 out (210 reasoning) · 0 cached · first token 0.41s · 48.3 tok/s · 8.1s · 0.0008 CNY`
    """
    return SEPARATOR.join(usage_parts(result, price, unreported=unreported))


def usage_parts(result: TurnResult, price: Price | None, *, unreported: bool = True) -> list[str]:
    """The fields of the usage line, separately, so a narrow terminal can wrap between them.

    `unreported`: a whole answer without usage says "tokens not reported by the server" (llama.cpp
    sends none when streaming), so the reader of a live turn does not guess; a saved transcript
    (`history show`) leaves it out, as it leaves out every other missing number.
    """
    usage, timing = result.usage, result.timing
    parts: list[str] = []
    if usage is not None:
        if usage.prompt is not None:
            parts.append(f"{usage.prompt:,} in")
        if usage.completion is not None:
            out = f"{usage.completion:,} out"
            if usage.reasoning is not None:
                out += f" ({usage.reasoning:,} reasoning)"
            parts.append(out)
        elif usage.reasoning is not None:
            parts.append(f"{usage.reasoning:,} reasoning")
        if usage.prompt is None and usage.completion is None and usage.total is not None:
            parts.append(f"{usage.total:,} tokens")
        if usage.cached is not None:
            parts.append(f"{usage.cached:,} cached")
    elif unreported and result.finish_reason is not None:  # a whole answer, no count: say so, not a gap
        parts.append(NOT_REPORTED)
    if timing.ttft_s is not None:
        parts.append(f"first token {format_seconds(timing.ttft_s)}")
    speed = timing.tokens_per_s
    if speed is None and usage is not None and usage.completion and usage.eval_seconds:
        speed = usage.completion / usage.eval_seconds  # the server's own generation time: exact
    if speed is not None:
        parts.append(f"{speed:.1f} tok/s")
    if timing.total_s is not None:
        parts.append(format_seconds(timing.total_s))
    if price is not None and usage is not None:
        cost = price.cost(usage)
        if cost is not None:
            parts.append(price.format(cost))
    if result.finish_reason == "length":
        parts.append("cut off at the token limit")
    return parts


def format_seconds(seconds: float) -> str:
    """Sub-second times need two decimals to be useful (0.41s); long ones read better as 2m05s."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def wrap_fields(parts: list[str], width: int) -> str:
    """Join fields with separators, breaking lines only between fields ("48.3 tok/s" stays whole)."""
    from rich.cells import cell_len

    lines: list[str] = []
    for part in parts:
        if lines and cell_len(lines[-1] + SEPARATOR + part) <= width:
            lines[-1] += SEPARATOR + part
        else:
            lines.append(part)
    return "\n".join(lines)
