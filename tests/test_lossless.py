"""Issue 12 §2: nothing said is lost, on any way out.

Real processes, real signals, a real pipe and a real pseudo-terminal against the fake server's paced
stream; afterwards the database is read with a separate connection, because what matters is what is
on disk when the process is gone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import forkserver
import pytest
from fakeserver import Stream
from test_store import PROFILE, NullView, Script, turn

from llmchat.core.conversation import Conversation
from llmchat.core.events import Answer, Finish
from llmchat.engine.chat import run_turn
from llmchat.providers import ChatOptions
from llmchat.store.db import Store

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(60)

SLOW = dict(answer="word " * 400, piece_size=5, delay=0.02)  # 400 pieces, about 8 s


def db_path(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "llmchat" / "history.db"


def messages(env: dict[str, str]) -> list[tuple[Any, ...]]:
    """(position, role, content, interrupted) of every saved message, read by another connection."""
    db = sqlite3.connect(db_path(env))
    try:
        return db.execute("SELECT position, role, content, interrupted FROM messages "
                          "ORDER BY conversation, position").fetchall()
    finally:
        db.close()


def integrity(env: dict[str, str]) -> str:
    db = sqlite3.connect(db_path(env))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def start_ask(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return forkserver.Popen([sys.executable, "-m", "llmchat", "ask", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def assert_partial_saved(env: dict[str, str], question: str, received: str) -> str:
    """The question and the answer as far as it got, marked interrupted; returns the saved answer."""
    rows = messages(env)
    assert [(r[0], r[1]) for r in rows] == [(0, "user"), (1, "assistant")], rows
    assert rows[0][2] == question
    answer, interrupted = rows[1][2], rows[1][3]
    assert interrupted == 1
    assert answer.startswith(received) and 0 < len(answer) < len(SLOW["answer"])
    return answer


# ------------------------------------------------------------------------------- ask: signals, pipes


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_ask_killed_by_a_signal_saves_what_arrived(fake_server, config_file, env, signum, code) -> None:
    fake_server.enqueue(Stream(**SLOW))
    proc = start_ask(env, "hi")
    assert proc.stdout is not None
    first = proc.stdout.read(40)  # the answer is streaming
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=15)
    out, err_text = (first + rest).decode(), err.decode()
    assert proc.returncode == code, err_text
    assert "[interrupted]" in err_text and f"Interrupted by {signal.Signals(signum).name}." in err_text
    assert "Traceback" not in err_text and "Error" not in err_text
    saved = assert_partial_saved(env, "hi", first.decode())
    assert out.rstrip("\n") == saved  # what was printed is exactly what was saved
    assert integrity(env) == "ok"


def test_ask_into_a_closed_pipe_saves_and_exits_quietly(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    proc = start_ask(env, "hi")
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=15)
    assert proc.returncode == 141, err
    assert "Error" not in err and "Traceback" not in err and "Exception ignored" not in err, err
    assert_partial_saved(env, "hi", first.decode())
    assert integrity(env) == "ok"


def test_ask_through_head_in_a_shell(fake_server, config_file, env) -> None:
    """The way people write it: the shell sees head's output and llmchat's 141 (pipefail)."""
    fake_server.enqueue(Stream(**SLOW))
    run = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m llmchat ask hi | head -c 100"],
                         capture_output=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert run.stdout.decode() == SLOW["answer"][:100]
    assert run.returncode == 141 and run.stderr == b"", run.stderr
    assert_partial_saved(env, "hi", SLOW["answer"][:100])


# ------------------------------------------------------------------------------- the REPL: signals


def test_repl_sigterm_mid_answer_saves_and_exits_143(repl, fake_server, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    chat = repl()
    chat.enter("tell me")
    chat.wait_text("word word word")
    chat.child.kill(signal.SIGTERM)
    assert chat.wait_exit() == 143
    assert "Interrupted by SIGTERM." in chat.text() and "Traceback" not in chat.text()
    assert_partial_saved(env, "tell me", "word")


def test_repl_sigterm_at_the_prompt_exits_143(repl, fake_server, env) -> None:
    chat = repl()
    chat.ask("hello")
    chat.wait_prompt()
    chat.child.kill(signal.SIGTERM)
    assert chat.wait_exit() == 143
    assert "Traceback" not in chat.text()
    assert [r[:2] for r in messages(env)] == [(0, "user"), (1, "assistant")]


def close_terminal(chat: Any) -> int:
    """Close the pty's master side, as a terminal window closing does (the kernel sends SIGHUP);
    returns the REPL's exit status."""
    pty = chat.child.ptyproc
    pty.fileobj.close()  # through pexpect's own file object, so no one closes the fd number again
    pty.closed, pty.fd, chat.child.child_fd, chat.child.closed = True, -1, -1, True
    deadline = time.monotonic() + 15
    while chat.child.isalive():
        assert time.monotonic() < deadline, "the REPL did not exit after its terminal closed"
        time.sleep(0.05)
    assert chat.child.signalstatus is None, chat.child.signalstatus
    return chat.child.exitstatus


def test_repl_terminal_closed_mid_answer_saves_it(repl, fake_server, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    chat = repl()
    chat.enter("tell me")
    chat.wait_text("word word word")
    assert close_terminal(chat) == 129
    assert_partial_saved(env, "tell me", "word")


def test_repl_terminal_closed_at_the_prompt_exits_129(repl, fake_server, env) -> None:
    chat = repl()
    chat.ask("hello")
    chat.wait_prompt()
    assert close_terminal(chat) == 129
    assert [r[:2] for r in messages(env)] == [(0, "user"), (1, "assistant")]


# ------------------------------------------------------------------------------- SIGKILL: saved as it streams


def test_sigkill_mid_stream_loses_at_most_the_last_second(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(**SLOW))
    proc = start_ask(env, "hi")
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    received: list[tuple[float, int]] = []  # (when, bytes so far)
    data = b""
    while not received or time.monotonic() - received[0][0] < 2.5:  # more than 2 s of streaming
        chunk = os.read(fd, 4096)
        assert chunk, proc.stderr.read() if proc.stderr else ""
        data += chunk
        received.append((time.monotonic(), len(data)))
    killed_at = time.monotonic()
    proc.kill()
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert integrity(env) == "ok"
    rows = messages(env)
    assert [(r[0], r[1], r[2]) for r in rows[:1]] == [(0, "user", "hi")]
    assert len(rows) == 2, "the streaming answer was not saved as it went"
    saved, interrupted = rows[1][2], rows[1][3]
    assert interrupted == 1 and data.decode().startswith(saved)
    # Saved about once a second: everything printed 1.5 s before the kill (0.5 s of slack for a busy
    # machine) is in the store.
    due = max((n for when, n in received if when <= killed_at - 1.5), default=0)
    assert due > 0 and len(saved.encode()) >= due, (len(saved), due)


def test_what_the_pipe_view_held_back_is_printed_before_the_progress_save(monkeypatch) -> None:
    """The pipe view holds pieces that arrive within 10 ms of its last flush; the turn flushes it before
    each progress save, so a SIGKILL right after a save never leaves saved text that was not printed."""
    import io

    import llmchat.engine.chat as chat
    from llmchat.render import PlainView

    monkeypatch.setattr(chat, "PROGRESS_INTERVAL_S", 0.0)  # a save after every event
    out = io.StringIO()
    view = PlainView(out, io.StringIO(), clock=lambda: 0.0)  # after the first piece, every piece is held

    class Recorder:
        def __init__(self) -> None:
            self.saved: list[tuple[str, str]] = []  # (what was saved, what stdout had by then)

        def question(self, conversation: Any, exchange: Any) -> None: ...
        def answer(self, conversation: Any, exchange: Any, result: Any) -> None: ...

        def progress(self, conversation: Any, exchange: Any, answer: str, reasoning: str) -> None:
            self.saved.append((answer, out.getvalue()))

    recorder = Recorder()
    provider = Script(*(Answer(word) for word in ("one ", "two ", "three")), Finish("stop"))
    run_turn(Conversation(), "q", provider, ChatOptions(model="m"), view, retries=0, recorder=recorder)
    assert [saved for saved, _ in recorder.saved][:3] == ["one ", "one two ", "one two three"]
    assert all(printed.startswith(saved) for saved, printed in recorder.saved)


def test_a_pipe_closed_before_the_held_text_went_out_marks_the_answer_interrupted() -> None:
    """The pipe view held the last pieces (they came within 10 ms); the reader went away meanwhile: the
    turn still ends as an interruption by the closed pipe (saved as such, then BrokenPipeError), as when
    every piece was flushed at once."""
    import io

    from llmchat.render import PlainView

    class ClosedAfterOne(io.StringIO):
        def flush(self) -> None:
            if self.getvalue() != "one ":
                raise BrokenPipeError(32, "Broken pipe")

    class Recorder:
        def __init__(self) -> None:
            self.results: list[Any] = []

        def question(self, conversation: Any, exchange: Any) -> None: ...
        def answer(self, conversation: Any, exchange: Any, result: Any) -> None:
            self.results.append(result)

    recorder = Recorder()
    view = PlainView(ClosedAfterOne(), io.StringIO(), clock=lambda: 0.0)
    provider = Script(Answer("one "), Answer("two"), Finish("stop"))
    with pytest.raises(BrokenPipeError):
        run_turn(Conversation(), "q", provider, ChatOptions(model="m"), view, retries=0, recorder=recorder)
    [result] = recorder.results
    assert result.interrupted and result.answer == "one two"


def test_a_finished_answer_replaces_its_progress_row(fake_server, config_file, env, llmchat) -> None:
    fake_server.enqueue(Stream(answer="word " * 80, piece_size=5, delay=0.02))  # 1.6 s: one progress save
    run = llmchat("ask", "hi")
    assert run.code == 0
    rows = messages(env)
    assert rows == [(0, "user", "hi", 0), (1, "assistant", "word " * 80, 0)]
    db = sqlite3.connect(db_path(env))
    try:
        assert db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'word'").fetchone() == (1,)
        assert db.execute("SELECT finish_reason, completion_tokens FROM messages WHERE role = 'assistant'"
                          ).fetchone() == ("stop", 80)
    finally:
        db.close()


# ------------------------------------------------------------------------- two processes, one conversation


def test_two_stores_on_one_conversation_keep_each_others_turns(tmp_path: Path) -> None:
    """Two connections to one file, as two processes have: A's new question, /retry and /undo never
    touch the turn B added in between."""
    path = tmp_path / "history.db"
    warnings: list[str] = []
    with Store(path) as a_store, Store(path) as b_store:
        a = a_store.load_conversation(_first_turn(a_store))
        b = b_store.load_conversation("last")
        turn(b_store, b, "from b")  # B adds a turn A does not have
        recorder = a_store.recorder(PROFILE, warn=warnings.append)

        def a_turn(question: str, answer: str) -> None:
            run_turn(a, question, Script(Answer(answer), Finish("stop")), ChatOptions(model="m"), NullView(),
                     recorder=recorder)

        a_turn("from a", "a1")
        assert len(warnings) == 1 and "Another llmchat added 1 turn" in warnings[0]
        assert saved(a_store) == [("first", "You said: first"), ("from b", "You said: from b"), ("from a", "a1")]
        a.pop()  # /retry in A: its own last turn is replaced, in place
        a_turn("from a", "a2")
        assert saved(a_store) == [("first", "You said: first"), ("from b", "You said: from b"), ("from a", "a2")]
        a.pop()  # /undo in A: only its own turn goes
        a_store.truncate(a)
        assert saved(a_store) == [("first", "You said: first"), ("from b", "You said: from b")]
        b.pop()  # /undo in B of its turn, now A asks again: appended, B's gap tolerated
        b_store.truncate(b)
        a_turn("again", "a3")
        assert saved(b_store) == [("first", "You said: first"), ("again", "a3")]
        record = a_store.export_record("last")  # exported without the gap, so it imports anywhere
        assert [m["position"] for m in record["messages"]] == [0, 1, 2, 3]
    with Store(tmp_path / "other.db") as other:
        assert other.import_record(record).duplicate is False
        assert saved(other) == [("first", "You said: first"), ("again", "a3")]
    assert len(warnings) == 1  # A was told once, when it happened


def _first_turn(store: Store) -> str:
    conversation = Conversation()
    turn(store, conversation, "first")
    return conversation.id or ""


def saved(store: Store) -> list[tuple[str, str]]:
    return [(e.user, e.answer) for e in store.load_conversation("last").exchanges]


def test_a_chat_and_ask_continue_on_one_conversation(repl, fake_server, env, llmchat) -> None:
    chat = repl()
    chat.ask("from the chat")
    run = llmchat("ask", "-c", "from ask")  # another process adds a turn to the same conversation
    assert run.code == 0, run.output
    out = chat.command("from the chat again")
    assert "Another llmchat added 1 turn" in out and "/resume" in out
    assert [r[:2] + (r[2],) for r in messages(env) if r[1] == "user"] == [
        (0, "user", "from the chat"), (2, "user", "from ask"), (4, "user", "from the chat again")]
    assert len(messages(env)) == 6  # every question kept its answer
    chat.command("/undo")  # removes this chat's last turn, not the one `ask -c` added
    assert [r[2] for r in messages(env) if r[1] == "user"] == ["from the chat", "from ask"]
    out = chat.command("/resume last")
    assert "(2 turns)" in out
    chat.enter("/exit")
    assert chat.wait_exit() == 0


# ------------------------------------------------------------------------------ the REPL goes on


@pytest.mark.parametrize("ref", ["nosuchid", "a"])
def test_resume_an_unknown_or_ambiguous_id_keeps_the_chat(repl, fake_server, env, ref) -> None:
    with Store(db_path(env)) as store:  # two conversations whose ids both start with "a"
        for cid in ("a1b2c3d4", "a9f8e7d6"):
            store.import_record({"format": "llmchat-conversation", "version": 1, "id": cid, "title": cid,
                                 "profile": None, "provider": None, "model": None, "system": None,
                                 "created": "2026-01-01T00:00:00.000+00:00",
                                 "updated": "2026-01-01T00:00:00.000+00:00", "messages": []})
    chat = repl()
    out = chat.command(f"/resume {ref}")
    expected = "No saved conversation has the id" if ref == "nosuchid" else "matches several conversations"
    assert expected in out and "Traceback" not in out
    assert out.count("Error:") == 1
    chat.ask("still here?")
    assert "You said: still here?" in chat.since()
    chat.enter("/exit")
    assert chat.wait_exit() == 0


def test_a_line_that_is_not_utf8_is_refused_and_the_chat_goes_on(repl, fake_server) -> None:
    chat = repl()
    chat.wait_prompt()
    chat.mark = len(chat.raw)
    chat.prompts_wanted = chat.raw.count("\x1b[?2004h") + 1
    os.write(chat.child.child_fd, b"ni hao " + "你好".encode("gbk") + b"\r")  # what a GBK terminal sends
    chat.wait_prompt()
    assert "not valid UTF-8" in chat.since() and "Traceback" not in chat.since()
    assert chat.chat_requests() == []  # nothing was sent
    chat.ask("and now in UTF-8: 你好")
    assert chat.chat_requests()[-1].body["messages"][-1]["content"] == "and now in UTF-8: 你好"
    chat.enter("/exit")
    assert chat.wait_exit() == 0


def test_a_full_disk_offers_to_go_on_unsaved(repl, fake_server, env) -> None:
    """The chat's file writes are capped (RLIMIT_FSIZE on the running process: the kernel refuses to
    grow any file past the size they have now), so saving the next question fails for real."""
    import resource

    chat = repl()
    chat.ask("saved")
    files = [db_path(env), Path(f"{db_path(env)}-wal"), db_path(env).parent / "input_history"]
    limit = max(path.stat().st_size for path in files if path.exists())
    resource.prlimit(chat.child.pid, resource.RLIMIT_FSIZE, (limit, limit))
    big = "a question the WAL must grow to hold"
    chat.enter(big)
    chat.wait_text("without saving")
    assert "could not be written" in chat.since() and "is the disk full?" in chat.since()
    assert "Traceback" not in chat.since() and "Move the file away" not in chat.since()
    assert chat.chat_requests()[-1].body["messages"][-1]["content"] == "saved"  # nothing sent yet
    chat.press("y")  # prompt-toolkit's confirm(): one key
    chat.wait_prompt()
    assert chat.chat_requests()[-1].body["messages"][-1]["content"] == big
    assert f"You said: {big}" in chat.since()
    chat.ask("and more")  # saving is off now: no question, no failure
    assert "could not be written" not in chat.since()
    chat.enter("/exit")
    assert chat.wait_exit() == 0
    assert [r[2] for r in messages(env) if r[1] == "user"] == ["saved"]


SAVE_CUT = r"""
import sys
from pathlib import Path
from llmchat.core import stops
from llmchat.core.conversation import Conversation
from llmchat.engine.chat import run_turn
from llmchat.config.profile import Profile
from llmchat.core.events import Answer, Finish
from llmchat.providers import ChatOptions
from llmchat.store.db import Store

store = Store(Path(sys.argv[1]))
recorder = store.recorder(Profile(name="local", provider="ollama", model="m"))
stops.install()
ANSWER = "complete answer " * 1_500_000  # 24 MB: indexing it keeps SQLite busy for about a second

class Provider:
    def stream(self, messages, options):
        yield Answer(ANSWER)
        yield Finish("stop")
        print("saving", flush=True)  # the turn's final save starts now

class View:
    def reasoning(self, text): pass
    def answer(self, text): pass
    def notice(self, text): pass
    def close(self, result): pass

conversation = Conversation()
try:
    run_turn(conversation, "q", Provider(), ChatOptions(model="m"), View(), recorder=recorder)
except stops.Terminated as exc:
    print(f"terminated {conversation.id}", flush=True)
    sys.exit(exc.exit_code)
print("not terminated")
"""


def test_a_signal_in_the_middle_of_the_answers_save_does_not_lose_it(tmp_path: Path) -> None:
    """SIGTERM arriving while the final save runs (a 24 MB answer takes SQLite about a second) rolls
    that transaction back; the recorder saves again before the process ends."""
    path = tmp_path / "history.db"
    proc = subprocess.Popen([sys.executable, "-c", SAVE_CUT, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "saving\n"
    time.sleep(0.05)  # inside the save, which takes about a second
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and out.startswith("terminated"), out + err
    with Store(path) as store:
        [exchange] = store.load_conversation(out.split()[1]).exchanges
    assert exchange.user == "q" and not exchange.interrupted
    assert len(exchange.answer) == 24_000_000  # (a short message when it fails)
    assert exchange.answer == "complete answer " * 1_500_000


def into_a_closed_pipe(env: dict[str, str], *args: str, buffered: bool = True) -> subprocess.CompletedProcess[bytes]:
    """`llmchat ARGS | head -0` made certain: the reader is gone before anything is written. Buffered (no
    PYTHONUNBUFFERED, as in most shells) a short `print` fails only when stdout is flushed; unbuffered the
    write itself fails, inside the command, where Click catches it."""
    env = {name: value for name, value in env.items() if name != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return forkserver.run([sys.executable, "-m", "llmchat", *args], stdout=write_end, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=env, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["profiles"], ["--help"], ["ask", "--help"], ["tools"], ["--version"],
                                  ["config", "show"], ["config", "path"], ["mcp", "list"]], ids=" ".join)
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_output_into_a_closed_pipe_ends_quietly_with_141(config_file, env, args: list[str], buffered: bool) -> None:
    """A Rich table (Rich's own handler would say 1), Click's help and echo (Click says 1, as for a failure),
    a `print`: every command ends as a writer killed by SIGPIPE does, with no "Exception ignored" at exit."""
    done = into_a_closed_pipe(env, *args, buffered=buffered)
    assert done.returncode == 141 and done.stderr == b"", done.stderr


def test_history_show_into_a_closed_pipe_ends_quietly_with_141(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="saved answer"))
    asked = forkserver.run([sys.executable, "-m", "llmchat", "ask", "hi"], capture_output=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert asked.returncode == 0, asked.stderr
    done = into_a_closed_pipe(env, "history", "show", "last")
    assert done.returncode == 141 and done.stderr == b"", done.stderr



def test_a_reported_error_about_another_pipe_keeps_its_own_exit_code(fake_server, config_file, env) -> None:
    """`history export -o FILE` where FILE is a pipe whose reader left: llmchat says "Cannot write …" and
    exits 2 as for any file it cannot write. The EPIPE behind that error is not stdout going away, so the
    run must not also end as 141 (an error printed with the code of a quiet `| head`)."""
    fake_server.enqueue(Stream(answer="saved answer " * 20_000))  # more than a pipe holds: the write must wait
    asked = forkserver.run([sys.executable, "-m", "llmchat", "ask", "hi"], capture_output=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert asked.returncode == 0, asked.stderr
    run = subprocess.run(["bash", "-c", f"{sys.executable} -m llmchat history export last -o >(head -c 1 >/dev/null)"],
                         capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert b"Error: Cannot write" in run.stderr and b"Broken pipe" in run.stderr, run.stderr
    assert run.returncode == 2, run.stderr


def test_a_failure_stays_a_failure_when_nothing_reached_the_closed_pipe(env) -> None:
    done = into_a_closed_pipe(env, "history", "show", "1")  # nothing saved: an error on stderr, stdout unused
    assert done.returncode == 2 and b"no saved conversation" in done.stderr, done.stderr
