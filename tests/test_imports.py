"""Nothing is imported that a command does not use (issue 18): checked on the child's `sys.modules`.

`llmchat --help` loads neither a provider's client nor Rich (Click's own help, not Typer's Rich
panels); a question to one provider loads no other provider's library; `--no-save` loads nothing
of the history store (sqlite3). And the garbage collector, held off while `llmchat` starts
(core/collector.py), runs again once it has.
"""

from __future__ import annotations

import gc
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


GC_PROBE = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('GC', gc.isenabled(), gc.get_freeze_count() > 0))\n"
            "sys.argv[0] = 'llmchat'\nfrom llmchat.__main__ import run\nrun()\n")


@pytest.mark.parametrize("argv", [("ask", "-p", "local", "--no-save", "hi"), ("batch", "PROMPTS", "-p", "local"),
                                  ("profiles",)])
def test_the_command_turns_the_garbage_collector_back_on_after_start_up(fake_server, config_file, env, tmp_path,
                                                                        argv: tuple[str, ...]) -> None:
    """core/collector: `llmchat` holds the collector off while it starts, then freezes what start-up made and
    turns it back on: a question or a batch once its client exists, any other command as it starts."""
    from fakeserver import Stream

    fake_server.enqueue(Stream(answer="Hi there"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n", encoding="utf-8")
    argv = tuple(str(prompts) if arg == "PROMPTS" else arg for arg in argv)
    proc = subprocess.run([sys.executable, "-c", GC_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "GC True True"



@pytest.mark.parametrize("argv", [(), ("hi there",), ("doctor",)], ids=["piped", "routed-question", "doctor"])
def test_every_way_in_turns_the_garbage_collector_back_on(fake_server, config_file, env, argv: tuple[str, ...]) -> None:
    """The bare `llmchat` answering piped text, a question routed to `ask` without the word, a command that
    makes its client itself (doctor): each reaches the release on its own path."""
    from fakeserver import Stream

    fake_server.enqueue(Stream(answer="Hi there"))
    proc = subprocess.run([sys.executable, "-c", GC_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=60, input="a question" if not argv else "")
    assert proc.stdout.splitlines()[-1] == "GC True True", proc.stdout + proc.stderr


def test_the_chat_turns_the_garbage_collector_back_on(fake_server, config_file, env) -> None:
    """The REPL, the longest-running command: a chat that ran with the collector off would grow with every
    turn's cyclic garbage. One question in a real pty, then /exit; the probe says what the collector was."""
    import pexpect
    from fakeserver import Stream

    fake_server.enqueue(Stream(answer="Hi there"))
    child = pexpect.spawn(sys.executable, ["-c", GC_PROBE], env={**env, "NO_COLOR": "1"}, encoding="utf-8",
                          dimensions=(40, 100), timeout=30)
    child.expect_exact("\x1b[?2004h")  # prompt-toolkit reads a line: the chat is at its prompt
    child.send("hi\r")
    child.expect_exact("Hi there")
    child.expect_exact("\x1b[?2004h")
    child.send("/exit\r")
    child.expect_exact("GC ")
    child.expect(pexpect.EOF)
    assert child.before.split()[:2] == ["True", "True"], child.before


def test_importing_llmchat_leaves_the_garbage_collector_alone() -> None:
    """Only the entry point holds the collector: the in-process CLI (the tests) runs with it as it was."""
    from llmchat.core import collector

    frozen = gc.get_freeze_count()
    collector.release()  # nothing held: a no-op
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_the_root_group_builds_each_command_when_it_is_first_looked_up() -> None:
    """cli/group.root_command: the same names in the same order as Typer's own group, and the same command
    once built (tidied for help), but only the commands a run looks up are built."""
    import typer
    import typer.main

    from llmchat.cli.app import app
    from llmchat.cli.group import root_command
    from llmchat.cli.help import tidy

    eager, lazy = tidy(typer.main.get_command(app)), tidy(root_command(app))
    assert list(lazy.commands) == list(eager.commands) and "ask" in lazy.commands
    assert [p.name for p in lazy.params] == [p.name for p in eager.params]
    assert lazy.commands.built == {}
    ctx = typer.Context(lazy)
    ask = lazy.get_command(ctx, "ask")
    assert set(lazy.commands.built) == {"ask"}
    assert [(p.name, p.metavar) for p in ask.params] == [(p.name, p.metavar) for p in eager.commands["ask"].params]
    assert lazy.get_command(ctx, "no-such-command") is None and set(lazy.commands.built) == {"ask"}
    assert lazy.list_commands(ctx) == list(eager.commands)  # --help: every one, built
    assert set(lazy.commands.built) == set(eager.commands)
