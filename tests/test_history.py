"""`llmchat history …` as the user sees it: tables, JSON, transcripts, export/import files, messages.

The presentation functions are tested directly (they are what the Typer commands call); the last
section runs the real CLI and is skipped, with the reason, until cli.py wires the commands and flags.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from conftest import TEST_KEY
from rich.console import Console
from rich.markdown import Markdown

from llmchat.config.profile import Profile
from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.engine import history as history_cli
from llmchat.engine.history import (
    draw_transcript,
    history_export,
    history_import,
    history_list,
    history_rm,
    history_show,
)
from llmchat.store import records as store_records
from llmchat.store.db import Store, open_store
from llmchat.store.files import data_dir, default_path
from llmchat.store.records import ImportFormatError, NotFound

PROFILE = Profile(name="local", provider="ollama", model="qwen3:0.6b")


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is shown in tables: pin it to UTC so the expected text is exact."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    minutes = itertools.count()
    # every store module reads the clock through records.now
    monkeypatch.setattr(store_records, "now", lambda: f"2025-03-01T10:{next(minutes):02d}:00.000+00:00")


def record_turn(store: Store, conversation: Conversation, question: str, answer: str = "", *,
                reasoning: str = "", interrupted: bool = False, usage: Usage | None = None,
                timing: Timing | None = None) -> None:
    """A turn as `run_turn` records it, with exactly the numbers given."""
    recorder = store.recorder(PROFILE)
    exchange = Exchange(user=question, model=PROFILE.model)
    conversation.exchanges.append(exchange)
    recorder.question(conversation, exchange)
    exchange.answer, exchange.reasoning, exchange.interrupted, exchange.usage = answer, reasoning, interrupted, usage
    result = TurnResult(model=PROFILE.model, answer=answer, reasoning=reasoning, usage=usage,
                        finish_reason=None if interrupted else "stop", interrupted=interrupted,
                        timing=timing or Timing())
    recorder.answer(conversation, exchange, result)


@pytest.fixture
def saved(env: dict[str, str], clock: None) -> list[str]:
    """Three conversations in the default store (XDG_DATA_HOME): ids oldest first."""
    with open_store() as store:
        sky, code, story = Conversation(system="Be terse."), Conversation(), Conversation()
        record_turn(store, sky, "Why is the sky blue?", "**Rayleigh** scattering.", reasoning="Short waves.\n",
                    usage=Usage(prompt=12, completion=30, reasoning=10),
                    timing=Timing(ttft_s=0.41, total_s=2.0, thinking_s=1.5, tokens_per_s=48.3))
        record_turn(store, code, "fix my code", "Add a colon.")
        record_turn(store, story, "Tell me a story", "Once upon", interrupted=True)
        record_turn(store, sky, "And at sunset?", "Longer path.")
        return [sky.id or "", code.id or "", story.id or ""]


# ------------------------------------------------------------------------------------------ list


def test_list_in_a_pipe_is_aligned_plain_text(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_list()
    sky, code, story = saved
    assert capsys.readouterr().out == (
        "id        updated           profile/model     turns  title\n"
        f"{sky}  2025-03-01 10:07  local/qwen3:0.6b      2  Why is the sky blue?\n"
        f"{story}  2025-03-01 10:05  local/qwen3:0.6b      1  Tell me a story\n"
        f"{code}  2025-03-01 10:03  local/qwen3:0.6b      1  fix my code\n"
    )


def test_list_json_has_the_contract_shape(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_list(limit=2, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data == [
        {"id": saved[0], "title": "Why is the sky blue?", "profile": "local", "model": "qwen3:0.6b", "turns": 2,
         "updated": "2025-03-01T10:07:00.000+00:00"},
        {"id": saved[2], "title": "Tell me a story", "profile": "local", "model": "qwen3:0.6b", "turns": 1,
         "updated": "2025-03-01T10:05:00.000+00:00"},
    ]


def test_list_search_and_limit(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_list(search="RAYLEIGH", as_json=True)
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [saved[0]]
    history_list(search="no such text")
    captured = capsys.readouterr()
    assert captured.out == "" and "No saved conversation contains 'no such text'." in captured.err
    history_list(limit=0, as_json=True)
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_list_in_a_terminal_is_a_table(saved: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(history_cli, "wants_plain", lambda stream, environment=None: False)
    monkeypatch.setattr(history_cli, "_console", lambda environment=None:
                        Console(file=buffer, force_terminal=True, width=100))
    history_list()
    text = buffer.getvalue()
    assert "\x1b[" in text  # styled
    assert "turns" in text and saved[0] in text and "Why is the sky blue?" in text


def test_no_history_lists_nothing_and_creates_nothing(env: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    history_list()
    captured = capsys.readouterr()
    assert captured.out == "" and "No saved conversations yet." in captured.err
    history_list(as_json=True)
    assert capsys.readouterr().out == "[]\n"
    with pytest.raises(NotFound, match="no saved conversation"):
        history_show("last")
    assert not data_dir().exists()


# ------------------------------------------------------------------------------------------ show


def test_show_in_a_pipe_prints_the_markdown_transcript(saved: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    history_show(saved[0])
    assert capsys.readouterr().out == f"""# Why is the sky blue?

- id: {saved[0]}
- profile: local (ollama), model: qwen3:0.6b
- created: 2025-03-01T10:00:00.000+00:00
- updated: 2025-03-01T10:07:00.000+00:00

## System

Be terse.

## You

Why is the sky blue?

## Assistant (qwen3:0.6b)

<details><summary>Reasoning</summary>

Short waves.

</details>

**Rayleigh** scattering.

*12 in · 30 out (10 reasoning) · first token 0.41s · 48.3 tok/s · 2.0s*

## You

And at sunset?

## Assistant (qwen3:0.6b)

Longer path.
"""


def test_show_last_marks_an_interrupted_answer(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_show(saved[2][:5])  # a prefix of the id works too
    out = capsys.readouterr().out
    assert "Once upon\n\n*(interrupted)*\n" in out


def _terminal(summary_ref: str, thinking: str = "collapse") -> str:
    buffer = io.StringIO()
    with open_store() as store:
        summary, messages = store.messages(summary_ref)
    draw_transcript(Console(file=buffer, force_terminal=True, width=60), summary, messages, thinking=thinking)
    return buffer.getvalue()


def _markdown(text: str) -> str:
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=60).print(Markdown(text))
    return buffer.getvalue()


def test_show_in_a_terminal_draws_like_the_live_view(saved: list[str]) -> None:
    drawn = _terminal(saved[0])
    assert _markdown("**Rayleigh** scattering.") in drawn  # the answer exactly as the live view commits it
    text = _strip(drawn)
    assert ">>> Why is the sky blue?" in text
    assert "▸ thought for 1.5s · 10 tokens" in text and "Short waves." not in text  # collapsed
    assert "\n12 in · 30 out (10 reasoning) · first token 0.41s\n48.3 tok/s · 2.0s\n" in text  # wrapped at 60
    assert "System: Be terse." in text and "2 turns" in text
    assert "Short waves." in _strip(_terminal(saved[0], "show"))
    assert "thought" not in _strip(_terminal(saved[0], "hide"))
    assert "[interrupted]" in _strip(_terminal(saved[2]))


def test_show_draws_a_pending_question_and_a_failed_turn(env: dict[str, str]) -> None:
    with open_store() as store:
        conversation = Conversation()
        record_turn(store, conversation, "failed one")  # the request failed before any token
        pending = Exchange(user="line one\nline two")
        conversation.exchanges.append(pending)
        store.recorder(PROFILE).question(conversation, pending)
    text = _strip(_terminal("last"))
    assert "(no answer: the request failed)" in text
    assert ">>> line one\n... line two\n(no answer was saved: the chat ended before it came)" in text


def test_show_in_a_terminal_through_history_show(saved: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(history_cli, "wants_plain", lambda stream, environment=None: False)
    monkeypatch.setattr(history_cli, "_console", lambda environment=None:
                        Console(file=buffer, force_terminal=True, width=60))
    history_show("last")
    assert ">>> And at sunset?" in _strip(buffer.getvalue())


def _strip(text: str) -> str:
    import re

    return "\n".join(line.rstrip() for line in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text).splitlines())


# ------------------------------------------------------------------------------- export, import, rm


def test_export_json_file_imports_elsewhere_and_exports_identically(
        saved: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first.json"
    history_export(saved[0], "json", first)
    assert capsys.readouterr().out == f"Wrote 2 turns to {first}\n"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))  # another machine's empty history
    history_import(first)
    assert capsys.readouterr().out == f"Imported {saved[0]} (\"Why is the sky blue?\", 2 turns).\n"
    second = tmp_path / "second.json"
    history_export(saved[0], "json", second)
    assert second.read_bytes() == first.read_bytes()
    history_export("last", "json")  # no -o: to stdout
    assert capsys.readouterr().out.endswith(first.read_text()[-200:])


def test_import_reports_a_duplicate_and_a_renamed_conversation(
        saved: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sky.json"
    history_export(saved[0], "json", path)
    capsys.readouterr()
    history_import(path)
    assert capsys.readouterr().out == f"{saved[0]} is already in the history, unchanged; nothing imported.\n"
    record = json.loads(path.read_text())
    record["title"] = "A different conversation"
    path.write_text(json.dumps(record))
    history_import(path)
    out = capsys.readouterr().out
    assert out.startswith(f"The id {saved[0]} belongs to another saved conversation; imported as ")
    assert out.endswith('("A different conversation", 2 turns).\n')


def test_import_errors_name_the_file(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ImportFormatError, match=r"bad.json is not valid JSON: .*line 1, column 2") as info:
        history_import(bad)
    assert info.value.exit_code == 2
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ImportFormatError, match="not an llmchat conversation export"):
        history_import(bad)
    with pytest.raises(Exception, match="Cannot read"):
        history_import(tmp_path / "missing.json")


def test_export_markdown_and_unknown_format(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_export(saved[1], "md")
    assert capsys.readouterr().out.startswith("# fix my code\n")
    with pytest.raises(Exception, match="Unknown export format 'html'") as info:
        history_export(saved[1], "html")
    assert getattr(info.value, "exit_code", None) == 2


def test_rm_deletes_and_says_what(saved: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    history_rm(saved[1])
    assert capsys.readouterr().out == f"Deleted {saved[1]} (\"fix my code\", 1 turn).\n"
    with pytest.raises(NotFound) as info:
        history_rm(saved[1])
    assert info.value.exit_code == 2
    history_list(as_json=True)
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [saved[0], saved[2]]


# ---------------------------------------------------------------------------------- through the CLI


def _cli_has(command: str, option: str | None = None) -> bool:
    """Whether cli.py already offers `command` (and `option` on it): these tests wait for the wiring."""
    from llmchat.cli.app import app

    group = typer.main.get_command(app)
    found = getattr(group, "commands", {}).get(command)
    return found is not None and (option is None or any(option in p.opts for p in found.params))


needs_history = pytest.mark.skipif(not _cli_has("history"), reason="`llmchat history` is not wired in cli.py yet")
needs_saving = pytest.mark.skipif(not _cli_has("ask", "--no-save"),
                                  reason="`ask` does not save (no --no-save) in cli.py yet")
needs_continue = pytest.mark.skipif(not _cli_has("ask", "--continue"), reason="`ask -c` is not wired yet")


@needs_history
def test_cli_history_list_json_and_show(saved: list[str], llmchat) -> None:
    run = llmchat("history", "list", "--json")
    assert run.code == 0, run.stderr
    assert [row["id"] for row in json.loads(run.stdout)] == [saved[0], saved[2], saved[1]]
    shown = llmchat("history", "show", "last")
    assert shown.code == 0 and shown.stdout.startswith("# Why is the sky blue?\n") and "\x1b[" not in shown.stdout
    missing = llmchat("history", "show", "nope")
    assert missing.code == 2 and "No saved conversation has the id 'nope'" in missing.stderr


@needs_saving
def test_cli_ask_saves_the_turn_and_never_the_key(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-p", "bailian", "Why is the sky blue?")
    assert run.code == 0, run.stderr
    assert fake_server.last().headers.get("authorization", "").endswith(TEST_KEY)  # the key was used…
    with Store(default_path()) as store:
        conversation = store.load_conversation("last")
    assert [(e.user, e.answer) for e in conversation.exchanges] == [
        ("Why is the sky blue?", "You said: Why is the sky blue?")]
    for path in (p for p in data_dir().rglob("*") if p.is_file()):  # …and is stored nowhere
        assert TEST_KEY.encode() not in path.read_bytes(), path


@needs_saving
def test_cli_no_save_leaves_no_row(fake_server, config_file, llmchat) -> None:
    assert llmchat("ask", "--no-save", "secret question").code == 0
    path = default_path()
    if path.exists():
        assert sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone() == (0,)
    assert llmchat("ask", "kept question").code == 0
    assert sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone() == (2,)
    assert not any(b"secret question" in p.read_bytes() for p in data_dir().rglob("*") if p.is_file())


@needs_continue
def test_cli_ask_continue_sends_the_history(fake_server, config_file, llmchat) -> None:
    assert llmchat("ask", "first").code == 0
    run = llmchat("ask", "-c", "second")
    assert run.code == 0, run.stderr
    assert fake_server.last("/api/chat").body["messages"] == [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "second"}]
    with Store(default_path()) as store:
        assert len(store.list_conversations()) == 1 and store.summary("last").turns == 2


# What `/save FILE.json` wrote before it wrote the export format (issue 14): such files still import.
OLD_SAVE = {
    "profile": "local", "provider": "ollama", "model": "qwen3:0.6b", "endpoint": "http://127.0.0.1:11434",
    "saved": "2025-03-01T10:00:00+00:00", "system": "Be terse.",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Rayleigh scattering.", "model": "qwen3:0.6b", "reasoning": "hmm",
         "usage": {"prompt_tokens": 12, "completion_tokens": 4, "reasoning_tokens": 1}},
        {"role": "user", "content": "And sunsets?"},
        {"role": "assistant", "content": "Longer pa", "model": "qwen3:0.6b", "interrupted": True},
    ],
}


def test_import_reads_a_file_the_old_save_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_SAVE), encoding="utf-8")
    history_import(path)
    out = capsys.readouterr().out
    assert out.startswith("Imported ") and out.endswith(" (\"Why is the sky blue?\", 2 turns).\n")
    history_import(path)  # the id is made from the content: the same file again is the same conversation
    assert capsys.readouterr().out.endswith("is already in the history, unchanged; nothing imported.\n")
    history_export("last", "json")
    record = json.loads(capsys.readouterr().out)
    assert (record["system"], record["model"], record["created"]) == ("Be terse.", "qwen3:0.6b", OLD_SAVE["saved"])
    assert [(m["role"], m["content"], m["interrupted"]) for m in record["messages"]] == [
        ("user", "Why is the sky blue?", False), ("assistant", "Rayleigh scattering.", False),
        ("user", "And sunsets?", False), ("assistant", "Longer pa", True)]
    answer = record["messages"][1]
    assert answer["reasoning"] == "hmm" and answer["profile"] == "local"
    assert (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]) == (12, 4)


def test_import_checks_the_images_it_carries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)
    record = json.loads(json.dumps(OLD_SAVE))
    with Store(tmp_path / "a.db") as store:
        cid = store.import_record(record).id
        exported = store.export_record(cid)
    exported["messages"][0]["images"] = [{"sha256": "0" * 64, "mime": "image/png",
                                          "data": base64.b64encode(png).decode(), "url": None}]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(exported), encoding="utf-8")
    with pytest.raises(ImportFormatError, match=r"messages\[0\]\.images\[0\]\.sha256 does not match the image"):
        history_import(path)
    exported["messages"][0]["images"] = [{"data": "not base64!", "url": None}]
    path.write_text(json.dumps(exported), encoding="utf-8")
    with pytest.raises(ImportFormatError, match=r"messages\[0\]\.images\[0\] is not a usable image"):
        history_import(path)
