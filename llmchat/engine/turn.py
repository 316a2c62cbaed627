"""The one turn engine: what `run_turn` (sync: `ask`, the REPL) and batch's `ask_row` (async) share.

A turn is a few attempts at one request. `Turn` is the state of it, written once: it gathers the events
into a `TurnResult` (answer and reasoning parts, first-token times, usage, finish, notices), decides
after a failure whether to try again and after how long (`failed`), and measures the turn when it ends
(`finish`). It does no I/O and never sleeps, so it is tested without HTTP (tests/test_turn.py).

`drive` and `adrive` are the two thin loops around it; they differ only in `for` / `async for`,
`close` / `aclose` and `sleep` / `await asyncio.sleep`. What is not shared stays with the callers:
the context policy, the recorder and the view with `run_turn` (chat.py), rows, the pacer and ordering
with batch.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from llmchat.core.errors import ProviderError, StreamUnfinished
from llmchat.core.events import Answer, Finish, Notice, Reasoning, TurnResult, Usage
from llmchat.core.tools import ToolCall, ToolRound
from llmchat.engine.tooling import beyond_bound

#: The answer's pieces are joined into one string whenever this many have arrived: a 20,000-token answer
#: kept as 17,000 string objects took about 1 MB more than its text (peak RSS, issue 18).
_JOIN_EVERY = 1024

if TYPE_CHECKING:
    from llmchat.core.events import Event

Clock = Callable[[], float]


class Shows(Protocol):
    """Where a turn's text goes as it arrives: a `TurnView` in the chat, the progress reporter in batch."""

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...


class Turn:
    """One turn's accumulation, retry policy and measurement, fed by a driver.

    Retry policy: an error the server may not repeat (`retryable`: 429, 5xx, a stream ended unfinished)
    is retried at most `retries` times with backoff (`Retry-After` when the server said), never once
    output arrived (text already shown cannot be taken back), except that with `restart_unfinished`
    (batch: a row is done only when its answer is whole) a `StreamUnfinished` restarts the turn from
    scratch whatever arrived. Each retry is announced once through `shows.notice` (`retry_notice`),
    prefixed with `label` when one is given (batch's "row 3").
    """

    def __init__(self, model: str, shows: Shows, *, retries: int, label: str | None = None,
                 restart_unfinished: bool = False, clock: Clock = time.monotonic) -> None:
        self.model = model
        self.shows = shows
        self.retries = retries
        self.label = label
        self.restart_unfinished = restart_unfinished
        self.clock = clock
        self.attempt = 0  # retries made so far
        self._said: str | None = None  # the error text already shown in a retry notice (once, not per attempt)
        #: The responses that called tools, closed by `close_round`; a restart (`_begin`) keeps them.
        self.rounds: list[ToolRound] = []
        self._usage_before: Usage | None = None  # the closed rounds' usage, summed
        self.last_usage: Usage | None = None  # the latest request's own (its prompt size calibrates the estimate)
        self.tool_seconds = 0.0  # time spent running tools (and approving them): not generation time
        self._begin()

    def _begin(self) -> None:
        """A fresh result and clock: at the start, and when a row restarts whole."""
        self.result = TurnResult(model=self.model)
        self.started = self.clock()
        self.first_reasoning: float | None = None
        self.first_answer: float | None = None
        self.answer: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []

    def start(self) -> None:
        """Restart the clock: what ran before (a context summary call) is not part of this turn's timing."""
        self.started = self.clock()

    @property
    def output(self) -> bool:
        """Whether any model text arrived for the current request (then a retry would repeat what was shown)."""
        return bool(self.answer or self.reasoning)

    def next_round(self, max_rounds: int) -> tuple[ToolRound, list[ToolCall]] | None:
        """The response that just ended called tools: close it as a round and return it with its calls to
        run; None when that round would pass `max_rounds` (its calls are recorded as not run, the turn ends
        with finish_reason "tool_calls")."""
        calls = list(self.calls)
        tool_round = self.close_round()
        if (unrun := beyond_bound(len(self.rounds), max_rounds, calls)) is not None:
            tool_round.calls = unrun
            self.result.finish_reason = "tool_calls"  # how the last response ended: the bound cut in
            return None
        return tool_round, calls

    def close_round(self) -> ToolRound:
        """The response that just ended called tools: its text and calls become a round, the next request
        starts afresh (its retries judged on its own output), and its usage is kept for the sum."""
        tool_round = ToolRound(content="".join(self.answer), reasoning="".join(self.reasoning))
        self.rounds.append(tool_round)
        self.answer, self.reasoning, self.calls = [], [], []
        self._usage_before = add_usage(self._usage_before, self.result.usage)
        self.result.usage = None
        self.result.finish_reason = None
        return tool_round

    def notice(self, text: str) -> None:
        """Something the user should know that becomes part of the result (a provider's Notice, a context change)."""
        self.result.notices.append(text)
        self.shows.notice(text)

    def take(self, event: Event) -> None:
        """Record one event and show it."""
        now = self.clock()
        if isinstance(event, Answer):
            self.first_answer = self.first_answer or now
            self.answer.append(event.text)
            if len(self.answer) >= _JOIN_EVERY:  # a long answer: one string, not a string object per piece
                self.answer[:] = ["".join(self.answer)]
            self.shows.answer(event.text)
        elif isinstance(event, Reasoning):
            self.first_reasoning = self.first_reasoning or now
            self.reasoning.append(event.text)
            self.shows.reasoning(event.text)
        elif isinstance(event, ToolCall):
            self.calls.append(event)
        elif isinstance(event, Usage):
            self.result.usage = self.last_usage = event
        elif isinstance(event, Finish):
            self.result.finish_reason = event.reason
        elif isinstance(event, Notice):
            self.notice(event.text)

    def failed(self, exc: ProviderError) -> float | None:
        """The attempt failed with `exc`: seconds to wait before the next one, or None when the turn ends with it."""
        restart = self.restart_unfinished and isinstance(exc, StreamUnfinished)
        if not exc.retryable or self.attempt >= self.retries or (self.output and not restart):
            return None
        if restart:
            self._begin()  # the partial answer is dropped: the row restarts whole
        self.attempt += 1
        delay = backoff(self.attempt, exc.retry_after)
        text = retry_notice(exc, self.attempt, self.retries, delay, self._said)
        # a batch row's notice stays one line, so rows' notices cannot interleave
        self.shows.notice(f"{self.label}: {text.replace(chr(10), ' ')}" if self.label else text)
        self._said = exc.message
        return delay

    def finish(self, error: ProviderError | None = None, *, interrupted: bool = False) -> TurnResult:
        """The result, measured: cut short (`interrupted`) by Ctrl-C, or by an error after output arrived."""
        result = self.result
        result.answer, result.reasoning = "".join(self.answer), "".join(self.reasoning)
        result.interrupted = interrupted or (error is not None and (self.output or bool(self.rounds)))
        result.rounds = self.rounds
        result.usage = add_usage(self._usage_before, result.usage)
        measure(result, self.started, self.first_reasoning, self.first_answer, self.clock(), paused=self.tool_seconds)
        return result


Recover = Callable[[ProviderError], bool]
Sleep = Callable[[float], None]


def drive(turn: Turn, attempt: Callable[[], Iterator[Event]], *, sleep: Sleep = time.sleep,
          recover: Recover | None = None, each: Callable[[Event], None] | None = None) -> ProviderError | None:
    """Run attempts until one ends well (None) or the policy gives up (the error); the sync loop.

    `attempt()` opens one request's stream. `recover(exc)` runs first after each failure; True means the
    caller changed the request (the context was compacted) and wants another attempt now, outside the
    retry count. `each(event)` runs after every event (for a caller that saves progress as it streams).
    Ctrl-C propagates; the stream is closed at once either way.
    """
    while True:
        events = attempt()
        try:
            for event in events:
                turn.take(event)
                if each is not None:
                    each(event)
            return None
        except ProviderError as exc:
            if recover is not None and recover(exc):
                continue
            delay = turn.failed(exc)
            if delay is None:
                return exc
            sleep(delay)
        finally:
            close = getattr(events, "close", None)
            if close:
                close()  # stops the HTTP stream at once on Ctrl-C


async def adrive(turn: Turn, attempt: Callable[[], contextlib.AbstractAsyncContextManager[AsyncIterator[Event]]], *,
                 sleep: Callable[[float], Awaitable[None]] | None = None, recover: Recover | None = None,
                 each: Callable[[Event], None] | None = None) -> ProviderError | None:
    """`drive` for async streams. `attempt()` is a context manager around one request's stream, so the
    caller can hold a slot (batch's pacer) for exactly as long as the stream runs; it closes the stream.
    `sleep` defaults to `asyncio.sleep` (imported here: the sync commands never load asyncio for it)."""
    if sleep is None:
        import asyncio

        sleep = asyncio.sleep
    while True:
        try:
            async with attempt() as events:
                async for event in events:
                    turn.take(event)
                    if each is not None:
                        each(event)
            return None
        except ProviderError as exc:
            if recover is not None and recover(exc):
                continue
            delay = turn.failed(exc)
            if delay is None:
                return exc
            await sleep(delay)


def retry_notice(exc: ProviderError, attempt: int, retries: int, delay: float, said: str | None) -> str:
    """"<what failed>", then "Retrying in 0.6s (1/2)…" on a line of its own (a server's own text, such as
    Ollama's "server busy, please try again", never runs into ours); the error's `brief` when it has one
    (a proxy's page is one short line), and the same failure again is one line, "Failed again. Retrying…"."""
    retrying = f"Retrying in {delay:.1f}s ({attempt}/{retries})…"
    if exc.message == said:
        return f"Failed again. {retrying}"
    return f"{exc.brief or exc.message}\n{retrying}"


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, or what the server asked for (capped, so a REPL stays usable)."""
    if retry_after is not None:
        return min(retry_after, 60.0)
    return min(0.5 * 2 ** (attempt - 1), 8.0) * (1 + 0.25 * random.random())


def add_usage(first: Usage | None, second: Usage | None) -> Usage | None:
    """Two requests' usage as one (a turn with tool rounds is several model calls): each count summed,
    None only where neither request reported it."""
    if first is None or second is None:
        return second if first is None else first

    def plus(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else a + b

    return Usage(prompt=plus(first.prompt, second.prompt), completion=plus(first.completion, second.completion),
                 total=plus(first.total, second.total), reasoning=plus(first.reasoning, second.reasoning),
                 cached=plus(first.cached, second.cached), eval_seconds=plus(first.eval_seconds, second.eval_seconds))


def measure(
    result: TurnResult, started: float, first_reasoning: float | None, first_answer: float | None, finished: float,
    *, paused: float = 0.0,
) -> None:
    """Time to first token, total, thinking time and speed (the server's eval time when it says, else wall
    clock, less the `paused` seconds tools ran)."""
    timing = result.timing
    first = min((t for t in (first_reasoning, first_answer) if t is not None), default=None)
    timing.total_s = finished - started
    timing.ttft_s = first - started if first is not None else None
    if first_reasoning is not None:
        timing.thinking_s = (first_answer or finished) - first_reasoning
    usage = result.usage
    if usage and usage.completion:
        if usage.eval_seconds:
            timing.tokens_per_s = usage.completion / usage.eval_seconds
        elif first is not None and finished - first - paused > 0:
            timing.tokens_per_s = usage.completion / (finished - first - paused)
