"""Cheap token estimates and context-window sizes, for warnings before a request is sent.

No tokenizer is shipped (they are large and model-specific); the estimate errs on the high side:
about 4 characters a token for Latin text, one token per CJK character (Bailian's docs give 1-2
tokens per Chinese character), plus a few tokens of framing per message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
MESSAGE_OVERHEAD = 4  # role and separators, per message

#: Context windows (tokens) of models the source docs name; a profile's context_window wins.
KNOWN_WINDOWS: dict[str, int] = {
    "qwen-plus": 131_072,
    "qwen3": 40_960,  # Ollama's qwen3 family, as trained; the server's num_ctx may be smaller
}
#: Ollama's default num_ctx on versions 0.6-0.15.4 when neither the profile nor the server sets one.
OLLAMA_DEFAULT_NUM_CTX = 4096


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def estimate_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages)


def context_window(model: str, configured: int | None, provider: str) -> tuple[int | None, str]:
    """The window to check against and where that number comes from (for the warning's wording)."""
    if configured:
        return configured, "the profile's context_window"
    family = model.split(":", 1)[0]
    if model in KNOWN_WINDOWS:
        return KNOWN_WINDOWS[model], f"{model}'s context window"
    if provider == "ollama":
        return OLLAMA_DEFAULT_NUM_CTX, "Ollama's default num_ctx (set context_window in the profile to raise it)"
    if family in KNOWN_WINDOWS:
        return KNOWN_WINDOWS[family], f"{family}'s context window"
    return None, ""
