"""Following remote jobs: poll with back-off until every job has ended, showing `request_counts`.

Why a back-off: a job runs for minutes to hours and every poll is a request on the user's key; the
first polls come quickly (validation fails fast), then the interval grows to a minute.
`LLMCHAT_BATCH_POLL` sets the first interval (seconds; tests make it short).
Ctrl-C here stops following only: the jobs keep running on the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError
from llmchat.providers.batch_api import RemoteJob
from llmchat.store.jobs import FINISHED

FIRST_POLL_S = 2.0
MAX_POLL_S = 60.0
GROWTH = 1.5


class Board(Protocol):
    def show(self, jobs: Mapping[str, RemoteJob]) -> None: ...
    def stop(self) -> None: ...


def first_interval(environment: Environment | None) -> float:
    variables: Mapping[str, str] = environment.variables if environment is not None else {}
    text = variables.get("LLMCHAT_BATCH_POLL")
    if not text:
        return FIRST_POLL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"LLMCHAT_BATCH_POLL='{text}' is out of range: expected seconds, above 0, up to 3600.",
                          hint="Unset it to poll every 2 s at first, then less often.")
    return value


def follow(job_ids: list[str], retrieve: Callable[[str], RemoteJob], board: Board, *, first: float,
           seen: Callable[[RemoteJob], None]) -> dict[str, RemoteJob]:
    """Poll every unfinished job until all have ended; `seen` gets each answer (to remember it).

    KeyboardInterrupt propagates (the caller says how to resume); the board is stopped either way.
    """
    jobs: dict[str, RemoteJob] = {}
    waits = intervals(first)
    try:
        while True:
            for job_id in job_ids:
                if job_id not in jobs or jobs[job_id].status not in FINISHED:
                    jobs[job_id] = retrieve(job_id)
                    seen(jobs[job_id])
            board.show(jobs)
            if all(job.status in FINISHED for job in jobs.values()):
                return jobs
            time.sleep(next(waits))
    finally:
        board.stop()


def intervals(first: float) -> Iterator[float]:
    """The waits between polls: `first`, then half as long again each time, up to a minute."""
    interval = first
    while True:
        yield interval
        interval = min(interval * GROWTH, max(MAX_POLL_S, first))


def counts(jobs: Mapping[str, RemoteJob]) -> tuple[int, int, int]:
    """Done (answered + failed), failed and total over the jobs; totals not yet known count as 0."""
    total = sum(job.total or 0 for job in jobs.values())
    failed = sum(job.failed or 0 for job in jobs.values())
    done = sum((job.completed or 0) + (job.failed or 0) for job in jobs.values())
    return done, failed, total


def status_text(jobs: Mapping[str, RemoteJob]) -> str:
    """e.g. "in_progress" for one job, "2 in_progress, 1 completed" for several."""
    tally: dict[str, int] = {}
    for job in jobs.values():
        tally[job.status] = tally.get(job.status, 0) + 1
    if len(jobs) == 1:
        return next(iter(tally))
    return ", ".join(f"{n} {status}" for status, n in tally.items())


class LineBoard:
    """No terminal: one line on stderr whenever the status or the counts change."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._last: tuple[Any, ...] | None = None

    def show(self, jobs: Mapping[str, RemoteJob]) -> None:
        done, failed, total = counts(jobs)
        state = (status_text(jobs), done, failed, total)
        if state != self._last:
            self._last = state
            self._say(f"Remote batch: {state[0]}, {done:,}/{total:,} done, {failed:,} failed.")

    def stop(self) -> None:
        pass


class BarBoard:
    """A terminal: a Rich bar on stderr from `request_counts` (done / total, failed, status)."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from llmchat.render.terminal import terminal_console

        self._progress = Progress(
            TextColumn("remote batch"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), console=console or terminal_console(stderr=True), transient=False,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._task = self._progress.add_task("remote", total=None, failed=0, status="submitted")
        self._progress.start()

    def show(self, jobs: Mapping[str, RemoteJob]) -> None:
        done, failed, total = counts(jobs)
        self._progress.update(self._task, completed=done, total=total or None, failed=failed,
                              status=status_text(jobs))

    def stop(self) -> None:
        self._progress.stop()


def make_board(environment: Environment | None, say: Callable[[str], None]) -> Board:
    environment = environment or Environment.from_process()
    if environment.stderr_is_terminal and not environment.dumb_terminal:
        return BarBoard()
    return LineBoard(say)
