"""Model facts from the server (issue 14): Ollama's `/api/show` says how long a context the model was
trained for (`model_info["<arch>.context_length"]`), and that number, not llmchat's table, is the window
the history is managed for and the `num_ctx` sent — unless the profile says otherwise.

What the model was told is read from the requests the fake server received; the fake server's
`/api/show` answers like a real one (the recorded qwen3 capture), with `context_lengths` per model.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fakeserver import Raw

from llmchat.config.load import Config
from llmchat.config.profile import Profile
from llmchat.repl.app import ask
from llmchat.repl.commands import COMMANDS
from llmchat.repl.state import ReplState


def shows(server: Any) -> list[Any]:
    return [r for r in list(server.requests) if r.path == "/api/show"]


def chats(server: Any) -> list[dict[str, Any]]:
    return [r.body for r in list(server.requests) if r.path.endswith(("/api/chat", "/chat/completions"))]


def server_count(body: dict[str, Any]) -> int:
    """The fake server's prompt_tokens for this request (fakeserver._estimate_prompt_tokens)."""
    return max(1, sum(len(m["content"]) // 4 + 4 for m in body["messages"]))


def add_profile(config_file: Any, name: str, model: str, server: Any, extra: str = "") -> None:
    config_file.write_text(config_file.read_text() + f'\n[profiles.{name}]\nprovider = "ollama"\nmodel = "{model}"\n'
                           f'base_url = "{server.url}"\n{extra}', encoding="utf-8")


# ----------------------------------------------------------------------------- the server's number


def test_the_servers_context_length_is_the_window_and_the_num_ctx(fake_server, config_file, llmchat) -> None:
    fake_server.context_lengths["llama3.2:latest"] = 8192
    run = llmchat("ask", "-m", "llama3.2", "hi")
    assert run.code == 0, run.stderr
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 8192}  # not the table's 4,096
    # The context policy uses it too: ~6,000 tokens fit 8,192 (the table's 4,096 would warn), ~8,800 do not.
    fits = llmchat("ask", "-m", "llama3.2", "summarise", input="word " * 4800)
    assert fits.code == 0 and "Warning" not in fits.stderr
    over = llmchat("ask", "-m", "llama3.2", "summarise", input="word " * 7000)
    assert over.code == 0
    assert "Warning: the input is about" in over.stderr and "more than 8,192" in over.stderr
    assert "the server's context length for llama3.2" in over.stderr


def test_the_chat_keeps_the_history_inside_the_servers_window(fake_server, env, capsys) -> None:
    fake_server.context_lengths["llama3.2:latest"] = 8192
    profile = Profile(name="local", provider="ollama", model="llama3.2", base_url=fake_server.url,
                      history="truncate", retries=0)
    state = ReplState.start(Config(profiles={"local": profile}, default="local", path=None), profile)
    for n in range(10):
        ask(state, f"Question {n}: " + "word " * 800, plain=True)  # ~1,000 tokens; the echo as many again
    turns = chats(fake_server)
    assert len(turns) == 10 and all(body["options"]["num_ctx"] == 8192 for body in turns)
    reserve = 8192 // 4  # room kept for the answer
    assert all(server_count(body) <= 8192 - reserve for body in turns)
    assert max(server_count(body) for body in turns) > 4096  # the server's window was used, not the table's
    assert "Context: stopped sending" in capsys.readouterr().err
    state.out = io.StringIO()
    COMMANDS.dispatch(state, "/context")
    shown = state.out.getvalue()
    assert "of 8,192 tokens" in shown and "window: the server's context length for llama3.2" in shown
    assert len(shows(fake_server)) == 1  # ten turns and /context: asked once


def test_a_long_trained_window_is_capped_unless_the_profile_asks(fake_server, config_file, llmchat) -> None:
    # llama3.2 is trained for 131,072 (the fake server says so, as Ollama does): a KV cache that size on
    # every load is what a small machine cannot afford, so num_ctx stops at 40,960 unless asked for more.
    run = llmchat("ask", "-m", "llama3.2", "hi")
    assert run.code == 0, run.stderr
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 40_960}
    add_profile(config_file, "big", "llama3.2", fake_server, "context_window = 131072\n")
    assert llmchat("ask", "-p", "big", "hi").code == 0
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 131_072}


def test_the_profiles_context_window_wins_and_costs_no_request(fake_server, config_file, llmchat) -> None:
    fake_server.context_lengths["qwen3:0.6b"] = 8192
    add_profile(config_file, "fixed", "qwen3:0.6b", fake_server, "context_window = 2000\n")
    run = llmchat("ask", "-p", "fixed", "hi")
    assert run.code == 0, run.stderr
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 2000}
    assert shows(fake_server) == []  # the user's word needs no question to the server
    cloud = llmchat("ask", "-p", "bailian", "hi")  # an OpenAI-compatible server never says: no extra request
    assert cloud.code == 0, cloud.stderr
    assert [r.path for r in fake_server.requests][-1:] == ["/compatible-mode/v1/chat/completions"]
    assert shows(fake_server) == []


def test_a_server_that_does_not_say_gets_the_table(fake_server, config_file, llmchat) -> None:
    fake_server.context_lengths["qwen3:0.6b"] = None  # model_info without context_length
    assert llmchat("ask", "hi").code == 0
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 40_960}  # the table's qwen3


@pytest.mark.parametrize("reply", [
    Raw(status=500, body='{"error":"failed to read the model"}', content_type="application/json"),
    Raw(status=404, body="404 page not found", content_type="text/plain"),  # something that is not Ollama's
    Raw(status=200, body="<html><body>Sign in to the network</body></html>", content_type="text/html"),
    Raw(status=200, body='{"model_info": "garbage", "capabilities": 7}', content_type="application/json"),
    Raw(status=200, body='{"model_info": {"general.architecture": "qwen3", "qwen3.context_length": "big"}}',
        content_type="application/json"),
    Raw(status=200, body="", content_type="application/json"),
], ids=["500", "404", "html", "wrong-types", "not-a-number", "empty"])
def test_a_failed_show_falls_back_to_the_table_and_the_turn_works(fake_server, config_file, llmchat,
                                                                   reply: Raw) -> None:
    fake_server.context_lengths["qwen3:0.6b"] = 8192  # what a working /api/show would have said
    fake_server.overrides["/api/show"] = reply
    run = llmchat("ask", "hi")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: hi\n" and run.stderr == ""  # silently: a hint, not a requirement
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 40_960}  # the table's qwen3
    assert len(shows(fake_server)) == 1


def test_an_unknown_model_still_gets_the_not_found_message(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-m", "nosuch:1b", "hi")  # /api/show says 404 first: the chat's 404 is what is told
    assert run.code == 1
    assert "does not have the model 'nosuch:1b'" in run.stderr and "Traceback" not in run.stderr
    assert len(shows(fake_server)) == 1


def test_the_failure_is_remembered_so_a_chat_asks_once(fake_server, env, capsys) -> None:
    fake_server.overrides["/api/show"] = Raw(status=500, body='{"error":"boom"}', content_type="application/json")
    profile = Profile(name="local", provider="ollama", model="qwen3:0.6b", base_url=fake_server.url, retries=0)
    state = ReplState.start(Config(profiles={"local": profile}, default="local", path=None), profile)
    for n in range(3):
        ask(state, f"q{n}", plain=True)
    state.out = io.StringIO()
    COMMANDS.dispatch(state, "/context")
    assert "of 40,960 tokens" in state.out.getvalue() and "llmchat's default for qwen3:0.6b" in state.out.getvalue()
    assert len(chats(fake_server)) == 3 and len(shows(fake_server)) == 1
    assert "boom" not in capsys.readouterr().err


def test_the_vision_check_and_the_window_share_one_show(fake_server, config_file, llmchat, tmp_path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17))  # a PNG header: enough
    fake_server.vision_models.add("qwen3:8b")
    fake_server.context_lengths["qwen3:8b"] = 8192
    run = llmchat("ask", "-m", "qwen3:8b", "--image", str(image), "What is this?")
    assert run.code == 0, run.stderr
    assert fake_server.last("/api/chat").body["options"] == {"num_ctx": 8192}
    assert [r.path for r in fake_server.requests] == ["/api/show", "/api/chat"]
