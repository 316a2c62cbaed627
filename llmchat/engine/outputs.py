"""Turn views that do not draw as the answer streams: `--no-stream` and `--json`."""

from __future__ import annotations

import json
from typing import Any, TextIO

from llmchat.config.profile import Profile
from llmchat.core.events import TurnResult
from llmchat.core.safe_text import json_for, sanitize
from llmchat.core.tools import ToolCall, ToolRecord
from llmchat.engine.chat import TurnView


class BufferedView:
    """Collects the turn and hands it to the real view in one go when it ends (`--no-stream`).

    The request still streams on the wire: DashScope refuses thinking on non-streaming calls, and a
    streamed request can still be interrupted with nothing lost.
    """

    def __init__(self, inner: TurnView) -> None:
        self._inner = inner

    def reasoning(self, text: str) -> None:
        pass

    def answer(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        self._inner.notice(text)

    def tool_call(self, call: ToolCall) -> None:  # shown at once: an approval may follow
        self._inner.tool_call(call)

    def tool_done(self, record: ToolRecord) -> None:
        self._inner.tool_done(record)

    def close(self, result: TurnResult) -> None:
        if result.reasoning:
            self._inner.reasoning(result.reasoning)
        if result.answer:
            self._inner.answer(result.answer)
        self._inner.close(result)


class JsonView:
    """Prints the one JSON object of DESIGN §4 when the turn ends; nothing while it streams."""

    def __init__(self, profile: Profile, out: TextIO, err: TextIO) -> None:
        self._profile = profile
        self._out = out
        self._err = err

    def reasoning(self, text: str) -> None:
        pass

    def answer(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        print(sanitize(text), file=self._err, flush=True)

    def tool_call(self, call: ToolCall) -> None:  # in the object's "tool_calls" at the end
        pass

    def tool_done(self, record: ToolRecord) -> None:
        pass

    def close(self, result: TurnResult) -> None:
        # On a terminal, the C1 and bidi controls JSON leaves raw are escaped too (still valid JSON).
        self._out.write(json_for(self._out, json.dumps(turn_record(self._profile, result), ensure_ascii=False)))
        self._out.write("\n")
        self._out.flush()


def turn_record(profile: Profile, result: TurnResult) -> dict[str, Any]:
    usage, timing = result.usage, result.timing
    return {
        "profile": profile.name,
        "provider": profile.provider,
        "model": result.model,
        "answer": result.answer,
        "reasoning": result.reasoning or None,
        "finish_reason": result.finish_reason,
        "interrupted": result.interrupted,
        # tools.md §5: every call of the turn, in order, with how it ended
        "tool_calls": [record.as_json() for tool_round in result.rounds for record in tool_round.calls],
        "usage": {
            "prompt_tokens": usage.prompt if usage else None,
            "completion_tokens": usage.completion if usage else None,
            "total_tokens": usage.total if usage else None,
            "reasoning_tokens": usage.reasoning if usage else None,
            "cached_tokens": usage.cached if usage else None,
        },
        "timing": {
            "ttft_s": _round(timing.ttft_s),
            "total_s": _round(timing.total_s),
            "tokens_per_s": _round(timing.tokens_per_s),
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
