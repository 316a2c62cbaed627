"""The pipe view (DESIGN §4): stdout carries the answer exactly as streamed, and nothing else.

Scripts read stdout, so reasoning, status and the usage line go to stderr, and reasoning and usage
only when someone is there to read them (stderr is a terminal) or asked for them (`--usage`).
The same view draws `--plain` and NO_COLOR on a terminal: there the answer and reasoning are
sanitized (`safe_text`) piece by piece, and notices always are; a pipe gets the answer byte-exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from llmchat.core.events import TurnResult
from llmchat.core.pricing import Price
from llmchat.core.safe_text import is_terminal, sanitize
from llmchat.render.tools import call_line, outcome_line
from llmchat.render.usage import format_usage

if TYPE_CHECKING:
    from llmchat.core.tools import ToolCall, ToolRecord
    from llmchat.render import ThinkingMode

_DIM, _UNDIM = "\x1b[2m", "\x1b[22m"


class PlainView:
    """Writes answer pieces to stdout and flushes each, so a pipe sees text as soon as it exists.

    Args:
        thinking: "hide" drops reasoning; "show" and "collapse" both print it to stderr when allowed,
            since there is no live region to collapse.
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
    ) -> None:
        self._out = stdout
        self._err = stderr
        self._price = price
        err_tty = is_terminal(stderr)
        self._show_reasoning = thinking != "hide" and (show_usage is True or err_tty)
        self._show_usage = show_usage if show_usage is not None else err_tty
        if no_color is None:  # not given by make_view's Environment: the process's, by the same rule
            from llmchat.core.environment import Environment

            no_color = Environment.from_process().no_color
        self._dim = err_tty and not no_color
        self._clean_out = is_terminal(stdout)  # a pipe gets the answer exactly as streamed
        self._clean_err = err_tty
        self._answer_tail = ""  # last character written to stdout, to end the output with one newline
        self._err_line_open = False  # stderr is mid-line (reasoning without a final newline)
        self._closed = False

    def reasoning(self, text: str) -> None:
        if not self._show_reasoning or not text:
            return
        if self._clean_err:
            text = sanitize(text)
        self._err.write(f"{_DIM}{text}{_UNDIM}" if self._dim else text)
        self._err.flush()
        self._err_line_open = not text.endswith("\n")

    def answer(self, text: str) -> None:
        if not text:
            return
        self._end_err_line()
        self._out.write(sanitize(text) if self._clean_out else text)
        self._out.flush()
        self._answer_tail = text[-1]

    def notice(self, text: str) -> None:
        self._err_print(sanitize(text))  # a message, never data: sanitized wherever stderr goes

    def tool_call(self, call: ToolCall) -> None:
        """`⚙ name(args)` on stderr where the usage line would go (a terminal, or --usage): never stdout,
        which carries the answer alone."""
        if self._show_usage:
            self._err_print(sanitize(call_line(call)))  # a message, never data: sanitized wherever it goes

    def tool_done(self, record: ToolRecord) -> None:
        if self._show_usage:
            line = sanitize(outcome_line(record))
            self._err_print(f"{_DIM}{line}{_UNDIM}" if self._dim else line)

    def close(self, result: TurnResult) -> None:
        if self._closed:
            return
        self._closed = True
        if self._answer_tail and self._answer_tail != "\n":
            self._out.write("\n")
        self._out.flush()
        if result.interrupted:
            self._err_print("[interrupted]")
        if self._show_usage:
            line = sanitize(format_usage(result, self._price))  # the currency is text from the config
            if line:
                self._err_print(f"{_DIM}{line}{_UNDIM}" if self._dim else line)
        self._err.flush()

    def _err_print(self, line: str) -> None:
        self._end_err_line()
        self._err.write(line + "\n")
        self._err.flush()

    def _end_err_line(self) -> None:
        """Reasoning is separated from whatever follows on stderr by ending its line."""
        if self._err_line_open:
            self._err.write("\n")
            self._err.flush()
            self._err_line_open = False
