"""Cost (issue 6): each turn priced from the usage the server reported, `/usage` in the chat, and
`llmchat usage` over the saved history, checked against figures computed by hand.

The turns are made in-process through the real `ask` and REPL code paths (real providers, real HTTP to
the fake server, the real store under the test's XDG_DATA_HOME); `llmchat usage` itself is also run as
the real CLI for its table and JSON.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY
from fakeserver import Stream
from test_context import chat_bodies, is_summary_call, server_count

from llmchat.config.load import load_config
from llmchat.config.session import Overrides
from llmchat.engine.ask import run_ask
from llmchat.engine.usage import parse_since, print_usage
from llmchat.repl.app import ask
from llmchat.repl.commands import COMMANDS
from llmchat.repl.state import ReplState
from llmchat.store.db import open_store
from llmchat.store.files import default_path

CNY_IN, CNY_OUT, CNY_CACHED = 0.0008, 0.002, 0.0002
USD_IN, USD_OUT = 0.001, 0.003


@pytest.fixture
def priced(fake_server, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'''default_profile = "local"

[profiles.local]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "{fake_server.url}"

[profiles.cloud]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
price = {{ input = {CNY_IN}, output = {CNY_OUT}, cached_input = {CNY_CACHED}, currency = "CNY" }}
retries = 0

[profiles.usd]
provider = "openai"
model = "qwen3-max"
base_url = "{fake_server.url}/v1"
price = {{ input = {USD_IN}, output = {USD_OUT}, currency = "USD" }}

[profiles.tiny]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
context_window = 400
price = {{ input = {CNY_IN}, output = {CNY_OUT}, currency = "CNY" }}
retries = 0
''', encoding="utf-8")
    for name, value in (("LLMCHAT_CONFIG", str(path)), ("DASHSCOPE_API_KEY", TEST_KEY)):
        monkeypatch.setenv(name, value)
        env[name] = value
    return path


def one_turn(profile: str) -> None:
    """`llmchat ask -p PROFILE` in-process (the server's usage is scripted by the caller)."""
    assert run_ask(Overrides(profile=profile), f"a question for {profile}", plain=True, as_json=False,
                   usage=False, stream=True) == 0


def make_history(fake_server: Any) -> dict[str, Any]:
    """Turns on four profiles, one with a summary call; returns the hand-computed expectations."""
    fake_server.enqueue(Stream(prompt_tokens=1000, completion_tokens=500, cached_tokens=400))
    one_turn("cloud")
    fake_server.enqueue(Stream(prompt_tokens=2000, completion_tokens=1200))
    one_turn("cloud")
    fake_server.enqueue(Stream(prompt_tokens=300, completion_tokens=100))
    one_turn("local")
    fake_server.enqueue(Stream(prompt_tokens=100, completion_tokens=60))
    one_turn("usd")

    # A chat on a 400-token window: the third question needs a summary first. The server counts the
    # prompts itself (deterministically); each reply's completion is scripted.
    fake_server.reset()
    config = load_config()
    state = ReplState.start(config, config.profiles["tiny"])
    state.store = open_store()
    completions = [20, 30, 40, 30]
    fake_server.enqueue(*(Stream(completion_tokens=c) for c in completions))
    for n in range(3):
        ask(state, "word " * 48 + str(n), plain=True)
    bodies = chat_bodies(fake_server)
    assert [is_summary_call(b) for b in bodies] == [False, False, True, False]
    tiny_prompt = sum(server_count(b) for b in bodies)
    tiny_cost = sum(server_count(b) * CNY_IN + c * CNY_OUT for b, c in zip(bodies, completions, strict=True)) / 1000

    cloud_cost = ((1000 - 400) * CNY_IN + 400 * CNY_CACHED + 500 * CNY_OUT + 2000 * CNY_IN + 1200 * CNY_OUT) / 1000
    assert cloud_cost == pytest.approx(0.00556)
    usd_cost = (100 * USD_IN + 60 * USD_OUT) / 1000
    return {"state": state, "cloud": cloud_cost, "tiny": tiny_cost, "tiny_prompt": tiny_prompt, "usd": usd_cost}


def report(capsys: pytest.CaptureFixture[str], *args: Any, **kwargs: Any) -> dict[str, Any]:
    capsys.readouterr()
    print_usage(*args, as_json=True, **kwargs)
    return json.loads(capsys.readouterr().out)


def test_costs_by_profile_match_the_hand_computed_figures(priced, fake_server, llmchat,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    expected = make_history(fake_server)

    # /usage in the chat and `llmchat usage` count the same way.
    state: ReplState = expected["state"]
    state.out = io.StringIO()
    COMMANDS.dispatch(state, "/usage")
    line = state.out.getvalue()
    assert line.startswith("Since start: 3 turns + 1 summary call · ")
    assert f"cost {expected['tiny']:.4f} CNY" in line
    assert state.totals.costs["CNY"] == pytest.approx(expected["tiny"])

    run = llmchat("usage", "--json")
    assert run.code == 0, run.stderr
    data = json.loads(run.stdout)
    groups = {g["profile"]: g for g in data["groups"]}
    assert data["by"] == "profile" and data["since"] is None and list(groups) == ["cloud", "local", "tiny", "usd"]
    cloud, local, tiny, usd = (groups[name] for name in ("cloud", "local", "tiny", "usd"))
    assert (cloud["turns"], cloud["prompt_tokens"], cloud["completion_tokens"], cloud["cached_tokens"]) == (
        2, 3000, 1700, 400)
    assert cloud["cost"] == {"CNY": pytest.approx(expected["cloud"])}
    assert (local["turns"], local["prompt_tokens"], local["cost"], local["unpriced"]) == (1, 300, {}, 1)
    assert (tiny["turns"], tiny["summaries"], tiny["prompt_tokens"], tiny["completion_tokens"]) == (
        3, 1, expected["tiny_prompt"], 120)
    assert tiny["cost"] == {"CNY": pytest.approx(expected["tiny"])}
    assert usd["cost"] == {"USD": pytest.approx(0.00028)} and usd["total_tokens"] == 160
    total = data["total"]
    assert (total["turns"], total["summaries"], total["unpriced"]) == (7, 1, 1)
    assert total["prompt_tokens"] == 3000 + 300 + expected["tiny_prompt"] + 100
    assert total["cost"] == {"CNY": pytest.approx(expected["cloud"] + expected["tiny"]),
                             "USD": pytest.approx(0.00028)}

    table = llmchat("usage")  # a pipe: the plain table
    assert table.code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["profile", "turns", "summaries", "prompt", "completion", "total", "cost"]
    assert lines[1].split() == ["cloud", "2", "0", "3,000", "1,700", "4,700", f"{expected['cloud']:.4f}", "CNY"]
    assert lines[2].split() == ["local", "1", "0", "300", "100", "400", "-"]
    assert lines[-1].split()[:2] == ["total", "7"] and lines[-1].endswith(
        f"{expected['cloud'] + expected['tiny']:.4f} CNY + 0.0003 USD")
    assert "1 call had no price" in table.stderr


def test_by_model_by_day_and_since(priced, fake_server, capsys: pytest.CaptureFixture[str]) -> None:
    expected = make_history(fake_server)
    by_model = {g["model"]: g for g in report(capsys, None, "model")["groups"]}
    assert list(by_model) == ["qwen-plus", "qwen3-max", "qwen3:0.6b"]
    assert by_model["qwen-plus"]["turns"] == 5 and by_model["qwen-plus"]["summaries"] == 1
    assert by_model["qwen-plus"]["cost"] == {"CNY": pytest.approx(expected["cloud"] + expected["tiny"])}

    # Move the cloud turns to an earlier day (noon UTC: the same date in every time zone that matters).
    db = sqlite3.connect(default_path())
    db.execute("UPDATE messages SET created = '2025-01-10T12:00:00.000+00:00' WHERE profile = 'cloud'")
    db.commit()
    db.close()
    days = report(capsys, None, "day")["groups"]
    assert [d["day"] for d in days][0] == "2025-01-10" and len(days) == 2
    assert days[0]["turns"] == 2 and days[0]["cost"] == {"CNY": pytest.approx(expected["cloud"])}
    assert days[1]["turns"] == 5 and days[1]["summaries"] == 1

    since = report(capsys, "2025-01-11", "profile")
    assert [g["profile"] for g in since["groups"]] == ["local", "tiny", "usd"]
    assert since["since"] == parse_since("2025-01-11") and since["total"]["turns"] == 5
    assert report(capsys, "2025-01-10", "profile")["total"]["turns"] == 7


def test_usage_argument_errors_and_an_empty_history(env, llmchat) -> None:
    empty = llmchat("usage")
    assert empty.code == 0 and empty.stdout == "" and "No usage saved yet." in empty.stderr
    assert json.loads(llmchat("usage", "--json").stdout)["total"]["turns"] == 0
    bad = llmchat("usage", "--by", "modle")
    assert bad.code == 2 and "'modle' is not one of" in bad.stderr and "'day'" in bad.stderr  # Typer's Choice
    date = llmchat("usage", "--since", "last tuesday")
    assert date.code == 2 and "--since 'last tuesday' is not a date." in date.stderr and "YYYY-MM-DD" in date.stderr


def test_answers_saved_before_costs_were_kept_count_as_unpriced(env, tmp_path: Path) -> None:
    """The migration gives old answers their conversation's profile and no cost (the price then is unknown)."""
    from llmchat.store.schema import _migrate_to_1

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    _migrate_to_1(db, False)
    db.execute("INSERT INTO conversations VALUES ('c1', 't', 'cloud', 'bailian', 'qwen-plus', NULL, 'x', 'x')")
    db.execute("INSERT INTO messages (conversation, position, role, content, created) VALUES ('c1', 0, 'user', 'q', "
               "'2025-01-01T00:00:00.000+00:00')")
    db.execute("INSERT INTO messages (conversation, position, role, content, prompt_tokens, completion_tokens, "
               "created) VALUES ('c1', 1, 'assistant', 'a', 10, 5, '2025-01-01T00:00:00.000+00:00')")
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()
    rows = open_store(path).usage_rows()
    assert [(r.profile, r.usage.prompt, r.cost) for r in rows] == [("cloud", 10, None)]
