"""The REPL end to end: a real `llmchat` in a pseudo-terminal, typed at, against the fake server.

Every behaviour is checked where it matters: on the request the server receives (what the model is
told) and on the screen (what the person sees). Fixtures live in `conftest_repl.py`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fakeserver import Raw, Stream

from llmchat.repl.app import block_is_open, unwrap_block

pytest_plugins = ("conftest_repl",)  # the `repl` fixture, whether or not conftest.py imports it
pytestmark = pytest.mark.timeout(30)

UP, CTRL_C, CTRL_D, ALT_ENTER = "\x1b[A", "\x03", "\x04", "\x1b\r"  # what a terminal sends for these keys
PERSONA = {"role": "system", "content": "You are terse."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def said(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"You said: {text}"}


# ------------------------------------------------------------------------------------------ conversation


def test_second_turn_carries_the_first_exchange(repl, fake_server) -> None:
    chat = repl(color=True)  # the live view: Markdown, panels and colour on a real terminal
    banner = chat.display()
    assert f"profile local · ollama · qwen3:0.6b · {fake_server.url}" in banner
    assert "/help for commands, Ctrl-D to quit" in banner
    assert chat.toolbar() == "local · qwen3:0.6b · thinking auto · ~8 tokens in context"  # estimated: prompt + framing
    first = chat.ask("hello there")
    assert first.body["messages"] == [PERSONA, user("hello there")]
    second = chat.ask("and again")
    assert second.body["messages"] == [PERSONA, user("hello there"), said("hello there"), user("and again")]
    assert "You said: and again" in chat.display()
    reported = second.body["messages"]  # the fake server counts len // 4 + 4 per message, one token a piece
    prompt = sum(len(m["content"]) // 4 + 4 for m in reported)
    completion = -(-len("You said: and again") // 3)
    chat.toolbar(f" {prompt + completion} tokens in context")
    chat.enter("/exit")
    assert chat.wait_exit() == 0


def test_profile_switch_keeps_the_history(repl, fake_server) -> None:
    chat = repl()
    chat.ask("first question")
    out = chat.command("/profile bailian")
    assert "Profile bailian: bailian · qwen-plus" in out and "continues" in out
    request = chat.ask("second question")
    assert request.path == "/compatible-mode/v1/chat/completions"
    assert request.body["model"] == "qwen-plus"
    assert request.body["messages"] == [PERSONA, user("first question"), said("first question"),
                                        user("second question")]
    assert chat.toolbar().startswith("bailian · qwen-plus · thinking auto")


def test_chat_subcommand_takes_the_profile_flags(repl) -> None:
    chat = repl("chat", "-p", "bailian", "-m", "qwen3-max", "--think")
    assert "profile bailian" in chat.display()
    body = chat.ask("hi").body
    assert body["model"] == "qwen3-max" and body["enable_thinking"] is True


@pytest.mark.parametrize(("args", "message"), [
    (("-p", "nope"), "Unknown profile 'nope'"),
    (("-p", "nokey"), "needs an API key in the environment variable LLMCHAT_TEST_UNSET_KEY"),
])
def test_startup_errors_exit_with_status_2(repl, args: tuple[str, ...], message: str) -> None:
    chat = repl(*args, ready=False)
    assert chat.wait_exit() == 2
    assert message in chat.text()


def test_profile_switch_failure_keeps_the_old_profile(repl) -> None:
    chat = repl()
    out = chat.command("/profile nokey")
    assert "LLMCHAT_TEST_UNSET_KEY" in out and "Still using profile local" in out
    out = chat.command("/profile nope")
    assert "No profile 'nope'" in out and "Usage: /profile [NAME]" in out
    assert chat.ask("still there?").path == "/api/chat"


@pytest.mark.parametrize("color", [False, True], ids=["plain", "colour"])
def test_ctrl_c_stops_a_slow_answer_and_the_partial_answer_stays(repl, fake_server, color: bool) -> None:
    chat = repl(color=color)
    fake_server.enqueue(Stream(answer="one two three four five six seven eight nine ten", piece_size=4, delay=0.4))
    chat.enter("count slowly")
    chat.wait_text("one two")
    chat.send(CTRL_C)
    chat.wait_prompt()
    assert "[interrupted]" in chat.since() and "/retry asks again" in chat.since()
    request = chat.ask("next")
    partial = request.body["messages"][2]
    assert partial["role"] == "assistant" and partial["content"].startswith("one two")
    assert len(partial["content"]) < len("one two three four five six seven eight nine ten")
    assert request.body["messages"][3] == user("next")
    assert "You said: next" in chat.since()


def test_retry_regenerates_an_interrupted_answer(repl, fake_server) -> None:
    chat = repl()
    fake_server.enqueue(Stream(answer="a b c d e f g h i j k l m n o p", piece_size=2, delay=0.3))
    chat.enter("tell me")
    chat.wait_text("a b")
    chat.send(CTRL_C)
    retried = chat.ask("/retry")
    assert retried.body["messages"] == [PERSONA, user("tell me")]
    after = chat.ask("thanks")
    assert after.body["messages"] == [PERSONA, user("tell me"), said("tell me"), user("thanks")]


def test_provider_error_is_reported_and_the_repl_goes_on(repl, fake_server) -> None:
    chat = repl()
    chat.command("/model no-such-model")
    chat.enter("hello?")
    chat.wait_text("Pull it now?")  # an unknown Ollama model: the chat offers the pull, as ask does (issue 17)
    chat.press("n")
    chat.wait_prompt()
    assert "does not have the model 'no-such-model'" in chat.since()
    chat.command("/model qwen3:0.6b")
    request = chat.ask("now?")
    assert request.body["messages"] == [PERSONA, user("now?")]  # the failed turn is not resent


# -------------------------------------------------------------------------------------- slash commands


def test_undo_drops_the_last_exchange(repl) -> None:
    chat = repl()
    chat.ask("keep this")
    chat.ask("drop this")
    assert "Removed the last exchange: drop this" in chat.command("/undo")
    request = chat.ask("then this")
    assert request.body["messages"] == [PERSONA, user("keep this"), said("keep this"), user("then this")]


def test_retry_asks_the_last_question_again(repl) -> None:
    chat = repl()
    chat.ask("one")
    chat.ask("two")
    retried = chat.ask("/retry")
    assert retried.body["messages"] == [PERSONA, user("one"), said("one"), user("two")]
    after = chat.ask("three")
    assert after.body["messages"] == [PERSONA, user("one"), said("one"), user("two"), said("two"), user("three")]


def test_clear_starts_over_with_the_same_system_prompt(repl) -> None:
    chat = repl()
    chat.ask("forget me")
    assert "new conversation" in chat.command("/clear")
    assert chat.ask("fresh").body["messages"] == [PERSONA, user("fresh")]


def test_system_replaces_the_persona(repl) -> None:
    chat = repl()
    chat.ask("before")
    assert "System prompt: You are terse." in chat.command("/system")
    chat.command("/system You are a pirate.")
    request = chat.ask("ahoy")
    assert request.body["messages"] == [{"role": "system", "content": "You are a pirate."}, user("before"),
                                        said("before"), user("ahoy")]


def test_think_sets_what_the_server_is_asked(repl) -> None:
    chat = repl()
    assert "Thinking: on" in chat.command("/think on")
    assert chat.ask("reason").body["think"] is True
    assert "Let me think about: reason" in chat.since()
    chat.toolbar("thinking on")
    chat.command("/think off")
    assert chat.ask("quick").body["think"] is False
    chat.command("/profile bailian")
    chat.command("/think 1024")
    body = chat.ask("budgeted").body
    assert body["enable_thinking"] is True and body["thinking_budget"] == 1024
    assert "Usage: /think" in chat.command("/think maybe")


def test_set_changes_the_sampling_options(repl) -> None:
    chat = repl()
    assert "temperature = 0.2" in chat.command("/set temperature 0.2")
    assert "temperature: expected a number from 0 to 2, got 'hot'" in chat.command("/set temperature hot")
    chat.command("/set seed 7")
    options = chat.ask("sample").body["options"]
    assert options["temperature"] == 0.2 and options["seed"] == 7


def test_unknown_command_suggests_and_sends_nothing(repl, fake_server) -> None:
    chat = repl()
    out = chat.command("/hepl")
    assert "Unknown command '/hepl'. Did you mean /help?" in out
    assert chat.chat_requests() == []
    assert "/profile [NAME]" in chat.command("/help")
    assert chat.ask("still alive").body["messages"] == [PERSONA, user("still alive")]


def test_history_usage_and_save(repl, tmp_path: Path) -> None:
    chat = repl()
    chat.command("/profile bailian")
    chat.ask("count my tokens")
    assert "count my tokens" in chat.command("/history")
    usage = chat.command("/usage")
    assert "1 turn" in usage and "prompt" in usage and "CNY" in usage
    target = tmp_path / "chat.json"
    assert f"Saved 1 turn to {target}" in chat.command(f"/save {target}")
    saved = json.loads(target.read_text(encoding="utf-8"))
    assert saved["profile"] == "bailian" and saved["model"] == "qwen-plus" and saved["system"] == "You are terse."
    assert [m["content"] for m in saved["messages"]] == ["count my tokens", "You said: count my tokens"]
    assert saved["messages"][1]["usage"]["prompt_tokens"] > 0
    chat.command(f"/save {tmp_path / 'chat.md'}")
    assert "You said: count my tokens" in (tmp_path / "chat.md").read_text(encoding="utf-8")
    assert "Usage: /save FILE" in chat.command(f"/save {tmp_path / 'chat.txt'}")


def test_save_writes_what_history_export_writes(repl, llmchat, tmp_path: Path) -> None:
    """Issue 14: one format. The chat's /save files equal `history export`, and import back exactly."""
    chat = repl()
    chat.ask("first question")
    chat.ask("second question")
    saved_json, saved_md = tmp_path / "chat.json", tmp_path / "chat.md"
    chat.command(f"/save {saved_json}")
    chat.command(f"/save {saved_md}")
    chat.enter("/exit")
    assert chat.wait_exit() == 0
    record = json.loads(saved_json.read_text(encoding="utf-8"))
    for fmt, saved in (("json", saved_json), ("md", saved_md)):
        exported = tmp_path / f"export.{fmt}"
        assert llmchat("history", "export", record["id"], "--format", fmt, "-o", str(exported)).code == 0
        assert exported.read_text(encoding="utf-8") == saved.read_text(encoding="utf-8")
    elsewhere = {"XDG_DATA_HOME": str(tmp_path / "elsewhere")}  # another machine's empty history
    run = llmchat("history", "import", str(saved_json), **elsewhere)
    assert run.code == 0 and f"Imported {record['id']} (\"first question\", 2 turns)." in run.stdout
    again = tmp_path / "again.json"
    assert llmchat("history", "export", record["id"], "--format", "json", "-o", str(again), **elsewhere).code == 0
    assert again.read_bytes() == saved_json.read_bytes()


def test_save_of_a_chat_that_is_not_saved_imports_and_matches_its_export(repl, llmchat, tmp_path: Path) -> None:
    chat = repl("--no-save")
    chat.ask("nothing is stored")
    saved_json, saved_md = tmp_path / "chat.json", tmp_path / "chat.md"
    assert f"Saved 1 turn to {saved_json}" in chat.command(f"/save {saved_json}")
    chat.command(f"/save {saved_md}")
    chat.enter("/exit")
    assert chat.wait_exit() == 0
    assert "no saved conversation" in llmchat("history", "list").output.lower()  # --no-save kept its word
    record = json.loads(saved_json.read_text(encoding="utf-8"))
    assert record["format"] == "llmchat-conversation" and record["messages"][0]["content"] == "nothing is stored"
    assert llmchat("history", "import", str(saved_json)).code == 0
    exported = tmp_path / "export.json"
    assert llmchat("history", "export", record["id"], "--format", "json", "-o", str(exported)).code == 0
    assert exported.read_bytes() == saved_json.read_bytes()
    markdown = tmp_path / "export.md"
    assert llmchat("history", "export", record["id"], "--format", "md", "-o", str(markdown)).code == 0
    updated = f"- updated: {record['updated']}\n"  # each /save is stamped with its own time
    md = saved_md.read_text(encoding="utf-8")
    assert md.startswith(f"# nothing is stored\n\n- id: {record['id']}\n")
    assert re.sub(r"- updated: .*\n", updated, md) == markdown.read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------- input


def test_multiline_paste_arrives_as_one_message(repl) -> None:
    chat = repl()
    chat.send("\x1b[200~line one\nline two\nline three\x1b[201~")  # a bracketed paste
    request = chat.ask("")
    assert request.body["messages"][-1] == user("line one\nline two\nline three")
    assert len(chat.chat_requests()) == 1


def test_triple_quote_block_and_alt_enter(repl) -> None:
    chat = repl()
    chat.send('"""\r')
    chat.send("first line\r")
    chat.wait_for(lambda: "... first line" in chat.display(), "the continuation prompt")
    request = chat.ask('second line\r"""')
    assert request.body["messages"][-1] == user("first line\nsecond line")
    chat.send("top" + ALT_ENTER)
    assert chat.ask("bottom").body["messages"][-1] == user("top\nbottom")


def test_ctrl_x_ctrl_e_edits_the_input_in_the_editor(repl) -> None:
    editor = """sh -c 'printf " and more" >> "$1"' editor"""
    chat = repl(EDITOR=editor, VISUAL=editor)
    chat.send("draft\x18\x05")
    chat.wait_for(lambda: ">>> draft and more" in chat.display(), "the edited text back at the prompt")
    assert chat.chat_requests() == []  # not sent until Enter
    assert chat.ask("").body["messages"][-1] == user("draft and more")


def test_ctrl_c_at_the_prompt_clears_the_line(repl) -> None:
    chat = repl()
    chat.send("half a thought")
    chat.wait_for(lambda: "half a thought" in chat.display(), "the typed text")
    chat.press(CTRL_C)
    chat.wait_prompt()
    assert "(Ctrl-D or /exit to quit)" in chat.since()
    assert chat.chat_requests() == []
    assert chat.ask("whole thought").body["messages"][-1] == user("whole thought")


def test_ctrl_d_exits_with_status_zero(repl) -> None:
    chat = repl()
    chat.press(CTRL_D)
    assert chat.wait_exit() == 0


@pytest.mark.parametrize("word", ["/exit", "/quit", "/bye"])
def test_exit_commands(repl, word: str) -> None:
    chat = repl()
    chat.enter(word)
    assert chat.wait_exit() == 0


def test_input_history_persists_across_runs(repl) -> None:
    first = repl()
    first.ask("remember this line")
    first.ask("another line")
    first.press(CTRL_D)
    assert first.wait_exit() == 0
    second = repl()
    second.send(UP + UP)
    second.wait_for(lambda: ">>> remember this line" in second.display(), "the recalled line")
    assert second.ask("").body["messages"][-1] == user("remember this line")
    second.send("\x12rememb")  # Ctrl-R: reverse search
    second.wait_for(lambda: "rememb" in second.display() and "search" in second.display(), "the search")
    second.send("\r")  # Enter ends the search, leaving the found line to edit (Ctrl-E goes to its end)
    second.wait_for(lambda: ">>> remember this line" in second.display(), "the found line")
    assert second.ask("\x05 again").body["messages"][-1] == user("remember this line again")
    second.send("anoth")  # auto-suggestion from history; Right arrow takes it
    second.wait_for(lambda: ">>> another line" in second.display(), "the suggestion")
    second.send("\x1b[C")
    assert second.ask("!").body["messages"][-1] == user("another line!")


def test_tab_completes_commands_and_profiles(repl) -> None:
    chat = repl()
    chat.send("/pro")
    chat.wait_for(lambda: "keeping the conversation" in chat.display(), "the completion menu")
    chat.send("\t")
    chat.wait_for(lambda: ">>> /profile" in chat.display(), "the completed command")
    chat.send(" bai")
    chat.wait_for(lambda: "bailian · qwen-plus" in chat.display(), "the profile menu")
    chat.send("\t")
    chat.wait_for(lambda: ">>> /profile bailian" in chat.display(), "the completed profile")
    assert "Profile bailian" in chat.command("")
    chat.send("/model qwen3:0")
    chat.wait_for(lambda: "qwen3:0.6b" in chat.display(), "the model menu (from the server's list)")
    time.sleep(0.5)  # let the threaded completer settle, as a person's pause before Tab does
    chat.send("\t")
    chat.wait_for(lambda: ">>> /model qwen3:0.6b" in chat.display(), "the completed model")


# -------------------------------------------------------------------------------------- block parsing


@pytest.mark.parametrize(("text", "is_open"), [
    ('"""', True), ('"""\nabc', True), ('"""\nabc\n"""', False), ('"""one line"""', False),
    ('/system """', True), ('/system """\nbe brief\n"""', False), ('say """hi"""', False), ("plain", False),
])
def test_block_is_open(text: str, is_open: bool) -> None:
    assert block_is_open(text) is is_open


def test_unwrap_block() -> None:
    assert unwrap_block('"""\nfirst\nsecond\n"""') == "first\nsecond"
    assert unwrap_block('"""inline"""') == "inline"
    assert unwrap_block('/system """\nbe brief\n"""') == "/system be brief"
    assert unwrap_block('x = """doc"""') == 'x = """doc"""'


# ------------------------------------------------------------------------------------ saved conversations


def test_chat_continue_resumes_the_saved_conversation(repl, llmchat) -> None:
    first = repl()
    first.ask("my name is Ada")
    first.press(CTRL_D)
    assert first.wait_exit() == 0
    listed = json.loads(llmchat("history", "--json").stdout)
    assert [c["turns"] for c in listed] == [1]
    again = repl("chat", "-c")
    assert "Continuing conversation" in again.text()
    request = again.ask("what is my name?")
    assert [m["content"] for m in request.body["messages"] if m["role"] != "system"] == [
        "my name is Ada", "You said: my name is Ada", "what is my name?"]
    again.press(CTRL_D)
    again.wait_exit()
    assert [c["turns"] for c in json.loads(llmchat("history", "--json").stdout)] == [2]


def test_resume_and_new_inside_the_chat(repl, llmchat) -> None:
    chat = repl()
    chat.ask("first topic")
    saved = json.loads(llmchat("history", "--json").stdout)[0]["id"]
    chat.command("/new")
    chat.ask("second topic")
    assert "Resumed conversation" in chat.command(f"/resume {saved}")
    request = chat.ask("back to it")
    contents = [m["content"] for m in request.body["messages"]]
    assert "first topic" in contents and "second topic" not in contents
    assert len(json.loads(llmchat("history", "--json").stdout)) == 2


def test_undo_removes_the_exchange_from_the_saved_copy_too(repl, llmchat) -> None:
    chat = repl()
    chat.ask("keep me")
    chat.ask("drop me")
    chat.command("/undo")
    chat.press(CTRL_D)
    chat.wait_exit()
    exported = json.loads(llmchat("history", "export", "last", "--format", "json").stdout)
    assert "drop me" not in json.dumps(exported) and "keep me" in json.dumps(exported)


def test_no_save_leaves_no_trace(repl, llmchat, env) -> None:
    chat = repl("--no-save")
    chat.ask("a secret question")
    assert "History is off" in chat.command("/resume last")
    chat.press(CTRL_D)
    assert chat.wait_exit() == 0
    assert json.loads(llmchat("history", "--json").stdout) == []
    data = Path(env["XDG_DATA_HOME"]) / "llmchat"
    assert not (data / "history.db").exists()
    assert "a secret question" not in "".join(p.read_text() for p in data.glob("*")) if data.exists() else True


def test_input_history_file_is_private(repl, env) -> None:
    chat = repl()
    chat.ask("private words")
    chat.press(CTRL_D)
    chat.wait_exit()
    path = Path(env["XDG_DATA_HOME"]) / "llmchat" / "input_history"
    assert "private words" in path.read_text() and path.stat().st_mode & 0o777 == 0o600


def test_search_command_reaches_bailian(repl) -> None:
    chat = repl("-p", "bailian")
    chat.command("/search on")
    assert chat.ask("news?").body["enable_search"] is True
    chat.command("/search off")
    assert chat.ask("again").body["enable_search"] is False


# ------------------------------------------------------------------------------------------ failure matrix

FAULTS = {
    "rate limit": (lambda: Raw.fixture("openai_error_rate_limit.json", status=429), "rate-limiting", ""),
    "server error": (lambda: Raw(status=503, body='{"error":{"message":"Model is unavailable","code":"x"}}'),
                     "failed (503", ""),
    "bad key": (lambda: Raw.fixture("openai_error_invalid_key.json", status=401), "rejected the API key", ""),
    "cut stream": (lambda: Stream(answer="Half an answer that stops", piece_size=5, cut_after=2),
                   "broke mid-answer", "Half an an"),
    "stall": (lambda: Stream(answer="Some words then silence", piece_size=5, stall_after=2, stall_seconds=10),
              "sent nothing for 1 s", "Some words"),
    "in-band error": (lambda: Stream(answer="Partly there", piece_size=4, error_after=2), "stopped mid-answer",
                      "Partly t"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_failure_is_reported_the_repl_goes_on_and_the_store_keeps_it(repl, llmchat, fault: str) -> None:
    reply, message, partial = FAULTS[fault]
    chat = repl("-p", "bailian", LLMCHAT_TIMEOUT="1")
    chat.server.enqueue(reply())
    chat.ask("first question")
    shown = chat.since()
    assert message in shown and "Traceback" not in shown
    if partial:
        assert partial in shown and "[interrupted]" in shown
    after = chat.ask("second question")  # the REPL is alive and the next turn works
    assert after.body["messages"][-1]["content"] == "second question"
    chat.press(CTRL_D)
    assert chat.wait_exit() == 0
    saved = json.loads(llmchat("history", "export", "last", "--format", "json").stdout)["messages"]
    if partial:  # what arrived is kept, flagged
        first_answer = saved[1]
        assert saved[0]["content"] == "first question" and first_answer["interrupted"] is True
        assert first_answer["content"].startswith(partial)
    else:  # refused before any text: no turn, nothing saved (issue 17); Up and /retry still have it
        assert [m["content"] for m in saved] == ["second question", "You said: second question"]
    assert saved[-1]["content"] == "You said: second question"
