"""Drawing a turn: a live Markdown view for terminals, a plain one for pipes (DESIGN §1, §4).

The turn loop only sees `TurnView`; which view it gets is decided once, here, from the streams
and the environment, so no other code needs to know about terminals, colour or Rich. The views
import Rich on first use, which keeps `llmchat --help` and the pipe path light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

from llmchat.core.environment import Environment
from llmchat.core.events import TurnResult
from llmchat.core.pricing import Price
from llmchat.render.plain import PlainView

if TYPE_CHECKING:
    from llmchat.render.live import LiveView

__all__ = ["PlainView", "ThinkingMode", "TurnView", "make_view", "wants_plain"]

ThinkingMode = Literal["collapse", "show", "hide"]


class TurnView(Protocol):
    """Receives one turn as it streams; `close` is always called once, also after Ctrl-C or an error."""

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def close(self, result: TurnResult) -> None: ...


def wants_plain(stdout: TextIO, environment: Environment | None = None) -> bool:
    """Plain text when nobody sees colours: a pipe, NO_COLOR (any non-empty value), or TERM=dumb.

    The rule is `Environment.wants_plain`'s; without an Environment, it is asked of the process's."""
    return (environment or Environment.from_process()).wants_plain(stdout)


def make_view(
    *,
    plain: bool,
    thinking: ThinkingMode,
    show_usage: bool | None,
    price: Price | None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environment: Environment | None = None,
) -> TurnView:
    """The view for one turn.

    `show_usage=None` means the default for the view: always in the terminal view; in the plain
    view, reasoning and usage go to stderr only when stderr is a terminal. NO_COLOR and TERM come
    from `environment` (None: the process's).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if plain or wants_plain(out, environment):
        # colour only where the run's rule allows it on stderr: NO_COLOR and TERM=dumb get no escape codes
        no_color = not environment.color_for(err) if environment is not None else None
        return PlainView(out, err, thinking=thinking, show_usage=show_usage, price=price, no_color=no_color)
    return _live_view(out, thinking=thinking, show_usage=show_usage is not False, price=price)


def _live_view(out: TextIO, *, thinking: ThinkingMode, show_usage: bool, price: Price | None) -> LiveView:
    from llmchat.render.live import LiveView
    from llmchat.render.terminal import terminal_console

    console = terminal_console(out)
    return LiveView(console, thinking=thinking, show_usage=show_usage, price=price)
