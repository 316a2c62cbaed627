"""A conversation as data: its exchanges, the summary standing in for old ones, and what is sent.

The APIs are stateless, so the history is resent every turn: the system prompt, then alternating
user and assistant messages. Reasoning is kept for display and storage but never sent back.
When the history outgrows the model's window, a context policy (`engine.context`) replaces its oldest
exchanges with a summary or stops sending them; the exchanges themselves are never deleted, so the
transcript, `/history` and the store keep everything that was said. Data only: the engine runs turns
of it, the store saves and loads it, the REPL edits it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmchat.core.events import Usage
from llmchat.core.tokens import TokenLedger

if TYPE_CHECKING:
    from llmchat.core.images import Image
    from llmchat.core.tools import ToolRound

#: One message as the providers take it: role, content, and optionally images.
Message = Mapping[str, Any]


@dataclass
class Exchange:
    """One question and what came back; an interrupted answer is kept, and marked."""

    user: str
    answer: str = ""
    reasoning: str = ""
    model: str | None = None
    interrupted: bool = False
    usage: Usage | None = None
    #: Images attached to the question; resent with it on later turns, saved by hash in the store.
    images: tuple[Image, ...] = ()
    #: Its exchange number in the store, set by the recorder: not always its index here, since another
    #: process may have added turns to the same saved conversation in between.
    slot: int | None = None
    #: The model's tool calls before its answer, round by round, with their results (core/tools.py).
    rounds: list[ToolRound] = field(default_factory=list)


#: What stands for the answer of a question the user stopped (Ctrl-C) before any answer text came, so
#: the question stays in what is sent ("shorter, please" next has something to refer to) and the roles
#: still alternate, as both APIs require (an assistant message with text: Ollama and OpenAI both take it).
INTERRUPTED_ANSWER = "[interrupted by the user before answering]"

#: How a summary is introduced to the model, after the system prompt.
SUMMARY_HEADING = "Summary of the earlier conversation (condensed to fit the context window):"


@dataclass
class ContextSummary:
    """What stands in for the conversation's first `covers` exchanges once they no longer fit.

    It also says who wrote it and what it cost: a summary is a model call the user pays for, so the
    store counts it in `llmchat usage` like any turn.
    """

    text: str
    covers: int
    profile: str | None = None
    model: str | None = None
    usage: Usage | None = None
    cost: float | None = None
    currency: str | None = None


@dataclass
class Conversation:
    system: str | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    id: str | None = None  # set by the store once the conversation is saved
    summary: ContextSummary | None = None
    #: Exchanges before this index are not sent (summarised, or dropped to fit the window).
    start: int = 0
    tokens: TokenLedger = field(default_factory=TokenLedger)
    #: Store slots of exchanges popped here (/undo, /retry) that the store still holds: this process's
    #: own turns, which the store removes (or a /retry's question replaces), never another process's.
    freed: list[int] = field(default_factory=list)

    def active_summary(self) -> ContextSummary | None:
        """The summary, unless /undo went back past what it covers (then it describes turns that are gone)."""
        summary = self.summary
        return summary if summary is not None and summary.covers <= len(self.exchanges) else None

    def first_sent(self) -> int:
        """Index of the oldest exchange that is still sent verbatim."""
        summary = self.active_summary()
        start = max(self.start, summary.covers if summary else 0)
        return min(start, len(self.exchanges))

    def system_content(self) -> str | None:
        """The system message: the persona, then the summary of the older turns when there is one."""
        summary = self.active_summary()
        if summary is None:
            return self.system
        block = f"{SUMMARY_HEADING}\n{summary.text}"
        return f"{self.system}\n\n{block}" if self.system else block

    def pop(self) -> Exchange:
        """Drop the last exchange (/undo, /retry), and any summary or cut that reached past it."""
        exchange = self.exchanges.pop()
        if exchange.slot is not None:
            self.freed.append(exchange.slot)
        self.start = min(self.start, len(self.exchanges))
        if self.summary is not None and self.summary.covers > len(self.exchanges):
            self.summary = None
        return exchange

    def messages(self, question: str | None = None) -> list[Message]:
        """What to send: system (with the summary), every answered exchange still sent, the new question.

        An exchange that produced no answer and called no tool because it failed before the first token
        is left out, so the roles still alternate as the APIs require. One the user interrupted keeps its
        question: with the partial answer when there is one, else with `INTERRUPTED_ANSWER`. Tool rounds
        go in the neutral form `tool_messages` describes; each provider turns it into its own wire form.
        """
        system = self.system_content()
        sent: list[Message] = [{"role": "system", "content": system}] if system else []
        for exchange in self.exchanges[self.first_sent():]:
            stopped = exchange.interrupted and not exchange.answer and not exchange.rounds
            if stopped or exchange.answer or exchange.rounds:
                user: dict[str, Any] = {"role": "user", "content": exchange.user}
                if exchange.images:
                    user["images"] = exchange.images
                sent.append(user)
                for tool_round in exchange.rounds:
                    sent.extend(tool_messages(tool_round))
                if exchange.answer or stopped:
                    sent.append({"role": "assistant", "content": exchange.answer or INTERRUPTED_ANSWER})
        if question is not None:
            sent.append({"role": "user", "content": question})
        return sent


def tool_messages(tool_round: ToolRound) -> list[Message]:
    """One tool round in the neutral form the providers translate (providers/__init__.py says how):

    `{"role": "assistant", "content", "reasoning", "tool_calls": (ToolCall, …)}`, then per call
    `{"role": "tool", "tool_call_id", "name", "content"}` with the result the model is to read.
    """
    calls = tuple(record.call for record in tool_round.calls)
    sent: list[Message] = [{"role": "assistant", "content": tool_round.content, "reasoning": tool_round.reasoning,
                            "tool_calls": calls}]
    sent.extend({"role": "tool", "tool_call_id": record.call.id, "name": record.call.name, "content": record.result}
                for record in tool_round.calls)
    return sent
