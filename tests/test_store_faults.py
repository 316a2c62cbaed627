"""Issue 12 §2: store faults get the right advice, and reading survives a read-only data directory.

Every fault is real: a read-only bind mount (or, for a non-root user, plain permissions, which root
ignores), a database file with garbage written over its middle pages, a symlink. The CLI runs in a
subprocess, as a user would run it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmchat.store.db import Store

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(120)


def data_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "llmchat"


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make `directory` really read-only for this process's children, root included."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mount = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"root, but cannot bind-mount read-only here: {mount.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True, capture_output=True)
        with pytest.raises(OSError):
            (directory / "probe").write_text("x")  # really read-only
        yield
    finally:
        # --lazy: a failed assertion's traceback can still hold an in-process store's open file here
        subprocess.run(["umount", "--lazy", str(directory)], check=True, capture_output=True)


def assert_one_clear_message(output: str) -> None:
    assert "Traceback" not in output and "internal error" not in output and "bug in llmchat" not in output
    assert output.count("Error:") == 1, output


# ------------------------------------------------------------------------------------ read-only


def test_a_read_only_data_directory_still_reads(fake_server, config_file, env, llmchat) -> None:
    assert llmchat("ask", "saved before").code == 0
    with read_only(data_dir(env)):
        listed = llmchat("history", "--json")
        assert listed.code == 0, listed.output
        assert [row["title"] for row in json.loads(listed.stdout)] == ["saved before"]
        shown = llmchat("history", "show", "last")
        assert shown.code == 0 and "You said: saved before" in shown.stdout, shown.output
        usage = llmchat("usage", "--json")
        assert usage.code == 0 and json.loads(usage.stdout)["total"]["turns"] == 1, usage.output

        def questions() -> int:  # chat requests: a model-facts lookup (/api/show) asks nothing
            return sum(1 for r in fake_server.requests if r.path.endswith(("/api/chat", "/chat/completions")))

        requests = questions()
        asked = llmchat("ask", "not saved")
        assert asked.code == 1, asked.output
        assert_one_clear_message(asked.stderr)
        assert "read-only" in asked.stderr and "--no-save" in asked.stderr
        assert "Move the file away" not in asked.stderr
        assert questions() == requests  # nothing is asked that is not on record

        unsaved = llmchat("ask", "--no-save", "fine without history")
        assert unsaved.code == 0 and unsaved.stdout == "You said: fine without history\n"
    assert llmchat("history", "--json").code == 0


def test_a_chat_on_a_read_only_history_resumes_and_offers_to_go_on(repl, fake_server, env, llmchat) -> None:
    assert llmchat("ask", "saved before").code == 0
    with read_only(data_dir(env)):
        chat = repl("chat", "-c")
        assert "Continuing conversation" in chat.display() and "(1 turns)" in chat.display()
        chat.enter("a new question")
        chat.wait_text("without saving")
        out = chat.since()
        assert "read-only" in out and "Move the file away" not in out and "Traceback" not in out
        assert len(chat.chat_requests()) == 1  # only `ask`'s: nothing sent before the answer
        chat.press("y")
        chat.wait_prompt()
        assert chat.chat_requests()[-1].body["messages"][-1]["content"] == "a new question"
        assert "You said: a new question" in chat.since()
        chat.enter("/exit")
        assert chat.wait_exit() == 0
    assert [row["turns"] for row in json.loads(llmchat("history", "--json").stdout)] == [1]


# ------------------------------------------------------------------------------------- corrupt


def _filled(path: Path) -> None:
    """A real history of 60 conversations, checkpointed into the main file."""
    with Store(path) as store:
        for n in range(60):
            store.import_record({"format": "llmchat-conversation", "version": 1, "id": f"c{n:07d}",
                                 "title": f"conversation {n}", "profile": "local", "provider": "ollama",
                                 "model": "m", "system": None, "created": "2026-01-01T00:00:00.000+00:00",
                                 "updated": f"2026-01-01T00:{n:02d}:00.000+00:00", "messages": [
                                     {"position": 0, "role": "user", "content": f"question {n} " + "q" * 1500,
                                      "created": "2026-01-01T00:00:00.000+00:00", "interrupted": False},
                                     {"position": 1, "role": "assistant", "content": "a" * 1500,
                                      "created": "2026-01-01T00:00:00.000+00:00", "interrupted": False}]})
    assert not Path(f"{path}-wal").exists()


def test_a_corrupt_page_says_move_the_file_away(fake_server, config_file, env, llmchat) -> None:
    path = data_dir(env) / "history.db"
    path.parent.mkdir(parents=True)
    _filled(path)
    size = path.stat().st_size
    with path.open("r+b") as file:  # garbage over the middle half: table and index pages
        file.seek(size // 4)
        file.write(random.Random(12).randbytes(size // 2))
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    except sqlite3.DatabaseError:
        pass  # so damaged that the check itself gives up: corrupt too
    finally:
        db.close()
    for args in (("usage",), ("history", "show", "c0000030"), ("history", "--search", "question")):
        run = llmchat(*args)
        assert run.code == 1, (args, run.output)
        assert_one_clear_message(run.stderr)
        assert "damaged" in run.stderr and "Move the file away" in run.stderr, (args, run.stderr)


def test_a_file_that_is_not_a_database_says_move_it_away(fake_server, config_file, env, llmchat) -> None:
    path = data_dir(env) / "history.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not SQLite " * 500)
    for args in (("history",), ("ask", "hi")):
        run = llmchat(*args)
        assert run.code == 1, run.output
        assert_one_clear_message(run.stderr)
        assert "damaged" in run.stderr and "Move the file away" in run.stderr
    assert fake_server.requests == []


# ------------------------------------------------------------------------------------- symlink


def test_a_symlinked_database_is_refused_before_anything_touches_it(fake_server, config_file, env, llmchat,
                                                                    tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    target.chmod(0o644)
    data_dir(env).mkdir(parents=True)
    (data_dir(env) / "history.db").symlink_to(target)
    dangling = tmp_path / "dangling-target.db"
    for args in (("ask", "hi"), ("history",), ("usage",)):
        run = llmchat(*args)
        assert run.code == 2, (args, run.output)
        assert_one_clear_message(run.stderr)
        assert "symbolic link" in run.stderr
    assert target.stat().st_mode & 0o777 == 0o644 and target.read_bytes() == b""  # not chmod-ed, not written
    assert fake_server.requests == []
    (data_dir(env) / "history.db").unlink()
    (data_dir(env) / "history.db").symlink_to(dangling)  # a link to nothing: nothing is created through it
    run = llmchat("ask", "hi")
    assert run.code == 2 and "symbolic link" in run.stderr
    assert not dangling.exists()
