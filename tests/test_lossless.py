"""Issue 12 §2: nothing said is lost, on any way out.

Real processes, real signals, a real pipe and a real pseudo-terminal against the fake server's paced
stream; afterwards the database is read with a separate connection, because what matters is what is
on disk when the process is gone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakeserver import Stream

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(60)

SLOW = dict(answer="word " * 400, piece_size=5, delay=0.02)  # 400 pieces, about 8 s


def db_path(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "llmchat" / "history.db"


def messages(env: dict[str, str]) -> list[tuple[Any, ...]]:
    """(position, role, content, interrupted) of every saved message, read by another connection."""
    db = sqlite3.connect(db_path(env))
    try:
        return db.execute("SELECT position, role, content, interrupted FROM messages "
                          "ORDER BY conversation, position").fetchall()
    finally:
        db.close()


def integrity(env: dict[str, str]) -> str:
    db = sqlite3.connect(db_path(env))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def start_ask(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "llmchat", "ask", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def assert_partial_saved(env: dict[str, str], question: str, received: str) -> str:
    """The question and the answer as far as it got, marked interrupted; returns the saved answer."""
    rows = messages(env)
    assert [(r[0], r[1]) for r in rows] == [(0, "user"), (1, "assistant")], rows
    assert rows[0][2] == question
    answer, interrupted = rows[1][2], rows[1][3]
    assert interrupted == 1
    assert answer.startswith(received) and 0 < len(answer) < len(SLOW["answer"])
    return answer


# ------------------------------------------------------------------------------- ask: signals, pipes


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_ask_killed_by_a_signal_saves_what_arrived(fake_server, config_file, env, signum, code) -> None:
    fake_server.enqueue(Stream(**SLOW))
    proc = start_ask(env, "hi")
    assert proc.stdout is not None
    first = proc.stdout.read(40)  # the answer is streaming
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=15)
    out, err_text = (first + rest).decode(), err.decode()
    assert proc.returncode == code, err_text
    assert "[interrupted]" in err_text and f"Interrupted by {signal.Signals(signum).name}." in err_text
    assert "Traceback" not in err_text and "Error" not in err_text
    saved = assert_partial_saved(env, "hi", first.decode())
    assert out.rstrip("\n") == saved  # what was printed is exactly what was saved
    assert integrity(env) == "ok"


def test_ask_into_a_closed_pipe_saves_and_exits_quietly(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    proc = start_ask(env, "hi")
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=15)
    assert proc.returncode == 141, err
    assert "Error" not in err and "Traceback" not in err and "Exception ignored" not in err, err
    assert_partial_saved(env, "hi", first.decode())
    assert integrity(env) == "ok"


def test_ask_through_head_in_a_shell(fake_server, config_file, env) -> None:
    """The way people write it: the shell sees head's output and llmchat's 141 (pipefail)."""
    fake_server.enqueue(Stream(**SLOW))
    run = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m llmchat ask hi | head -c 100"],
                         capture_output=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert run.stdout.decode() == SLOW["answer"][:100]
    assert run.returncode == 141 and run.stderr == b"", run.stderr
    assert_partial_saved(env, "hi", SLOW["answer"][:100])


# ------------------------------------------------------------------------------- the REPL: signals


def test_repl_sigterm_mid_answer_saves_and_exits_143(repl, fake_server, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    chat = repl()
    chat.enter("tell me")
    chat.wait_text("word word word")
    chat.child.kill(signal.SIGTERM)
    assert chat.wait_exit() == 143
    assert "Interrupted by SIGTERM." in chat.text() and "Traceback" not in chat.text()
    assert_partial_saved(env, "tell me", "word")


def test_repl_sigterm_at_the_prompt_exits_143(repl, fake_server, env) -> None:
    chat = repl()
    chat.ask("hello")
    chat.wait_prompt()
    chat.child.kill(signal.SIGTERM)
    assert chat.wait_exit() == 143
    assert "Traceback" not in chat.text()
    assert [r[:2] for r in messages(env)] == [(0, "user"), (1, "assistant")]


def test_repl_terminal_closed_mid_answer_saves_it(repl, fake_server, env) -> None:
    """Closing the terminal (the pty's master side) sends SIGHUP; the answer so far is saved."""
    fake_server.enqueue(Stream(**SLOW))
    chat = repl()
    chat.enter("tell me")
    chat.wait_text("word word word")
    os.close(chat.child.child_fd)  # the terminal window goes away
    deadline = time.monotonic() + 15
    while chat.child.isalive():
        assert time.monotonic() < deadline, "the REPL did not exit after its terminal closed"
        time.sleep(0.05)
    assert chat.child.exitstatus == 129, chat.child.signalstatus
    assert_partial_saved(env, "tell me", "word")
