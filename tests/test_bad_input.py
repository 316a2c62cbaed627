"""Bad input gets a clear error, fast, with bounded memory (issue 12 §3).

Each test feeds the real CLI (a subprocess; the REPL in a pseudo-terminal) something hostile or
broken and checks for one short message and the documented exit code, never a traceback, a hang
or a memory blow-up. Servers that misbehave are played by the fake server over real HTTP.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(90)

#: Address space for a child whose memory must stay bounded: enough for Python and its imports,
#: far too little to hold a 1 GB file (the old code read it whole) or an endless /dev/zero.
MEMORY_LIMIT = 768 * 2**20


def run_limited(env: dict[str, str], *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`llmchat ARGS` with its address space capped and a wall-clock limit (a FIFO must not block it)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "llmchat", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


# ---------------------------------------------------------------------------------------------- images


@pytest.fixture
def hostile_files(tmp_path: Path) -> dict[str, str]:
    big = tmp_path / "huge.png"
    with big.open("wb") as file:
        file.truncate(2**30)  # sparse: 1 GB on paper, nothing on disk
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    return {"/dev/zero": "a device", str(big): "limited to 20 MB", str(fifo): "a FIFO", str(folder): "a directory"}


def test_ask_refuses_devices_fifos_huge_files_and_directories_before_reading(
        config_file, env, fake_server, hostile_files) -> None:
    for path, said in hostile_files.items():
        run = run_limited(env, "ask", "--image", path, "what is this?")
        assert run.returncode == 2, (path, run.stderr)
        assert said in run.stderr and path in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 2  # the message and what to do
    assert not fake_server.requests  # refused before anything was sent


def test_repl_image_of_a_device_or_fifo_is_a_message_and_the_chat_goes_on(repl, fake_server, hostile_files) -> None:
    chat = repl()
    for path, said in hostile_files.items():
        out = chat.command(f"/image {path}")
        assert said in out and "Traceback" not in out and not chat.eof, out
    assert "No images attached" in chat.command("/image")
    answer = chat.ask("still there?")
    assert answer.body["messages"][-1] == {"role": "user", "content": "still there?"}
    chat.enter("/exit")
    assert chat.wait_exit() == 0
