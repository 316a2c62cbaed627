"""The in-process runner (`llmchat` fixture) is only worth having if it sees what a real process sees.

Each case runs the same command both ways, `cli.main(argv)` in this process and `python -m llmchat` in a
subprocess, and requires the same exit code, stdout and stderr; plus the process state the runner
borrows (environment, standard streams) is back as it was afterwards.
"""

from __future__ import annotations

import os
import sys

import pytest
from fakeserver import Raw


@pytest.mark.parametrize("case", [
    ("--help",),                      # Typer/click's own output
    ("ask", "hi"),                    # a turn: stdout, exit 0
    ("ask", "--no-such-option"),      # click's usage error, exit 2
    ("ask", "-m", "qwen3:14b", "hi"),  # our error paragraph, exit 1
    ("config", "show"),
], ids=" ".join)
def test_in_process_and_subprocess_runs_agree(fake_server, config_file, llmchat, llmchat_process, case) -> None:
    inside, outside = llmchat(*case), llmchat_process(*case)
    assert (inside.code, inside.stdout, inside.stderr) == (outside.code, outside.stdout, outside.stderr)


def test_piped_stdin_and_per_call_environment_reach_the_cli(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-p", "bailian", "summarise", input="piped text\n", DASHSCOPE_API_KEY="")
    assert run.code == 2 and "DASHSCOPE_API_KEY" in run.stderr  # the per-call variable won over the fixture's
    run = llmchat("ask", "summarise", input="piped text\n")
    assert run.code == 0 and run.stdout == "You said: summarise\n\npiped text\n"


def test_an_uncaught_exception_is_a_traceback_and_exit_1_as_in_a_process(fake_server, config_file, llmchat,
                                                                        llmchat_process) -> None:
    fake_server.enqueue(Raw(404, '{"error":"model \\"qwen3:14b\\" not found"}'))
    inside = llmchat("ask", "-m", "qwen3:14b", "hi", LLMCHAT_DEBUG="1")
    outside = llmchat_process("ask", "-m", "qwen3:14b", "hi", LLMCHAT_DEBUG="1")
    for run in (inside, outside):
        assert run.code == 1 and run.stderr.startswith("Traceback (most recent call last):"), run.stderr


def test_the_process_state_is_restored(fake_server, config_file, env, llmchat) -> None:
    before_env, before_streams = dict(os.environ), (sys.stdin, sys.stdout, sys.stderr)
    llmchat("ask", "hi", LLMCHAT_PROFILE="bailian", input="x")
    assert dict(os.environ) == before_env and "LLMCHAT_PROFILE" not in os.environ
    assert (sys.stdin, sys.stdout, sys.stderr) == before_streams
