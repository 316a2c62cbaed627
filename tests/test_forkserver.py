"""The tests' fork server (tests/forkserver.py) starts llmchat as `exec` would: the same runs agree.

Every pty and pipe test starts llmchat through the fork server unless it opts out; these compare a
forked run with an exec'd one directly, on what tests read: output, screen and exit status.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import forkserver
import pyte
import pytest
from fakeserver import Stream

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(60)

EXEC = {"LLMCHAT_TEST_SPAWN": "exec"}
_TIMINGS = re.compile(r"\d+(\.\d+)?(s|ms| tok/s)")


@pytest.fixture(autouse=True)
def forking_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the fork server: on even in a run that execs everything else."""
    monkeypatch.delenv("LLMCHAT_TEST_SPAWN", raising=False)


def _both(env: dict[str, str], *args: str, input: bytes | None = None) -> tuple[subprocess.CompletedProcess, ...]:
    argv = [sys.executable, "-m", "llmchat", *args]
    return tuple(forkserver.run(argv, env={**env, **extra}, input=input, capture_output=True, timeout=30)
                 for extra in ({}, EXEC))


def test_a_forked_and_an_execd_question_print_the_same(fake_server, config_file, env) -> None:
    forked, execd = _both(env, "ask", "hello there", "--no-save")
    assert forked.returncode == execd.returncode == 0
    assert forked.stdout == execd.stdout and b"hello there" in forked.stdout
    assert forked.stderr == execd.stderr


def test_piped_stdin_bad_input_and_its_exit_code_agree(fake_server, config_file, env) -> None:
    forked, execd = _both(env, "ask", "summarise", "--no-save", input=b"some piped text\n")
    assert forked.returncode == execd.returncode == 0 and forked.stdout == execd.stdout
    forked, execd = _both(env, "ask", "--no-such-option")
    assert forked.returncode == execd.returncode == 2
    assert forked.stderr == execd.stderr and b"--no-such-option" in forked.stderr


def _chat_screen(env: dict[str, str], fake_server) -> tuple[str, int]:
    screen = pyte.Screen(100, 30)
    stream = pyte.ByteStream(screen)
    child = forkserver.spawn(sys.executable, ["-m", "llmchat"], env={**env, "NO_COLOR": "1"}, dimensions=(30, 100),
                             timeout=20)
    raw = b""

    def until(text: bytes) -> None:
        nonlocal raw
        deadline = time.monotonic() + 20
        while text not in raw:
            assert time.monotonic() < deadline, raw
            try:
                data = child.read_nonblocking(65536, timeout=0.1)
            except Exception:  # pexpect.TIMEOUT, or EOF once the chat has ended
                if not child.isalive():
                    break
                continue
            raw += data
            stream.feed(data)

    until(b"\x1b[?2004h")
    fake_server.enqueue(Stream(answer="forty-two", delay=0.05))
    child.send("what is it?\r")
    until(b"forty-two")
    until(b"/help for commands)")  # the next prompt's placeholder
    child.sendcontrol("d")
    until(b"\x00never")  # read until the chat ends
    child.close()
    lines = "\n".join(line.rstrip() for line in screen.display).strip()
    return _TIMINGS.sub("N", re.sub(r":\d+", ":PORT", lines)), child.exitstatus


def test_a_forked_and_an_execd_chat_draw_the_same_screen(fake_server, repl_config, env) -> None:
    forked = _chat_screen(env, fake_server)
    execd = _chat_screen({**env, **EXEC}, fake_server)
    assert forked == execd
    assert "forty-two" in forked[0] and forked[1] == 0


def test_a_signal_by_pid_reaches_the_forked_child_and_its_status_comes_back(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="slow " * 50, delay=0.2))
    process = forkserver.Popen([sys.executable, "-m", "llmchat", "ask", "go"], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process._forked is not None  # the fork server ran it
    deadline = time.monotonic() + 20
    while not fake_server.chats and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 143, err  # 128 + SIGTERM, after keeping the answer so far
    assert b"Interrupted by SIGTERM." in err and b"[interrupted]" in err


def test_runs_whose_interpreter_starts_differently_are_execd(env) -> None:
    argv = [sys.executable, "-m", "llmchat", "--version"]
    assert forkserver.server_for(argv, env) is not None
    assert forkserver.server_for(argv, {**env, "PYTHONPROFILEIMPORTTIME": "1"}) is None
    assert forkserver.server_for(argv, {**env, **EXEC}) is None
    assert forkserver.server_for([sys.executable, "-X", "importtime", "-m", "llmchat"], env) is None
    assert forkserver.server_for(["/bin/sh", "-c", "llmchat"], env) is None
