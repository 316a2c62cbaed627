"""Cheap token estimates, which context window applies (the profile's, the server's, a known one), and
per-conversation token accounting.

No tokenizer is shipped (they are large and model-specific); the base estimate errs on the high side:
about 4 characters a token for Latin text, one token per CJK character (Bailian's docs give 1-2
tokens per Chinese character), plus a few tokens of framing per message. A `TokenLedger` then
calibrates it against what the server reported for the conversation's last request, so decisions
about the window (context.py's strategies) follow the real tokenizer within a few percent.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
MESSAGE_OVERHEAD = 4  # role and separators, per message

#: Context windows (tokens) of models the source docs name: the fallback when the server does not say
#: (cloud APIs never do; Ollama before `/api/show` had `model_info`, or when the call fails).
#: A key matches the model exactly, its family before ":" (qwen3:0.6b), or a dated/"-latest" variant.
KNOWN_WINDOWS: dict[str, int] = {
    "qwen-plus": 131_072,  # also qwen-plus-latest and the dated snapshots (Bailian: 128K)
    "qwen3": 40_960,  # Ollama's qwen3 tags, as trained (the Ollama library page: 40K)
}
#: Ollama's default num_ctx on versions 0.6-0.15.4, for models whose window nobody knows.
OLLAMA_DEFAULT_NUM_CTX = 4096
#: The most llmchat sends as Ollama's num_ctx unasked. num_ctx is what Ollama allocates its KV cache for
#: on every load, so a model trained for 131,072 (llama3.x, gemma3) or 262,144 (qwen3-2507) would take
#: 3-6 times the memory of qwen3's 40,960, which llmchat has always sent and which is near Ollama's own
#: automatic 32k tier. A profile's context_window goes past it: that is the user asking.
OLLAMA_NUM_CTX_CAP = 40_960
#: A reported/estimated ratio outside this range is not a tokenizer difference but something else
#: (Ollama counting only the uncached part of a prompt, or truncating it), so it is not trusted.
CALIBRATION_RANGE = (0.5, 2.0)


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def estimate_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    return sum(estimate_tokens(message_text(m)) + MESSAGE_OVERHEAD for m in messages)


def message_text(message: Mapping[str, Any]) -> str:
    """Everything of a message that the server tokenizes: its content and, for the assistant's tool-call
    message (`conversation.tool_messages`), the reasoning sent back with it and each call's name and
    arguments. A tool message's result is its content. Without the calls, a turn of big arguments would
    look free, and every tool-call message (content "") would look alike to `TokenLedger`."""
    text = str(message.get("content") or "")
    calls = message.get("tool_calls")
    if not calls:
        return text
    parts = [text, str(message.get("reasoning") or "")]
    for call in calls:
        if hasattr(call, "arguments_json"):  # a core.tools.ToolCall
            parts += [call.id, call.name, call.raw_arguments if call.error and call.raw_arguments else
                      call.arguments_json()]
        else:  # already in a wire form (a dict)
            parts.append(json.dumps(call, ensure_ascii=False, default=str))
    return "\n".join(part for part in parts if part)


def context_window(model: str, configured: int | None, provider: str,
                   served: int | None = None) -> tuple[int | None, str]:
    """The window to manage and where that number comes from (for notices and `/context`).

    Precedence: the user's word (`configured`: the profile's context_window, or /set), then what the
    server says the model was trained for (`served`: Ollama's /api/show; capped for Ollama, see
    OLLAMA_NUM_CTX_CAP), then llmchat's table, then Ollama's own default. None when nobody knows it (a
    cloud model the table lacks): the history is then sent whole, and only the server's "too long"
    answer makes it shrink.
    """
    if configured:
        return configured, "context_window (profile or /set)"
    if served:
        if provider == "ollama" and served > OLLAMA_NUM_CTX_CAP:
            return OLLAMA_NUM_CTX_CAP, (f"the server's context length for {model} ({served:,}), capped at "
                                        f"{OLLAMA_NUM_CTX_CAP:,} for memory; set context_window to use more")
        return served, f"the server's context length for {model}"
    known = _known_window(model)
    if known is not None:
        return known, f"llmchat's default for {model}"
    if provider == "ollama":
        return OLLAMA_DEFAULT_NUM_CTX, "Ollama's default num_ctx (set context_window in the profile to raise it)"
    return None, ""


def _known_window(model: str) -> int | None:
    family = model.split(":", 1)[0]
    for name in (model, family):
        if name in KNOWN_WINDOWS:
            return KNOWN_WINDOWS[name]
    for name, window in KNOWN_WINDOWS.items():
        if "-" in name and family.startswith(name + "-"):  # qwen-plus-latest, qwen-plus-2025-04-28
            return window
    return None


@dataclass
class TokenLedger:
    """One conversation's token accounting: what the server counted for the last request, and how to
    predict its count for the next one.

    The next request is mostly the last one again (plus an answer and a question, minus what was
    summarised or dropped), so the prediction starts from the server's own count and estimates only
    the difference, scaled by the reported/estimated ratio. A request that shares nothing with the
    last one (or a conversation with no trusted report) gets the scaled estimate of the whole.
    """

    ratio: float = 1.0
    reported: int | None = None  # prompt tokens the server reported for the last request
    estimated: int | None = None  # the uncalibrated estimate of that same request
    _basis: Counter[tuple[str, str]] | None = field(default=None, repr=False)  # its messages, if trusted

    def observe(self, messages: Iterable[Mapping[str, Any]], reported: int | None) -> None:
        """Learn from one request: what was sent, and the prompt tokens the server counted for it."""
        sent = [_key(m) for m in messages]
        estimated = sum(_tokens(k) for k in sent)
        self.reported, self.estimated, self._basis = reported, estimated, None
        if reported and estimated:
            ratio = reported / estimated
            low, high = CALIBRATION_RANGE
            if low <= ratio <= high:
                self.ratio, self._basis = ratio, Counter(sent)

    def scaled(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """The estimate of `messages` scaled by the last ratio, for a request unlike the last one."""
        return math.ceil(estimate_messages(messages) * self.ratio)

    def estimate(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """The server's likely prompt count for `messages`."""
        keys = [_key(m) for m in messages]
        if self._basis is None or self.reported is None:
            return math.ceil(sum(_tokens(k) for k in keys) * self.ratio)
        now = Counter(keys)
        added = sum(_tokens(k) * n for k, n in (now - self._basis).items())
        removed = sum(_tokens(k) * n for k, n in (self._basis - now).items())
        if added + removed >= sum(_tokens(k) for k in keys):  # little in common: start from scratch
            return math.ceil(sum(_tokens(k) for k in keys) * self.ratio)
        return max(0, math.ceil(self.reported + (added - removed) * self.ratio))


def _key(message: Mapping[str, Any]) -> tuple[str, str]:
    return str(message.get("role") or ""), message_text(message)


def _tokens(key: tuple[str, str]) -> int:
    return estimate_tokens(key[1]) + MESSAGE_OVERHEAD
