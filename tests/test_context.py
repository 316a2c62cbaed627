"""Context-window management (issue 6): long chats keep working, and every request fits.

The long scenarios run in-process, through the REPL's own turn function (`repl.ask`) with the real
provider and real HTTP to the fake server, so 200 turns take about a second. What the model was told is
read from the requests the server received; the fake server counts a request's prompt tokens as
`len(content) // 4 + 4` per message (its `prompt_tokens`), deterministically, and that is the number
checked against the window. The REPL itself (notice on screen, /context, /compact) is tested in a
pseudo-terminal at the end.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY
from fakeserver import Raw, Stream

from llmchat.config.load import Config, parse_config
from llmchat.config.profile import Profile
from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.errors import ConfigError
from llmchat.core.tokens import TokenLedger, context_window, estimate_tokens
from llmchat.engine.context import SUMMARY_INSTRUCTIONS, Budget, ContextManager, request_options
from llmchat.providers import ChatOptions
from llmchat.repl.app import ask
from llmchat.repl.commands import COMMANDS
from llmchat.repl.state import ReplState
from llmchat.store.db import Store

pytest_plugins = ("conftest_repl",)  # the `repl` fixture, for the pseudo-terminal test at the end

WINDOW = 2000
PERSONA = "You are terse."
CHAT_PATHS = ("/api/chat", "/chat/completions")


# ------------------------------------------------------------------------------------------ helpers


def question(n: int) -> str:
    """Questions of varied length, some with Chinese (estimated per character, counted per 4 by the server)."""
    return (f"Question {n}: " + "lorem ipsum dolor sit amet " * (n % 7 * 3) + "上下文窗口" * (n % 5 * 4)).strip()


def chat_bodies(server: Any) -> list[dict[str, Any]]:
    return [r.body for r in list(server.requests) if r.path.endswith(CHAT_PATHS)]


def is_summary_call(body: dict[str, Any]) -> bool:
    messages = body["messages"]
    return (messages[0]["content"].startswith(SUMMARY_INSTRUCTIONS)
            and messages[-1]["content"].startswith("Summarise the conversation so far"))


def server_count(body: dict[str, Any]) -> int:
    """The fake server's prompt_tokens for this request (fakeserver._estimate_prompt_tokens)."""
    return max(1, sum(len(m["content"]) // 4 + 4 for m in body["messages"]))


def small(server: Any, **keys: Any) -> Profile:
    values: dict[str, Any] = {"name": "small", "provider": "ollama", "model": "qwen3:0.6b", "base_url": server.url,
                              "system": PERSONA, "context_window": WINDOW, "retries": 0}
    values.update(keys)
    return Profile(**values)


def cloud(server: Any, **keys: Any) -> Profile:
    values: dict[str, Any] = {"name": "cloud", "provider": "bailian", "model": "qwen-plus",
                              "base_url": f"{server.url}/compatible-mode/v1", "api_key_env": "DASHSCOPE_API_KEY",
                              "system": PERSONA, "context_window": WINDOW, "retries": 0}
    values.update(keys)
    return Profile(**values)


def start(profile: Profile, *others: Profile, store: Store | None = None) -> ReplState:
    profiles = {p.name: p for p in (profile, *others)}
    state = ReplState.start(Config(profiles=profiles, default=profile.name, path=None), profile)
    state.store = store
    return state


# ------------------------------------------------------------------------------- the 200-turn bar


def test_two_hundred_turns_fit_the_window_and_keep_persona_question_and_summaries(
        fake_server, env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "history.db")
    state = start(small(fake_server), store=store)
    asked = [question(n) for n in range(200)]
    for text in asked:
        ask(state, text, plain=True)
    bodies = chat_bodies(fake_server)
    turns = [b for b in bodies if not is_summary_call(b)]
    summaries = [(i, b) for i, b in enumerate(bodies) if is_summary_call(b)]

    assert [t["messages"][-1] for t in turns] == [{"role": "user", "content": q} for q in asked]
    for body in turns:
        assert server_count(body) <= WINDOW
        assert body["messages"][0]["role"] == "system" and body["messages"][0]["content"].startswith(PERSONA)
        roles = [m["role"] for m in body["messages"][1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]  # still alternating
        assert body["options"]["num_ctx"] == WINDOW  # Ollama's window is the one managed
    assert max(server_count(b) for b in turns) > 0.6 * WINDOW  # the window was really used, not wasted

    # Summaries: real calls, each one's answer sent from the next request on, and saved.
    assert 10 <= len(summaries) <= 40
    for index, body in summaries:
        assert server_count(body) <= WINDOW
        assert body["options"]["num_ctx"] == WINDOW and body["think"] is False
        following = bodies[index + 1]
        summary_text = f"You said: {body['messages'][-1]['content']}"  # the fake server's answer to it
        assert following["messages"][0]["content"].endswith(summary_text)
    out = capsys.readouterr()
    assert out.err.count("Context: summarised") == len(summaries)
    saved = sqlite3.connect(store.path).execute("SELECT count(*), max(covers) FROM summaries").fetchone()
    assert saved[0] == len(summaries) and saved[1] == state.conversation.summary.covers
    assert len(store.messages("last")[1]) == 400  # nothing said is lost: only what is sent changed

    # Resume: the conversation comes back with its summary, and the next request still fits.
    resumed = Store(tmp_path / "history.db").load_conversation("last")
    assert resumed.summary is not None and resumed.summary.text == state.conversation.summary.text
    assert resumed.messages("next?") == state.conversation.messages("next?")
    again = start(small(fake_server), store=store)
    again.conversation = resumed
    ask(again, "And after the resume?", plain=True)
    last = chat_bodies(fake_server)[-1]
    assert last["messages"][0]["content"].endswith(state.conversation.summary.text)
    assert last["messages"][-1]["content"] == "And after the resume?" and server_count(last) <= WINDOW


def test_truncate_drops_oldest_whole_exchanges_and_never_calls_for_a_summary(
        fake_server, env, capsys: pytest.CaptureFixture[str]) -> None:
    state = start(small(fake_server, history="truncate"))
    for n in range(60):
        ask(state, question(n), plain=True)
    bodies = chat_bodies(fake_server)
    assert len(bodies) == 60 and not any(is_summary_call(b) for b in bodies)
    for n, body in enumerate(bodies):
        # The server counts Chinese 4x cheaper than the estimate does; calibration absorbs most of that
        # and the room kept for the answer the rest.
        assert server_count(body) <= WINDOW
        assert body["messages"][0] == {"role": "system", "content": PERSONA}
        assert body["messages"][-1] == {"role": "user", "content": question(n)}
        kept = [m["content"] for m in body["messages"][1:-1:2]]
        assert kept == [question(k) for k in range(n - len(kept), n)]  # the newest ones, whole and in order
    assert max(server_count(b) for b in bodies) > 0.7 * WINDOW
    assert "Context: stopped sending" in capsys.readouterr().err


def test_keep_sends_everything(fake_server, env) -> None:
    state = start(small(fake_server, history="keep", context_window=100_000))
    for n in range(12):
        ask(state, question(n), plain=True)
    assert len(chat_bodies(fake_server)[-1]["messages"]) == 1 + 2 * 11 + 1


def test_a_failed_summary_falls_back_to_dropping(fake_server, env, capsys: pytest.CaptureFixture[str]) -> None:
    state = start(small(fake_server))
    for n in range(4):
        ask(state, "filler " * 100 + str(n), plain=True)  # ~360 tokens an exchange: the 5th turn passes 70%
    fake_server.reset()
    fake_server.enqueue(Raw(status=500, body='{"error":"model runner has unexpectedly stopped"}',
                            content_type="application/json; charset=utf-8"))
    ask(state, "one more " * 40, plain=True)  # and this one leaves too little room for the answer
    summary_call, turn = chat_bodies(fake_server)
    assert is_summary_call(summary_call) and not is_summary_call(turn)
    err = capsys.readouterr().err
    assert "Context: could not summarise the older turns" in err and "Context: stopped sending" in err
    assert server_count(turn) <= WINDOW - Budget.of(state.options, "ollama").reserve
    assert state.conversation.summary is None and state.conversation.exchanges[-1].answer.startswith("You said: one")


def test_summary_profile_writes_the_summaries(fake_server, env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", TEST_KEY)
    writer = cloud(fake_server, name="writer", context_window=None)
    state = start(small(fake_server, summary_profile="writer"), writer)
    for n in range(12):
        ask(state, "filler " * 100 + str(n), plain=True)
    paths = [(r.path, is_summary_call(r.body)) for r in fake_server.requests if r.path.endswith(CHAT_PATHS)]
    assert ("/compatible-mode/v1/chat/completions", True) in paths
    assert all(path == "/api/chat" for path, summary in paths if not summary)
    assert state.totals.summaries >= 1 and state.totals.turns == 12


# ------------------------------------------------------------------------- the server says too long


def test_too_long_from_the_server_is_recovered_by_compacting_once(
        fake_server, env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", TEST_KEY)
    state = start(cloud(fake_server, context_window=None))  # window unknown: only the server can say
    for n in range(6):
        ask(state, question(n), plain=True)
    fake_server.reset()
    fake_server.enqueue(Raw.fixture("openai_error_context_length.json", status=400))
    ask(state, "does it still work?", plain=True)
    rejected, summary_call, retried = chat_bodies(fake_server)
    assert len(rejected["messages"]) == 1 + 2 * 6 + 1 and is_summary_call(summary_call)
    assert retried["messages"][0]["content"].startswith(PERSONA) and "Summary of the earlier" in \
        retried["messages"][0]["content"]
    assert retried["messages"][-1] == {"role": "user", "content": "does it still work?"}
    assert len(retried["messages"]) < len(rejected["messages"])
    captured = capsys.readouterr()
    assert "too long for the model; compacting the history and trying again" in captured.err
    assert "You said: does it still work?" in captured.out and "Error" not in captured.err


def test_too_long_twice_is_a_clear_error_and_the_chat_goes_on(
        fake_server, env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", TEST_KEY)
    state = start(cloud(fake_server, context_window=None))
    for n in range(4):
        ask(state, question(n), plain=True)
    fake_server.enqueue(Raw.fixture("openai_error_context_length.json", status=400), Stream(),
                        Raw.fixture("openai_error_context_length.json", status=400))
    ask(state, "too much", plain=True)
    assert "The conversation is too long for qwen-plus" in capsys.readouterr().err
    ask(state, "still here?", plain=True)
    assert chat_bodies(fake_server)[-1]["messages"][-1]["content"] == "still here?"


def test_ask_continue_recovers_from_too_long_and_fails_cleanly_when_it_cannot(
        fake_server, config_file, llmchat) -> None:
    for n in range(2):
        assert llmchat("ask", "-p", "bailian", *(["-c"] if n else []), question(n)).code == 0
    fake_server.enqueue(Raw.fixture("openai_error_context_length.json", status=400))
    run = llmchat("ask", "-p", "bailian", "-c", "recover please")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: recover please\n" and "compacting the history" in run.stderr
    assert sum(is_summary_call(b) for b in chat_bodies(fake_server)) == 1
    fake_server.enqueue(Raw.fixture("openai_error_context_length.json", status=400), Stream(),
                        Raw.fixture("openai_error_context_length.json", status=400))
    failed = llmchat("ask", "-p", "bailian", "-c", "and now?")
    assert failed.code == 1 and "too long for qwen-plus" in failed.stderr and "Traceback" not in failed.stderr


def test_ask_continue_summarises_a_long_saved_conversation(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text() + '\n[profiles.tiny]\nprovider = "ollama"\nmodel = "qwen3:0.6b"\n'
                           f'base_url = "{fake_server.url}"\ncontext_window = 400\n', encoding="utf-8")
    for n in range(4):
        run = llmchat("ask", "-p", "tiny", *(["-c"] if n else []), "word " * 60 + str(n))
        assert run.code == 0, run.stderr
    assert "Context: summarised" in run.stderr
    bodies = chat_bodies(fake_server)
    assert sum(is_summary_call(b) for b in bodies) >= 1 and all(server_count(b) <= 400 for b in bodies)
    resumed = llmchat("ask", "-p", "tiny", "-c", "short")
    assert resumed.code == 0
    assert "Summary of the earlier conversation" in chat_bodies(fake_server)[-1]["messages"][0]["content"]


# ------------------------------------------------------------------------------------- the parts


def test_known_windows_and_what_is_sent_as_num_ctx() -> None:
    assert context_window("qwen-plus", None, "bailian")[0] == 131_072
    assert context_window("qwen-plus-2025-04-28", None, "bailian")[0] == 131_072
    assert context_window("qwen3:0.6b", None, "ollama")[0] == 40_960
    assert context_window("llama3.2", None, "ollama")[0] == 4096  # unknown: Ollama's default num_ctx
    assert context_window("qwen3-max", None, "bailian") == (None, "")  # unknown: only the server can say
    window, source = context_window("qwen3:0.6b", 8192, "ollama", served=40_960)
    assert window == 8192 and source.startswith("context_window")  # the user's word beats the server's
    assert request_options(ChatOptions(model="qwen3:8b"), "ollama").context_window == 40_960
    assert request_options(ChatOptions(model="qwen3:8b", context_window=2048), "ollama").context_window == 2048
    assert request_options(ChatOptions(model="qwen3-max"), "bailian").context_window is None


def test_budget_leaves_room_for_the_answer() -> None:
    budget = Budget.of(ChatOptions(model="m", context_window=2000), "openai")
    assert (budget.window, budget.reserve, budget.limit, budget.trigger) == (2000, 500, 1500, 1400)
    capped = Budget.of(ChatOptions(model="qwen-plus"), "bailian")
    assert capped.reserve == 8192 and capped.trigger == int(131_072 * 0.7)
    answer = Budget.of(ChatOptions(model="m", context_window=2000, max_tokens=800), "openai")
    assert answer.limit == 1200 and answer.trigger == 1200  # the answer's room wins over 70%
    assert Budget.of(ChatOptions(model="unknown-cloud-model"), "openai") is None


def test_the_estimate_is_calibrated_by_what_the_server_reported() -> None:
    ledger = TokenLedger()
    messages = [{"role": "user", "content": "a" * 400}]  # 100 + 4 estimated
    assert ledger.estimate(messages) == 104
    ledger.observe(messages, 156)
    assert ledger.ratio == 1.5 and ledger.estimate(messages) == 156
    ledger.observe(messages, 20)  # e.g. Ollama counting only the uncached part: not a tokenizer, ignored
    assert ledger.ratio == 1.5 and ledger.reported == 20
    assert estimate_tokens("上下文窗口") == 5 and estimate_tokens("context") == 2  # CJK per character


def test_undo_past_a_summary_forgets_it() -> None:
    conversation = Conversation(system=PERSONA, exchanges=[Exchange(f"q{n}", f"a{n}") for n in range(4)])
    manager = ContextManager(strategy="truncate", budget=None)
    assert manager.compact(conversation, lambda text: None)  # drops the older half: q0, q1
    assert conversation.start == 2 and conversation.messages()[1] == {"role": "user", "content": "q2"}
    conversation.pop()
    conversation.pop()
    conversation.pop()
    assert conversation.start == 1 and conversation.messages() == [
        {"role": "system", "content": PERSONA}]
    conversation.exchanges.append(Exchange("new", "answer"))
    assert conversation.messages()[-2:] == [{"role": "user", "content": "new"},
                                             {"role": "assistant", "content": "answer"}]


def test_compact_command_without_history_and_context_command(fake_server, env) -> None:
    state = start(small(fake_server))
    state.out = io.StringIO()
    COMMANDS.dispatch(state, "/compact")
    assert "Nothing to compact" in state.out.getvalue()
    COMMANDS.dispatch(state, "/context")
    assert "of 2,000 tokens" in state.out.getvalue() and "History: summarize" in state.out.getvalue()


@pytest.mark.parametrize(("line", "message"), [
    ('history = "sumarize"', "history = 'sumarize' is unknown. Did you mean 'summarize'?"),
    ('summary_profile = "lokal"', "summary_profile = 'lokal' names no profile. Did you mean 'local'?"),
    ("summary_profil = 'x'", "Unknown key 'summary_profil' in profiles.p. Did you mean 'summary_profile'?"),
])
def test_config_keys_are_validated(line: str, message: str) -> None:
    text = f'[profiles.p]\nprovider = "ollama"\nmodel = "m"\n{line}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), Path("c.toml"))
    assert message in info.value.message and "line 4" in info.value.message


def test_config_keys_are_read() -> None:
    text = '[profiles.p]\nprovider = "ollama"\nmodel = "m"\nhistory = "truncate"\nsummary_profile = "local"\n'
    profile = parse_config(text.encode(), Path("c.toml")).profiles["p"]
    assert (profile.history, profile.summary_profile) == ("truncate", "local")
    assert parse_config(b"", Path("c.toml")).profiles["local"].history == "summarize"  # the default


# ------------------------------------------------------------------------------------ in the REPL


@pytest.mark.timeout(30)
def test_repl_shows_the_notice_and_context_and_compacts_on_demand(repl, fake_server, repl_config) -> None:
    repl_config.write_text(repl_config.read_text() + f'''
[profiles.tiny]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "{fake_server.url}"
system = "You are terse."
context_window = 400
''', encoding="utf-8")
    chat = repl("-p", "tiny")
    out = chat.command("/context")
    assert "of 400 tokens" in out and "History: summarize" in out
    assert "window: context_window (profile or /set)" in out  # where the window comes from
    for n in range(3):
        chat.ask("word " * 60 + str(n))
    assert "Context: summarised 1 older exchange" in chat.text()
    assert any(is_summary_call(r.body) for r in chat.chat_requests())
    out = chat.command("/context")
    assert "a summary of the first" in out and "Last request:" in out
    chat.ask("word " * 20)
    before = len(chat.chat_requests())
    out = chat.command("/compact")
    assert "Context: summarised" in out and len(chat.chat_requests()) == before + 1
    assert "compact" in chat.command("/help")
    chat.enter("/exit")
    assert chat.wait_exit() == 0
