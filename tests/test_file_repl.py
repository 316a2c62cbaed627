"""`/file PATH` in the chat: a text file's contents go with the next question, named, and are saved with it.

The pty tests drive a real `llmchat` against the fake server and read the request it received; the
command's refusals are checked on the registry without a terminal (tests/test_commands.py's way).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from llmchat.config.load import Config
from llmchat.config.profile import Profile
from llmchat.core.files import AttachedFile, with_files
from llmchat.repl import files as repl_files
from llmchat.repl.commands import COMMANDS
from llmchat.repl.state import ReplState

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(60)

NOTES = "# Plan\n- ship the fork server\n- close issue 14\n"


def test_a_file_goes_with_the_next_question_only_and_is_saved_with_it(repl, fake_server, tmp_path, llmchat) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    chat = repl()
    said = " ".join(chat.command(f"/file {notes}").split())
    assert f"Attached {notes} (3 lines, about" in said and "(1 file in all)" in said
    assert str(notes) in chat.command("/file")  # alone: lists what is attached
    chat.toolbar("1 file attached")
    request = chat.ask("what is left to do?")
    sent = request.body["messages"][-1]
    file = f'<file name="{notes}">\n{NOTES.rstrip()}\n</file>'
    assert sent == {"role": "user", "content": f"what is left to do?\n\n{file}"}
    follow_up = chat.ask("and after that?")
    assert follow_up.body["messages"][-1] == {"role": "user", "content": "and after that?"}  # the next one only
    assert follow_up.body["messages"][-3]["content"] == sent["content"]  # re-sent as part of the history
    chat.press("\x04")
    assert chat.wait_exit() == 0
    shown = llmchat("history", "show", "last")
    assert "close issue 14" in shown.stdout  # saved with its question


def test_clear_drops_the_files_and_nothing_is_added(repl, fake_server, tmp_path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    chat = repl()
    chat.command(f"/file {notes}")
    assert "Dropped 1 file." in chat.command("/file clear")
    request = chat.ask("hello")
    assert request.body["messages"][-1] == {"role": "user", "content": "hello"}


# ------------------------------------------------------------------------------- without a terminal


@pytest.fixture
def state() -> tuple[ReplState, io.StringIO, list]:
    out, errors = io.StringIO(), []
    profile = Profile(name="local", provider="ollama", model="qwen3:0.6b", base_url="http://127.0.0.1:9")
    config = Config(profiles={"local": profile}, default="local", path=None)
    return ReplState.start(config, profile, connector=lambda p: object(), out=out, report=errors.append), out, errors


def usage_error(state: tuple[ReplState, io.StringIO, list], line: str) -> str:
    """What the command printed (a UsageError is printed with the command's usage)."""
    out = state[1]
    out.seek(0)
    out.truncate()
    COMMANDS.dispatch(state[0], line)
    return " ".join(out.getvalue().split())


def test_a_missing_file_a_directory_and_binary_or_other_encodings_are_refused(state, tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    cases = {f"/file {tmp_path / 'nope.md'}": "does not exist", f"/file {tmp_path}": "is a directory",
             f"/file {tmp_path / 'blob.bin'}": "is a binary file", f"/file {tmp_path / 'latin1.txt'}": "not UTF-8 text"}
    for line, reason in cases.items():
        said = usage_error(state, line)
        assert reason in said and "nothing was attached" in said, said
    assert not state[0].pending_files  # nothing attached by a refusal


def test_a_fifo_is_refused_without_waiting_for_a_writer(state, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in usage_error(state, f"/file {fifo}")


def test_a_file_beyond_the_limit_is_cut_with_a_marker_and_says_so(state, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(repl_files, "FILE_LIMIT", 100)
    big = tmp_path / "big.log"
    big.write_text("x" * 250, encoding="utf-8")
    COMMANDS.dispatch(state[0], f"/file {big}")
    assert "cut at 100 characters" in state[1].getvalue()
    [attached] = state[0].pending_files.files
    assert attached.text.startswith("x" * 100) and "150 characters cut" in attached.text and attached.cut


def test_with_files_names_each_file_in_the_order_attached() -> None:
    files = [AttachedFile("a.py", "print(1)\n", False), AttachedFile("b.txt", "two", False)]
    assert with_files("compare", files) == ('compare\n\n<file name="a.py">\nprint(1)\n</file>\n\n'
                                            '<file name="b.txt">\ntwo\n</file>')
    assert with_files("plain", []) == "plain"
