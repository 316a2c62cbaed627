"""Did-you-mean: the one place that guesses which known name a mistyped one meant.

Every "unknown X" message (config keys and values, profile names, slash commands, `/set` settings,
batch row keys, command-line choices) goes through `closest`, so the cut-off and the wording are
the same everywhere. Standard library only: it is imported on the `--help` path.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike two names must be (difflib's ratio) to be suggested; 0.6 is difflib's own default.
CUTOFF = 0.6


def closest(word: str, choices: Iterable[str], *, cutoff: float = CUTOFF) -> str | None:
    """The known name nearest to `word`, or None when none is close enough to be worth suggesting."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = CUTOFF) -> str:
    """" Did you mean 'x'?" to append to a message, or "" when nothing is close."""
    near = closest(word, choices, cutoff=cutoff)
    return f" Did you mean '{near}'?" if near else ""
