"""MCP servers as tool sources, end to end: `ask` → model (the fake server) → approval → a real MCP server
(tests/mcp_server.py, written with the SDK's MCPServer, run as a stdio child) → result → answer, on both
protocols; what a child is given; every failure (not found, dies at start, garbage, crash mid-call,
timeout) said once and the run going on; no orphan after any of it, checked by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
from conftest import TEST_KEY
from fakeserver import Raw
from test_ask_terminal import screen_lines
from toolreplies import ollama_answer, ollama_calls, openai_answer, openai_calls

SERVER = Path(__file__).with_name("mcp_server.py")


def stdio_server(name: str, *, pid_file: Path | None = None, mode: str = "ok", extra: str = "") -> str:
    """An [mcp.servers.NAME] table running tests/mcp_server.py with this interpreter."""
    args = [str(SERVER), "--name", name, "--mode", mode]
    if pid_file is not None:
        args += ["--pid-file", str(pid_file)]
    return (f'[mcp.servers.{name}]\ncommand = {json.dumps(sys.executable)}\nargs = {json.dumps(args)}\n'
            f'{extra}\n')


def mcp_config(fake_server, env: dict[str, str], tmp_path: Path, servers: str, tools: list[str],
               *, provider: str = "bailian") -> Path:
    path = tmp_path / "mcp.toml"
    path.write_text(f'''default_profile = "{provider}"

{servers}
[profiles.bailian]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key_env = "DASHSCOPE_API_KEY"
retries = 0
tools = {json.dumps(tools)}

[profiles.local]
provider = "ollama"
model = "qwen3:8b"
base_url = "{fake_server.url}"
retries = 0
tools = {json.dumps(tools)}
''', encoding="utf-8")
    env["LLMCHAT_CONFIG"] = str(path)
    env["DASHSCOPE_API_KEY"] = TEST_KEY
    return path


def call(name: str, arguments: dict, call_id: str = "call_1") -> Raw:
    return openai_calls((call_id, name, [json.dumps(arguments)]))


def tool_results(fake_server) -> list[str]:
    return [m["content"] for r in fake_server.requests if r.path.endswith("/chat/completions")
            for m in r.body["messages"] if m["role"] == "tool"]


def chat_bodies(fake_server) -> list[dict]:
    return [r.body for r in fake_server.requests if r.path.endswith(("/chat/completions", "/api/chat"))]


def offered(body: dict) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


def gone(pid: int, seconds: float = 10) -> bool:
    """True once `pid` no longer runs (a zombie of ours counts as gone: it has exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return False


def pid_of(pid_file: Path, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text())
        time.sleep(0.05)
    raise AssertionError(f"the MCP server never wrote {pid_file}")


# ------------------------------------------------------------------------------------- the full path


def test_ask_calls_an_mcp_tool_and_answers_with_its_result(fake_server, env, tmp_path, llmchat):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"),
               ["time", "demo"])
    fake_server.enqueue(call("add", {"a": 2, "b": 3}), openai_answer("It is 5."))
    result = llmchat("ask", "--json", "what is 2 + 3?")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "It is 5."
    (record,) = data["tool_calls"]
    assert (record["name"], record["status"], record["result"]) == ("add", "ok", "5")
    first = chat_bodies(fake_server)[0]
    assert offered(first)[:2] == ["time", "add"] and "env_names" in offered(first)
    add = next(t for t in first["tools"] if t["function"]["name"] == "add")["function"]
    assert add["description"] == "Add two integers."
    assert add["parameters"]["required"] == ["a", "b"]  # the schema as the server listed it
    assert add["parameters"]["properties"]["a"]["type"] == "integer"
    assert tool_results(fake_server) == ["5"]
    assert gone(pid_of(pid_file)), "the stdio server outlived `ask`"


def test_the_approval_on_a_terminal_shows_the_server_then_runs_the_call(fake_server, env, tmp_path):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file), ["demo"])
    fake_server.enqueue(call("add", {"a": 40, "b": 2}), openai_answer("Forty-two."))
    child = forkserver.spawn(sys.executable, ["-m", "llmchat", "ask", "sum?"], encoding="utf-8", timeout=60,
                          env={k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}, dimensions=(30, 120))
    child.expect_exact("Run it?")
    before = child.before
    assert tool_results(fake_server) == []  # nothing ran before the answer
    child.sendline("y")
    raw = before + child.read()
    child.close()
    assert child.exitstatus == 0
    text = "\n".join(screen_lines(raw, columns=120))
    assert "add (mcp:demo): Add two integers." in text
    assert "call add on MCP server demo" in text
    assert "Forty-two." in text
    assert tool_results(fake_server) == ["42"]
    assert gone(pid_of(pid_file))


def test_ollama_gets_the_mcp_tools_and_their_results(fake_server, env, tmp_path, llmchat):
    fake_server.overrides["/api/show"] = Raw(200, json.dumps({"capabilities": ["completion", "tools"],
                                                              "model_info": {}, "details": {}}),
                                             content_type="application/json")
    fake_server.tool_models.add("qwen3:8b")  # the fake's Ollama takes tools for these only
    mcp_config(fake_server, env, tmp_path, stdio_server("demo"), ["demo"], provider="local")
    fake_server.enqueue(ollama_calls({"name": "structured", "arguments": {}}), ollama_answer("21 degrees."))
    result = llmchat("ask", "--trust-tools", "weather?")
    assert result.code == 0, result.stderr
    assert result.stdout == "21 degrees.\n"
    first, second = chat_bodies(fake_server)
    assert "structured" in offered(first)
    tool = second["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_name"] == "structured"
    assert json.loads(tool["content"]) == {"city": "杭州", "temperature": 21}  # structured content as JSON text


def test_errors_images_and_what_a_child_is_given(fake_server, env, tmp_path, llmchat):
    servers = stdio_server("demo", extra='env = { GREETING = "${GREETING:-hello}", TOKEN = "${DEMO_TOKEN}" }')
    mcp_config(fake_server, env, tmp_path, servers, ["demo"])
    fake_server.enqueue(openai_calls(("c1", "fail", ['{"why": "no disk"}']), ("c2", "picture", ["{}"]),
                                     ("c3", "env_names", ["{}"])), openai_answer("Noted."))
    result = llmchat("ask", "--json", "--trust-tools", "go", DEMO_TOKEN="t0k3n", HOME_SECRET_API_KEY="x")
    assert result.code == 0, result.stderr
    calls = json.loads(result.stdout)["tool_calls"]
    assert [c["status"] for c in calls] == ["error", "ok", "ok"]  # is_error goes to the model as an error
    assert calls[1]["result"] == "[image: 12 KB PNG omitted]"
    names = calls[2]["result"].split()
    assert "GREETING" in names and "TOKEN" in names and "PATH" in names
    assert "DASHSCOPE_API_KEY" not in names and "HOME_SECRET_API_KEY" not in names  # keys stay home
    assert "LLMCHAT_CONFIG" not in names  # only what the entry names, plus the SDK's few


def test_a_result_beyond_the_output_limit_is_cut(fake_server, env, tmp_path, llmchat):
    path = mcp_config(fake_server, env, tmp_path, stdio_server("demo", extra="trust = true"), ["demo"])
    path.write_text(path.read_text().replace('tools = ["demo"]', 'tools = ["demo"]\ntool_output_limit = 10', 1))
    fake_server.enqueue(call("env_names", {}), openai_answer("Cut."))
    assert llmchat("ask", "go").code == 0
    (result,) = tool_results(fake_server)
    first, marker = result.split("\n")
    assert len(first) == 10 and marker.startswith("[… ") and marker.endswith(" characters cut]")


# ------------------------------------------------------------------------------------------ failures


def test_servers_that_fail_to_start_are_reported_once_and_the_others_serve(fake_server, env, tmp_path, llmchat):
    pids = {name: tmp_path / f"{name}.pid" for name in ("good", "dead", "junk")}
    servers = (stdio_server("good", pid_file=pids["good"], extra="trust = true")
               + stdio_server("dead", pid_file=pids["dead"], mode="die")
               + stdio_server("junk", pid_file=pids["junk"], mode="garbage")
               + '[mcp.servers.nope]\ncommand = "llmchat-no-such-mcp-server"\n')
    mcp_config(fake_server, env, tmp_path, servers, ["good", "dead", "junk", "nope"])
    fake_server.enqueue(call("add", {"a": 1, "b": 1}), openai_answer("Two."))
    result = llmchat("ask", "one plus one")
    assert result.code == 0, result.stderr
    assert result.stdout == "Two.\n"
    err = result.stderr
    assert "MCP server nope failed: command not found: llmchat-no-such-mcp-server" in err
    assert "MCP server dead failed: closed the connection" in err
    assert "dead stderr: fatal: the database file is locked" in err  # the last lines of its stderr
    assert "MCP server junk failed: it answered something that is not MCP: 'Welcome! This is not JSON-RPC.'" in err
    assert "junk stderr: fatal: speaking the wrong protocol" in err
    for name in ("nope", "dead", "junk"):
        assert err.count(f"MCP server {name} failed") == 1
    assert "Traceback" not in err
    first = chat_bodies(fake_server)[0]
    assert sorted(offered(first)) == sorted(["add", "env_names", "picture", "structured", "fail", "slow", "crash"])
    assert tool_results(fake_server) == ["2"]
    for pid_file in pids.values():
        assert gone(pid_of(pid_file))


def test_a_server_crashing_mid_call_is_withdrawn_and_the_turn_goes_on(fake_server, env, tmp_path, llmchat):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"),
               ["time", "demo"])
    fake_server.enqueue(call("crash", {}), openai_answer("The tool died."))
    result = llmchat("ask", "--json", "crash it")
    assert result.code == 0, result.stderr
    (record,) = json.loads(result.stdout)["tool_calls"]
    assert record["status"] == "error" and "MCP server demo failed during the call" in record["result"]
    assert result.stderr.count("MCP server demo failed") == 1
    assert "demo stderr: segfault in crash(): giving up" in result.stderr
    second = chat_bodies(fake_server)[1]
    assert offered(second) == ["time"]  # its tools are withdrawn
    assert gone(pid_of(pid_file))


def test_a_call_that_times_out_is_an_error_and_stops_the_server(fake_server, env, tmp_path, llmchat):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true\ntimeout = 1"),
               ["demo"])
    fake_server.enqueue(call("slow", {"seconds": 60}), openai_answer("Too slow."))
    started = time.monotonic()
    result = llmchat("ask", "--json", "be slow")
    assert result.code == 0, result.stderr
    assert time.monotonic() - started < 40
    (record,) = json.loads(result.stdout)["tool_calls"]
    assert record["status"] == "error" and "timed out after 1 s" in record["result"]
    assert "MCP server demo failed: the call to slow timed out after 1 s" in result.stderr
    assert gone(pid_of(pid_file))


def test_an_unset_variable_is_the_servers_failure_not_the_runs(fake_server, env, tmp_path, llmchat):
    servers = stdio_server("demo", extra='env = { TOKEN = "${LLMCHAT_TEST_UNSET_TOKEN}" }')
    mcp_config(fake_server, env, tmp_path, servers, ["time", "demo"])
    fake_server.enqueue(openai_answer("Fine."))
    result = llmchat("ask", "hi")
    assert result.code == 0 and result.stdout == "Fine.\n"
    assert "MCP server demo failed: ${LLMCHAT_TEST_UNSET_TOKEN} is not set" in result.stderr
    assert offered(chat_bodies(fake_server)[0]) == ["time"]


# -------------------------------------------------------------------------------------------- names


def test_clashing_tool_names_become_server__tool_and_filters_apply(fake_server, env, tmp_path, llmchat):
    servers = (stdio_server("one", extra='include_tools = ["add", "slow"]')
               + stdio_server("two", extra='exclude_tools = ["crash", "fail", "picture", "structured", "env_names"]'))
    mcp_config(fake_server, env, tmp_path, servers, ["one", "two"])
    fake_server.enqueue(call("two__add", {"a": 1, "b": 2}), openai_answer("3."))
    result = llmchat("ask", "--trust-tools", "--json", "add")
    assert result.code == 0, result.stderr
    assert offered(chat_bodies(fake_server)[0]) == ["one__add", "slow", "two__add", "two__slow"] or \
        sorted(offered(chat_bodies(fake_server)[0])) == ["one__add", "one__slow", "two__add", "two__slow"]
    assert tool_results(fake_server) == ["3"]


# ------------------------------------------------------------------------------------- cost when unused


def imported_modules(env: dict[str, str], *args: str, stdin: str | None = None) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmchat", *args], env=env, capture_output=True,
                          input=(stdin or "").encode(), timeout=60)
    names = set()
    for line in done.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, done.stderr.decode()[-2000:]
    return names


def test_no_server_configured_imports_nothing_of_mcp(fake_server, env, tmp_path):
    mcp_config(fake_server, env, tmp_path, "", ["time"])
    fake_server.enqueue(openai_answer("Hi."))
    for modules in (imported_modules(env, "--help"), imported_modules(env, "ask", "hi")):
        assert not {m for m in modules if m == "mcp" or m.startswith(("mcp.", "mcp_types"))}
        assert "llmchat.tools.mcp_hub" not in modules
    assert chat_bodies(fake_server), "the question was asked"


def test_sigterm_during_an_mcp_call_in_ask_leaves_no_orphan(fake_server, env, tmp_path):
    pid_file = tmp_path / "pid"
    mcp_config(fake_server, env, tmp_path, stdio_server("demo", pid_file=pid_file, extra="trust = true"), ["demo"])
    fake_server.enqueue(call("slow", {"seconds": 60}))
    proc = forkserver.Popen([sys.executable, "-m", "llmchat", "ask", "--usage", "be slow"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pid = pid_of(pid_file, seconds=60)
    deadline = time.monotonic() + 60
    while not any(r.path.endswith("/chat/completions") for r in fake_server.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the call is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "⚙ slow(seconds=60)" in err.decode()  # it was stopped during the call
    assert gone(pid), "the MCP server outlived SIGTERM"


def test_batch_runs_trusted_mcp_tools_and_says_a_failed_server_once(fake_server, env, tmp_path, llmchat):
    pid_file = tmp_path / "pid"
    servers = (stdio_server("demo", pid_file=pid_file, extra="trust = true")
               + '[mcp.servers.nope]\ncommand = "llmchat-no-such-mcp-server"\n')
    mcp_config(fake_server, env, tmp_path, servers, ["demo", "nope"])
    fake_server.enqueue(call("add", {"a": 6, "b": 7}), openai_answer("13."))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("6 + 7?\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = llmchat("batch", str(prompts), "-o", str(out), "--concurrency", "1")
    assert result.code == 0, result.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["answer"] == "13." and row["tool_calls"][0]["result"] == "13"
    assert result.stderr.count("MCP server nope failed: command not found") == 1
    assert gone(pid_of(pid_file))
