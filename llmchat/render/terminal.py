"""The one Rich console every command draws with, so no writer can forget untrusted text (DESIGN §4).

Callers still sanitize text where it enters (`llmchat.core.safe_text.sanitize`), which keeps Rich's
layout exact; this console is the net under them:

- markup and emoji codes are off by default, so a model name like `[link=http://evil]bank[/link]`
  printed or put in a table cell is shown as written, never parsed into a hyperlink or a style;
- every string Rich turns into text (`print("…")`, table cells) is sanitized before layout;
- every `Text` (llmchat's own and the ones Rich builds, e.g. inside Markdown) holding a control
  character is replaced by a sanitized copy with the same styles before layout;
- any other segment still holding one (from a renderable that draws segments itself) is sanitized
  as it is written. Control segments (cursor moves, synchronized output) are llmchat's and Rich's
  own and pass untouched, as do styles: styling is never text.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from llmchat.core.safe_text import UNSAFE, sanitize
from llmchat.core.stops import BROKEN_PIPE_EXIT

if TYPE_CHECKING:
    from rich.console import ConsoleOptions, RenderableType

__all__ = ["SafeConsole", "sanitized_text", "terminal_console"]


class SafeConsole(Console):
    """A `Console` that never writes a terminal control it did not make itself."""

    def on_broken_pipe(self) -> None:
        """Stdout's reader went away (`llmchat history show last | head`): end quietly with 141, the status
        a turn's closed pipe gives (core/stops.py), where Rich's own handler says 1, as for a failure."""
        # Rich's own handler points stdout at /dev/null (so the interpreter's flush at exit cannot print
        # another error), then exits 1: keep the first, replace the second
        with contextlib.suppress(SystemExit):
            super().on_broken_pipe()
        raise SystemExit(BROKEN_PIPE_EXIT)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(sanitize(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        if isinstance(renderable, Text) and UNSAFE.search(renderable.plain):
            renderable = sanitized_text(renderable)
        for segment in super().render(renderable, options):
            if segment.control is None and UNSAFE.search(segment.text):
                yield Segment(sanitize(segment.text), segment.style)
            else:
                yield segment


def sanitized_text(text: Text) -> Text:
    """A copy of `text` with its characters sanitized and each span moved to where its text went."""
    plain = text.plain
    if not UNSAFE.search(plain):
        return text
    size = len(plain)
    spans = [(min(s.start, size), min(s.end, size), s.style) for s in text.spans]
    bounds = sorted({0, size, *(start for start, _, _ in spans), *(end for _, end, _ in spans)})
    starts: dict[int, int] = {}  # old offset -> new offset, at every span boundary
    clean: list[str] = []
    position = 0
    for start, end in itertools.pairwise(bounds):
        starts[start] = position
        piece = sanitize(plain[start:end])
        clean.append(piece)
        position += len(piece)
    starts[size] = position
    copy = Text("".join(clean), style=text.style, justify=text.justify, overflow=text.overflow,
                no_wrap=text.no_wrap, end=text.end, tab_size=text.tab_size)
    for start, end, style in spans:
        copy.stylize(style, starts[start], starts[end])
    return copy


def terminal_console(file: TextIO | None = None, *, stderr: bool = False, **options: Any) -> SafeConsole:
    """The console for a command's output: no markup, emoji codes or highlighting of untrusted text.

    `options` go to `Console` (e.g. `width`, `force_terminal` in tests); callers that print their own
    markup pass `markup=True` and must escape what they interpolate.
    """
    settings: dict[str, Any] = {"markup": False, "emoji": False, "highlight": False, **options}
    return SafeConsole(file=file, stderr=stderr, **settings)
