"""Progress on stderr while a batch runs: a Rich bar for a person, nothing when rows go to a terminal."""

from __future__ import annotations

import time
from typing import Any, Protocol

from llmchat.core.environment import Environment


class Reporter(Protocol):
    """Where progress goes: a Rich bar in a terminal, nothing otherwise."""

    def row_done(self, ok: bool, completion_tokens: int) -> None: ...
    def notice(self, text: str) -> None: ...
    def stop(self) -> None: ...


class QuietReporter:
    def row_done(self, ok: bool, completion_tokens: int) -> None:
        pass

    def notice(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


class RichReporter:
    """A progress bar on stderr: done / total, failed, tokens per second, ETA; notices print above it."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from llmchat.render.terminal import terminal_console

        self._progress = Progress(
            TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[speed]} tok/s"),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=console or terminal_console(stderr=True), transient=False,
            # Rich would otherwise route sys.stdout through its (stderr) console: the rows must stay on stdout.
            redirect_stdout=False, redirect_stderr=False,
        )
        self._task = self._progress.add_task("batch", total=total, failed=0, speed="–")
        self._started = time.monotonic()
        self._failed = 0
        self._tokens = 0
        self._seen: set[str] = set()
        self._progress.start()

    def row_done(self, ok: bool, completion_tokens: int) -> None:
        self._failed += not ok
        self._tokens += completion_tokens
        elapsed = time.monotonic() - self._started
        speed = f"{self._tokens / elapsed:,.0f}" if elapsed > 0 else "–"
        self._progress.update(self._task, advance=1, failed=self._failed, speed=speed)

    def notice(self, text: str) -> None:
        if text not in self._seen:  # e.g. "does not support thinking" would otherwise repeat per row
            self._seen.add(text)
            self._progress.console.print(text, style="yellow", markup=False, highlight=False)

    def stop(self) -> None:
        self._progress.stop()


def make_reporter(total: int, *, rows_on_stdout: bool, environment: Environment | None = None) -> Reporter:
    """The bar only when stderr is a terminal: logs and pipes get the summary alone.

    Rows printed to a terminal are their own progress, and a bar redrawn between them would garble both.
    """
    environment = environment or Environment.from_process()
    if not environment.stderr_is_terminal or environment.dumb_terminal:
        return QuietReporter()
    if rows_on_stdout and environment.stdout_is_terminal:
        return QuietReporter()
    return RichReporter(total)
