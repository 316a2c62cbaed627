"""Split inline `<think>…</think>` reasoning out of streamed answer text.

Older Ollama servers (and vLLM or llama.cpp without a reasoning parser) put a model's reasoning
inside the content. Tags may straddle chunk boundaries, so the splitter is a small state machine
that holds back only what could still turn out to be part of a tag. The rules mirror Ollama's own
parser (thinking/parser.go): whitespace before `<think>` and right after either tag is dropped;
if the first non-blank text is not `<think>`, everything is answer.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmchat.core.events import Answer, Reasoning

OPEN, CLOSE = "<think>", "</think>"


class ThinkTagSplitter:
    """Feed content pieces in; get `Reasoning` and `Answer` events out, in order."""

    def __init__(self) -> None:
        self._state = "start"  # start -> opened -> thinking -> after -> answer; or start -> answer
        self._pending = ""

    @property
    def settled(self) -> bool:
        """Everything from here on is answer text, as it comes: callers may skip `feed` (a long answer's
        per-piece cost is mostly this call)."""
        return self._state == "answer" and not self._pending

    def feed(self, text: str) -> Iterator[Reasoning | Answer]:
        self._pending += text
        while self._pending:
            if self._state == "start":
                stripped = self._pending.lstrip()
                if not stripped or (OPEN.startswith(stripped) and len(stripped) < len(OPEN)):
                    return  # could still become "<think>": wait for more
                if stripped.startswith(OPEN):
                    self._state, self._pending = "opened", stripped[len(OPEN):]
                else:
                    self._state = "answer"
            elif self._state in ("opened", "after"):  # whitespace right after a tag is not text
                self._pending = self._pending.lstrip()
                if self._pending:
                    self._state = "thinking" if self._state == "opened" else "answer"
            elif self._state == "thinking":
                end = self._pending.find(CLOSE)
                if end >= 0:
                    if end:
                        yield Reasoning(self._pending[:end])
                    self._state, self._pending = "after", self._pending[end + len(CLOSE):]
                    continue
                cut = len(self._pending) - _partial_suffix(self._pending, CLOSE)
                emit, self._pending = self._pending[:cut], self._pending[cut:]
                if emit:
                    yield Reasoning(emit)
                return
            else:
                yield Answer(self._pending)
                self._pending = ""

    def flush(self) -> Iterator[Reasoning | Answer]:
        """End of stream: whatever was held back is text after all (an unclosed tag stays reasoning)."""
        pending, self._pending = self._pending, ""
        if not pending:
            return
        if self._state == "thinking":
            yield Reasoning(pending)
        elif self._state not in ("opened", "after"):
            yield Answer(pending)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
