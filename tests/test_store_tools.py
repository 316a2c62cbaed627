"""Tool rounds in the history (issue 15, "Store and context"): saved with the turn, resumed and re-sent
exactly, carried by export/import, shown by `history show`, counted toward the window and summaries.

The turns are recorded through the store's real `Recorder` (what `run_turn` calls) and read back with
the store's own loaders, a separate SQLite connection, the in-process CLI, or a pseudo-terminal.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
import sqlite3
from pathlib import Path

import forkserver
import pytest
from rich.console import Console

from llmchat.config.profile import Profile
from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.core.tokens import TokenLedger, estimate_messages
from llmchat.core.tools import NO_APPROVER, ToolCall, ToolRecord, ToolRound, declined_by_user
from llmchat.engine.context import SUMMARY_TOOL_RESULT_CHARS, ContextManager, summary_request
from llmchat.engine.history import draw_transcript, history_export, history_import, markdown_transcript
from llmchat.render.tools import call_line, outcome_line
from llmchat.store import records as store_records
from llmchat.store.db import Store, open_store
from llmchat.store.files import default_path
from llmchat.store.records import ImportFormatError
from llmchat.store.schema import SCHEMA_VERSION, _migrate_to_1, _migrate_to_2

PROFILE = Profile(name="local", provider="ollama", model="qwen3:0.6b")
EVIL = "\x1b]52;c;aGVsbG8=\x1b\\\x1b]0;pwned\x1b\\\x1b[2J\x9b31m\u202e"
FORBIDDEN = ("\x1b]", "\x1b[2J", "\x9b", "\u202e", "\x1b\\")


# ------------------------------------------------------------------------------------------ helpers


def two_rounds() -> list[ToolRound]:
    """Round 1: a call that ran and one the user declined (with a reason); round 2: a call that failed
    because the model's arguments were not JSON, and one nobody could approve."""
    return [
        ToolRound(content="Let me look that up.", reasoning="The user wants the weather.", calls=[
            ToolRecord(ToolCall("call_k3x9a2b1", "weather", {"city": "杭州", "days": 2}), "ok", "晴, 22°C\nwind 3 km/h",
                       seconds=0.41),
            ToolRecord(ToolCall("call_0bdcc155", "shell", {"command": "rm -rf /tmp/x"}), "declined",
                       declined_by_user("not now"), seconds=None),
        ]),
        ToolRound(calls=[
            ToolRecord(ToolCall("call_2", "read_file", {}, raw_arguments='{"path": ', error="the arguments are not "
                                "valid JSON (Expecting value at character 9): {\"path\": "), "error",
                       "the arguments are not valid JSON (Expecting value at character 9)", seconds=0.0),
            ToolRecord(ToolCall("call_3", "fetch", {"url": "https://example.com/"}), "declined", NO_APPROVER),
        ]),
    ]


def record_turn(store: Store, conversation: Conversation, question: str, answer: str,
                rounds: list[ToolRound] | None = None, *, interrupted: bool = False) -> Exchange:
    """A turn as the tool loop records it: the question, then the answer with the exchange's rounds."""
    recorder = store.recorder(PROFILE)
    exchange = Exchange(user=question, model=PROFILE.model)
    conversation.exchanges.append(exchange)
    recorder.question(conversation, exchange)
    exchange.answer, exchange.interrupted = answer, interrupted
    exchange.rounds = list(rounds or [])
    exchange.usage = Usage(prompt=120, completion=30)
    result = TurnResult(model=PROFILE.model, answer=answer, usage=exchange.usage, rounds=exchange.rounds,
                        finish_reason=None if interrupted else "stop",
                        interrupted=interrupted, timing=Timing(total_s=1.5))
    recorder.answer(conversation, exchange, result)
    return exchange


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    minutes = itertools.count()
    monkeypatch.setattr(store_records, "now", lambda: f"2025-03-01T10:{next(minutes):02d}:00.000+00:00")


@pytest.fixture
def tool_chat(env: dict[str, str], clock: None) -> Conversation:
    """A saved conversation (default store) whose second turn called tools in two rounds."""
    conversation = Conversation(system="Be brief.")
    with open_store() as store:
        record_turn(store, conversation, "hi", "Hello!")
        record_turn(store, conversation, "Weather in Hangzhou?", "Sunny, 22°C.", two_rounds())
    return conversation


def sent_form(messages: list) -> list:
    """`Conversation.messages()` with ToolCall objects as plain data, for an exact comparison."""
    def plain(value):
        if isinstance(value, ToolCall):
            return ("ToolCall", value.id, value.name, dict(value.arguments), value.raw_arguments, value.error)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return [plain(dict(m)) for m in messages]


# --------------------------------------------------------------------------------- store round trip


def test_rounds_are_saved_with_the_answer_and_resume_sends_the_same_messages(tool_chat: Conversation) -> None:
    expected = tool_chat.messages("and tomorrow?")
    with open_store() as store:
        loaded = store.load_conversation("last")
    assert loaded.exchanges[1].rounds == two_rounds()
    assert loaded.exchanges[0].rounds == []
    assert sent_form(loaded.messages("and tomorrow?")) == sent_form(expected)
    roles = [m["role"] for m in expected]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool", "tool", "assistant", "tool", "tool",
                     "assistant", "user"]
    # the declined and the failed calls go back with the results the model read
    tool_results = [m["content"] for m in expected if m["role"] == "tool"]
    assert tool_results[1] == "declined by the user: not now" and tool_results[3] == NO_APPROVER
    assert expected[7]["tool_calls"][0].raw_arguments == '{"path": '


def test_the_column_holds_the_rounds_json_and_plain_answers_hold_null(tool_chat: Conversation) -> None:
    db = sqlite3.connect(default_path())
    rows = db.execute("SELECT position, tool_rounds FROM messages ORDER BY position").fetchall()
    db.close()
    assert [(p, t is None) for p, t in rows] == [(0, True), (1, True), (2, True), (3, False)]
    assert json.loads(rows[3][1]) == [r.as_json() for r in two_rounds()]


def test_an_answer_cut_short_during_a_tool_keeps_its_rounds_and_is_resent(env: dict[str, str]) -> None:
    """The process died while the second round's tool ran: the last progress save had the first round,
    the answer is empty. Loading it must still send the question and that round (messages() does)."""
    conversation = Conversation()
    first = two_rounds()[:1]
    with open_store() as store:
        recorder = store.recorder(PROFILE)
        exchange = Exchange(user="Weather?", model=PROFILE.model)
        conversation.exchanges.append(exchange)
        recorder.question(conversation, exchange)
        exchange.rounds = first
        recorder.progress(conversation, exchange, "", "")  # the turn loop after a round; then SIGKILL
        loaded = store.load_conversation("last")
    assert loaded.exchanges[0].interrupted and loaded.exchanges[0].answer == ""
    assert loaded.exchanges[0].rounds == first
    assert sent_form(loaded.messages("again")) == sent_form(conversation.messages("again"))
    assert [m["role"] for m in loaded.messages("again")] == ["user", "assistant", "tool", "tool", "user"]


def test_progress_then_the_final_save_replace_the_rounds(env: dict[str, str]) -> None:
    conversation = Conversation()
    with open_store() as store:
        recorder = store.recorder(PROFILE)
        exchange = Exchange(user="Weather?", model=PROFILE.model)
        conversation.exchanges.append(exchange)
        recorder.question(conversation, exchange)
        exchange.rounds = two_rounds()[:1]
        recorder.progress(conversation, exchange, "", "")
        exchange.rounds = two_rounds()
        recorder.progress(conversation, exchange, "Sun", "")
        assert store.load_conversation("last").exchanges[0].rounds == two_rounds()
        exchange.answer = "Sunny."
        recorder.answer(conversation, exchange, TurnResult(model=PROFILE.model, answer="Sunny.", rounds=two_rounds()))
        loaded = store.load_conversation("last").exchanges[0]
    assert (loaded.answer, loaded.interrupted, loaded.rounds) == ("Sunny.", False, two_rounds())


def test_a_conversation_removed_mid_chat_is_rewritten_with_its_tool_turns(env: dict[str, str]) -> None:
    """`history rm` while a chat is open: the next question recreates the conversation with the turns
    before it, and a turn that only called tools (no answer) is one of them."""
    conversation = Conversation()
    with open_store() as store:
        record_turn(store, conversation, "Weather?", "", two_rounds(), interrupted=True)
        store.remove("last")
        record_turn(store, conversation, "next", "ok")
        loaded = store.load_conversation("last")
    assert loaded.exchanges[0].rounds == two_rounds() and loaded.exchanges[1].answer == "ok"


# ---------------------------------------------------------------------------------------- migration


def test_a_version_2_file_migrates_with_its_rows_intact(env: dict[str, str]) -> None:
    """A history written by llmchat before images and tools (schema 2) opens, keeps every row, and then
    saves tool rounds like a new one."""
    path = default_path()
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    _migrate_to_1(db, True)
    _migrate_to_2(db, True)
    db.execute("INSERT INTO conversations VALUES ('c0ffee00', 'old', 'local', 'ollama', 'qwen3:0.6b', 'Be brief.', "
               "'2025-01-01T00:00:00.000+00:00', '2025-01-01T00:00:00.000+00:00')")
    db.execute("INSERT INTO messages (conversation, position, role, content, created) VALUES "
               "('c0ffee00', 0, 'user', 'old question', '2025-01-01T00:00:00.000+00:00')")
    db.execute("INSERT INTO messages (conversation, position, role, content, reasoning, model, prompt_tokens, "
               "completion_tokens, created, profile, cost, currency) VALUES ('c0ffee00', 1, 'assistant', "
               "'old answer', 'hmm', 'qwen3:0.6b', 10, 5, '2025-01-01T00:00:01.000+00:00', 'local', 0.5, 'CNY')")
    db.execute("PRAGMA user_version = 2")
    db.execute("COMMIT")
    before = db.execute("SELECT * FROM messages ORDER BY id").fetchall()
    db.close()

    with open_store() as store:
        conversation = store.load_conversation("c0ffee00")
        assert [(e.user, e.answer, e.reasoning, e.rounds) for e in conversation.exchanges] == [
            ("old question", "old answer", "hmm", [])]
        assert store.list_conversations(search="old answer")[0].id == "c0ffee00"  # the index still works
        record_turn(store, conversation, "Weather?", "Sunny.", two_rounds())
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) and SCHEMA_VERSION >= 4
    after = db.execute("SELECT * FROM messages ORDER BY id").fetchall()
    db.close()
    assert [row[:-1] for row in after[:2]] == before and after[0][-1] is None and after[1][-1] is None
    with open_store() as store:
        assert store.load_conversation("c0ffee00").exchanges[1].rounds == two_rounds()


# ------------------------------------------------------------------------------------ export, import


def test_export_import_is_exact_with_rounds(tool_chat: Conversation, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first.json"
    history_export("last", "json", first)
    record = json.loads(first.read_text())
    assert "tool_rounds" not in record["messages"][0]  # questions carry none
    assert record["messages"][1]["tool_rounds"] == []
    assert record["messages"][3]["tool_rounds"] == [r.as_json() for r in two_rounds()]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    history_import(first)
    second = tmp_path / "second.json"
    history_export("last", "json", second)
    assert second.read_bytes() == first.read_bytes()
    with open_store() as store:
        loaded = store.load_conversation("last")
    assert sent_form(loaded.messages("next")) == sent_form(tool_chat.messages("next"))
    capsys.readouterr()
    history_import(first)  # the same file again: found already there, rounds and all
    assert "already in the history, unchanged" in capsys.readouterr().out


def test_an_export_from_before_tools_still_imports(tool_chat: Conversation, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.json"
    history_export("last", "json", path)
    record = json.loads(path.read_text())
    for message in record["messages"]:
        message.pop("tool_rounds", None)
    path.write_text(json.dumps(record))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    history_import(path)
    with open_store() as store:
        loaded = store.load_conversation("last")
        plain = Conversation()
        record_turn(store, plain, "no tools here", "fine")
    assert [e.rounds for e in loaded.exchanges] == [[], []] and loaded.exchanges[1].answer == "Sunny, 22°C."
    # a conversation that called no tool, exported before exports carried rounds, is the one saved
    history_export(plain.id or "", "json", path)
    record = json.loads(path.read_text())
    del record["messages"][1]["tool_rounds"]
    path.write_text(json.dumps(record))
    capsys.readouterr()
    history_import(path)
    assert capsys.readouterr().out == f"{plain.id} is already in the history, unchanged; nothing imported.\n"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m[3].update(tool_rounds="x"), r"messages\[3\].tool_rounds must be a list"),
    (lambda m: m[2].update(tool_rounds=[{"calls": []}]), r"messages\[2\].tool_rounds must be a list, and only on"),
    (lambda m: m[3]["tool_rounds"][0].update(calls=[]), r"tool_rounds\[0\].calls must be a non-empty list"),
    (lambda m: m[3]["tool_rounds"][1]["calls"][0].update(status="maybe"), r"calls\[0\].status must be one of"),
    (lambda m: m[3]["tool_rounds"][0]["calls"][1].update(result=None), r"calls\[1\].result has the wrong type"),
    (lambda m: m[3]["tool_rounds"][0]["calls"][0].update(arguments="{}"), r"arguments has the wrong type"),
    (lambda m: m[3]["tool_rounds"][0].update(content=3), r"tool_rounds\[0\].content must be a string"),
])
def test_import_checks_the_rounds_it_carries(tool_chat: Conversation, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, edit, message: str) -> None:
    path = tmp_path / "edited.json"
    history_export("last", "json", path)
    record = json.loads(path.read_text())
    edit(record["messages"])
    path.write_text(json.dumps(record))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(ImportFormatError, match=message) as info:
        history_import(path)
    assert info.value.exit_code == 2
    assert not default_path().exists() or not open_store().list_conversations()


# ---------------------------------------------------------------------------------------- history show


def test_outcome_lines_say_what_came_of_each_call() -> None:
    ok, declined, error, nobody = (record for r in two_rounds() for record in r.calls)
    assert call_line(ok.call) == '⚙ weather(city="杭州", days=2)'
    assert outcome_line(ok) == "→ 2 lines, 19 chars in 0.41s"
    assert outcome_line(declined) == "→ declined by the user: not now"  # what the model was told
    assert outcome_line(nobody) == "→ declined: no one to approve it (use --trust-tools or trust = true)"
    assert outcome_line(error) == "→ error: the arguments are not valid JSON (Expecting value at character 9)"
    assert call_line(error.call) == '⚙ read_file("{\\"path\\": ")'
    stopped = ToolRecord(ToolCall("c", "shell", {"command": "sleep 60"}), "interrupted", "interrupted", seconds=2.5)
    assert outcome_line(stopped) == "→ interrupted after 2.5s"
    assert outcome_line(ToolRecord(ToolCall("c", "time"), "ok", "", seconds=0.01)) == "→ no output in 0.01s"
    assert outcome_line(ToolRecord(ToolCall("c", "x"), "error", "boom\nTraceback…")) == "→ error: boom"


def test_history_show_in_a_pipe_lists_the_calls_between_question_and_answer(tool_chat: Conversation,
                                                                            llmchat) -> None:
    shown = llmchat("history", "show", "last")
    assert shown.code == 0, shown.stderr
    out = shown.stdout
    calls = ('⚙ weather(city="杭州", days=2)\n→ 2 lines, 19 chars in 0.41s\n\n'
             '⚙ shell(command="rm -rf /tmp/x")\n→ declined by the user: not now\n\n')
    assert ("## You\n\nWeather in Hangzhou?\n\n## Assistant (qwen3:0.6b)\n\n<details><summary>Reasoning</summary>\n\n"
            "The user wants the weather.\n\n</details>\n\nLet me look that up.\n\n" + calls) in out
    assert ('⚙ fetch(url="https://example.com/")\n→ declined: no one to approve it (use --trust-tools or '
            'trust = true)\n\nSunny, 22°C.\n') in out
    assert "⚙" not in out.split("## You")[1]  # the first turn called nothing
    exported = llmchat("history", "export", "last")  # the Markdown export is the same transcript
    assert exported.stdout == out


def test_history_show_in_a_terminal_draws_call_and_dim_outcome(tool_chat: Conversation) -> None:
    buffer = io.StringIO()
    with open_store() as store:
        summary, messages = store.messages("last")
    draw_transcript(Console(file=buffer, force_terminal=True, width=80), summary, messages)
    raw = buffer.getvalue()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", raw)
    question, answer = text.index(">>> Weather in Hangzhou?"), text.index("Sunny, 22°C.")
    call = text.index('⚙ weather(city="杭州", days=2)')
    assert question < call < text.index("→ 2 lines, 19 chars in 0.41s") < answer
    assert text.index("→ declined") < answer
    assert "\x1b[2m→ 2 lines" in raw  # dim


def test_history_show_sanitizes_tool_text_on_a_terminal_and_keeps_it_exact_in_a_pipe(env: dict[str, str],
                                                                                      llmchat) -> None:
    import sys


    evil = [ToolRound(content=f"Checking {EVIL}", calls=[
        ToolRecord(ToolCall("c1", "fetch", {"url": f"https://x/{EVIL}"}), "error", f"HTTP 500 {EVIL}\nmore")])]
    with open_store() as store:
        record_turn(store, Conversation(), "q", "done", evil)
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    child = forkserver.spawn(sys.executable, ["-m", "llmchat", "history", "show", "last"], env=env, encoding="utf-8",
                          codec_errors="strict", dimensions=(40, 200), timeout=30)
    raw = child.read()
    child.close()
    assert child.exitstatus == 0, raw
    for sequence in FORBIDDEN:
        assert sequence not in raw, f"{sequence!r} reached the terminal:\n{raw!r}"
    assert "⚙ fetch(url=" in raw and "→ error: HTTP 500 ^[]52;c;aGVsbG8=^[" in raw
    assert "<U+009B>31m<U+202E>" in raw
    piped = llmchat("history", "show", "last").stdout
    assert f"→ error: HTTP 500 {EVIL}\n" in piped and f"Checking {EVIL}" in piped


def test_markdown_transcript_of_an_answer_without_rounds_is_unchanged(tool_chat: Conversation) -> None:
    with open_store() as store:
        summary, messages = store.messages("last")
    text = markdown_transcript(summary, messages)
    assert "## You\n\nhi\n\n## Assistant (qwen3:0.6b)\n\nHello!\n\n" in text


# --------------------------------------------------------------------------------------------- context


def test_a_long_tool_result_counts_toward_the_window() -> None:
    def conversation(result: str, arguments: dict) -> Conversation:
        rounds = [ToolRound(calls=[ToolRecord(ToolCall("c1", "read_file", arguments), "ok", result)])]
        return Conversation(exchanges=[Exchange(user="read it", answer="It says hi.", rounds=rounds)])

    short = conversation("hi", {"path": "a.txt"})
    long = conversation("x" * 40_000, {"path": "a.txt"})
    manager = ContextManager(strategy="keep", budget=None)
    assert manager.estimate(long, "next") - manager.estimate(short, "next") >= 9_990
    big_arguments = conversation("hi", {"path": "a.txt", "content": "y" * 8_000})
    assert manager.estimate(big_arguments, "next") - manager.estimate(short, "next") >= 1_990
    # calibrated against a reported request, a change in arguments alone still shows (not the same key)
    ledger = TokenLedger()
    ledger.observe(short.messages("next"), reported=estimate_messages(short.messages("next")))
    assert ledger.estimate(big_arguments.messages("next")) > ledger.estimate(short.messages("next")) + 1_990


def test_a_summary_covers_tool_calls_and_results_bounded() -> None:
    long_result = "z" * (SUMMARY_TOOL_RESULT_CHARS * 10)
    rounds = [ToolRound(content="Checking.", calls=[
        ToolRecord(ToolCall("c1", "weather", {"city": "Paris"}), "ok", "18°C, light rain"),
        ToolRecord(ToolCall("c2", "read_file", {"path": "big.log"}), "ok", long_result),
        ToolRecord(ToolCall("c3", "shell", {"command": "ls"}), "declined", declined_by_user("no"))])]
    exchanges = [Exchange(user="Weather in Paris?", answer="18°C and rain.", rounds=copy.deepcopy(rounds)),
                 Exchange(user="Now the log?", rounds=copy.deepcopy(rounds), interrupted=True)]
    request = summary_request(None, exchanges)
    sent = request.messages("Summarise")
    assert all(m["role"] in ("system", "user", "assistant") and "tool_calls" not in m for m in sent)
    first = sent[2]["content"]
    assert 'weather(city="Paris")' in first and "18°C, light rain" in first and first.endswith("18°C and rain.")
    assert "[tool result, declined] declined by the user: no" in first
    assert f"… [{len(long_result) - SUMMARY_TOOL_RESULT_CHARS:,} more characters]" in first
    assert len(first) < SUMMARY_TOOL_RESULT_CHARS * 2 + 500
    assert sent[3]["content"] == "Now the log?" and "read_file" in sent[4]["content"]  # rounds without an answer


def test_an_exchange_with_only_tool_rounds_can_be_summarised() -> None:
    from llmchat.engine.context import _sendable

    rounds = two_rounds()
    conversation = Conversation(exchanges=[Exchange(user="a", rounds=rounds, interrupted=True),
                                           Exchange(user="b", answer="B"), Exchange(user="c")])
    assert _sendable(conversation, pending=True) == [0, 1]


# ----------------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("fts", [True, False])
def test_search_finds_words_in_tool_arguments_and_results_not_in_json_keys(tmp_path: Path, fts: bool) -> None:
    with Store(tmp_path / "history.db", fts=fts) as store:
        assert store.has_fts is fts and store.has_json
        tools, plain = Conversation(), Conversation()
        record_turn(store, tools, "Weather?", "Sunny.", two_rounds())
        record_turn(store, plain, "status of the result?", "No tools here.")

        def found(text: str) -> set[str | None]:
            return {s.id for s in store.list_conversations(search=text)}

        assert found("km/h") == {tools.id}  # in a result
        assert found("杭州") == {tools.id}  # in the arguments
        assert found("WIND 22°c") == {tools.id}  # every word, any case, in the calls of one message
        assert found("rm -rf") == {tools.id}
        assert found("status") == {plain.id} and found("seconds") == set()  # JSON keys are not text
        assert found("wind nothing-like-this") == set()
        assert found("sunny") == {tools.id}  # the answer's own text, as before
        store._db.execute("UPDATE messages SET tool_rounds = '[not json' WHERE tool_rounds IS NOT NULL")
        assert found("km/h") == set()  # a hand-edited column is skipped, never an error


def test_save_of_an_unsaved_chat_carries_its_rounds_and_imports(env: dict[str, str]) -> None:
    """`/save FILE.json` in a `--no-save` chat writes the record from memory: rounds included, importable."""
    from llmchat.store.export import conversation_record

    conversation = Conversation(exchanges=[Exchange(user="Weather?", answer="Sunny.", model=PROFILE.model,
                                                    rounds=two_rounds()),
                                           Exchange(user="Stop", rounds=two_rounds()[:1], interrupted=True)])
    record = conversation_record(conversation, PROFILE, cid="0a1b2c3d", created="2025-03-01T10:00:00.000+00:00")
    assert [m.get("tool_rounds") for m in record["messages"]] == [
        None, [r.as_json() for r in two_rounds()], None, [two_rounds()[0].as_json()]]
    with open_store() as store:
        store.import_record(json.loads(json.dumps(record)))
        loaded = store.load_conversation("0a1b2c3d")
    assert sent_form(loaded.messages("next")) == sent_form(conversation.messages("next"))


def test_a_turn_that_ended_after_its_tools_without_text_says_so(env: dict[str, str]) -> None:
    """The round bound reached, say: the calls are shown, and the missing answer is not called a failure."""
    with open_store() as store:
        record_turn(store, Conversation(), "Weather?", "", two_rounds())
        summary, messages = store.messages("last")
    text = markdown_transcript(summary, messages)
    assert 'trust = true)\n\n*(no answer after the tool calls)*\n' in text
    buffer = io.StringIO()
    draw_transcript(Console(file=buffer, force_terminal=True, width=80), summary, messages)
    drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert "(no answer after the tool calls)" in drawn and "request failed" not in drawn
