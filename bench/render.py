"""Rendering cost of `llmchat ask` in a real pseudo-terminal, against the same run piped.

Streams 2,000- and 20,000-token Markdown answers from the fake server at full speed through
`llmchat ask`, once with stdout on a pty (the live Markdown view) and once piped (plain text),
and prints the child's CPU seconds per 1,000 tokens. Targets (issue 4):
- linear: per-token cost at 20k within 1.3x of its cost at 2k;
- the terminal run within 3x of the piped run.
Startup (interpreter, imports, the request) is measured with a 20-token answer and subtracted, so
the numbers are the cost of streaming and drawing.

Usage: python bench/render.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from fakeserver import FakeServer, Stream  # noqa: E402
from markdown_corpus import markdown_answer, pieces  # noqa: E402


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_in_pty(cmd: list[str], env: dict[str, str], cols: int = 100, rows: int = 40) -> float:
    """Run `cmd` with a pty as its terminal, drain it, and return the child's CPU seconds."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execvpe(cmd[0], cmd, env)
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            if not os.read(fd, 65536):
                break
        except OSError:  # EIO: the child closed its side
            break
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed in the pty")
    os.close(fd)
    return _cpu(usage)


def run_piped(cmd: list[str], env: dict[str, str]) -> float:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    while proc.stdout.read(65536):
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed piped")
    return _cpu(usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with FakeServer() as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(f'[profiles.b]\nprovider = "openai"\nmodel = "qwen-plus"\nbase_url = "{server.url}/v1"\n')
        env = {**os.environ, "LLMCHAT_CONFIG": str(config), "HOME": tmp, "XDG_DATA_HOME": tmp,
               "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40", "NO_PROXY": "127.0.0.1"}
        env.pop("NO_COLOR", None)
        cmd = [sys.executable, "-m", "llmchat", "ask", "-p", "b", "--no-usage", "go"]

        def cost(tokens: int, runner) -> float:
            answer = markdown_answer(tokens)
            samples = []
            for _ in range(runs):
                server.enqueue(Stream(answer=answer, pieces=pieces(answer)))
                samples.append(runner(cmd, env))
            return statistics.median(samples)

        results = {}
        for mode, runner in (("terminal", run_in_pty), ("piped", run_piped)):
            base = cost(20, runner)
            for tokens in (2_000, 20_000):
                results[mode, tokens] = max(cost(tokens, runner) - base, 1e-9) / tokens * 1000
    print(f"CPU seconds per 1,000 tokens (median of {runs}, startup subtracted)")
    print(f"  {'':10} {'2k tokens':>10} {'20k tokens':>11} {'20k/2k':>8}")
    for mode in ("terminal", "piped"):
        small, large = results[mode, 2_000], results[mode, 20_000]
        print(f"  {mode:10} {small:10.4f} {large:11.4f} {large / small:8.2f}x")
    linear = results["terminal", 20_000] / results["terminal", 2_000]
    ratio = results["terminal", 20_000] / results["piped", 20_000]
    print(f"linearity (terminal, 20k vs 2k per token): {linear:.2f}x  target <= 1.3x: "
          f"{'ok' if linear <= 1.3 else 'OVER TARGET'}")
    print(f"terminal vs piped (20k): {ratio:.2f}x  target <= 3x: {'ok' if ratio <= 3 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
