"""History at scale: `history list`, `--search` and resuming a long conversation on a big database.

Builds 10,000 conversations / 200,000 messages (one of them 1,000 turns long) in a temporary data
directory, then times, through the same functions the CLI calls (opening the store included):
- `history list` (table and `--json`, the default limit of 20, and `--limit 0` for all 10,000);
- `history list --search` for a rare word, a common word, and a 2-letter word (no trigram index: LIKE);
- resuming the 1,000-turn conversation (`Store.load_conversation`, what `chat --resume` does);
and runs `llmchat history list` once more as a whole CLI process (or, before cli.py wires it, the
same function through `python -c`), next to `python -c pass` for scale.
Target (issue 5): each under 300 ms on this machine.

Usage: python bench/history.py [--runs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from llmchat.engine.history import history_list, history_show
from llmchat.store.db import open_store
from llmchat.store.files import default_path

CONVERSATIONS = 10_000
TURNS = 100_000  # 200,000 messages
LONG_TURNS = 1_000
TARGET_MS = 300.0
RARE, COMMON, SHORT = "zanzibar", "python", "qx"


def vocabulary(rng: random.Random) -> list[str]:
    """Made-up words with a natural-looking length spread, plus a few real ones at known rates."""
    syllables = ["ka", "lo", "mi", "ten", "ra", "vo", "sel", "dri", "an", "po", "qu", "est", "ing", "be", "tor"]
    return ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(5_000)]


def text(rng: random.Random, words: list[str], low: int, high: int, common_rate: float) -> str:
    chosen = rng.choices(words, k=rng.randint(low, high))
    if rng.random() < common_rate:
        chosen[rng.randrange(len(chosen))] = COMMON
    return " ".join(chosen)


def turn_counts(rng: random.Random) -> list[int]:
    """Turns per conversation: one long one, the rest 9 or 10, adding up to TURNS exactly."""
    others = CONVERSATIONS - 1
    left = TURNS - LONG_TURNS
    base, extra = divmod(left, others)
    counts = [base + 1] * extra + [base] * (others - extra)
    rng.shuffle(counts)
    return [LONG_TURNS, *counts]


def build(path: Path, rng: random.Random) -> str:
    """Fill the store's schema with one bulk transaction; returns the long conversation's id."""
    open_store(path).close()  # the real schema, FTS triggers included
    db = sqlite3.connect(path, isolation_level=None)
    words = vocabulary(rng)
    rare = set(rng.sample(range(CONVERSATIONS), 12))
    db.execute("BEGIN")
    long_id = ""
    for number, turns in enumerate(turn_counts(rng)):
        cid = f"{number:08x}"
        long_id = long_id or cid
        stamp = f"2025-{1 + number * 12 // CONVERSATIONS:02d}-01T00:00:00.000+00:00"
        updated = f"2025-{1 + number * 12 // CONVERSATIONS:02d}-02T{number % 24:02d}:00:00.000+00:00"
        first = text(rng, words, 5, 20, 0.05)
        db.execute("INSERT INTO conversations VALUES (?, ?, 'local', 'ollama', 'qwen3:0.6b', NULL, ?, ?)",
                   (cid, first[:80], stamp, updated))
        db.executemany(
            "INSERT INTO messages (conversation, position, role, content, reasoning, model, prompt_tokens, "
            "completion_tokens, ttft_s, total_s, tokens_per_s, finish_reason, created) "
            "VALUES (?, ?, ?, ?, ?, 'qwen3:0.6b', ?, ?, ?, ?, ?, ?, ?)",
            messages(rng, words, cid, turns, first, number in rare, stamp))
    db.execute("COMMIT")
    db.close()
    return long_id


def messages(rng: random.Random, words: list[str], cid: str, turns: int, first: str, rare: bool,
             stamp: str) -> Iterator[tuple[object, ...]]:
    for n in range(turns):
        question = first if n == 0 else text(rng, words, 5, 30, 0.05)
        yield cid, 2 * n, "user", question, None, None, None, None, None, None, None, stamp
        answer = text(rng, words, 30, 170, 0.10)
        if rare and n == turns // 2:
            answer += f" {RARE}"
        reasoning = text(rng, words, 10, 60, 0.0) if n % 2 else None
        yield (cid, 2 * n + 1, "assistant", answer, reasoning, 40 + n, 120, 0.3, 2.5, 48.0, "stop", stamp)


def timed(action: Callable[[], object], runs: int) -> float:
    """Median wall time in ms over `runs` runs, after one warm-up (the page cache is warm in real use too)."""
    samples = []
    for i in range(runs + 1):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            started = time.perf_counter()
            action()
            elapsed = (time.perf_counter() - started) * 1000
        if i:
            samples.append(elapsed)
    return statistics.median(samples)


def timed_process(cmd: list[str], env: dict[str, str], runs: int) -> float:
    def run() -> None:
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, check=True)

    return timed(run, runs)


def cli_wired() -> bool:
    import typer

    from llmchat.cli.app import app

    return "history" in getattr(typer.main.get_command(app), "commands", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build in (or reuse) this data directory instead of a temp one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_home = args.keep or Path(tmp)
        os.environ["XDG_DATA_HOME"] = str(data_home)
        path = default_path()
        started = time.perf_counter()
        if path.exists():
            with open_store(path) as store:
                long_id = store.list_conversations(limit=None)[-1].id
        else:
            long_id = build(path, random.Random(5))
        built = time.perf_counter() - started
        report(path, long_id, built, args.runs)


def report(path: Path, long_id: str, built: float, runs: int) -> None:
    db = sqlite3.connect(path)
    conversations, count = (db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                            for t in ("conversations", "messages"))
    db.close()
    size = sum(p.stat().st_size for p in path.parent.glob("history.db*")) / 1e6
    print(f"database: {conversations:,} conversations, {count:,} messages, {size:.0f} MB, built in {built:.1f}s")
    with open_store(path) as store:
        hits = {word: len(store.list_conversations(limit=None, search=word)) for word in (RARE, COMMON, SHORT)}
        long_turns = len(store.load_conversation(long_id).exchanges)

    def resume() -> None:
        with open_store() as store:
            store.load_conversation(long_id)

    rows = [
        ("history list", timed(lambda: history_list(), runs)),
        ("history list --json", timed(lambda: history_list(as_json=True), runs)),
        ("history list --limit 0 (all 10,000)", timed(lambda: history_list(limit=0), runs)),
        (f"history list --search {RARE} ({hits[RARE]} hits)", timed(lambda: history_list(search=RARE), runs)),
        (f"history list --search {COMMON} ({hits[COMMON]:,} hits)", timed(lambda: history_list(search=COMMON), runs)),
        (f"history list --search {SHORT} (LIKE scan, {hits[SHORT]:,} hits)",
         timed(lambda: history_list(search=SHORT), runs)),
        (f"resume a {long_turns:,}-turn conversation", timed(resume, runs)),
        (f"history show (pipe) of the {long_turns:,}-turn one", timed(lambda: history_show(long_id), runs)),
    ]
    env = {**os.environ}
    if cli_wired():
        label, cmd = "llmchat history list (CLI process)", [sys.executable, "-m", "llmchat", "history", "list"]
    else:
        label = "history_list() in a fresh process (cli.py not wired yet)"
        cmd = [sys.executable, "-c", "from llmchat.engine.history import history_list; history_list()"]
    rows.append(("python -c pass (for scale)", timed_process([sys.executable, "-c", "pass"], env, runs)))
    rows.append((label, timed_process(cmd, env, runs)))
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  median   target {TARGET_MS:.0f} ms")
    for name, ms in rows:
        verdict = "" if name.startswith("python -c") else ("ok" if ms < TARGET_MS else "OVER")
        print(f"{name:{width}}  {ms:7.1f} ms  {verdict}")


if __name__ == "__main__":
    main()
