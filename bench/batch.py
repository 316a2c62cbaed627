"""Batch throughput: 200 prompts whose answers each take 1 s on the test server, at concurrency 16.

The ideal is 200 × 1 s / 16 = 12.5 s; issue 9 asks for at most 1.15× that. The number is measured the
way a user meets it: the wall time of a whole `llmchat batch` process (interpreter start, imports, the
run and the final write), against the fake server running in its own process so the two never share
a GIL. Each answer is 10 one-character pieces 0.1 s apart, so every stream lasts 1 s.

The fake server is started with a listen backlog of 128 instead of socketserver's 5. With 5, a burst of
16 connects overflows the accept queue and the kernel retries the dropped SYNs 1 s later (measured: rows
of 2 s, some reset), which would time the test server's accept queue, not llmchat. Real servers listen
with SOMAXCONN (Ollama through Go's net.Listen; DashScope behind a load balancer).

Before `llmchat batch` is wired into the CLI, the same `run_batch` is called from `python -c`.
The output is checked too: every row present, in input order, without an error.

Usage: python bench/batch.py [--rows 200] [--concurrency 16] [--profiles local bailian]
Exit status 1 when a ratio exceeds 1.15 or the output is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1.15
ANSWER = "0123456789"  # 10 pieces of one character
PIECE_DELAY = 0.1  # 9 gaps between pieces + 1 before the final chunk: 1.0 s per answer
DRIVER = (
    "import sys\nfrom llmchat.batch.runner import run_batch\nfrom llmchat.config.session import Overrides\n"
    "sys.exit(run_batch(Overrides(profile=sys.argv[1]), sys.argv[2], output=sys.argv[3], "
    "concurrency=int(sys.argv[4]), resume=False, fmt=None))"
)


SERVER = (
    "import sys\nsys.path.insert(0, sys.argv[1])\nimport fakeserver\n"
    "fakeserver._HTTPServer.request_queue_size = BACKLOG\nsys.exit(fakeserver.main(sys.argv[2:]))"
)
BACKLOG = 128


def start_server() -> tuple[subprocess.Popen[str], str]:
    """tests/fakeserver.py in its own process, with a real server's listen backlog (see above)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.replace("BACKLOG", str(BACKLOG)), str(ROOT / "tests"),
         "--delay", str(PIECE_DELAY), "--piece-size", "1", "--answer", ANSWER],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def write_config(directory: Path, url: str) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[profiles.local]\nprovider = "ollama"\nmodel = "qwen3:0.6b"\nbase_url = "{url}"\n\n'
        f'[profiles.bailian]\nprovider = "bailian"\nmodel = "qwen-plus"\nbase_url = "{url}/compatible-mode/v1"\n',
        encoding="utf-8",
    )
    return path


def cli_has_batch(env: dict[str, str]) -> bool:
    proc = subprocess.run([sys.executable, "-m", "llmchat", "batch", "--help"], env=env, capture_output=True,
                          stdin=subprocess.DEVNULL)
    return proc.returncode == 0


def run_once(profile: str, prompts: Path, output: Path, concurrency: int, env: dict[str, str],
             use_cli: bool) -> float:
    """Wall time of one whole batch process, in seconds."""
    if use_cli:
        cmd = [sys.executable, "-m", "llmchat", "batch", str(prompts), "-o", str(output), "-p", profile,
               "--concurrency", str(concurrency)]
    else:
        cmd = [sys.executable, "-c", DRIVER, profile, str(prompts), str(output), str(concurrency)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"batch failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def check_output(output: Path, rows: int) -> str | None:
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    if [r["id"] for r in records] != list(range(1, rows + 1)):
        return "rows missing or out of order"
    if any(r["error"] is not None or r["answer"] != ANSWER for r in records):
        return "a row failed or has the wrong answer"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profiles", nargs="+", default=["local", "bailian"])
    args = parser.parse_args()

    server, url = start_server()
    ok = True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            env = {**os.environ, "LLMCHAT_CONFIG": str(write_config(directory, url)), "DASHSCOPE_API_KEY": "sk-bench",
                   "XDG_DATA_HOME": str(directory / "data"), "NO_PROXY": "127.0.0.1,localhost"}
            for name in ("OLLAMA_HOST", "LLMCHAT_PROFILE", "LLMCHAT_TIMEOUT", "HTTP_PROXY", "HTTPS_PROXY",
                         "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "PYTHONUNBUFFERED"):
                env.pop(name, None)
            prompts = directory / "prompts.txt"
            prompts.write_text("".join(f"Question number {n}?\n" for n in range(1, args.rows + 1)), encoding="utf-8")
            use_cli = cli_has_batch(env)
            ideal = args.rows * 1.0 / args.concurrency
            print(f"{args.rows} prompts × 1 s each, concurrency {args.concurrency}: ideal {ideal:.2f} s; "
                  f"limit {LIMIT}× = {ideal * LIMIT:.2f} s; via {'llmchat batch' if use_cli else 'run_batch'}")
            print(f"{'profile':<10}{'wall s':>9}{'ratio':>8}  result")
            for profile in args.profiles:
                output = directory / f"{profile}.jsonl"
                elapsed = run_once(profile, prompts, output, args.concurrency, env, use_cli)
                ratio = elapsed / ideal
                problem = check_output(output, args.rows)
                verdict = problem or ("ok" if ratio <= LIMIT else f"too slow (> {LIMIT}×)")
                ok = ok and problem is None and ratio <= LIMIT
                print(f"{profile:<10}{elapsed:>9.2f}{ratio:>8.3f}  {verdict}")
    finally:
        server.terminate()
        server.wait(timeout=5)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
