"""The pipe view (DESIGN §4): stdout carries the answer exactly as streamed, and nothing else.

Scripts read stdout, so reasoning, status and the usage line go to stderr, and reasoning and usage
only when someone is there to read them (stderr is a terminal) or asked for them (`--usage`).
The same view draws `--plain`, NO_COLOR and TERM=dumb on a terminal: there the answer and reasoning
are sanitized (`safe_text`) piece by piece, and notices always are; a pipe gets the answer byte-exact.
On a terminal the view keeps its structure without colour: the reasoning is framed by "Thinking…" and
"…done thinking." (as `ollama run` frames it), a blank line parts it from the answer, and lines are
wrapped at spaces (`WordWrap`) instead of the terminal breaking words at its edge ("w / ill"). Colour
(dim reasoning and usage) only where `Environment.color_for(stderr)` allows it: never under NO_COLOR or
TERM=dumb, which get no escape sequence at all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from llmchat.core.events import TurnResult
from llmchat.core.pricing import Price
from llmchat.core.safe_text import is_terminal, sanitize
from llmchat.render.tools import call_line, outcome_line
from llmchat.render.usage import arrived, format_usage

if TYPE_CHECKING:
    from llmchat.core.tools import ToolCall, ToolRecord
    from llmchat.render import ThinkingMode

_DIM, _UNDIM = "\x1b[2m", "\x1b[22m"
#: How long answer text may wait in the buffer of a pipe before it is flushed (see `PlainView.answer`).
PIPE_FLUSH_S = 0.01
THINKING, DONE_THINKING = "Thinking…", "…done thinking."


def terminal_width(stream: TextIO, default: int = 80) -> int:
    """The width of the terminal `stream` writes to, as the terminal itself reports it."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or default
    except (OSError, AttributeError, ValueError):
        return default


class WordWrap:
    """Breaks streamed text into lines shorter than `width` columns at spaces, piece by piece.

    A word is written as soon as it arrives while it still fits the line; when it grows past the
    edge, the part already written is erased with backspaces (which even TERM=dumb understands) and
    the word moves to the next line. A word longer than a line is left to the terminal to break.
    """

    def __init__(self, width: int) -> None:
        # the last column is left empty: a cursor that reached it waits there to wrap, and a backspace
        # from that state lands one column short, on real terminals and pyte alike
        self.width = max(width - 1, 10)
        self.column = 0  # where the cursor is on the current line
        self.word = ""  # the word being written, already on screen

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if ch == "\n":
                out.append(ch)
                self.column, self.word = 0, ""
            elif ch in " \t":
                self.word = ""
                if self.column < self.width:
                    out.append(ch)
                    self.column += 1 if ch == " " else 8 - self.column % 8
            else:
                start = self.column - len(self.word)
                if self.column + 1 > self.width and start > 0 and len(self.word) + 1 <= self.width:
                    back = len(self.word)
                    out.append("\b" * back + " " * back + "\n" + self.word)
                    self.column = back
                elif self.column + 1 > self.width:
                    out.append("\n")  # a word as long as the line: the break falls where the edge is
                    self.column, self.word = 0, ""
                out.append(ch)
                self.word += ch
                self.column += 1
        return "".join(out)


def _timer(seconds: float, send: Callable[[], None]) -> None:
    timer = threading.Timer(seconds, send)
    timer.daemon = True  # never keeps the process alive: the turn's end sends what is held anyway
    timer.start()


class PlainView:
    """Writes answer pieces to stdout as they arrive: a terminal gets each piece flushed at once, a pipe
    at most every PIPE_FLUSH_S (see `answer`), and everything when the turn ends.

    Args:
        thinking: "hide" drops reasoning; "show" and "collapse" both print it to stderr when allowed,
            since there is no live region to collapse.
        clock: seconds, for the pipe's flush interval (a test's own clock).
        later: `later(seconds, send)` runs `send` once after `seconds` (default: a daemon `threading.Timer`;
            a test's own, to run it when the test says).
        show_usage: True/False force reasoning-and-usage on stderr on or off (False keeps reasoning
            when stderr is a terminal); None means only when stderr is a terminal.
    """

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        thinking: ThinkingMode = "collapse",
        show_usage: bool | None = None,
        price: Price | None = None,
        no_color: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self._out = stdout
        self._err = stderr
        self._price = price
        err_tty = is_terminal(stderr)
        self._show_reasoning = thinking != "hide" and (show_usage is True or err_tty)
        self._show_usage = show_usage if show_usage is not None else err_tty
        if no_color is None:  # not given by make_view's Environment: the process's, by the same rule
            from llmchat.core.environment import Environment

            no_color = not Environment.from_process().color_for(stderr)
        self._dim = err_tty and not no_color
        self._clean_out = is_terminal(stdout)  # a pipe gets the answer exactly as streamed
        self._clean_err = err_tty
        # on a terminal: words wrapped at the edge, the reasoning framed by labels (module doc)
        self._wrap_out = WordWrap(terminal_width(stdout)) if self._clean_out else None
        self._wrap_err = WordWrap(terminal_width(stderr)) if err_tty else None
        self._labels = err_tty
        self._thinking = False  # the "Thinking…" label is out and its end is not
        self._answer_tail = ""  # last character written to stdout, to end the output with one newline
        self._clock = clock
        self._flushed_at = -PIPE_FLUSH_S  # when stdout (a pipe) was last flushed; the first piece goes out at once
        self._held: list[str] = []  # answer pieces for a pipe not written yet (see `answer`)
        self._held_lock = threading.Lock()  # `_held` and its writing, shared with the timer that sends it
        self._later = later or _timer
        self._timer_armed = False  # a `later` is due to send what is held, if no piece sends it first
        self._timer_error: BaseException | None = None  # what the timer's write raised, raised here next
        self._err_line_open = False  # stderr is mid-line (reasoning without a final newline)
        self._closed = False

    def reasoning(self, text: str) -> None:
        if not self._show_reasoning or not text:
            return
        self.flush()
        if self._clean_err:
            text = sanitize(text)
        if self._labels and not self._thinking:
            self._thinking = True
            self._err.write(self._dimmed(THINKING) + "\n")
        if self._wrap_err is not None:
            text = self._wrap_err.feed(text)
        self._err.write(self._dimmed(text))
        self._err.flush()
        self._err_line_open = not text.endswith("\n")

    def answer(self, text: str) -> None:
        if not text:
            return
        if self._err_line_open or self._thinking:  # (checked here: this runs once per piece of a long answer)
            self._end_err_line()
            self._done_thinking(gap=True)
        self._answer_tail = text[-1]
        if self._clean_out:
            shown = sanitize(text)
            self._out.write(self._wrap_out.feed(shown) if self._wrap_out is not None else shown)
            self._out.flush()
            return
        # A pipe: a write and a flush are a system call each per piece (every write is one when Python runs
        # unbuffered, PYTHONUNBUFFERED), and a server at full speed sends thousands of pieces a second.
        # Pieces that arrive within PIPE_FLUSH_S of the last flush are held here until the next piece, any
        # other output or the end of the turn, or at the latest until a timer sends them PIPE_FLUSH_S
        # later (a server that sends a burst and then stalls must not keep its last words from the pipe);
        # a pipe still sees a model's text as it streams, and the first piece at once.
        with self._held_lock:
            self._held.append(text)
        now = self._clock()
        if now - self._flushed_at >= PIPE_FLUSH_S:
            self._flushed_at = now
            self.flush()
        elif not self._timer_armed:
            self._timer_armed = True
            self._later(PIPE_FLUSH_S, self._flush_late)

    def flush(self) -> None:
        """Send the answer text held back: before the turn saves its progress (so what a SIGKILL leaves
        saved was also printed), and before anything else is written (so everything keeps its order).
        What the timer's write raised (a pipe whose reader left) is raised here, in the turn's thread: looked
        at once the lock is taken, so a timer's write this flush waited for counts too."""
        with self._held_lock:
            if self._timer_error is not None:
                error, self._timer_error = self._timer_error, None
                raise error
            self._write_held()

    def _write_held(self) -> None:
        if self._held:
            held, self._held = "".join(self._held), []
            self._out.write(held)
            self._out.flush()

    def _flush_late(self) -> None:
        """The timer: send what is held; an error waits for the turn's next `flush` to be raised."""
        with self._held_lock:
            self._timer_armed = False
            try:
                self._write_held()
            except (OSError, ValueError) as exc:  # a closed pipe, a closed stream
                self._timer_error = exc

    def notice(self, text: str) -> None:
        self._err_print(sanitize(text))  # a message, never data: sanitized wherever stderr goes

    def tool_call(self, call: ToolCall) -> None:
        """`⚙ name(args)` on stderr where the usage line would go (a terminal, or --usage): never stdout,
        which carries the answer alone. The response so far is closed first: its reasoning frame, and its
        text's last line (the next response starts on a line of its own)."""
        self.flush()
        self._end_err_line()
        self._done_thinking(gap=False)
        if self._answer_tail and self._answer_tail != "\n":
            self._out.write(self._wrap_out.feed("\n") if self._wrap_out is not None else "\n")
            self._out.flush()
            self._answer_tail = "\n"
        if self._show_usage:
            self._err_print(sanitize(call_line(call)))  # a message, never data: sanitized wherever it goes

    def tool_done(self, record: ToolRecord) -> None:
        if self._show_usage:
            self._err_print(self._dimmed(sanitize(outcome_line(record))))

    def close(self, result: TurnResult) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._end_err_line()
        self._done_thinking(gap=False)
        if self._answer_tail and self._answer_tail != "\n":
            self._out.write("\n")
        self._out.flush()
        if result.interrupted:
            self._err_print("[interrupted]")
        if self._show_usage and arrived(result):  # nothing arrived (an error before any output): no "0.00s" line
            line = sanitize(format_usage(result, self._price))  # the currency is text from the config
            if line:
                self._err_print(self._dimmed(line))
        self._err.flush()

    def _dimmed(self, text: str) -> str:
        return f"{_DIM}{text}{_UNDIM}" if self._dim and text else text

    def _done_thinking(self, *, gap: bool) -> None:
        """Close the reasoning's frame: "…done thinking.", then a blank line before an answer."""
        if self._thinking:
            self._thinking = False
            self._err.write(self._dimmed(DONE_THINKING) + ("\n\n" if gap else "\n"))
            self._err.flush()

    def _err_print(self, line: str) -> None:
        self.flush()
        self._end_err_line()
        self._err.write(line + "\n")
        self._err.flush()

    def _end_err_line(self) -> None:
        """Reasoning is separated from whatever follows on stderr by ending its line."""
        if self._err_line_open:
            self._err.write("\n")
            self._err.flush()
            self._err_line_open = False
            if self._wrap_err is not None:
                self._wrap_err.feed("\n")
