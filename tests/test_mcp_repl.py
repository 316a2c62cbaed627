"""MCP servers in the chat (a pty): they start in the background while the prompt is already usable, the
first question waits for them under a spinner naming them, `/mcp` and `/tools` show them, Ctrl-C at the
prompt leaves them running, Ctrl-C during a call stops the call and the chat goes on; and the child is
gone (by PID) after Ctrl-D, SIGTERM and SIGHUP."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_mcp import call, gone, mcp_config, pid_of, stdio_server, tool_results
from toolreplies import openai_answer

pytest_plugins = ("conftest_repl",)


def test_the_chat_starts_servers_in_the_background_and_stops_them_on_ctrl_d(fake_server, env, tmp_path, repl):
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    server = stdio_server("demo", pid_file=pid_file, extra="trust = true").replace(
        '"--mode", "ok"', f'"--mode", "ok", "--gate", "{gate}"')
    mcp_config(fake_server, env, tmp_path, server, ["demo"])
    session = repl(timeout=60)  # the prompt is there although the server cannot be ready (the gate is shut)
    pid = pid_of(pid_file)
    assert "starting" in session.command("/mcp")
    fake_server.enqueue(call("add", {"a": 3, "b": 4}), openai_answer("Seven."))
    session.enter("3 + 4?")
    session.wait_text("Waiting for MCP server demo to start", timeout=30)
    assert not fake_server.requests or not any(r.path.endswith("/chat/completions") for r in fake_server.requests)
    gate.write_text("open")
    session.wait_prompt()
    assert "Seven." in session.since()
    assert tool_results(fake_server) == ["7"]
    listing = session.command("/mcp")
    words = " ".join(listing.split())  # messages wrap at spaces, where depends on the (tmp) path's length
    assert "demo  on   stdio:" in listing and "ready (7 tools)" in words and "tools: add, env_names" in words
    tools = session.command("/tools")
    assert any("add" in line and "mcp:demo" in line and "trusted" in line for line in tools.splitlines())
    session.press("\x03")  # Ctrl-C at the prompt: the chat goes on, and so does the server
    session.wait_prompt()
    assert _alive(pid)
    fake_server.enqueue(call("add", {"a": 1, "b": 1}, "call_2"), openai_answer("Two."))
    session.ask("1 + 1?")
    assert tool_results(fake_server)[-1] == "2"
    session.press("\x04")
    assert session.wait_exit() == 0
    assert gone(pid), "the MCP server outlived the chat"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_during_an_mcp_call_stops_it_and_the_chat_goes_on(fake_server, env, tmp_path, repl):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"), ["demo"])
    session = repl(timeout=60)
    fake_server.enqueue(call("slow", {"seconds": 60}))
    session.enter("be slow")
    session.wait_text("⚙ slow(seconds=60)", timeout=60)
    time.sleep(0.5)
    session.send("\x03")
    session.wait_prompt()
    assert "→ interrupted" in session.since()
    fake_server.enqueue(call("add", {"a": 5, "b": 5}, "call_9"), openai_answer("Ten."))
    session.ask("5 + 5?")  # the server is still there
    assert tool_results(fake_server)[-1] == "10"
    assert "interrupted by the user" in tool_results(fake_server)
    pid = pid_of(pid_file)
    session.enter("/exit")
    assert session.wait_exit() == 0
    assert gone(pid)  # its slow call was still running in it: stopped all the same


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_no_orphan_after_sigterm_or_sighup(fake_server, env, tmp_path, repl, signum):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"), ["demo"])
    session = repl(timeout=60)
    fake_server.enqueue(call("add", {"a": 1, "b": 2}), openai_answer("Three."))
    session.ask("1 + 2?")  # the server is up and has served
    pid = pid_of(pid_file)
    assert _alive(pid)
    session.child.kill(signum)
    session.wait_for(lambda: session.eof, "the chat to end", timeout=30)
    assert gone(pid), f"the MCP server outlived {signal.Signals(signum).name}"


def test_a_server_dying_while_idle_is_said_once_and_its_tools_withdrawn(fake_server, env, tmp_path, repl):
    pid_file = tmp_path / "pid"
    server = stdio_server("demo", pid_file=pid_file, mode="crash-later", extra='env = { CRASH_AFTER = "4" }')
    mcp_config(fake_server, env, tmp_path, server, ["time", "demo"])
    session = repl(timeout=60)
    fake_server.enqueue(openai_answer("First."))
    first = session.ask("hello")
    assert "add" in [t["function"]["name"] for t in first.body["tools"]]
    assert gone(pid_of(pid_file), seconds=30)  # it died on its own
    fake_server.enqueue(openai_answer("Second."), openai_answer("Third."))
    second = session.ask("still there?")
    assert [t["function"]["name"] for t in second.body["tools"]] == ["time"]
    said = session.since()
    assert "MCP server demo failed: closed the connection" in said and "demo stderr: out of memory while idle" in said
    session.ask("and now?")
    assert "MCP server demo failed" not in session.since()  # said once
    assert "failed: closed the connection" in " ".join(session.command("/mcp").split())  # wrapped at spaces


def test_tools_on_a_server_starts_it_for_this_chat(fake_server, env, tmp_path, repl):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"), ["time"])
    session = repl(timeout=60)
    assert "demo  off  stdio:" in session.command("/mcp") and not pid_file.exists()  # not offered: not started
    said = session.command("/tools on demo")
    assert "Starting MCP server demo…" in said and "Tools on: demo. Offered now: time, add, env_names" in said
    said = session.command("/tools off picture")
    assert "Offered now: time, add, env_names, structured, fail, slow, crash" in said
    fake_server.enqueue(call("add", {"a": 2, "b": 2}), openai_answer("Four."))
    request = session.ask("2 + 2?")
    assert "picture" not in [t["function"]["name"] for t in request.body["tools"]]
    assert tool_results(fake_server) == ["4"]
    pid = pid_of(pid_file)
    session.press("\x04")
    assert session.wait_exit() == 0
    assert gone(pid)
