"""The conversation store (issue 5): nothing lost, resume, concurrency, privacy, search, export/import.

Most tests drive the store the way `ask` and the REPL do, through `run_turn(..., recorder=...)` with a
scripted provider, and then look at the database with a separate connection, because what matters is
what is on disk when the process is gone.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY

from llmchat.config.profile import Profile
from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.errors import StreamBroken, Unreachable
from llmchat.core.events import Answer, Event, Finish, Reasoning, TurnResult, Usage
from llmchat.engine.chat import run_turn
from llmchat.providers import ChatOptions
from llmchat.store import records as store_records
from llmchat.store.db import Store, existing_store, open_store
from llmchat.store.files import data_dir, default_path
from llmchat.store.records import ImportFormatError, NotFound, StoreError
from llmchat.store.schema import SCHEMA_VERSION

PROFILE = Profile(name="local", provider="ollama", model="qwen3:0.6b")
UNICODE_QUESTION = '天空为什么是蓝色的？ "quotes" 100% _x_'


# ------------------------------------------------------------------------------------------ helpers


class Script:
    """A provider that plays `events`, then raises `fail` (if any), and keeps every request it got."""

    def __init__(self, *events: Event, fail: BaseException | None = None,
                 before: Callable[[], None] | None = None) -> None:
        self.events, self.fail, self.before = events, fail, before
        self.sent: list[list[dict[str, Any]]] = []

    def stream(self, messages: Any, options: ChatOptions) -> Iterator[Event]:
        self.sent.append([dict(m) for m in messages])
        if self.before is not None:
            self.before()
        yield from self.events
        if self.fail is not None:
            raise self.fail


class NullView:
    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def close(self, result: TurnResult) -> None: ...


def turn(store: Store, conversation: Conversation, question: str, provider: Script | None = None,
         profile: Profile = PROFILE) -> TurnResult:
    """One turn through the real turn loop, saved by the store's recorder."""
    provider = provider or Script(Answer(f"You said: {question}"), Finish("stop"))
    result, _ = run_turn(conversation, question, provider, ChatOptions(model=profile.model), NullView(),
                         retries=0, sleep=lambda s: None, recorder=store.recorder(profile))
    return result


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read with a connection of its own, as a later process would."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone():
            db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")  # raises if off
        return result
    finally:
        db.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct, increasing timestamps, so ordering by `updated` never depends on the millisecond."""
    ticks = itertools.count()
    # every store module reads the clock through records.now
    monkeypatch.setattr(store_records, "now", lambda: f"2025-01-01T00:00:{next(ticks):06.3f}+00:00")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data" / "history.db") as store:
        yield store


def rich_conversation(store: Store) -> Conversation:
    """Every kind of turn: complete with usage and reasoning, interrupted, failed, and unicode text."""
    conversation = Conversation(system="Be terse.")
    turn(store, conversation, "Why is the sky blue?", Script(
        Reasoning("Rayleigh…"), Answer("Short wavelengths scatter more."), Finish("stop"),
        Usage(prompt=12, completion=30, total=42, reasoning=10, cached=4, eval_seconds=0.5)))
    turn(store, conversation, "Tell me a long story", Script(Answer("Once upon"), fail=KeyboardInterrupt()))
    turn(store, conversation, "Are you there?", Script(fail=Unreachable("Cannot reach the server.")))
    turn(store, conversation, UNICODE_QUESTION, Script(Answer("因为瑞利散射。"), Finish("stop")))
    return conversation


# ---------------------------------------------------------------------------------- nothing lost


def test_question_is_committed_before_the_request_goes_out(db: Store) -> None:
    seen: list[list[tuple[Any, ...]]] = []
    conversation = Conversation()
    provider = Script(Answer("ok"), before=lambda: seen.append(
        rows(db.path, "SELECT role, content FROM messages WHERE conversation = ?", (conversation.id,))))
    turn(db, conversation, "first question", provider)
    assert seen == [[("user", "first question")]]  # on disk, visible to another connection, before any byte
    assert rows(db.path, "SELECT role, content FROM messages ORDER BY position") == [
        ("user", "first question"), ("assistant", "ok")]


def test_every_way_a_turn_ends_is_saved(db: Store) -> None:
    conversation = rich_conversation(db)
    got = rows(db.path, "SELECT position, role, content, reasoning, interrupted, finish_reason, prompt_tokens, "
                        "cached_tokens, eval_s FROM messages WHERE conversation = ? ORDER BY position",
               (conversation.id,))
    assert got == [
        (0, "user", "Why is the sky blue?", None, 0, None, None, None, None),
        (1, "assistant", "Short wavelengths scatter more.", "Rayleigh…", 0, "stop", 12, 4, 0.5),
        (2, "user", "Tell me a long story", None, 0, None, None, None, None),
        (3, "assistant", "Once upon", None, 1, None, None, None, None),  # Ctrl-C: partial text, flagged
        (4, "user", "Are you there?", None, 0, None, None, None, None),
        (5, "assistant", "", None, 0, None, None, None, None),  # failed before any token: on record, empty
        (6, "user", UNICODE_QUESTION, None, 0, None, None, None, None),
        (7, "assistant", "因为瑞利散射。", None, 0, "stop", None, None, None),
    ]
    ttft, total = rows(db.path, "SELECT ttft_s, total_s FROM messages WHERE position = 1")[0]
    assert ttft is not None and total is not None


def test_a_broken_stream_keeps_the_partial_answer_flagged(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "hi", Script(Reasoning("hmm"), Answer("Hel"), fail=StreamBroken("The stream broke.")))
    assert rows(db.path, "SELECT content, reasoning, interrupted FROM messages WHERE role = 'assistant'") == [
        ("Hel", "hmm", 1)]


# --------------------------------------------------------------------------------------- resume


def test_resume_builds_the_conversation_as_it_was(db: Store) -> None:
    saved = rich_conversation(db)
    loaded = db.load_conversation("last")
    assert loaded.id == saved.id and loaded.system == "Be terse."
    assert [(e.user, e.answer, e.interrupted) for e in loaded.exchanges] == [
        ("Why is the sky blue?", "Short wavelengths scatter more.", False),
        ("Tell me a long story", "Once upon", True),
        ("Are you there?", "", False),
        (UNICODE_QUESTION, "因为瑞利散射。", False),
    ]
    first = loaded.exchanges[0]
    assert first.reasoning == "Rayleigh…" and first.model == "qwen3:0.6b"
    assert first.usage == Usage(prompt=12, completion=30, total=42, reasoning=10, cached=4, eval_seconds=0.5)
    assert loaded.messages() == saved.messages()  # exactly what the live session would send next


def test_resume_sends_the_right_history_and_appends_to_the_same_conversation(db: Store) -> None:
    first = Conversation(system="Be terse.")
    turn(db, first, "one")
    turn(db, first, "two", Script(Answer("partial"), fail=KeyboardInterrupt()))
    resumed = db.load_conversation(first.id or "")
    provider = Script(Answer("three done"), Finish("stop"))
    turn(db, resumed, "three", provider)
    assert provider.sent == [[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "You said: one"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "three"},
    ]]
    assert [s.id for s in db.list_conversations()] == [first.id]  # appended, not a new conversation
    assert [e.user for e in db.load_conversation("last").exchanges] == ["one", "two", "three"]


def test_a_pending_question_resumes_without_an_answer_and_is_not_resent(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "answered")
    pending = Exchange(user="never answered")
    conversation.exchanges.append(pending)
    db.recorder(PROFILE).question(conversation, pending)  # the process dies here
    resumed = db.load_conversation("last")
    assert [(e.user, e.answer) for e in resumed.exchanges] == [("answered", "You said: answered"),
                                                              ("never answered", "")]
    provider = Script(Answer("ok"))
    turn(db, resumed, "next")
    turn(db, resumed, "after", provider)
    assert [m["content"] for m in provider.sent[0]] == [
        "answered", "You said: answered", "next", "You said: next", "after"]
    assert rows(db.path, "SELECT position, role FROM messages ORDER BY position") == [
        (0, "user"), (1, "assistant"), (2, "user"), (4, "user"), (5, "assistant"), (6, "user"), (7, "assistant")]


def test_retry_and_undo_keep_the_saved_conversation_in_step(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "one")
    turn(db, conversation, "two")
    conversation.pop()  # /retry (Conversation.pop frees its slot): drop the last turn and ask again
    turn(db, conversation, "two", Script(Answer("better"), Finish("stop")))
    assert [(e.user, e.answer) for e in db.load_conversation("last").exchanges] == [
        ("one", "You said: one"), ("two", "better")]
    conversation.pop()  # /undo
    db.truncate(conversation)
    assert [e.user for e in db.load_conversation("last").exchanges] == ["one"]
    conversation.pop()  # /undo of the first turn, then a new first question: a new title
    turn(db, conversation, "a new start")
    assert db.summary("last").title == "a new start" and db.summary("last").turns == 1
    assert integrity(db.path) == "ok"


def test_a_conversation_removed_while_open_is_saved_again_whole(db: Store) -> None:
    conversation = Conversation(system="s")
    turn(db, conversation, "one")
    db.remove(conversation.id or "")
    turn(db, conversation, "two")
    assert [(e.user, e.answer) for e in db.load_conversation(conversation.id or "").exchanges] == [
        ("one", "You said: one"), ("two", "You said: two")]


def test_no_conversation_to_resume_is_a_clear_error(db: Store) -> None:
    with pytest.raises(NotFound, match="no saved conversation") as info:
        db.load_conversation("last")
    assert info.value.exit_code == 2


# ------------------------------------------------------------------------------- ids, list, rm


def test_ids_are_short_and_refs_resolve(db: Store, clock: None) -> None:
    conversations = [Conversation() for _ in range(3)]
    for n, conversation in enumerate(conversations):
        turn(db, conversation, f"question {n}")
    ids = [c.id or "" for c in conversations]
    assert all(len(i) == 8 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == 3
    assert db.resolve("last") == ids[2]
    assert db.resolve(ids[0]) == ids[0] and db.resolve(ids[1][:6]) == ids[1]
    with pytest.raises(NotFound, match="No saved conversation has the id 'nope'"):
        db.resolve("nope")


def test_an_ambiguous_prefix_lists_the_candidates(db: Store) -> None:
    for cid in ("abcd0001", "abcd0002"):
        db.import_record(_record(cid, "hello"))
    with pytest.raises(NotFound, match=r"'abcd' matches several conversations \(abcd0001, abcd0002\)"):
        db.resolve("abcd")


def test_list_is_newest_first_with_a_limit(db: Store, clock: None) -> None:
    a, b, c = Conversation(), Conversation(), Conversation()
    turn(db, a, "alpha")
    turn(db, b, "beta")
    turn(db, c, "gamma")
    turn(db, a, "alpha again")  # updated last: first in the list
    listed = db.list_conversations()
    assert [s.title for s in listed] == ["alpha", "gamma", "beta"]
    assert [s.turns for s in listed] == [2, 1, 1]
    assert [s.title for s in db.list_conversations(limit=2)] == ["alpha", "gamma"]
    assert len(db.list_conversations(limit=0)) == len(db.list_conversations(limit=None)) == 3
    assert listed[0].as_json() == {"id": a.id, "title": "alpha", "profile": "local", "model": "qwen3:0.6b",
                                   "turns": 2, "updated": listed[0].updated}


def test_title_is_the_first_question_shortened(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "  Explain\n\nthis   code: " + "x" * 200)
    title = db.summary("last").title
    assert title.startswith("Explain this code: xxx") and title.endswith("…") and len(title) == 80


def test_rm_deletes_the_conversation_its_messages_and_their_index(db: Store) -> None:
    keep, drop = Conversation(), Conversation()
    turn(db, keep, "keep me")
    turn(db, drop, "drop me unique-word")
    assert db.remove(drop.id or "").title == "drop me unique-word"
    assert [s.id for s in db.list_conversations()] == [keep.id]
    assert rows(db.path, "SELECT count(*) FROM messages WHERE conversation = ?", (drop.id,)) == [(0,)]
    assert db.list_conversations(search="unique-word") == []
    assert integrity(db.path) == "ok"
    with pytest.raises(NotFound):
        db.remove(drop.id or "")


# ---------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_search_finds_substrings_in_any_message(tmp_path: Path, fts: bool, clock: None) -> None:
    with Store(tmp_path / "h.db", fts=fts) as store:
        assert store.has_fts is fts
        sky, code, cjk = Conversation(), Conversation(), Conversation()
        turn(store, sky, "Why is the SKY blue?")
        turn(store, code, "fix my Python code", Script(Answer("Use 100% of `list_files()` here")))
        turn(store, cjk, "天空为什么是蓝色的")

        def found(text: str) -> list[str | None]:
            return [s.id for s in store.list_conversations(search=text)]

        assert found("sky") == [sky.id]  # case-insensitive
        assert found("said: why") == [sky.id]  # in the answer, across words
        assert found("pyth cod") == [code.id]  # every word, anywhere in one message
        assert found("100%") == [code.id] and found("_files") == [code.id]  # LIKE wildcards are literal
        assert found("%") == [code.id] and found("蓝色") == [cjk.id]  # short words and CJK substrings
        assert found("e") == [code.id, sky.id]  # newest first
        assert found("nowhere") == [] and found('"quoted') == []
        assert found("   ") == found("") == [s.id for s in store.list_conversations()]


def test_search_index_follows_replaced_turns(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "first-version")
    conversation.pop()  # /retry
    turn(db, conversation, "second-version")
    assert db.list_conversations(search="first-version") == []
    assert len(db.list_conversations(search="second-version")) == 1
    assert integrity(db.path) == "ok"


# ------------------------------------------------------------------------------- export / import


def test_export_import_export_is_identical(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as first:
        conversation = rich_conversation(first)
        pending = Exchange(user="pending question")
        conversation.exchanges.append(pending)
        first.recorder(PROFILE).question(conversation, pending)
        exported = first.export_json("last")
    with Store(tmp_path / "b.db") as second:
        result = second.import_record(json.loads(exported))
        assert (result.id, result.renamed, result.duplicate) == (conversation.id, False, False)
        assert second.export_json(result.id) == exported  # byte for byte, id included
        assert second.load_conversation(result.id).messages() == conversation.messages()
    record = json.loads(exported)
    assert record["format"] == "llmchat-conversation" and record["version"] == 1
    assert record["messages"][1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
                                              "reasoning_tokens": 10, "cached_tokens": 4, "eval_s": 0.5}
    assert record["messages"][3]["interrupted"] is True and record["messages"][-1]["role"] == "user"


def test_import_of_a_taken_id(db: Store) -> None:
    conversation = Conversation()
    turn(db, conversation, "hello")
    record = db.export_record("last")
    again = db.import_record(json.loads(json.dumps(record)))
    assert again.duplicate and again.id == conversation.id  # the same conversation: nothing written
    record["title"] = "edited elsewhere"
    renamed = db.import_record(record)
    assert renamed.renamed and renamed.original_id == conversation.id and renamed.id != conversation.id
    assert db.summary(renamed.id).title == "edited elsewhere"
    assert len(db.list_conversations()) == 2


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(format="other"), "not an llmchat conversation export"),
    (lambda r: r.update(version=99), "export version 99"),
    (lambda r: r.update(id=""), '"id" must be a string'),
    (lambda r: r.update(messages={}), '"messages" must be a list'),
    (lambda r: r["messages"][0].update(role="system"), r'messages\[0\].role must be "user" or "assistant"'),
    (lambda r: r["messages"][1].update(usage={"prompt_tokens": "12"}), r"messages\[1\].usage.prompt_tokens"),
    (lambda r: r["messages"][1].update(position=3), r"messages\[1\] is out of place"),
    (lambda r: r["messages"].reverse(), r"messages\[0\] is out of place"),
])
def test_import_rejects_a_malformed_file_saying_where(db: Store, change: Callable[[dict[str, Any]], None],
                                                       message: str) -> None:
    record = _record("abcd1234", "hello")
    change(record)
    with pytest.raises(ImportFormatError, match=message):
        db.import_record(record, "file.json")
    assert db.list_conversations() == []


def _record(cid: str, question: str) -> dict[str, Any]:
    message = {"reasoning": None, "model": "m", "usage": None, "timing": None, "finish_reason": None,
               "interrupted": False, "created": "2025-01-01T00:00:00.000+00:00"}
    return {"format": "llmchat-conversation", "version": 1, "id": cid, "title": question, "profile": "p",
            "provider": "ollama", "model": "m", "system": None, "created": "2025-01-01T00:00:00.000+00:00",
            "updated": "2025-01-01T00:00:00.000+00:00", "messages": [
                {**message, "position": 0, "role": "user", "content": question},
                {**message, "position": 1, "role": "assistant", "content": "hi", "finish_reason": "stop"}]}


# --------------------------------------------------------------------------------------- privacy


def test_files_are_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with Store(tmp_path / "new" / "history.db") as store:
            turn(store, Conversation(), "hi")
            files = [store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")]
            assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
            assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * 3
    finally:
        os.umask(old)


def test_a_readable_database_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    Store(path).close()
    path.chmod(0o644)
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_api_key_reaches_the_data_directory(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile's key variable holds TEST_KEY, its URL and its inline key carry it too: never written."""
    monkeypatch.setenv("CLOUD_KEY", TEST_KEY)
    profile = Profile(name="cloud", provider="openai", model="qwen-plus", api_key_env="CLOUD_KEY",
                      base_url=f"https://llm.example.test/v1?api_key={TEST_KEY}")
    if "api_key" in {f.name for f in dataclasses.fields(Profile)}:  # a key written in a private config file
        profile = dataclasses.replace(profile, api_key=TEST_KEY)
    with open_store() as store:
        conversation = Conversation(system="You are helpful.")
        turn(store, conversation, "hello", profile=profile)
        turn(store, conversation, "again", Script(Answer("par"), fail=StreamBroken("broke")), profile=profile)
        turn(store, conversation, "fail", Script(fail=Unreachable("down")), profile=profile)
        store.export_json("last")
    files = [p for p in data_dir().rglob("*") if p.is_file()]
    assert default_path() in files
    for path in files:
        data = path.read_bytes()
        assert TEST_KEY.encode() not in data and TEST_KEY[3:].encode() not in data, path
        assert b"llm.example.test" not in data, path  # base URLs (which can carry keys) are never stored


def test_read_only_use_creates_nothing(env: dict[str, str]) -> None:
    """What `--no-save` and `history list` with no history rely on: no store opened, no file made."""
    assert existing_store() is None
    run_turn(Conversation(), "hi", Script(Answer("ok")), ChatOptions(model="m"), NullView(), recorder=None)
    assert not data_dir().exists()


# ------------------------------------------------------------------------------------- schema


def test_schema_is_versioned_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    Store(path).close()
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    Store(path).close()  # opening again migrates nothing and keeps the data
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="written by a newer llmchat"):
        Store(path)


def test_an_unusable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    with pytest.raises(StoreError, match="Cannot create the history database .*: Not a directory"):
        Store(blocker / "history.db")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="is damaged") as info:
        Store(path)
    assert "Move the file away" in (info.value.hint or "")


# ---------------------------------------------------------------------------------- concurrency


WRITER = r"""
import sys, time
from pathlib import Path
from llmchat.core.conversation import Conversation, Exchange
from llmchat.config.profile import Profile
from llmchat.core.events import TurnResult
from llmchat.store.db import Store

path, go, name, turns = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
store = Store(path)  # both open (and migrate) a fresh file at the same moment
recorder = store.recorder(Profile(name=name, provider="ollama", model="m"))
for c in range(3):
    conversation = Conversation(system=name)
    for n in range(turns):
        exchange = Exchange(user=f"{name} {c} {n}", model="m")
        conversation.exchanges.append(exchange)
        recorder.question(conversation, exchange)
        exchange.answer = f"answer {n}"
        recorder.answer(conversation, exchange, TurnResult(model="m", answer=exchange.answer))
print("done", flush=True)
"""


def test_two_processes_write_at_once_without_locking_errors(tmp_path: Path) -> None:
    path, go = tmp_path / "data" / "history.db", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), name, "40"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    time.sleep(0.3)  # both interpreters up and polling
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(out == "done\n" and err == "" for out, err in outputs), outputs
    assert rows(path, "SELECT profile, count(*) FROM conversations GROUP BY profile") == [("a", 3), ("b", 3)]
    assert rows(path, "SELECT count(*) FROM messages") == [(2 * 3 * 40 * 2,)]
    assert integrity(path) == "ok"


@pytest.mark.parametrize("attempt", range(3))
def test_several_processes_creating_the_file_at_once_all_succeed(tmp_path: Path, attempt: int) -> None:
    """A fresh file is switched to WAL and migrated by whoever comes first; SQLite refuses the others
    without waiting (SQLITE_BUSY), so opening must retry rather than fail."""
    path, go = tmp_path / "history.db", tmp_path / "go"
    names = ["a", "b", "c", "d"]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), name, "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
    time.sleep(0.3)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(names), outputs
    assert rows(path, "SELECT count(*) FROM messages") == [(len(names) * 3 * 2 * 2,)]


def test_threads_with_their_own_stores_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    Store(path).close()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with Store(path) as store:
                conversation = Conversation()
                for i in range(25):
                    turn(store, conversation, f"thread {n} turn {i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rows(path, "SELECT count(*) FROM messages") == [(4 * 25 * 2,)]


def test_a_writer_waits_for_a_long_transaction_instead_of_failing(db: Store) -> None:
    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another llmchat holds the write lock for a while
    timer = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    timer.start()
    started = time.monotonic()
    turn(db, Conversation(), "patient")
    assert time.monotonic() - started >= 0.4
    timer.join()
    other.close()
    assert rows(db.path, "SELECT count(*) FROM messages") == [(2,)]


# ------------------------------------------------------------------------------------- SIGKILL


KILLED = r"""
import sqlite3, sys, time
from pathlib import Path
from llmchat.core.conversation import Conversation, Exchange
from llmchat.config.profile import Profile
from llmchat.core.events import TurnResult
from llmchat.store.db import Store

path, mode = Path(sys.argv[1]), sys.argv[2]
store = Store(path)
recorder = store.recorder(Profile(name="local", provider="ollama", model="m"))
conversation = Conversation(system="sys")

def ask(n):
    exchange = Exchange(user=f"question {n}", model="m")
    conversation.exchanges.append(exchange)
    recorder.question(conversation, exchange)
    print(f"asked {n} {conversation.id}", flush=True)
    return exchange

def answer(n, exchange, size):
    exchange.answer = f"answer {n} " + "x" * size
    recorder.answer(conversation, exchange, TurnResult(model="m", answer=exchange.answer, finish_reason="stop"))
    print(f"answered {n}", flush=True)

if mode == "hold":
    for n in range(3):
        answer(n, ask(n), 100)
    ask(3)  # the pending question; its answer is still streaming when the kill comes
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # mid-transaction: a large write that spills into the WAL
    for n in range(20):
        other.execute("INSERT INTO messages (conversation, position, role, content, created) "
                      "VALUES (?, ?, 'assistant', ?, 'x')", (conversation.id, 100 + n, "y" * 500_000))
    print("ready", flush=True)
    time.sleep(60)
elif mode == "stream":  # run_turn with a paced provider: the recorder saves the answer as it streams
    from llmchat.engine.chat import run_turn
    from llmchat.core.events import Answer
    from llmchat.providers import ChatOptions

    class Paced:
        def stream(self, messages, options):
            for n in range(1, 100_000):
                yield Answer(f"{n} ")
                print(f"streamed {n} {conversation.id}", flush=True)
                time.sleep(0.01)

    class View:
        def reasoning(self, text): pass
        def answer(self, text): pass
        def notice(self, text): pass
        def close(self, result): pass

    run_turn(conversation, "stream", Paced(), ChatOptions(model="m"), View(), recorder=recorder)
else:
    for n in range(10_000):
        answer(n, ask(n), 200_000)
"""


def _start_killed(path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", KILLED, str(path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_transaction_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    proc = _start_killed(path, "hold")
    assert proc.stdout is not None
    lines = []
    while not lines or lines[-1] != "ready":
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        lines.append(line.strip())
    assert Path(f"{path}-wal").stat().st_size > 1_000_000  # the uncommitted pages really reached the WAL
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    cid = lines[0].split()[2]
    assert integrity(path) == "ok"
    with Store(path) as store:
        conversation = store.load_conversation(cid)
    assert [(e.user, e.answer[:8]) for e in conversation.exchanges] == [
        ("question 0", "answer 0"), ("question 1", "answer 1"), ("question 2", "answer 2"), ("question 3", "")]
    assert conversation.system == "sys"
    assert rows(path, "SELECT count(*) FROM messages WHERE position >= 100") == [(0,)]  # rolled back


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_at_a_random_moment_leaves_every_committed_turn(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "history.db"
    proc = _start_killed(path, "loop")
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the loop is running: the random moment counts from here, not from a
    time.sleep(0.1 + random.Random(seed).random() * 0.8)  # start-up that a loaded machine (xdist) makes slow
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    out = first + out
    asked = [line.split() for line in out.splitlines() if line.startswith("asked")]
    answered = {int(line.split()[1]) for line in out.splitlines() if line.startswith("answered")}
    assert asked, err  # it got going before the kill
    assert integrity(path) == "ok"
    with Store(path) as store:
        exchanges = store.load_conversation(asked[0][2]).exchanges
    assert len(exchanges) >= len(asked)  # every question it reported committed is there (maybe one more)
    for n, exchange in enumerate(exchanges):
        assert exchange.user == f"question {n}"
        if n in answered:
            assert exchange.answer == f"answer {n} " + "x" * 200_000
        assert exchange.answer in ("", f"answer {n} " + "x" * 200_000)  # all or nothing, never torn


def test_sigkill_mid_stream_keeps_the_answer_up_to_the_last_second(tmp_path: Path) -> None:
    """The recorder's progress saves (about once a second) leave the streamed answer on disk."""
    path = tmp_path / "history.db"
    proc = _start_killed(path, "stream")
    assert proc.stdout is not None
    seen: list[tuple[float, int, str]] = []  # (when, pieces streamed, conversation id)
    while not seen or seen[-1][0] - seen[0][0] < 2.5:
        line = proc.stdout.readline().split()
        assert line, proc.stderr.read() if proc.stderr else ""
        seen.append((time.monotonic(), int(line[1]), line[2]))
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert integrity(path) == "ok"
    with Store(path) as store:
        [exchange] = store.load_conversation(seen[0][2]).exchanges
    assert exchange.user == "stream" and exchange.interrupted
    pieces = exchange.answer.split()
    assert pieces == [str(n) for n in range(1, len(pieces) + 1)]  # a prefix of what streamed, never torn
    due = max(n for when, n, _ in seen if when <= killed_at - 1.5)  # 0.5 s of slack for a busy machine
    assert len(pieces) >= due
