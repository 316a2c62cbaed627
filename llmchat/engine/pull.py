"""`llmchat pull MODEL`, and the offer to pull when a chat names a model the Ollama server lacks.

Why it is shaped this way:
- The server does the download; we only show its streamed progress (`/api/pull` NDJSON): a phase
  ("pulling manifest", "verifying sha256 digest", "success") or one layer's bytes. `PullTracker`
  folds those lines into per-layer and overall numbers, independent of how they are drawn.
- A Rich bar per layer (like `ollama pull`) when stderr is a terminal; otherwise one plain line per
  phase and layer, so a log or CI output stays readable and never fills with redraws.
- Progress goes to stderr; stdout gets one closing line, for scripts.
- The offer (`offer_pull`) only ever asks on a terminal: a script or a pipe must fail with the usual
  "model not found" error (exit 1) rather than hang on a question nobody sees.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from llmchat.core.errors import ConfigError
from llmchat.core.safe_text import is_terminal, sanitize, text_for

if TYPE_CHECKING:
    from llmchat.config.session import Overrides
    from llmchat.core.environment import Environment
    from llmchat.providers import Provider, PullProgress


@dataclass
class Layer:
    digest: str
    status: str
    total: int = 0
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.total > 0 and self.completed >= self.total


@dataclass
class PullTracker:
    """The state of one pull, from its progress lines: phases seen, layers and their bytes."""

    phases: list[str] = field(default_factory=list)
    layers: dict[str, Layer] = field(default_factory=dict)
    succeeded: bool = False

    def feed(self, line: PullProgress) -> Layer | str | None:
        """Take one line; returns the layer it moved, the phase it started, or None (a repeat)."""
        if line.digest:
            layer = self.layers.get(line.digest)
            if layer is None:
                layer = self.layers[line.digest] = Layer(line.digest, line.status)
            layer.total = line.total or layer.total
            layer.completed = max(layer.completed, line.completed or 0)
            return layer
        self.succeeded = self.succeeded or line.status == "success"
        if self.phases and self.phases[-1] == line.status:
            return None
        self.phases.append(line.status)
        return line.status

    @property
    def total(self) -> int:
        """Bytes of every layer announced so far (layers are announced as the download reaches them)."""
        return sum(layer.total for layer in self.layers.values())

    @property
    def completed(self) -> int:
        return sum(layer.completed for layer in self.layers.values())


class PullView(Protocol):
    def update(self, tracker: PullTracker, moved: Layer | str) -> None: ...
    def close(self) -> None: ...


class PlainPullView:
    """One line per phase, and per layer when it starts and when it is complete."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started: set[str] = set()
        self._finished: set[str] = set()

    def update(self, tracker: PullTracker, moved: Layer | str) -> None:
        if isinstance(moved, str):
            self._line(moved)
            return
        if moved.digest not in self._started:
            self._started.add(moved.digest)
            self._line(f"{moved.status}  {format_bytes(moved.total)}" if moved.total else moved.status)
        if moved.done and moved.digest not in self._finished:
            self._finished.add(moved.digest)
            self._line(f"{moved.status}  100%")

    def _line(self, text: str) -> None:
        print(sanitize(text), file=self._out, flush=True)  # statuses come from the server

    def close(self) -> None:
        pass


class RichPullView:
    """A bar per layer with bytes, speed and time left; phases print above the bars."""

    def __init__(self, out: TextIO) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from llmchat.render.terminal import terminal_console

        self._progress = Progress(
            # The description is a status line from the server: never markup, and sanitized.
            TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=terminal_console(out), transient=False,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._tasks: dict[str, Any] = {}
        self._progress.start()

    def update(self, tracker: PullTracker, moved: Layer | str) -> None:
        if isinstance(moved, str):
            self._progress.console.print(sanitize(moved), markup=False, highlight=False)
            return
        task = self._tasks.get(moved.digest)
        if task is None:
            task = self._tasks[moved.digest] = self._progress.add_task(sanitize(moved.status),
                                                                       total=moved.total or None)
        self._progress.update(task, total=moved.total or None, completed=moved.completed)

    def close(self) -> None:
        self._progress.stop()


def make_pull_view(err: TextIO | None = None, environment: Environment | None = None) -> PullView:
    """Bars on a terminal stderr, lines elsewhere; `TERM` from `environment` (None: the process's)."""
    from llmchat.core.environment import Environment

    environment = environment or Environment.from_process()
    err = err or environment.stderr
    if is_terminal(err) and not environment.dumb_terminal:
        return RichPullView(err)
    return PlainPullView(err)


def follow(lines: Iterable[PullProgress], view: PullView) -> PullTracker:
    """Feed the streamed lines to the tracker and the view; the view is closed whatever happens."""
    tracker = PullTracker()
    try:
        for line in lines:
            moved = tracker.feed(line)
            if moved is not None:
                view.update(tracker, moved)
    finally:
        view.close()
    return tracker


def pull_model(provider: Provider, model: str, *, err: TextIO | None = None,
               environment: Environment | None = None) -> PullTracker:
    """Pull `model` into the provider's Ollama server with progress on `err` (default stderr).

    Raises ModelNotFound for a name the registry does not have, and the usual provider errors.
    """
    pull = getattr(provider, "pull", None)
    if pull is None:
        raise ConfigError("Only Ollama servers can pull models.",
                          hint="Use an Ollama profile, e.g. `llmchat pull MODEL -p local`.")
    return follow(pull(model), make_pull_view(err, environment))


def run_pull(flags: Overrides, model: str | None, environment: Environment | None = None) -> int:
    """`llmchat pull [MODEL]`: MODEL, else the profile's model. Exit 0 once the server says success."""
    import os

    from llmchat.config.session import resolve
    from llmchat.providers import connect

    _, profile = resolve(flags, environment)
    if profile.provider != "ollama":
        raise ConfigError(f"Profile '{profile.name}' uses {profile.provider}, which has no model downloads.",
                          hint="Pull with an Ollama profile: `llmchat pull MODEL -p local`.")
    name = model or profile.model
    tracker = pull_model(connect(profile, environment=environment), name, environment=environment)
    size = f" ({format_bytes(tracker.total)})" if tracker.total else ""
    out = environment.stdout if environment is not None else sys.stdout
    where = profile.shown_endpoint_in(environment.variables if environment is not None else os.environ)
    print(text_for(out, f"Pulled {name}{size} into Ollama at {where}."), file=out, flush=True)
    return 0


def offer_pull(provider: Provider, model: str, *, confirm: Callable[[str], bool] | None = None,
               err: TextIO | None = None, environment: Environment | None = None) -> bool:
    """After a chat failed with ModelNotFound: on a terminal, ask y/N and pull. True when the model is
    now there (the caller may send the question again); False when not offered or declined.

    Only for Ollama (`provider.pull`), and only when stdin and stderr are terminals, unless `confirm`
    is given (tests, or a REPL that asks in its own way). Pull errors are raised like any provider error.
    """
    if getattr(provider, "pull", None) is None:
        return False
    if confirm is None:
        stdin = environment.stdin if environment is not None else sys.stdin
        stderr = environment.stderr if environment is not None else sys.stderr
        if not (is_terminal(stdin) and is_terminal(stderr)):
            return False
        confirm = functools.partial(_ask_yes_no, stdin=stdin, stderr=stderr)
    host = getattr(provider, "host", "the Ollama server")
    if not confirm(f"{model} is not on the Ollama server at {host}. Pull it now? [y/N] "):
        return False
    pull_model(provider, model, err=err, environment=environment)
    return True


def _ask_yes_no(question: str, *, stdin: TextIO, stderr: TextIO) -> bool:
    stderr.write(sanitize(question))
    stderr.flush()
    try:
        answer = stdin.readline()
    except (KeyboardInterrupt, EOFError):
        stderr.write("\n")
        return False
    return answer.strip().lower() in ("y", "yes")


def format_bytes(size: int) -> str:
    """Decimal units, as `ollama pull` and `llmchat models` show them."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
