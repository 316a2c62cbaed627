"""Every row of issue 18, as a ratio against a raw-SDK baseline measured in the same run.

    python -m bench [--runs N] [--quick]

Against the project's fake server (tests/fakeserver.py) at unlimited speed, both providers (Ollama's
native /api/chat and the OpenAI-compatible wire as Bailian speaks it). Each number is the minimum of
N runs (default 5), taken alternately for llmchat and its baseline, so a noisy neighbour on a shared
machine inflates both sides of a ratio alike rather than one. The baselines are the smallest scripts
that use each SDK the documented way (`raw_scripts`), in a fresh interpreter like `llmchat`, both with
Python's default buffering (PYTHONUNBUFFERED is removed from the environment).

Rows and targets (issue 18):
- one-shot question (2-token answer), wall time: <= 1.05x the raw SDK script;
- 2,000 tokens piped: <= 1.0x; 20,000 tokens piped: <= 0.5x (Bailian), <= 0.9x (Ollama);
- 20,000 tokens in a 100x40 terminal, CPU: <= 2.0x the piped run, linear (per-token cost at 20k
  within 1.3x of 2k, startup subtracted);
- peak RSS with 20,000 tokens: <= 50 MB;
- `llmchat --help` <= 150 ms;
- the chat's first question does not wait for imports: start to prompt, and Enter to the answer's text
  after a second of typing, next to the raw SDK's whole one-shot question;
- batch: 200 prompts x 1 s at concurrency 16 within 1.1x of ideal (bench/batch.py; skipped by --quick).
Exit status 1 when a row misses its target.
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from bench_runs import Run, chat_first_answer, run_piped, run_pty  # noqa: E402
from fakeserver import FakeServer, Stream  # noqa: E402
from markdown_corpus import markdown_answer, pieces  # noqa: E402
from raw_scripts import RAW_OLLAMA, RAW_OPENAI  # noqa: E402

PROVIDERS = {"ollama": "local", "bailian": "bailian"}  # provider -> profile name in the bench config


@dataclass
class Row:
    name: str
    ours: float
    base: float | None
    unit: str
    target: str
    ok: bool
    cpu: float | None = None  # the same two runs' CPU time ratio: steadier than wall time on a busy machine

    def line(self) -> str:
        ratio = f"{self.ours / self.base:6.2f}x" if self.base else "       "
        base = f"{self.base:9.1f}" if self.base is not None else " " * 9
        cpu = f"{self.cpu:6.2f}x" if self.cpu is not None else "       "
        verdict = "ok" if self.ok else "MISSED"
        return (f"  {self.name:<52} {self.ours:9.1f} {base} {self.unit:<4} {ratio} {cpu}  {self.target:<14} "
                f"{verdict}")


def write_config(directory: Path, url: str) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[profiles.local]\nprovider = "ollama"\nmodel = "qwen3:0.6b"\nbase_url = "{url}"\n\n'
        f'[profiles.bailian]\nprovider = "bailian"\nmodel = "qwen-plus"\nbase_url = "{url}/compatible-mode/v1"\n',
        encoding="utf-8",
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the batch row (about 30 s)")
    args = parser.parse_args()
    runs = args.runs
    rows: list[Row] = []
    # As pip installs it: compiled. Without this, under PYTHONDONTWRITEBYTECODE every run of llmchat would
    # compile its modules from source while the SDKs' (compiled at install) would not.
    compileall.compile_dir(ROOT / "llmchat", quiet=1)
    with FakeServer() as server, tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        env = {**os.environ, "LLMCHAT_CONFIG": str(write_config(directory, server.url)), "HOME": tmp,
               "XDG_DATA_HOME": str(directory / "data"), "XDG_CONFIG_HOME": str(directory / "config"),
               "DASHSCOPE_API_KEY": "sk-bench", "NO_PROXY": "127.0.0.1,localhost",
               "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
        # PYTHONUNBUFFERED too (some sandboxes and CI set it): with it, every write of a raw script is a system
        # call, which makes the baselines slower than a user's shell would run them.
        for name in ("OLLAMA_HOST", "LLMCHAT_PROFILE", "LLMCHAT_TIMEOUT", "NO_COLOR", "HTTP_PROXY", "HTTPS_PROXY",
                     "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "PYTHONUNBUFFERED"):
            env.pop(name, None)
        llmchat = [sys.executable, "-m", "llmchat"]
        raw = {"ollama": [sys.executable, "-c", RAW_OLLAMA, server.url],
               "bailian": [sys.executable, "-c", RAW_OPENAI, f"{server.url}/compatible-mode/v1"]}

        def ask(provider: str, *extra: str) -> list[str]:
            return [*llmchat, "ask", "-p", PROVIDERS[provider], "--no-save", "--no-usage", *extra, "go"]

        def piped(cmd: list[str], answer: str) -> Run:
            server.enqueue(Stream(answer=answer, pieces=pieces(answer)))
            return run_piped(cmd, env)

        def pair(cmd: list[str], base: list[str], answer: str) -> tuple[Run, Run]:
            """min-of-N of llmchat and of its baseline, interleaved run by run."""
            ours, theirs = [], []
            for _ in range(runs):
                ours.append(piped(cmd, answer))
                theirs.append(piped(base, answer))
            return _min(ours), _min(theirs)

        tokens_runs: dict[tuple[str, int], tuple[Run, Run]] = {}
        for provider in ("ollama", "bailian"):
            ours, theirs = tokens_runs[provider, 2] = pair(ask(provider), raw[provider], "Hi there")
            rows.append(Row(f"one-shot question (2 tokens), {provider}", ours.wall, theirs.wall, "ms",
                            "<= 1.05x", ours.wall <= 1.05 * theirs.wall, ours.cpu / theirs.cpu))
        for tokens in (2_000, 20_000):
            answer = markdown_answer(tokens)
            for provider in ("ollama", "bailian"):
                ours, theirs = tokens_runs[provider, tokens] = pair(ask(provider), raw[provider], answer)
                limit = 1.0 if tokens == 2_000 else (0.5 if provider == "bailian" else 0.9)
                rows.append(Row(f"{tokens:,} tokens piped, {provider}", ours.wall, theirs.wall, "ms",
                                f"<= {limit}x", ours.wall <= limit * theirs.wall, ours.cpu / theirs.cpu))
        for provider in ("ollama", "bailian"):
            ours, theirs = tokens_runs[provider, 20_000]
            rows.append(Row(f"peak RSS, 20,000 tokens, {provider}", ours.rss, theirs.rss, "MB", "<= 50 MB",
                            ours.rss <= 50))

        # The terminal: CPU seconds of the whole process, rendered in a pty against the same run piped.
        for provider in ("ollama", "bailian"):
            cpu = {}
            for tokens in (20, 2_000, 20_000):
                answer = markdown_answer(tokens)
                command = ask(provider)
                cpu["pty", tokens] = _min([_enqueued(server, answer, lambda c=command: run_pty(c, env))
                                           for _ in range(runs)]).cpu
                cpu["pipe", tokens] = _min([piped(command, answer) for _ in range(runs)]).cpu
            ratio_ok = cpu["pty", 20_000] <= 2.0 * cpu["pipe", 20_000]
            rows.append(Row(f"20,000 tokens in a 100x40 terminal, {provider}", cpu["pty", 20_000],
                            cpu["pipe", 20_000], "ms", "<= 2.0x piped", ratio_ok))
            small = (cpu["pty", 2_000] - cpu["pty", 20]) / 1_980
            large = (cpu["pty", 20_000] - cpu["pty", 20]) / 19_980
            rows.append(Row(f"  terminal CPU per 1k tokens, 20k vs 2k, {provider}", large * 1000, small * 1000,
                            "ms", "<= 1.3x", large <= 1.3 * small))

        bare = _min([_timed([sys.executable, "-c", "pass"], env) for _ in range(runs)])
        helped = _min([_timed([*llmchat, "--help"], env) for _ in range(runs)])
        rows.append(Row("llmchat --help (base: python -c pass)", helped.wall, bare.wall, "ms", "<= 150 ms",
                        helped.wall <= 150))

        for provider in ("ollama", "bailian"):
            chats = [chat_first_answer([*llmchat, "-p", PROVIDERS[provider], "--no-save"], env, server)
                     for _ in range(runs)]
            prompt, first = min(c[0] for c in chats), min(c[1] for c in chats)
            one_shot = tokens_runs[provider, 2][1]
            rows.append(Row(f"chat: start to prompt (base: raw SDK question), {provider}", prompt, one_shot.wall,
                            "ms", "< 1.0x", prompt < one_shot.wall))
            rows.append(Row(f"chat: Enter to answer (base: raw SDK question), {provider}", first, one_shot.wall,
                            "ms", "< 0.5x", first < 0.5 * one_shot.wall))

    if not args.quick:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "batch.py")], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("local", "bailian"):
                wall, ratio = float(parts[1]), float(parts[2])
                rows.append(Row(f"batch 200 x 1 s at 16, {parts[0]} (base: ideal)", wall * 1000, wall / ratio * 1000,
                                "ms", "<= 1.1x", ratio <= 1.1))
        if done.returncode not in (0, 1):
            print(done.stdout, done.stderr, file=sys.stderr)

    print(f"issue 18 rows: min of {runs} runs; wall ms unless marked (CPU ms for the terminal rows, MB for RSS);"
          " CPU: the ratio of the same runs' CPU time")
    print(f"  {'':<52} {'llmchat':>9} {'baseline':>9} {'':<4} {'ratio':>7} {'CPU':>7}  {'target':<14} result")
    for row in rows:
        print(row.line())
    return 0 if all(row.ok for row in rows) else 1


def _min(samples: list[Run]) -> Run:
    """Each measure's least value over the runs (min-of-N: noise on a shared machine only ever adds)."""
    return Run(wall=min(s.wall for s in samples), cpu=min(s.cpu for s in samples), rss=min(s.rss for s in samples))


def _enqueued(server: FakeServer, answer: str, measure: Callable[[], Run]) -> Run:
    server.enqueue(Stream(answer=answer, pieces=pieces(answer)))
    return measure()


def _timed(cmd: list[str], env: dict[str, str]) -> Run:
    return run_piped(cmd, env)


if __name__ == "__main__":
    sys.exit(main())
