"""What a newcomer meets in the chat (issue 17), driven in a pseudo-terminal against the fake server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeserver import Stream

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(40)

CTRL_C, CTRL_D = "\x03", "\x04"


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_a_question_stopped_during_reasoning_stays_in_the_context(repl, fake_server, profile) -> None:
    """Ctrl-C while only reasoning has arrived: the next question is sent after the stopped one, followed
    by an assistant message saying it was interrupted, which both protocols accept."""
    chat = repl("-p", profile)
    fake_server.enqueue(Stream(reasoning="step one, step two, step three, step four, step five", answer="done",
                               piece_size=4, delay=0.4))
    chat.enter("explain monads")
    chat.wait_text("step")
    chat.send(CTRL_C)
    chat.wait_prompt()
    assert "[interrupted]" in chat.since()
    request = chat.ask("shorter, please")
    roles = [(m["role"], m["content"]) for m in request.body["messages"] if m["role"] != "system"]
    assert roles == [("user", "explain monads"), ("assistant", "[interrupted by the user before answering]"),
                     ("user", "shorter, please")]
    assert "You said: shorter, please" in chat.since()  # the server took it: no role-order error


def test_resume_alone_lists_recent_conversations_to_pick_from(repl, llmchat) -> None:
    import json

    chat = repl()
    assert "No saved conversations yet." in chat.command("/resume")
    chat.ask("first topic")
    chat.command("/new")
    chat.ask("second topic")
    listed = json.loads(llmchat("history", "--json").stdout)
    shown = chat.command("/resume")
    assert "Give a conversation id" not in shown and "llmchat history" not in shown
    for row in listed:
        line = next(line for line in shown.splitlines() if row["id"] in line)
        assert row["title"] in line and "1 turn" in line and ("just now" in line or "min ago" in line)
    assert "(this chat)" in next(line for line in shown.splitlines() if listed[0]["id"] in line)
    assert "/resume ID" in shown
    chat.wait_prompt()
    chat.mark = len(chat.raw)  # what is drawn from here on: the completion menu only
    chat.send("/resume ")
    chat.send("\t")  # Tab: the ids, with their titles, in the completion menu
    chat.wait_for(lambda: listed[1]["id"] in chat.since() and "first topic" in chat.since(), "the menu")


@pytest.mark.parametrize("color", [False, True], ids=["plain", "live"])
def test_text_typed_while_an_answer_streams_is_kept_as_the_next_input(repl, fake_server, color) -> None:
    from conftest_repl import _ANSI, PROMPT_READY

    chat = repl(color=color)
    fake_server.enqueue(Stream(answer="one two three four five six seven eight", piece_size=4, delay=0.3))
    chat.enter("count")
    chat.wait_text("one")
    chat.send("and then")  # typed ahead, no Enter
    chat.wait_prompt()
    turn = _ANSI.sub("", chat.raw[chat.mark:].split(PROMPT_READY)[0])  # the turn's output, up to the next prompt
    assert "seven eight" in turn and "and then" not in turn, turn  # not echoed into the answer
    chat.wait_for(lambda: ">>> and then" in chat.display().split("seven eight")[-1], "the typed text at the prompt")
    request = chat.ask("")  # Enter sends what was typed ahead
    assert request.body["messages"][-1] == {"role": "user", "content": "and then"}


@pytest.mark.parametrize("key", [CTRL_C, "x"])
def test_the_thinking_panel_leaves_no_border_behind(repl, fake_server, key) -> None:
    """Ctrl-C, or any keystroke, while reasoning streams in the live view: the panel goes away whole."""
    chat = repl(color=True)
    fake_server.enqueue(Stream(reasoning="weighing this and that " * 3, answer="fine", piece_size=6, delay=0.3))
    chat.enter("think hard")
    chat.wait_for(lambda: "thinking…" in chat.display(), "the thinking panel")
    chat.send(key)
    if key != CTRL_C:
        chat.wait_for(lambda: "fine" in chat.display(), "the answer")
    chat.wait_prompt()
    screen = chat.display()
    assert "thinking…" not in screen and "╭" not in screen.split("think hard")[-1].split("▸ thought")[0], screen
    assert "▸ thought for" in screen


def test_no_usage_line_before_an_error_that_came_before_any_output(repl) -> None:
    chat = repl("-p", "bailian", color=True)  # (an unknown Ollama model would offer a pull first)
    chat.command("/model no-such-model")
    chat.ask("hello?")
    shown = chat.since()
    assert "does not offer the model 'no-such-model'" in shown
    assert "0.00s" not in shown and "s\n" not in shown.split("hello?")[-1].split("Error")[0].strip()


def test_messages_wrap_on_word_boundaries(repl, fake_server) -> None:
    chat = repl()
    chat.ask("hi")
    chat.command("/profile bailian")  # "… the conversation (1 turn) continues." is longer than 100 columns
    lines = chat.display().splitlines()
    assert any(line.rstrip().endswith("continues.") or line.strip() == "continues." for line in lines) or any(
        "(1 turn) continues." in line for line in lines), chat.display()
    assert all(not line.startswith("es.") for line in lines)
    joined = " ".join(line.strip() for line in lines)
    assert "the conversation (1 turn) continues." in joined


def test_the_placeholder_does_not_stay_after_ctrl_d(repl) -> None:
    chat = repl()
    chat.wait_for(lambda: "Send a message" in chat.display(), "the placeholder")
    chat.press(CTRL_D)
    assert chat.wait_exit() == 0
    assert "Send a message" not in chat.display(), chat.display()


def test_compact_says_it_is_summarising_before_the_summary_arrives(repl, fake_server) -> None:
    chat = repl()
    for n in range(3):
        chat.ask(f"question {n}")
    fake_server.enqueue(Stream(answer="A short summary of the talk so far.", piece_size=4, delay=0.5))
    chat.enter("/compact")
    chat.wait_text("summarising")  # shown while the model writes: the summary takes seconds here
    assert "Context: summarised" not in chat.since()
    chat.wait_prompt()
    assert "Context: summarised" in chat.since()


def test_profile_keeps_the_settings_that_still_apply_and_says_which_were_reset(repl) -> None:
    chat = repl()
    chat.command("/think on")
    chat.command("/set temperature 0.3")
    chat.command("/set context_window 5000")
    chat.command("/search on")
    said = " ".join(chat.command("/profile bailian").split())
    assert "Kept from this chat: thinking on, search = on, temperature = 0.3." in said, said
    assert "Back to the profile's: context_window (it belongs to the model)." in said, said
    body = chat.ask("hi").body
    assert body["enable_thinking"] is True and body["temperature"] == 0.3 and body["enable_search"] is True
    said = " ".join(chat.command("/profile local").split())
    assert "Kept from this chat: thinking on, temperature = 0.3." in said
    assert "search (Bailian only)" in said
    body = chat.ask("again").body
    assert body["think"] is True and body["options"]["temperature"] == 0.3
    assert body["options"]["num_ctx"] != 5000


@pytest.mark.parametrize("yes", [True, False], ids=["accepted", "declined"])
def test_an_unknown_ollama_model_in_the_chat_offers_a_pull(repl, fake_server, yes) -> None:
    chat = repl()
    chat.command("/model qwen3:14b")
    chat.enter("q")
    chat.wait_text("Pull it now?")
    chat.press("y" if yes else "n")  # once the question reads keys (it is a prompt too), then the next prompt
    chat.wait_prompt()
    if yes:
        assert "qwen3:14b" in fake_server.models and "You said: q" in chat.since()
        assert chat.chat_requests()[-1].body["messages"][-1] == {"role": "user", "content": "q"}
        assert [m["content"] for m in chat.ask("again").body["messages"] if m["role"] == "user"] == ["q", "again"]
    else:
        assert "does not have the model 'qwen3:14b'" in chat.since()
        assert not any(r.path == "/api/pull" for r in fake_server.requests)
        chat.command("/model qwen3:0.6b")  # the chat goes on
        chat.ask("next")
        assert "You said: next" in chat.since()


def test_a_failed_pull_names_the_endpoint_it_called(fake_server) -> None:
    from fakeserver import Raw
    from test_images import ollama

    from llmchat.core.errors import ProviderError

    fake_server.overrides["/api/pull"] = Raw(404, b"404 page not found", "text/plain")
    with pytest.raises(ProviderError) as info:
        list(ollama(fake_server).pull("qwen3:14b"))
    assert "/api/pull" in info.value.message and "/api/chat" not in info.value.message


def test_the_image_refusal_in_the_chat_names_slash_model(repl, tmp_path) -> None:
    png = tmp_path / "dot.png"
    png.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                  "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"))
    chat = repl()
    chat.command(f"/image {png}")
    chat.enter("what is this?")
    chat.wait_prompt()
    said = " ".join(chat.since().split())
    assert "cannot see images" in said and "/model qwen2.5vl" in said and "-m " not in said


@pytest.mark.parametrize("command", ["/image", "/file", "/save"])
def test_tab_completes_paths_for_image_file_and_save(repl, env, command) -> None:
    folder = Path(env["HOME"]) / "pictures"  # typed as ~/pictures: short enough for one screen line
    folder.mkdir()
    (folder / "holiday-photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    chat = repl()
    chat.wait_prompt()
    chat.send(f"{command} ~/pictures/holi")
    chat.wait_for(lambda: "holiday-photo.png" in chat.display(), "the file in the completion menu")
    chat.send("\t")
    chat.wait_for(lambda: f"{command} ~/pictures/holiday-photo.png" in chat.display(), "the completed path")


def test_an_ollama_retry_notice_is_on_its_own_line(repl, fake_server, repl_config) -> None:
    from fakeserver import Raw

    repl_config.write_text(repl_config.read_text().replace("retries = 0", "retries = 2", 1))
    busy = Raw(status=503, body='{"error":"server busy, please try again."}',
               content_type="application/json; charset=utf-8", headers={"Retry-After": "0"})
    fake_server.enqueue(busy, Stream(answer="ok then"))
    chat = repl(color=True)
    chat.ask("hi")
    lines = [line.strip() for line in chat.display().splitlines()]
    assert "Ollama failed (503): server busy, please try again." in lines
    assert "Retrying in 0.0s (1/2)…" in lines and "ok then" in lines


def test_a_refused_question_is_no_turn_but_up_and_retry_still_have_it(repl, llmchat, env) -> None:
    import json

    chat = repl("-p", "bailian")
    chat.command("/model no-such-model")
    chat.ask("what is a monad?")
    assert "does not offer the model" in chat.since()
    assert json.loads(llmchat("history", "--json").stdout) == []
    assert "No turns yet" in chat.command("/history") and "No turns yet" in chat.command("/usage")
    chat.command("/model qwen-plus")
    again = chat.ask("/retry")
    assert [m["content"] for m in again.body["messages"] if m["role"] == "user"] == ["what is a monad?"]
    saved_input = Path(env["XDG_DATA_HOME"]) / "llmchat" / "input_history"  # what Up recalls
    assert "+what is a monad?" in saved_input.read_text(encoding="utf-8")
    listed = json.loads(llmchat("history", "--json").stdout)
    assert [row["turns"] for row in listed] == [1]


def test_first_run_with_ollama_down_says_so_in_the_banner(repl, env) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    chat = repl(LLMCHAT_CONFIG="", OLLAMA_HOST=f"127.0.0.1:{port}")  # no config file: the built-in profiles
    screen = " ".join(chat.display().split())
    assert "profile local" in screen and "Ollama is not answering" in screen and "ollama serve" in screen
    chat.press(CTRL_D)
    assert chat.wait_exit() == 0


def test_first_run_offers_the_default_models_pull(repl, fake_server) -> None:
    fake_server.models.remove("qwen3:0.6b")
    fake_server.registry["qwen3:0.6b"] = [522_000_000]
    chat = repl(LLMCHAT_CONFIG="", OLLAMA_HOST=fake_server.url, ready=False)
    chat.wait_text("Pull it now?")
    chat.press("y")
    chat.wait_prompt()
    assert "qwen3:0.6b" in fake_server.models
    chat.ask("hello")
    assert "You said: hello" in chat.since()
