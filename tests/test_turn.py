"""The shared turn engine (turn.py) without HTTP: scripted event sequences and errors go through the
sync driver (`drive`, as `run_turn` uses it) and the async one (`adrive`, as batch uses it), and both
must give the same result, show the same things and sleep the same delays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmchat.core.errors import BadRequest, ContextTooLong, ProviderError, RateLimited, ServerError, StreamUnfinished
from llmchat.core.events import Answer, Event, Finish, Notice, Reasoning, Timing, TurnResult, Usage
from llmchat.engine.turn import Turn, adrive, backoff, drive

Script = list[Event | ProviderError]  # one attempt: events, then perhaps the error that ends it


def rate_limited(message: str = "Rate limited.", after: float = 0.5) -> RateLimited:
    exc = RateLimited(message)
    exc.retry_after = after  # deterministic delays: what the server asked for
    return exc


def server_error(after: float = 1.0) -> ServerError:
    exc = ServerError("Server error 503.")
    exc.retry_after = after
    return exc


def unfinished() -> StreamUnfinished:
    exc = StreamUnfinished("The server ended the stream unfinished.")
    exc.retry_after = 0.0
    return exc


@dataclass
class Log:
    """What the driver showed and how long it slept, in order."""

    shown: list[tuple[str, str]] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)

    def reasoning(self, text: str) -> None:
        self.shown.append(("reasoning", text))

    def answer(self, text: str) -> None:
        self.shown.append(("answer", text))

    def notice(self, text: str) -> None:
        self.shown.append(("notice", text))


class Clock:
    """A clock that ticks one second per reading, so timings are exact and equal for both drivers."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _events(script: Script) -> Iterator[Event]:
    for item in script:
        if isinstance(item, ProviderError):
            raise item
        yield item


async def _aevents(script: Script) -> AsyncIterator[Event]:
    for item in script:
        if isinstance(item, ProviderError):
            raise item
        yield item


def run_sync(attempts: list[Script], recover: Any = None, **turn: Any) -> tuple[TurnResult, ProviderError | None, Log]:
    log = Log()
    engine = Turn("m", log, clock=Clock(), **turn)
    scripts = iter(attempts)
    error = drive(engine, lambda: _events(next(scripts)), sleep=log.slept.append, recover=recover)
    return engine.finish(error), error, log


def run_async(attempts: list[Script], recover: Any = None, **turn: Any) -> tuple[TurnResult, ProviderError | None, Log]:
    log = Log()
    engine = Turn("m", log, clock=Clock(), **turn)
    scripts = iter(attempts)

    async def sleep(delay: float) -> None:
        log.slept.append(delay)

    def attempt() -> contextlib.AbstractAsyncContextManager[AsyncIterator[Event]]:
        return contextlib.aclosing(_aevents(next(scripts)))

    error = asyncio.run(adrive(engine, attempt, sleep=sleep, recover=recover))
    return engine.finish(error), error, log


def both(attempts: list[Script], **turn: Any) -> tuple[TurnResult, ProviderError | None, Log]:
    """Run the script through both drivers; they must agree in every respect."""
    sync = run_sync(attempts, **turn)
    async_ = run_async(attempts, **turn)
    assert sync[0] == async_[0]
    assert sync[1] is async_[1] or (type(sync[1]), str(sync[1])) == (type(async_[1]), str(async_[1]))
    assert sync[2] == async_[2]
    return sync


def test_events_accumulate_into_a_measured_result() -> None:
    usage = Usage(prompt=10, completion=8)
    result, error, log = both([[Reasoning("hm"), Notice("fyi"), Reasoning("m"), Answer("He"), Answer("llo"),
                                usage, Finish("stop")]], retries=2)
    assert error is None and not result.interrupted
    assert (result.answer, result.reasoning, result.usage, result.finish_reason) == ("Hello", "hmm", usage, "stop")
    assert result.notices == ["fyi"]
    assert log.shown == [("reasoning", "hm"), ("notice", "fyi"), ("reasoning", "m"), ("answer", "He"),
                         ("answer", "llo")]
    # Clock readings: start 0, events 1..7, finish 8; first reasoning at 1, first answer at 4.
    assert result.timing == Timing(ttft_s=1.0, total_s=8.0, thinking_s=3.0, tokens_per_s=8 / 7)


def test_server_eval_time_gives_the_speed() -> None:
    result, _, _ = both([[Answer("x"), Usage(completion=50, eval_seconds=2.0)]], retries=0)
    assert result.timing.tokens_per_s == 25.0 and result.timing.thinking_s is None


def test_retry_before_output_with_retry_after_and_the_error_said_once() -> None:
    result, error, log = both([[rate_limited()], [rate_limited()], [Answer("ok"), Finish("stop")]], retries=2)
    assert error is None and result.answer == "ok"
    assert log.slept == [0.5, 0.5]
    assert [text for kind, text in log.shown if kind == "notice"] == [
        "Rate limited.\nRetrying in 0.5s (1/2)…", "Failed again. Retrying in 0.5s (2/2)…"]  # issue 17: own line
    assert result.notices == []  # a retry notice is shown, not part of the answer's record
    assert result.timing.ttft_s == 1.0  # the clock is not restarted by a retry before output


def test_retries_run_out() -> None:
    result, error, log = both([[server_error()], [server_error()]], retries=1)
    assert isinstance(error, ServerError) and log.slept == [1.0]
    assert not result.interrupted and result.answer == ""


def test_not_retryable_errors_end_the_turn_at_once() -> None:
    for exc in (BadRequest("Bad request."), ContextTooLong("Too long.")):
        _, error, log = both([[exc]], retries=2)
        assert error is exc and log.slept == [] and log.shown == []


def test_nothing_is_retried_once_output_was_shown() -> None:
    result, error, log = both([[Answer("par"), server_error()]], retries=2)
    assert isinstance(error, ServerError) and log.slept == []
    assert result.interrupted and result.answer == "par"


def test_unfinished_stream_chat_retries_only_while_nothing_was_shown() -> None:
    result, error, log = both([[unfinished()], [Answer("whole"), Finish("stop")]], retries=2)
    assert error is None and result.answer == "whole" and log.slept == [0.0]
    result, error, _ = both([[Answer("half"), unfinished()], [Answer("never")]], retries=2)
    assert isinstance(error, StreamUnfinished) and result.answer == "half" and result.interrupted


def test_unfinished_stream_batch_restarts_the_row_whole() -> None:
    result, error, log = both([[Notice("a"), Answer("half"), Usage(completion=1), unfinished()],
                               [Answer("whole"), Finish("stop")]], retries=2, label="row 3", restart_unfinished=True)
    assert error is None and not result.interrupted
    assert (result.answer, result.usage, result.notices) == ("whole", None, [])  # the cut attempt is dropped
    assert ("notice", "row 3: The server ended the stream unfinished. Retrying in 0.0s (1/2)…") in log.shown
    # The clock restarts with the row: readings 0-4 were the first attempt, 5 the restart, 6-7 events, 8 finish.
    assert result.timing.ttft_s == 1.0 and result.timing.total_s == 3.0


def test_unfinished_stream_batch_still_bounded() -> None:
    result, error, log = both([[Answer("a"), unfinished()], [Answer("b"), unfinished()]], retries=1,
                              restart_unfinished=True)
    assert isinstance(error, StreamUnfinished) and log.slept == [0.0]
    assert result.answer == "b" and result.interrupted


def test_recover_tries_again_outside_the_retry_count() -> None:
    seen: list[ProviderError] = []

    def recover(exc: ProviderError) -> bool:
        seen.append(exc)
        return isinstance(exc, ContextTooLong) and len(seen) == 1

    too_long = ContextTooLong("Too long.")
    for run in (run_sync, run_async):
        seen.clear()
        result, error, log = run([[too_long], [Answer("fits")]], recover=recover, retries=0)
        assert error is None and result.answer == "fits" and log.slept == [] and seen == [too_long]


def test_ctrl_c_in_the_sync_driver_closes_the_stream_and_propagates() -> None:
    closed: list[bool] = []

    def events() -> Iterator[Event]:
        try:
            yield Answer("par")
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    log = Log()
    engine = Turn("m", log, retries=2, clock=Clock())
    with pytest.raises(KeyboardInterrupt):
        drive(engine, events, sleep=log.slept.append)
    assert closed == [True]
    result = engine.finish(None, interrupted=True)
    assert result.interrupted and result.answer == "par"


def test_backoff_grows_with_jitter_and_honours_retry_after_up_to_a_minute() -> None:
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0)):
        assert all(base <= backoff(attempt, None) <= base * 1.25 for _ in range(50))
    assert backoff(1, 3.0) == 3.0 and backoff(1, 600.0) == 60.0


def test_a_long_answer_is_kept_whole_however_many_pieces_it_came_in() -> None:
    """The turn joins the answer's pieces every so often (a string object per piece cost memory): the
    answer, and what the view was shown, are the pieces in order."""
    pieces = [f"w{n} " for n in range(5_000)]
    result, error, log = run_sync([[*(Answer(p) for p in pieces), Finish("stop")]], retries=0)
    assert error is None and result.answer == "".join(pieces)
    assert "".join(text for kind, text in log.shown if kind == "answer") == result.answer
