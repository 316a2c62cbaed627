"""What the process was given: standard streams, whether each is a terminal, colour, environment variables.

Why one object: whether to draw colour, whether stdin is piped, which config file and profile to use,
the API key — all come from the process, and reading it in each module meant seven slightly different
ideas of "is this a terminal" and tests that had to swap `os.environ` and `sys.stdout` to steer them.
`Environment.from_process()` is called once, by `cli.app.main()`; everything below receives the object
(DESIGN §1), so an in-process test hands `main(argv, environment=...)` exactly what a child would see.
Standard library only: `llmchat --help` imports this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from llmchat.core.safe_text import is_terminal


@dataclass(frozen=True)
class Environment:
    """The standard streams and the environment variables of one run; read-only once built."""

    stdin: TextIO | None
    stdout: TextIO
    stderr: TextIO
    variables: Mapping[str, str] = field(default_factory=dict)
    #: The terminal to ask a question on (a tool call's approval) when stdin or stderr is redirected;
    #: None: there is none to open (an in-process test, which must never wait on the developer's terminal).
    tty: str | None = None

    @classmethod
    def from_process(cls) -> Environment:
        """The running process's streams and a snapshot of its variables: `main()` builds the run's with
        it, and the few fallbacks for a caller given none ask it, so the rules below are written once."""
        return cls(stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr, variables=dict(os.environ), tty="/dev/tty")

    def get(self, name: str, default: str | None = None) -> str | None:
        """An environment variable's value, or `default` when it is not set."""
        return self.variables.get(name, default)

    @property
    def stdin_is_terminal(self) -> bool:
        """True when nothing is piped in: a terminal, or no stdin at all (a closed descriptor)."""
        return self.stdin is None or is_terminal(self.stdin)

    @property
    def stdout_is_terminal(self) -> bool:
        return is_terminal(self.stdout)

    @property
    def stderr_is_terminal(self) -> bool:
        return is_terminal(self.stderr)

    @property
    def no_color(self) -> bool:
        """NO_COLOR set to any non-empty value (https://no-color.org)."""
        return bool(self.variables.get("NO_COLOR"))

    @property
    def dumb_terminal(self) -> bool:
        """TERM=dumb: a terminal that cannot move the cursor or draw colour."""
        return self.variables.get("TERM") == "dumb"

    @property
    def debug(self) -> bool:
        """LLMCHAT_DEBUG=1: internal errors keep their traceback."""
        return self.variables.get("LLMCHAT_DEBUG") == "1"

    def color_for(self, stream: TextIO | None) -> bool:
        """Whether `stream` may get colour: a terminal, and neither NO_COLOR nor TERM=dumb."""
        return is_terminal(stream) and not self.no_color and not self.dumb_terminal

    def wants_plain(self, stream: TextIO | None = None) -> bool:
        """Plain text on `stream` (default stdout) when nobody sees colours: a pipe, NO_COLOR or TERM=dumb."""
        return not self.color_for(self.stdout if stream is None else stream)
