"""Holding Ctrl-C (and SIGTERM/SIGHUP) back during a short critical section, then raising it right after.

Python raises KeyboardInterrupt between any two bytecodes of the main thread, so a Ctrl-C can land where
half of something is done: inside `subprocess.Popen`, after the child was started but before the caller
holds it (the child then survives the call that was meant to kill its process group), or inside a live
frame Rich is writing (the terminal then shows a shape Rich no longer knows about). `held()` makes such a
section atomic with respect to those signals: one that arrives inside is remembered and its own handler
runs as soon as the section ends, so it raises what it always raised (KeyboardInterrupt, or
`stops.Terminated`), just a few microseconds later.

Why the Python-level handler is swapped rather than the signal blocked: with other threads alive,
`pthread_sigmask` in the main thread only moves delivery to another thread, and CPython still runs the
handler, and raises, in the main thread. Handlers can only be changed from the main thread; elsewhere
(a timer drawing a frame, a reader) `held()` does nothing, and nothing is raised there anyway. Only
Python-level handlers are swapped: a signal set to SIG_IGN or SIG_DFL keeps that meaning.

It costs a few `sigaction` calls per use: cheap enough to run once per live frame.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: What `held()` holds: Ctrl-C, and the signals `stops` turns into a KeyboardInterrupt.
HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], object]


@contextmanager
def held() -> Iterator[None]:
    """Run the body with SIGINT, SIGTERM and SIGHUP held; one that arrived is handled on the way out.

    When several arrived, SIGTERM/SIGHUP (the process ends) are handled before SIGINT, so a Ctrl-C
    in the same instant cannot turn a termination into a mere interrupt. Nested uses nest: the inner
    one hands what it held to the outer one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append((signum, frame))

    saved: dict[int, Handler] = {}
    try:
        for signum in HELD:
            handler = signal.getsignal(signum)
            if callable(handler):
                saved[signum] = handler
                signal.signal(signum, hold)
        yield
    finally:
        try:
            _restore(list(reversed(saved.items())), hold)  # SIGINT last: a Ctrl-C now is still held
        except BaseException:  # a signal that came as its handler went back, and was handled (it raised)
            _handle([(signum, frame) for signum, frame in pending if signum != signal.SIGINT], saved)
            raise
        _handle(pending, saved)


def _restore(handlers: list[tuple[int, Handler]], hold: Handler) -> None:
    """Put each handler back, all of them even when a signal arriving meanwhile runs one that raises:
    a handler left as `hold` would swallow that signal for the rest of the process. One that no longer
    holds was set by a handler that ran meanwhile (stops ignores a second SIGTERM/SIGHUP): it stays so."""
    if handlers:
        (signum, handler), rest = handlers[0], handlers[1:]
        try:
            if signal.getsignal(signum) is hold:
                signal.signal(signum, handler)
        finally:
            _restore(rest, hold)


def _handle(pending: list[tuple[int, FrameType | None]], handlers: dict[int, Handler]) -> None:
    """Run each held signal's own handler once, SIGINT last; the first to raise ends it (it propagates)."""
    seen: dict[int, FrameType | None] = {}
    for signum, frame in pending:
        seen.setdefault(signum, frame)
    for signum in sorted(seen, key=lambda number: number == signal.SIGINT):
        handlers[signum](signum, seen[signum])
