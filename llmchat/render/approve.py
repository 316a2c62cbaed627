"""Asking the person whether a tool call may run (tools.md §3), on the terminal they are at.

The question goes to the terminal even when stdin is a pipe (`cat notes | llmchat ask …`): stdin then
holds data, so the answer is read from /dev/tty (`Environment.tty`). With no terminal at all the caller
gets None and uses the engine's `Nobody`, which declines. Everything shown (the tool's description,
the arguments the model wrote) is untrusted text, sanitized; the arguments are shown whole, as pretty
JSON, because they are exactly what will run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from llmchat.core.safe_text import is_terminal, sanitize
from llmchat.core.tools import Decision, ToolCall, ToolSpec

if TYPE_CHECKING:
    from llmchat.core.environment import Environment

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
QUESTION = "Run it? [y] yes, once · [a] always, this session · [n] no: "
REASON = "Reason for the model (optional, Enter for none): "


class TerminalApproval:
    """Asks on a terminal: `y` run once, `a` run and trust the tool for the session, `n` decline with an
    optional reason. Anything else asks again; end of input declines; Ctrl-C stops the turn."""

    def __init__(self, reader: TextIO, writer: TextIO, *, color: bool, owned: tuple[TextIO, ...] = ()) -> None:
        self._reader = reader
        self._writer = writer
        self._color = color
        self._owned = owned  # the /dev/tty handles this object opened, closed with it

    def ask(self, spec: ToolSpec, call: ToolCall, description: str) -> Decision:
        dim = (lambda text: f"{_DIM}{text}{_RESET}") if self._color else (lambda text: text)
        lines = [f"  {spec.name} ({spec.source})" + (f": {spec.description}" if spec.description else "")]
        if description:
            lines += [f"  {line}" for line in description.splitlines()]
        if call.arguments:
            shown = json.dumps(dict(call.arguments), indent=2, ensure_ascii=False)
            lines += [f"  {line}" for line in shown.splitlines()]
        self._write("\n".join(dim(sanitize(line)) for line in lines) + "\n")
        with self._answering():
            return self._decide()

    def _decide(self) -> Decision:
        while True:
            answer = self._read(QUESTION)
            if answer is None:
                self._write("\n")
                return Decision(run=False)
            choice = answer.strip().lower()
            if choice in ("y", "yes"):
                return Decision(run=True)
            if choice in ("a", "always"):
                return Decision(run=True, always=True)
            if choice in ("n", "no"):
                reason = self._read(REASON)
                return Decision(run=False, reason=(reason or "").strip() or None)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """The terminal as a person answers on it: echo and line editing on (the chat turns them off while a
        turn runs, to keep type-ahead), and whatever was typed before the question was shown discarded, so
        keys pressed while the answer streamed can never approve a call."""
        try:
            import termios

            fd = self._reader.fileno()
            saved = termios.tcgetattr(fd)
        except (ImportError, OSError, ValueError, AttributeError):
            yield  # not a terminal: nothing typed ahead, nothing to switch
            return
        mode = termios.tcgetattr(fd)
        mode[3] |= termios.ECHO | termios.ICANON
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        if _pending(fd):
            termios.tcflush(fd, termios.TCIFLUSH)
            self._write("  (what was typed before this question is discarded: answer now)\n")
        try:
            yield
        finally:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSANOW, saved)

    def close(self) -> None:
        for handle in self._owned:
            with contextlib.suppress(OSError):
                handle.close()
        self._owned = ()

    def _write(self, text: str) -> None:
        self._writer.write(text)
        self._writer.flush()

    def _read(self, prompt: str) -> str | None:
        """One line after `prompt`; None at end of input."""
        self._write(f"{_BOLD}{prompt}{_RESET}" if self._color else prompt)
        line = self._reader.readline()
        return line if line else None


def _pending(fd: int) -> int:
    """Bytes typed on the terminal and not read yet (FIONREAD); 0 when it cannot be told."""
    try:
        import array
        import fcntl
        import termios

        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]
    except (ImportError, OSError):
        return 0


def terminal_approval(environment: Environment) -> TerminalApproval | None:
    """The approval for this run: on stdin and stderr when both are the terminal, else on the terminal
    itself (`environment.tty`, /dev/tty) when it can be opened; None when there is no terminal."""
    color = not environment.no_color and not environment.dumb_terminal
    if environment.stdin is not None and is_terminal(environment.stdin) and is_terminal(environment.stderr):
        return TerminalApproval(environment.stdin, environment.stderr, color=color)
    if environment.tty is None:
        return None
    try:  # two handles: a terminal is not seekable, so it cannot be opened "r+" in text mode
        reader = open(environment.tty, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by close())
    except OSError:  # no controlling terminal (a service, CI, `setsid`): nobody to ask
        return None
    try:
        writer = open(environment.tty, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        reader.close()
        return None
    return TerminalApproval(reader, writer, color=color, owned=(reader, writer))
