"""How one run of a command is measured: wall time, CPU time and peak RSS of the child process.

Piped (stdout a pipe, drained as fast as it comes) or in a pseudo-terminal of 100x40 (the live
Markdown view), and the chat in a pty with a screen that answers prompt-toolkit's cursor queries.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from typing import Any

COLS, ROWS = 100, 40
PROMPT_READY = "\x1b[?2004h"  # prompt-toolkit switches bracketed paste on each time it reads a line


@dataclass(frozen=True)
class Run:
    wall: float  # ms
    cpu: float  # ms, user + system, of the child
    rss: float  # MB, peak resident set of the child


def _measured(pid: int, started: float, what: str) -> Run:
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter() - started) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{what} failed (exit {os.waitstatus_to_exitcode(status)})")
    return Run(wall=wall, cpu=(usage.ru_utime + usage.ru_stime) * 1000, rss=usage.ru_maxrss / 1024)


def run_piped(cmd: list[str], env: dict[str, str]) -> Run:
    """`cmd` with stdout a pipe read to the end, stdin /dev/null."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    while proc.stdout.read(65536):
        pass
    proc.stdout.close()
    return _measured(proc.pid, started, " ".join(cmd[:5]))


def run_pty(cmd: list[str], env: dict[str, str]) -> Run:
    """`cmd` with a 100x40 pseudo-terminal as its terminal, drained as fast as it writes."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # child
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        os.execvpe(cmd[0], cmd, env)
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            if not os.read(fd, 65536):
                break
        except OSError:  # EIO: the child closed its side
            break
    run = _measured(pid, started, " ".join(cmd[:5]) + " in a pty")
    os.close(fd)
    return run


def chat_first_answer(cmd: list[str], env: dict[str, str], server: Any, typing: float = 1.0) -> tuple[float, float]:
    """Ms from the start to the prompt, and from Enter to the answer's text on screen, for the chat's
    first question.

    The chat starts in a pty; once its prompt shows, `typing` seconds pass (a person typing the
    question) before Enter. What the first answer waits for after Enter is what was not done while
    the person typed: imports, the client, the request.
    """
    import pexpect
    import pyte
    from fakeserver import Stream

    class Screen(pyte.Screen):
        def write_process_input(self, data: str) -> None:
            child.send(data)

    launched = time.perf_counter()
    child = pexpect.spawn(cmd[0], cmd[1:], env={**env, "NO_COLOR": "1"}, dimensions=(ROWS, COLS), encoding="utf-8",
                          codec_errors="replace", timeout=30)
    child.delaybeforesend = None
    screen = Screen(COLS, ROWS)
    stream = pyte.Stream(screen)
    raw = ""

    def until(ready: Any, timeout: float = 30) -> None:
        nonlocal raw
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise SystemExit(f"the chat did not get there; screen:\n{chr(10).join(screen.display)}")
            try:
                data = child.read_nonblocking(65536, timeout=0.01)
            except pexpect.TIMEOUT:
                continue
            raw += data
            stream.feed(data)

    try:
        until(lambda: PROMPT_READY in raw)
        prompted = (time.perf_counter() - launched) * 1000
        typed = time.monotonic() + typing
        until(lambda: time.monotonic() >= typed)  # keeps reading: cursor queries are answered meanwhile
        server.enqueue(Stream(answer="Hi there", pieces=["Hi", " there"]))
        mark = len(raw)
        started = time.perf_counter()
        child.send("hello\r")
        until(lambda: "Hi there" in raw[mark:])
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        if child.isalive():
            child.terminate(force=True)
    return prompted, elapsed
