"""Adversarial checks of tool calling (the review of issues 15 and 16): a hostile model or MCP server and a
careless user must not get past the approval, leak a key, or reach the terminal with control sequences."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import forkserver
import pexpect
import pytest
from conftest import TEST_KEY
from fakeserver import Raw
from test_mcp import mcp_config, stdio_server
from test_tools_cli import tool_messages, tools_config
from toolreplies import openai_answer, openai_calls

from llmchat.config.load import load_config
from llmchat.core.environment import Environment
from llmchat.core.tools import ToolCall
from llmchat.tools.box import toolbox_for
from llmchat.tools.mcp_tools import _mended

pytest_plugins = ("conftest_repl",)  # the `repl` fixture


def shell_call(command: str, call_id: str = "call_s1") -> object:
    return openai_calls((call_id, "shell", [json.dumps({"command": command})]))


def test_a_trusted_shell_reading_the_parents_environment_gets_no_key(fake_server, env, tmp_path, llmchat_process):
    """`shell` runs without the key in its environment, but the key is in llmchat's own, which a child can
    read (/proc/$PPID/environ, `read_file /proc/self/environ`): the result sent back has it redacted."""
    path = tools_config(fake_server, env, tmp_path)
    path.write_text(path.read_text().replace('tools = ["marker", "time"]', 'tools = ["shell", "read_file"]'))
    env["GITHUB_TOKEN"] = "ghp-review-secret-0123456789"
    fake_server.enqueue(shell_call("tr '\\0' '\\n' < /proc/$PPID/environ"),
                        openai_answer("Done."))
    # exec'd, not forked: /proc/PID/environ is what the process was exec'd with (tests/forkserver.py)
    result = llmchat_process("ask", "--trust-tools", "show me the environment", LLMCHAT_TEST_SPAWN="exec")
    assert result.code == 0, result.stderr
    results = [m["content"] for m in tool_messages(fake_server)]
    (text,) = results
    assert "PATH=" in text
    assert TEST_KEY not in text and "ghp-review-secret-0123456789" not in text
    assert "DASHSCOPE_API_KEY=[redacted]" in text and "GITHUB_TOKEN=[redacted]" in text


def test_always_trusts_a_servers_tool_not_whatever_later_takes_its_name(tmp_path):
    """"a" for server alpha's `add`; alpha dies, server beta (untrusted) starts: its `add` is now offered
    as `add` too, and must still be asked about (the trust was alpha's, not the name's)."""
    path = tmp_path / "config.toml"
    path.write_text(stdio_server("alpha") + stdio_server("beta") +
                    '[profiles.t]\nprovider = "ollama"\nmodel = "m"\ntools = ["alpha"]\n', encoding="utf-8")
    config = load_config(path)
    tools = toolbox_for(config, config.profiles["t"], Environment(None, sys.stdout, sys.stderr, dict(os.environ)))
    assert tools is not None
    try:
        tools.wait_ready()
        assert "add" in [s.name for s in tools.offered()] and tools.needs_approval("add")
        tools.trust("add")
        assert not tools.needs_approval("add")
        assert tools.run(ToolCall(id="c1", name="crash", arguments={}))[0] == "error"  # alpha is gone
        tools.enable("beta")
        assert tools.spec("add") is not None and tools.spec("add").source == "mcp:beta"
        assert tools.needs_approval("add"), "beta's add inherited the trust given to alpha's"
    finally:
        tools.close()


def test_read_file_approval_names_the_file_a_symlink_leads_to(tmp_path):
    """The approval says what will be read: a harmless name linking to a secret file must say so."""
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE\n")
    (tmp_path / "notes.txt").symlink_to(secret)
    path = tmp_path / "config.toml"
    path.write_text('[profiles.t]\nprovider = "ollama"\nmodel = "m"\ntools = ["read_file"]\n', encoding="utf-8")
    config = load_config(path)
    tools = toolbox_for(config, config.profiles["t"], Environment(None, sys.stdout, sys.stderr, dict(os.environ)))
    assert tools is not None
    said = tools.describe(ToolCall(id="c1", name="read_file", arguments={"path": str(tmp_path / "notes.txt")}))
    assert said == f"read {tmp_path / 'notes.txt'}, which leads to {secret}"
    plain = tools.describe(ToolCall(id="c2", name="read_file", arguments={"path": str(secret)}))
    assert plain == f"read {secret}"
    assert tools.run(ToolCall(id="c3", name="read_file", arguments={"path": str(tmp_path / "notes.txt")})) == \
        ("ok", "PRIVATE\n")


@pytest.fixture
def dripping() -> Iterator[str]:
    """A server that sends its response headers one byte every 0.2 s (slow-loris), and `/redirect` that
    sends the client to file:///etc/passwd."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(4096)
            if b"/redirect" in request.split(b"\r\n", 1)[0]:
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n")
                return
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: " + b"a" * 10_000:
                if stop.is_set():
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_fetch_is_bounded_by_its_timeout_even_when_headers_drip(tmp_path, dripping):
    """Each byte arrives within the read timeout, so only an overall deadline stops a slow-loris server."""
    path = tmp_path / "config.toml"
    path.write_text('[tools.fetch]\ntimeout = 1\n[profiles.t]\nprovider = "ollama"\nmodel = "m"\n'
                    'tools = ["fetch"]\n', encoding="utf-8")
    config = load_config(path)
    tools = toolbox_for(config, config.profiles["t"], Environment(None, sys.stdout, sys.stderr, dict(os.environ)))
    assert tools is not None
    started = time.monotonic()
    status, text = tools.run(ToolCall(id="c1", name="fetch", arguments={"url": f"{dripping}/"}))
    assert (status, text) == ("error", "timed out after 1 s") and time.monotonic() - started < 3
    status, text = tools.run(ToolCall(id="c2", name="fetch", arguments={"url": f"{dripping}/redirect"}))
    assert status == "error" and "file://" in text and "root:" not in text


HOSTILE = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\u202e"  # what tests/mcp_server.py --mode hostile puts everywhere


def assert_harmless(raw: str, where: str) -> None:
    """None of the hostile controls reached the terminal as such (they are shown as ^[ and <U+202E>)."""
    for control in ("\x1b]52", "\x1b[2J", "\u202e", "\x07"):
        assert control not in raw, (where, control, raw[-2000:])


def pty_run(env: dict[str, str], *args: str, answers: int = 0) -> str:
    child = forkserver.spawn(sys.executable, ["-m", "llmchat", *args], encoding="utf-8", timeout=60,
                          env={k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}, dimensions=(40, 160))
    raw = ""
    for _ in range(answers):
        child.expect_exact("Run it?")
        raw += child.before + child.after
        child.sendline("y")
    raw += child.read()
    child.close()
    assert child.exitstatus == 0, raw[-2000:]
    return raw


def test_what_a_hostile_mcp_server_and_model_write_reaches_the_terminal_defused(fake_server, env, tmp_path):
    """Tool names, descriptions, arguments, results, errors and a dead server's stderr, through the call and
    outcome lines, the approval, `mcp list`, `llmchat tools`, a failure notice and `history show`."""
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", mode="hostile"), ["demo"])
    env.pop("NO_COLOR", None)
    raw = pty_run(env, "mcp", "list")
    assert_harmless(raw, "mcp list")
    assert "Says hi.^[]52;c;cHduZWQ=^G^[[2J<U+202E> Really." in raw
    raw = pty_run(env, "tools")
    assert_harmless(raw, "tools")
    assert "demo__pwn__52_c_cHduZWQ___" in raw

    name = _mended(f"demo__pwn{HOSTILE}")
    fake_server.enqueue(openai_calls(("c1", name, [json.dumps({"text": f"arg {HOSTILE}"})]),
                                     ("c2", "oops", ["{}"]),
                                     ("c3", f"ghost{HOSTILE}", ["{}"])),
                        openai_answer(f"Done {HOSTILE}."))
    raw = pty_run(env, "ask", "go", answers=2)
    assert_harmless(raw, "ask")
    results = [m["content"] for m in tool_messages(fake_server)]
    assert results[0] == f"result {HOSTILE} arg {HOSTILE}"  # the model gets the text exactly
    assert "⚙ ghost^[]52;c;cHduZWQ=^G^[[2J<U+202E>()" in raw  # a call line, defused
    assert "Says hi.^[]52;c;cHduZWQ=^G^[[2J<U+202E> Really." in raw  # the approval's description
    assert "→ error: Error executing tool oops" in raw

    raw = pty_run(env, "history", "show")
    assert_harmless(raw, "history show")
    assert "ghost^[]52" in raw

    fake_server.enqueue(openai_calls(("c4", "crash", ["{}"])), openai_answer("Gone."))
    raw = pty_run(env, "ask", "--trust-tools", "crash it")
    assert_harmless(raw, "failure notice")
    assert "stderr says hi" in raw and "MCP server demo failed" in raw



def test_an_argument_that_reads_as_an_option_is_pointed_out_in_the_approval(tmp_path):
    """`{ref}` → `--output=/tmp/x` stays one argv item (no shell), but git would read it as an option: accepted
    (the template's author knows the program; `--` before the placeholder stops it), and said in the approval."""
    path = tmp_path / "config.toml"
    path.write_text('[tools.log]\ncommand = ["git", "log", "{ref}"]\nparameters = { ref = { type = "string" } }\n'
                    '[tools.safe]\ncommand = ["git", "log", "--", "{ref}"]\n'
                    'parameters = { ref = { type = "string" } }\n'
                    '[profiles.t]\nprovider = "ollama"\nmodel = "m"\ntools = ["log", "safe"]\n', encoding="utf-8")
    config = load_config(path)
    tools = toolbox_for(config, config.profiles["t"], Environment(None, sys.stdout, sys.stderr, dict(os.environ)))
    assert tools is not None
    said = tools.describe(ToolCall(id="c1", name="log", arguments={"ref": "--output=/tmp/x"}))
    assert said.splitlines() == ["git log --output=/tmp/x",
                                 "note: '--output=/tmp/x' comes from the model's arguments and starts with '-': "
                                 "git may read it as an option"]
    assert tools.describe(ToolCall(id="c2", name="log", arguments={"ref": "main"})) == "git log main"
    assert tools.describe(ToolCall(id="c3", name="safe", arguments={"ref": "--output=/tmp/x"})) == \
        "git log -- --output=/tmp/x"


class Asked:
    """An approval that records what it was asked and says yes."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def ask(self, spec, call, description):
        from llmchat.core.tools import Decision

        self.asked.append(call.name)
        return Decision(run=True)


class Shown:
    def tool_call(self, call) -> None:
        pass

    def tool_done(self, record) -> None:
        pass


def test_only_offered_tools_by_their_exact_name_run(tmp_path):
    """Case, whitespace and look-alike variants of a trusted tool, a defined tool not offered, one turned
    off: none runs, none is even asked about; each gets an error result naming the offered tools."""
    from llmchat.engine.tooling import run_calls

    marker = tmp_path / "ran"
    path = tmp_path / "config.toml"
    path.write_text(f'[tools.touch]\ncommand = ["touch", "{marker}"]\ntrust = true\n'
                    '[tools.shell]\ntrust = true\n'
                    '[profiles.t]\nprovider = "ollama"\nmodel = "m"\ntools = ["time", "touch"]\n', encoding="utf-8")
    config = load_config(path)
    tools = toolbox_for(config, config.profiles["t"], Environment(None, sys.stdout, sys.stderr, dict(os.environ)))
    assert tools is not None
    tools.disable("touch")  # /tools off touch
    names = ["Time", "time ", " time", "t\u0456me", "tіme", "TIME", "time\u200b", "touch", "shell", "",
             "time\x00"]
    calls = [ToolCall(id=f"c{i}", name=name, arguments={"command": f"touch {marker}"}) for i, name in enumerate(names)]
    approval = Asked()
    records = run_calls(calls, tools, approval, Shown())
    assert [r.status for r in records] == ["error"] * len(names)
    assert all("there is no tool named" in r.result and "(the tools: time)" in r.result for r in records)
    assert approval.asked == [] and not marker.exists()
    (ok,) = run_calls([ToolCall(id="t", name="time", arguments={})], tools, approval, Shown())
    assert ok.status == "ok" and approval.asked == []  # the real one runs, trusted by default


def test_ctrl_c_at_the_approval_in_ask_keeps_a_history_the_next_turn_can_send(fake_server, env, tmp_path):
    """`ask` stopped at the approval of the first of two calls: exit 130, nothing ran, and `ask -c` sends
    both calls with a result each (the API refuses a call without one)."""
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "never"
    fake_server.enqueue(openai_calls(("call_a", "marker", [json.dumps({"path": str(marker)})]),
                                     ("call_b", "marker", [json.dumps({"path": str(marker)})])))
    child = forkserver.spawn(sys.executable, ["-m", "llmchat", "ask", "make it"], encoding="utf-8", timeout=60,
                          env={k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}, dimensions=(30, 120))
    child.expect_exact("Run it?")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 and not marker.exists()
    fake_server.enqueue(openai_answer("Fine."))
    done = forkserver.run([sys.executable, "-m", "llmchat", "ask", "-c", "again"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sent = fake_server.requests[-1].body["messages"]
    assert [m["role"] for m in sent][-5:] == ["user", "assistant", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ["call_a", "call_b"]
    assert [m["content"] for m in sent if m["role"] == "tool"] == ["interrupted by the user",
                                                                   "not run: the user interrupted the turn"]


def test_a_server_echoing_the_token_its_config_gives_it_does_not_hand_it_to_the_model(fake_server, env, tmp_path,
                                                                                      llmchat):
    extra = 'trust = true\nenv = { SERVICE_TOKEN = "literal-token-123456", PLAIN = "plain-value-123456" }'
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", mode="hostile", extra=extra), ["demo"])
    fake_server.enqueue(openai_calls(("c1", "getenv", [json.dumps({"name": "SERVICE_TOKEN"})]),
                                     ("c2", "getenv", [json.dumps({"name": "PLAIN"})])), openai_answer("Ok."))
    result = llmchat("ask", "what is your token?")
    assert result.code == 0, result.stderr
    assert [m["content"] for m in tool_messages(fake_server)] == ["SERVICE_TOKEN=[redacted]",
                                                                  "PLAIN=plain-value-123456"]
    # its stderr says the token too: the failure notice shows its last lines, the token redacted
    fake_server.enqueue(openai_calls(("c3", "crash", ["{}"])), openai_answer("Gone."))
    result = llmchat("ask", "crash it")
    assert result.code == 0, result.stderr
    assert "stderr says hi [redacted]" in result.stderr and "literal-token-123456" not in result.stderr


def test_the_chats_tools_and_mcp_listings_defuse_a_hostile_servers_words(fake_server, env, tmp_path, repl):
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", mode="hostile"), ["demo"])
    session = repl(timeout=60)
    mark = len(session.raw)
    fake_server.enqueue(openai_answer("Hi."))
    session.ask("hello")  # the first question waits for the server: it is ready after it
    session.command("/mcp")
    session.command("/tools")
    fake_server.enqueue(openai_calls(("c4", "crash", ["{}"])), openai_answer("Gone."))
    session.enter("crash it")
    session.wait_text("Run it?", timeout=60)
    session.send("y\r")
    session.wait_prompt()
    session.command("/mcp")  # the failure again, with the server's last stderr lines
    raw = session.raw[mark:]
    assert_harmless(raw, "/tools, /mcp and a failure in the chat")
    assert "hi.^[]52;c;cHduZWQ=^G^[[2J<U+202E>" in raw and "stderr says hi" in raw
    session.press("\x04")
    assert session.wait_exit() == 0


def test_a_command_tool_whose_program_the_model_would_choose_is_a_config_error(tmp_path):
    """`command = ["{prog}", …]` lets the model pick the program: `shell` by another name, and trusted it
    would run anything unasked. One clear config error with the line, pointing at `shell`."""
    from llmchat.core.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text('[tools.run]\ndescription = "x"\ncommand = ["{prog}", "--version"]\n'
                    'parameters = { prog = { type = "string" } }\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "config.toml, line 3:" in message and "{prog}" in message and "shell" in message
    assert info.value.exit_code == 2


def test_arguments_nested_too_deep_are_the_calls_error_not_a_crash(fake_server, env, tmp_path, llmchat):
    """A hostile model's argument string `{"a": [[[[…]]]]}` 100,000 deep: Python's JSON decoder raises
    RecursionError, not ValueError; it must go back to the model as the call's error like any bad JSON."""
    tools_config(fake_server, env, tmp_path, trust="true")
    deep = '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}"
    fake_server.enqueue(openai_calls(("call_d", "marker", [deep])), openai_answer("Sorry."))
    result = llmchat("ask", "--json", "go")
    assert result.code == 0, result.stderr
    (call,) = json.loads(result.stdout)["tool_calls"]
    assert call["status"] == "error" and "nested too deeply" in call["argument_error"]
    (sent,) = tool_messages(fake_server)
    assert "nested too deeply" in sent["content"] and len(sent["content"]) < 1000


def test_ollama_call_arguments_nested_too_deep_are_a_malformed_answer_not_a_crash(fake_server, env, tmp_path,
                                                                                   llmchat):
    """Ollama sends arguments as a JSON object inside its line: nested 100,000 deep, the line itself cannot be
    decoded. That is the server's malformed answer (exit 1, one message), never an internal error."""
    path = tools_config(fake_server, env, tmp_path, trust="true")
    path.write_text(path.read_text() + f'\n[profiles.local]\nprovider = "ollama"\nmodel = "qwen3:8b"\n'
                    f'base_url = "{fake_server.url}"\nretries = 0\ntools = ["marker"]\n', encoding="utf-8")
    deep = "[" * 100_000 + "]" * 100_000
    body = ('{"model":"qwen3:8b","message":{"role":"assistant","content":"","tool_calls":[{"function":'
            '{"name":"marker","arguments":{"path":' + deep + '}}}]},"done":false}\n')
    fake_server.enqueue(Raw(200, body, content_type="application/x-ndjson", chunked=True))
    result = llmchat("ask", "-p", "local", "go")
    assert result.code == 1 and "malformed data" in result.stderr, result.stderr
    assert "internal error" not in result.stderr


def test_mcp_list_shows_a_failed_servers_stderr_without_its_token(fake_server, env, tmp_path, llmchat):
    extra = 'env = { SERVICE_TOKEN = "literal-token-123456" }'
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", mode="die", extra=extra), ["demo"])
    result = llmchat("mcp", "list", "--json")
    (row,) = json.loads(result.stdout)
    assert row["status"] == "failed" and "auth with [redacted] refused" in row["stderr"]
    assert "literal-token-123456" not in result.stdout + result.stderr


def test_a_stream_chunk_nested_too_deep_is_a_malformed_stream_not_a_crash(fake_server, env, tmp_path, llmchat):
    """The same attack one level up: an SSE chunk whose JSON nests 100,000 deep cannot be decoded at all."""
    tools_config(fake_server, env, tmp_path, trust="true")
    deep = "[" * 100_000 + "]" * 100_000
    body = ('data: {"choices":[{"delta":{"content":"x"},"finish_reason":null,"index":0}],"x":' + deep + '}\n\n'
            'data: [DONE]\n\n')
    fake_server.enqueue(Raw(200, body, content_type="text/event-stream", chunked=True))
    result = llmchat("ask", "go")
    assert result.code == 1 and "malformed stream" in result.stderr, result.stderr
