"""The other ways a chat is told to stop, handled like Ctrl-C so that nothing said is lost (issue 12).

- SIGTERM (`kill`, a service manager, an IDE closing its terminal) and SIGHUP (the terminal was closed)
  raise `Terminated`, a `KeyboardInterrupt`: every path that stops cleanly on Ctrl-C does the same for
  them (the turn loop closes the HTTP stream and saves what arrived, marked interrupted). Unlike Ctrl-C
  in the REPL, the process then ends, with 128 + the signal's number (143, 129), as a shell reports a
  process killed by that signal. Later TERM/HUP signals are ignored, so they cannot cut the save short.
- A closed stdout pipe (`llmchat ask … | head -c 100`) surfaces as `BrokenPipeError`: the turn saves what
  arrived, marked interrupted, and the process exits 141 (128 + SIGPIPE, what a shell shows for
  `yes | head`) without a message, stdout pointed at /dev/null first so that Python's last flush at
  exit cannot print "Exception ignored … BrokenPipeError" (the `signal` module docs' recipe).

This module is tiny and imports nothing heavy: `ask` and the REPL install it before anything else runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

#: The signals that end a chat like Ctrl-C does (SIGINT stays Python's KeyboardInterrupt).
SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: The exit status of a process whose stdout reader went away (128 + SIGPIPE).
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C, then leave with `exit_code`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def install() -> None:
    """Make SIGTERM and SIGHUP raise `Terminated` in the main thread (call from the main thread)."""
    for signum in SIGNALS:
        signal.signal(signum, _terminate)


def _terminate(signum: int, frame: FrameType | None) -> None:
    if _in_finalizer(frame):  # raised here, it would be printed as "Exception ignored" and lost: the chat
        _deliver_again(signum)  # would go on after the terminal closed. The signal comes back once it is over
        return
    for other in SIGNALS:  # one is enough: a second must not interrupt the save the first started
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


#: How long a signal that landed in a finalizer waits before it is sent again.
REDELIVER_S = 0.05


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether the main thread was running an object's `__del__` (the collector runs them wherever it
    happens to start: an asyncio loop's, say), where an exception cannot propagate: Python prints it and
    drops it."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    import threading

    timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def silence(*streams: object) -> None:
    """Point the given standard streams' file descriptors at /dev/null (a closed pipe, a hung-up
    terminal), so nothing written or flushed later fails, at exit included."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
    finally:
        os.close(devnull)


def say(text: str) -> None:
    """A last line on stderr, if stderr still leads anywhere (after SIGHUP it may not)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        silence(sys.stderr)
