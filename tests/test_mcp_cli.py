"""`llmchat mcp list|import`, `llmchat tools` and `doctor` with MCP servers; the config tables' checks;
and a Streamable HTTP server on 127.0.0.1 (tests/mcp_server.py --http) driven through `ask`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from conftest import TEST_KEY
from test_mcp import SERVER, call, chat_bodies, gone, mcp_config, offered, pid_of, stdio_server, tool_results
from toolreplies import openai_answer

CLAUDE = {
    "mcpServers": {
        "notes": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]},
        "github": {"command": "docker", "args": ["run", "-i", "--rm", "ghcr.io/github/github-mcp-server"],
                   "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_not_a_real_token_123", "GITHUB_HOST": "github.com"}},
        "remote api": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer sk-live-123"}},
    }
}


def test_mcp_list_shows_each_server_started_or_why_not(fake_server, env, tmp_path, llmchat):
    pid_file = tmp_path / "pid"
    servers = stdio_server("demo", pid_file=pid_file, extra="trust = true") + stdio_server("dead", mode="die")
    mcp_config(fake_server, env, tmp_path, servers, [])
    result = llmchat("mcp", "list", "--json")
    assert result.code == 0, result.stderr
    demo, dead = json.loads(result.stdout)
    assert (demo["name"], demo["transport"], demo["status"], demo["trust"]) == ("demo", "stdio", "ready", True)
    assert [t["name"] for t in demo["tools"]][:2] == ["add", "env_names"]
    assert demo["tools"][0]["input_schema"]["required"] == ["a", "b"]
    assert dead["status"] == "failed" and dead["error"].startswith("closed the connection")
    assert "fatal: the database file is locked" in dead["stderr"]
    assert gone(pid_of(pid_file))  # started, listed, stopped
    text = llmchat("mcp", "list")
    assert text.code == 0
    assert "demo  stdio: " in text.stdout and "  started: 7 tools" in text.stdout and "    add — Add two integers." \
        in text.stdout
    assert "  failed: closed the connection" in text.stdout and "    stderr: fatal: the database file is locked" \
        in text.stdout


def test_tools_lists_mcp_rows_with_their_source(fake_server, env, tmp_path, llmchat):
    servers = stdio_server("demo", extra='include_tools = ["add"]') + '[mcp.servers.nope]\ncommand = "llmchat-nope"\n'
    mcp_config(fake_server, env, tmp_path, servers, ["demo"])
    rows = json.loads(llmchat("tools", "--json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert by_name["add"]["source"] == "mcp:demo" and by_name["add"]["offered"] is True
    assert by_name["add"]["parameters"]["required"] == ["a", "b"]
    assert "env_names" not in by_name  # include_tools
    assert by_name["nope"]["source"] == "mcp:nope" and "command not found" in by_name["nope"]["description"]
    table = llmchat("tools").stdout
    assert any(line.startswith("add ") and "mcp:demo" in line for line in table.splitlines())


def test_doctor_checks_each_server_with_the_fix(fake_server, env, tmp_path, llmchat):
    servers = stdio_server("demo") + '[mcp.servers.nope]\ncommand = "llmchat-nope"\n'
    mcp_config(fake_server, env, tmp_path, servers, [])
    result = llmchat("doctor", "-p", "bailian")
    out = " ".join(result.stdout.split())
    assert "MCP servers" in out
    assert "mcp:demo started, 7 tools: add, env_names" in out
    assert "mcp:nope command not found: llmchat-nope" in out and "Install the program" in out
    assert result.code == 1  # a server that does not start is a failed check


# ------------------------------------------------------------------------------------------ import


def test_import_a_claude_desktop_file_appends_tables_and_keeps_the_file(fake_server, env, tmp_path, llmchat):
    config = mcp_config(fake_server, env, tmp_path, stdio_server("notes"), [])
    config.write_text("# my own comment, kept\n" + config.read_text(), encoding="utf-8")
    before = config.read_text(encoding="utf-8")
    source = tmp_path / "claude_desktop_config.json"
    source.write_text(json.dumps(CLAUDE), encoding="utf-8")
    result = llmchat("mcp", "import", str(source))
    assert result.code == 0, result.stderr
    after = config.read_text(encoding="utf-8")
    assert after.startswith(before)  # appended: the text and comments as they were
    assert "Kept notes: the config already has it (--force replaces it)." in result.stdout
    assert "  github  stdio: docker run -i --rm ghcr.io/github/github-mcp-server" in result.stdout
    assert "  remote_api  http: https://example.com/mcp" in result.stdout
    assert "ghp_not_a_real_token_123" not in after and "sk-live-123" not in after  # keys stay out
    assert 'GITHUB_PERSONAL_ACCESS_TOKEN = "${GITHUB_PERSONAL_ACCESS_TOKEN}"' in after
    assert 'GITHUB_HOST = "github.com"' in after
    assert 'Authorization = "Bearer ${REMOTE_API_AUTHORIZATION}"' in after
    assert "export GITHUB_PERSONAL_ACCESS_TOKEN=…" in result.stdout
    listed = json.loads(llmchat("tools", "--json", "--tool", "remote_api").stdout)  # the config loads
    assert any(row["source"] == "mcp:github" for row in listed)
    again = llmchat("mcp", "import", str(source))
    assert "Nothing added." in again.stdout and config.read_text(encoding="utf-8") == after


def test_import_force_replaces_and_vscode_files_work(fake_server, env, tmp_path, llmchat):
    config = mcp_config(fake_server, env, tmp_path, stdio_server("notes"), [])
    config.write_text("# top comment\n" + config.read_text(), encoding="utf-8")
    source = tmp_path / "mcp.json"
    source.write_text(json.dumps({"servers": {"notes": {"type": "stdio", "command": "uvx",
                                                        "args": ["mcp-server-notes", "${env:NOTES_DIR}"]},
                                              "web": {"type": "sse", "url": "http://127.0.0.1:9/sse"}}}))
    result = llmchat("mcp", "import", "--force", str(source))
    assert result.code == 0, result.stderr
    text = config.read_text(encoding="utf-8")
    assert text.startswith("# top comment\n") and "[profiles.bailian]" in text  # the rest of the file kept
    assert text.count("[mcp.servers.notes]") == 1 and "mcp_server.py" not in text  # the old table is gone
    assert '[mcp.servers.notes]\ncommand = "uvx"\nargs = ["mcp-server-notes", "${NOTES_DIR}"]' in text
    assert "(replaced)" in result.stdout and "  web  sse: http://127.0.0.1:9/sse" in result.stdout


def test_import_of_a_file_without_servers_is_a_usage_error(env, tmp_path, llmchat):
    source = tmp_path / "x.json"
    source.write_text('{"something": {}}')
    result = llmchat("mcp", "import", str(source))
    assert result.code == 2 and "has no MCP servers in it" in result.stderr
    source.write_text("{not json")
    result = llmchat("mcp", "import", str(source))
    assert result.code == 2 and "is not valid JSON" in result.stderr


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("table", "message"), [
    ('[mcp.servers.x]\nargs = ["a"]\n', "needs either a command (a stdio server) or a url"),
    ('[mcp.servers.x]\ncommand = "a"\nurl = "http://h/mcp"\n', "not both"),
    ('[mcp.servers.x]\ncommand = "a"\ntimeout = -1\n', "timeout = -1 is out of range"),
    ('[mcp.servers.x]\ncommand = "a"\ninclude_tools = ["a"]\nexclude_tools = ["b"]\n', "both include_tools"),
    ('[mcp.servers.x]\ncommand = "a"\nenvv = {}\n', "Unknown key 'envv' in mcp.servers.x. Did you mean 'env'?"),
    ('[mcp.servers.time]\ncommand = "a"\n', "[mcp.servers.time] and a built-in tool are both named 'time'"),
    ('[mcp.servers.x]\ncommand = "a"\nargs = ["${oops"]\n', "'${' starts no variable here"),
])
def test_bad_server_tables_are_config_errors_with_the_line(env, tmp_path, llmchat, table, message):
    path = tmp_path / "c.toml"
    path.write_text("# servers\n" + table, encoding="utf-8")
    result = llmchat("ask", "hi", LLMCHAT_CONFIG=str(path))
    assert result.code == 2, result.output
    assert message in result.stderr and f"{path}, line" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_profile_naming_an_unknown_server_is_refused(env, tmp_path, llmchat):
    path = tmp_path / "c.toml"
    path.write_text('[mcp.servers.notes]\ncommand = "x"\n[profiles.p]\nprovider = "ollama"\nmodel = "m"\n'
                    'tools = ["note"]\n', encoding="utf-8")
    result = llmchat("ask", "hi", LLMCHAT_CONFIG=str(path))
    assert result.code == 2 and "names 'note', which is no tool. Did you mean 'notes'?" in result.stderr


# -------------------------------------------------------------------------------------- Streamable HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_a_remote_server_serves_ask(fake_server, env, tmp_path, llmchat, transport):
    """Streamable HTTP (`/mcp`) and the older SSE transport (a URL ending in /sse) on 127.0.0.1."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(SERVER), f"--{transport}", str(port), "--name", "web"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        path = "mcp" if transport == "http" else "sse"
        table = (f'[mcp.servers.web]\nurl = "http://127.0.0.1:${{WEB_PORT}}/{path}"\n'
                 'headers = { Authorization = "Bearer ${WEB_TOKEN:-anonymous}" }\ntrust = true\n')
        mcp_config(fake_server, env, tmp_path, table, ["web"])
        fake_server.enqueue(call("add", {"a": 20, "b": 22}), openai_answer("42 it is."))
        result = llmchat("ask", "add over the network", WEB_PORT=str(port))
        assert result.code == 0, result.stderr
        assert result.stdout == "42 it is.\n"
        assert "add" in offered(chat_bodies(fake_server)[0])
        assert tool_results(fake_server) == ["42"]
        listed = json.loads(llmchat("mcp", "list", "--json", WEB_PORT=str(port)).stdout)
        assert (listed[0]["transport"], listed[0]["status"]) == (transport, "ready")
        assert server.poll() is None  # a remote server is not ours to stop
    finally:
        server.kill()
        server.wait()
    assert TEST_KEY not in result.output


def test_a_literal_token_in_a_readable_config_is_warned_about_never_shown(fake_server, env, tmp_path, llmchat):
    path = mcp_config(fake_server, env, tmp_path, stdio_server("demo", extra='env = { DEMO_TOKEN = "tok-12345" }'),
                      ["demo"])
    path.chmod(0o644)
    fake_server.enqueue(openai_answer("Hi."), openai_answer("Hi."))
    result = llmchat("ask", "hi")
    assert result.code == 0, result.stderr
    assert result.stderr.count("mcp.servers.demo.env.DEMO_TOKEN holds a secret") == 1
    assert "mcp.servers.demo.env.DEMO_TOKEN holds a secret" in result.stderr and "${DEMO_TOKEN}" in result.stderr
    assert "tok-12345" not in result.output
    path.chmod(0o600)
    assert "holds a secret" not in llmchat("ask", "hi").stderr
