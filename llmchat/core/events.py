"""The vocabulary shared by providers, the turn loop, renderers and the store.

Providers yield these plain dataclasses; nothing downstream ever sees a client library's types,
so renderers and the store stay free of HTTP and of the `ollama` / `openai` packages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmchat.core.tools import ToolCall

if TYPE_CHECKING:
    from llmchat.core.tools import ToolRound


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning (thinking) text, as streamed."""

    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A piece of the answer text, as streamed."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the server reported; a field the server did not report stays None."""

    prompt: int | None = None
    completion: int | None = None
    total: int | None = None
    reasoning: int | None = None
    cached: int | None = None
    #: Seconds the server says it spent generating (Ollama's eval_duration); gives an exact speed.
    eval_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """Why generation stopped ("stop", "length", …) as the server said it."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know mid-turn that is not model output (e.g. a retry)."""

    text: str


#: `ToolCall` (core/tools.py) is an event too: a complete call, arguments assembled, sent before `Finish("tool_calls")`.
Event = Reasoning | Answer | Usage | Finish | Notice | ToolCall


@dataclass(slots=True)
class Timing:
    """Wall-clock measurements of one turn, taken by the turn loop."""

    ttft_s: float | None = None  # request sent -> first reasoning or answer text
    total_s: float | None = None
    thinking_s: float | None = None  # first reasoning text -> first answer text
    tokens_per_s: float | None = None


@dataclass(slots=True)
class TurnResult:
    """Everything one turn produced; renderers draw it, the store saves it, `--json` prints it."""

    model: str
    answer: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    timing: Timing = field(default_factory=Timing)
    interrupted: bool = False  # Ctrl-C or a broken stream cut the answer short
    notices: list[str] = field(default_factory=list)
    #: The model calls before the answer, with their outcomes (core/tools.py); `answer` and
    #: `reasoning` are the final response's, each round keeps its own.
    rounds: list[ToolRound] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """How many requests the turn made: one per tool round, plus the answer (the usage sums them all)."""
        return len(self.rounds) + 1
