"""Secrets taken out of what a tool returns, before it reaches the model, the screen or the history.

A tool's environment has no keys (tools.process.child_environment), but llmchat's own process holds
them, and a child can read its parent: `cat /proc/$PPID/environ` from `shell`, or a command tool or MCP
server printing what it was handed through `pass_env`. So every result is searched for the values of
the run's secret-looking variables (names ending in KEY, TOKEN, SECRET, PASSWORD, …, and each profile's
key variable) and of keys written inline in the config, and each occurrence becomes `[redacted]`.
Values shorter than 8 characters are left alone: they are not keys, and replacing them would garble
ordinary output. This is a last line of defence for the plain text of a key; a tool that encodes it
(base64, reversed) is not caught, which is why untrusted calls are shown and approved first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from llmchat.config.load import secret_looking

REDACTED = "[redacted]"
#: Shorter values are not redacted (a "1" or "true" under a secret-looking name is not a key).
MIN_SECRET = 8


def secret_values(variables: Mapping[str, str], hidden: Iterable[str] = (), inline: Iterable[str | None] = ()) \
        -> tuple[str, ...]:
    """The values to take out of results: secret-looking or `hidden` variables', and `inline` keys; longest
    first, so a key containing another is replaced whole."""
    hidden = set(hidden)
    values = {value for name, value in variables.items() if name in hidden or secret_looking(name)}
    values |= {value for value in inline if value}
    return tuple(sorted((v for v in values if len(v.strip()) >= MIN_SECRET), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `[redacted]`."""
    found = [s for s in secrets if s in text]
    if not found:
        return text
    return re.sub("|".join(re.escape(s) for s in found), REDACTED, text)
