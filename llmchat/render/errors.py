"""The one way an error reaches the user: a short paragraph on stderr (DESIGN §5).

Standard library only, so `cli.app.main()` (the only place errors become exit codes) and the REPL's
commands (which report and carry on) print the same thing without importing Rich or each other.
"""

from __future__ import annotations

from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError


def print_error(error: LlmchatError | str, hint: str | None = None, *, environment: Environment | None = None) -> None:
    """One short paragraph on stderr: what happened, then what to do.

    Messages quote servers and file names, so they are sanitized wherever stderr goes (DESIGN §4).
    """
    from llmchat.core.safe_text import sanitize

    message = sanitize(error.message if isinstance(error, LlmchatError) else error)
    hint = error.hint if isinstance(error, LlmchatError) else hint
    hint = sanitize(hint) if hint else hint
    environment = environment or Environment.from_process()  # the REPL's commands do not pass one yet
    color = environment.color_for(environment.stderr)
    label = "\x1b[1;31mError:\x1b[0m" if color else "Error:"
    text = f"{label} {message}"
    if hint:
        text += f"\n{hint}"
    print(text, file=environment.stderr, flush=True)
