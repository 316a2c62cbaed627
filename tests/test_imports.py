"""Nothing is imported that a command does not use (issue 18): checked on the child's `sys.modules`.

`llmchat --help` loads neither a provider's client nor Rich (Click's own help, not Typer's Rich
panels); a question to one provider loads no other provider's library; `--no-save` loads nothing
of the history store (sqlite3).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = ("import sys\nfrom llmchat.cli.app import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('MODULES', sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules "
         "if m.startswith('llmchat.')}))")


def modules(env: dict[str, str], *argv: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES"))
    return set(eval(line.removeprefix("MODULES ")))  # noqa: S307 (our own probe's repr of a list of names)


def test_help_loads_no_client_and_no_rich(env) -> None:
    loaded = modules(env, "--help")
    assert not loaded & {"openai", "ollama", "httpx", "httpx2", "rich", "markdown_it", "pygments", "prompt_toolkit"}


@pytest.mark.parametrize(("profile", "used", "unused"),
                         [("local", "ollama", "openai"), ("bailian", "openai", "ollama")])
def test_a_question_loads_only_its_provider_and_no_store_under_no_save(fake_server, config_file, env, profile: str,
                                                                       used: str, unused: str) -> None:
    loaded = modules(env, "ask", "-p", profile, "--no-save", "hi")
    assert used in loaded and unused not in loaded
    assert not loaded & {"sqlite3", "llmchat.store", "prompt_toolkit", "llmchat.repl", "llmchat.batch", "llmchat.tools"}
