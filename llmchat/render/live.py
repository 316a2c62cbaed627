"""The terminal view: a bounded live region over scrollback that is written once.

Everything final (finished Markdown blocks, reasoning lines in "show" mode, the summary and usage
lines) is printed with `console.print`, which Rich places above the live region, so it reaches the
scrollback exactly once and is never redrawn. The live region only ever holds what can still
change (the open Markdown block or the recent reasoning) and is kept shorter than the screen,
because a `Live` taller than the screen duplicates what scrolls off (rendering.md §1.2–1.3).

Frames are drawn on change, at most `refresh_per_second`, from the caller's thread; a one-shot
timer draws the last change if the stream then goes quiet. Each frame is wrapped in synchronized
output (DEC mode 2026) so terminals that support it never show half a frame.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group
from rich.control import Control
from rich.live import Live
from rich.panel import Panel
from rich.segment import ControlType, Segment
from rich.text import Text

from llmchat.core import interrupts
from llmchat.core.events import TurnResult
from llmchat.core.pricing import Price
from llmchat.core.safe_text import sanitize
from llmchat.core.tools import ToolCall, ToolRecord
from llmchat.render.markdown_stream import ANSWER_MARKDOWN, MarkdownStream
from llmchat.render.tools import call_line, outcome_line
from llmchat.render.usage import arrived, format_seconds, usage_parts, wrap_fields

if TYPE_CHECKING:
    from rich.console import ConsoleOptions, RenderableType, RenderResult

    from llmchat.render import ThinkingMode

Clock = Callable[[], float]


def _raw_control(sequence: str) -> Control:
    """A control sequence Rich has no code for: written to terminals, dropped for files.

    Rich only skips segments for non-terminals when they carry a control code; BELL is one the
    legacy Windows renderer ignores, so the tag has no effect of its own.
    """
    control = Control()
    control.segment = Segment(sequence, None, [(ControlType.BELL,)])
    return control


_SYNC_BEGIN = _raw_control("\x1b[?2026h")
_SYNC_END = _raw_control("\x1b[?2026l")
_framing: weakref.WeakSet[Console] = weakref.WeakSet()  # consoles inside a `synchronized` block


@contextmanager
def synchronized(console: Console) -> Iterator[None]:
    """Buffer everything printed inside into one write, bracketed as one synchronized frame.

    A Ctrl-C (or SIGTERM) is held until the frame is written whole (`core.interrupts.held`): one landing
    halfway leaves Rich believing in a region shape the terminal does not show, and the next repaint
    or erase then misses lines (a panel border left behind, or the line above the region wiped out).
    Nested uses add nothing: the terminal's mode is a flag, so an inner end would end the outer frame.
    """
    if console in _framing:
        yield
        return
    with interrupts.held(), console:
        _framing.add(console)
        console.control(_SYNC_BEGIN)
        try:
            yield
        finally:
            console.control(_SYNC_END)
            _framing.discard(console)


class _Throttle:
    """Draws at most once per interval; a timer catches up a change that came in between.

    The interval stretches to ten times the last frame's cost (as aider's mdstream does), so a huge
    open block (a long table or code fence) slows the frame rate instead of eating the CPU.
    """

    def __init__(
        self, draw: Callable[[], None], lock: threading.RLock, interval: float, clock: Clock
    ) -> None:
        self._draw = draw
        self._lock = lock
        self._base = interval
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._dirty = False
        self._timer: threading.Timer | None = None
        self._stopped = False

    def changed(self) -> None:
        self._dirty = True
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            self.draw()
        elif self._timer is None and not self._stopped:
            self._timer = threading.Timer(wait, self._catch_up)
            self._timer.daemon = True
            self._timer.start()

    def drawn(self) -> None:
        """Something else (a print above the live region) already repainted it."""
        self._dirty = False
        self._last = self._clock()

    def draw(self) -> None:
        started = time.perf_counter()
        self._draw()
        cost = time.perf_counter() - started
        self._interval = self._base and min(max(self._base, 10 * cost), 1.0)
        self.drawn()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _catch_up(self) -> None:
        with self._lock:
            self._timer = None
            if self._dirty and not self._stopped:
                self.draw()


class _Lines:
    """Pre-rendered lines as a renderable (the tail of a longer text, cropped from the top)."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self._lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self._lines:
            yield from line
            yield Segment.line()


class _ThinkingPanel:
    """A dim panel with the last few wrapped lines of reasoning and how long it has been going."""

    def __init__(self, view: LiveView, lines: int) -> None:
        self._view = view
        self._lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = max(1, min(self._lines, options.size.height - 4))
        lines = _last_lines(
            console, options.update_width(max(1, options.max_width - 4)), self._view.preview, rows
        )
        title = Text(f"thinking… {format_seconds(self._view.thinking_seconds())}", style="dim")
        yield Panel(_Lines(lines), title=title, title_align="left", border_style="dim", box=box.ROUNDED)


class _PartialLine:
    """The reasoning line still being written in "show" mode; a line with no end stays bounded."""

    def __init__(self, view: LiveView) -> None:
        self._view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _Lines(_last_lines(console, options, self._view.partial, max(1, options.size.height - 2)))


def _last_lines(console: Console, options: ConsoleOptions, text: str, rows: int) -> list[list[Segment]]:
    """The last `rows` lines of `text` wrapped and dimmed, rendering only the end of a long text."""
    recent = Text(_recent(text, rows, options.max_width), style="dim")
    return console.render_lines(recent, options.update(height=None), pad=False)[-rows:]


def _recent(text: str, rows: int, width: int) -> str:
    """Enough of the end of `text` to fill `rows` wrapped lines, so a long reasoning costs nothing more."""
    cut = len(text)
    for _ in range(rows + 1):
        cut = text.rfind("\n", 0, cut)
        if cut < 0:
            break
    return text[max(cut + 1, len(text) - rows * width * 2) :]


class LiveView:
    """The terminal `TurnView`: thinking panel, streamed Markdown answer, usage line.

    Args:
        console: A terminal console; tests pass one writing to a StringIO with `force_terminal`.
        thinking: "collapse" shows a live panel that becomes a one-line summary when the answer
            starts, "show" prints the reasoning dim as it comes, "hide" prints none of it.
        show_usage: Print the usage line when the turn ends.
        refresh_per_second: Cap on live frames; 0 draws every change (for tests).
    """

    def __init__(
        self,
        console: Console,
        *,
        thinking: ThinkingMode = "collapse",
        show_usage: bool = True,
        price: Price | None = None,
        refresh_per_second: float = 12.0,
        thinking_lines: int = 6,
        clock: Clock = time.monotonic,
    ) -> None:
        self.console = console
        self._thinking = thinking
        self._show_usage = show_usage
        self._price = price
        self._clock = clock
        self._lock = threading.RLock()
        interval = 1 / refresh_per_second if refresh_per_second > 0 else 0.0
        self._commit_every = interval  # a commit repaints the region too: at most one a frame
        self._stream = MarkdownStream(console, printer=self._print, commit_every=interval, clock=clock,
                                      **ANSWER_MARKDOWN)
        self._panel = _ThinkingPanel(self, thinking_lines)
        self._partial = _PartialLine(self)
        self._throttle = _Throttle(self._refresh, self._lock, interval, clock)
        self._live: Live | None = None
        self._phase = "waiting"  # -> "reasoning" -> "answer" -> "closed"
        self.preview = ""  # recent reasoning for the panel, bounded
        self.partial = ""  # "show" mode: the reasoning line still being written
        self._thinking_from: float | None = None
        self._thinking_s: float | None = None
        self._printed = False

    # -- TurnView -----------------------------------------------------------------------------

    def reasoning(self, text: str) -> None:
        text = sanitize(text)  # before it becomes a renderable: layout and llmchat's styles stay exact
        with self._lock:
            if not text or self._thinking == "hide" or self._phase not in ("waiting", "reasoning"):
                return  # reasoning after the answer started is kept in the result, not drawn
            if self._phase == "waiting":
                self._phase = "reasoning"
                self._thinking_from = self._clock()
            if self._thinking == "show":
                self.partial += text
                if "\n" in self.partial:
                    done, _, self.partial = self.partial.rpartition("\n")
                    self._print(Text(done, style="dim"))
            else:
                self.preview += text
                if len(self.preview) > 32_768:
                    self.preview = self.preview[-16_384:]
            self._start_live()
            self._throttle.changed()

    def answer(self, text: str) -> None:
        text = sanitize(text)
        with self._lock:
            if not text or self._phase == "closed":
                return
            if self._phase != "answer":
                thinking = self._phase == "reasoning"
                self._phase = "answer"  # first, so the summary's repaint already shows the answer
                if thinking:
                    self._summarize(tokens=None, gap=True)
            self._start_live()
            self._stream.feed(text)
            self._throttle.changed()

    def notice(self, text: str) -> None:
        with self._lock:
            if self._phase != "closed":
                self._print(Text(sanitize(text), style="yellow"))

    def tool_call(self, call: ToolCall) -> None:
        """The model called a tool: what it wrote so far goes to the scrollback for good (the thinking
        summary, the answer's open block), the live region stops (an approval prompt may follow on this
        terminal), the `⚙ name(args)` line is printed, and the next response starts afresh."""
        with self._lock:
            if self._phase == "closed":
                return
            with synchronized(self.console):
                if self._phase == "reasoning":
                    self._summarize(tokens=None, gap=False)
                if self._live is not None:
                    self._live.stop()
                    self._live = None
                self._stream.finish()
                self._print(Text(sanitize(call_line(call)), style="bold cyan"))
            self._stream = MarkdownStream(self.console, printer=self._print, commit_every=self._commit_every,
                                          clock=self._clock, **ANSWER_MARKDOWN)
            self._phase = "waiting"
            self.preview = self.partial = ""
            self._thinking_from = self._thinking_s = None
            self.console.show_cursor(True)

    def tool_done(self, record: ToolRecord) -> None:
        """The call's outcome, dim, under its line."""
        with self._lock:
            if self._phase != "closed":
                self._print(Text(sanitize(outcome_line(record)), style="dim"))

    def close(self, result: TurnResult) -> None:
        """Finish the turn: stop the live region, print what is left, the marker and usage line.

        Runs in `finally`-like situations (Ctrl-C), so it restores the cursor whatever happens.
        """
        with self._lock:
            if self._phase == "closed":
                return
            self._throttle.stop()
            try:
                with synchronized(self.console):
                    thinking = self._phase == "reasoning"
                    self._phase = "closed"
                    if thinking:
                        self._summarize(tokens=result.usage.reasoning if result.usage else None, gap=False)
                    if self._live is not None:
                        self._live.stop()  # transient: the region is erased, then printed for good
                        self._live = None
                    self._stream.finish()
                    if result.interrupted:
                        self._print(Text("[interrupted]", style="bold red"))
                    # nothing arrived (an error before any output): no "0.00s" line before the error
                    parts = usage_parts(result, self._price) if self._show_usage and arrived(result) else []
                    if parts:
                        if self._printed:
                            self._print(Text())
                        self._print(Text(wrap_fields(parts, self.console.width), style="dim"))
            finally:
                self._phase = "closed"
                self.console.show_cursor(True)

    # -- internals ----------------------------------------------------------------------------

    def thinking_seconds(self) -> float:
        if self._thinking_s is not None:
            return self._thinking_s
        return 0.0 if self._thinking_from is None else self._clock() - self._thinking_from

    def _summarize(self, *, tokens: int | None, gap: bool) -> None:
        """Replace the thinking panel with a one-line summary (in "show" mode, after the text).

        Tokens are only known once the turn is over, so they appear here only when no answer came.
        """
        self._thinking_s = self.thinking_seconds()
        if self._thinking == "show" and self.partial:
            self._print(Text(self.partial, style="dim"))
            self.partial = ""
        summary = f"▸ thought for {format_seconds(self._thinking_s)}"
        if tokens is not None:
            summary += f" · {tokens:,} tokens"
        self._print(Text(summary, style="dim"))
        if gap:
            self._print(Text())

    def _renderable(self) -> RenderableType:
        if self._phase == "answer":
            return self._stream.tail
        if self._phase == "reasoning":
            return self._partial if self._thinking == "show" else self._panel
        return Group()

    def _start_live(self) -> None:
        if self._live is None:  # held: a Live half started stays registered with the console for good
            self._live = Live(
                console=self.console,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
                vertical_overflow="crop",
                get_renderable=self._renderable,
            )
            with interrupts.held():
                self._live.start()

    def _refresh(self) -> None:
        if self._live is not None:
            with synchronized(self.console):
                self._live.refresh()

    def _print(self, renderable: RenderableType) -> None:
        """Print above the live region; Rich repaints the region after it, so that counts as a frame."""
        with synchronized(self.console):
            self.console.print(renderable)
        self._printed = True
        if self._live is not None:
            self._throttle.drawn()
