"""Startup cost: `llmchat --help` and `llmchat ask` next to the baselines they cannot beat.

Measured in one run, against the project's fake server, so the numbers compare like with like:
- `python -c pass` (the interpreter alone);
- a minimal raw `openai` streaming script and a minimal raw `ollama` one (the client's own cost);
- `llmchat --help` and `llmchat ask` on each provider (ours on top).
Target (issue 2): `llmchat ask` overhead over the raw script <= 150 ms.

Usage: python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW_OPENAI = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-bench", max_retries=0)
stream = client.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        sys.stdout.write(chunk.choices[0].delta.content)
"""
RAW_OLLAMA = """
import sys, ollama
client = ollama.Client(host=sys.argv[1])
for chunk in client.chat(model="qwen3:0.6b", messages=[{"role": "user", "content": "hi"}], stream=True):
    sys.stdout.write(chunk.message.content or "")
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakeserver.py")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def timed(cmd: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time in ms over `runs` runs (after one warm-up run to fill the OS file cache)."""
    samples = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                       check=True)
        if i:
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text(
                f'[profiles.local]\nprovider = "ollama"\nmodel = "qwen3:0.6b"\nbase_url = "{url}"\n'
                f'[profiles.oai]\nprovider = "openai"\nmodel = "qwen-plus"\nbase_url = "{url}/v1"\n'
            )
            env = {**os.environ, "LLMCHAT_CONFIG": str(config), "HOME": tmp, "XDG_DATA_HOME": tmp,
                   "NO_PROXY": "127.0.0.1"}
            llmchat = [sys.executable, "-m", "llmchat"]
            rows = [
                ("python -c pass", timed([sys.executable, "-c", "pass"], env, runs)),
                ("llmchat --help", timed([*llmchat, "--help"], env, runs)),
                ("raw openai script", timed([sys.executable, "-c", RAW_OPENAI, url], env, runs)),
                ("llmchat ask (openai)", timed([*llmchat, "ask", "-p", "oai", "hi"], env, runs)),
                ("raw ollama script", timed([sys.executable, "-c", RAW_OLLAMA, url], env, runs)),
                ("llmchat ask (ollama)", timed([*llmchat, "ask", "-p", "local", "hi"], env, runs)),
            ]
    finally:
        server.terminate()
        server.wait()
    times = dict(rows)
    print(f"median of {runs} runs, wall time (ms)")
    for name, ms in rows:
        print(f"  {name:<22} {ms:8.1f}")
    for provider in ("openai", "ollama"):
        ours, raw = times[f"llmchat ask ({provider})"], times[f"raw {provider} script"]
        verdict = "ok" if ours - raw <= 150 else "OVER TARGET"
        print(f"llmchat ask ({provider}) overhead over raw script: {ours - raw:+.1f} ms "
              f"(ratio {ours / raw:.2f}x; target <= +150 ms: {verdict})")
    print(f"llmchat --help over bare python: {times['llmchat --help'] - times['python -c pass']:+.1f} ms "
          f"(ratio {times['llmchat --help'] / times['python -c pass']:.2f}x)")


if __name__ == "__main__":
    main()
