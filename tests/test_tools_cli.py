"""Tools end to end: `ask` and the chat with a real command tool, the approval on a terminal, a pipe
without one, `--trust-tools`, `--json`, and Ctrl-C during a slow tool (tools.md §2-5).

Whether a tool ran is proven by its side effect: the command tool here writes a marker file.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import forkserver
import pexpect
from conftest import TEST_KEY
from test_ask_terminal import screen_lines
from toolreplies import openai_answer, openai_calls

pytest_plugins = ("conftest_repl",)  # the `repl` fixture


def tools_config(fake_server, env: dict[str, str], tmp_path: Path, *, trust: str = "false",
                 command: str = '["touch", "{path}"]') -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(f'''default_profile = "bailian"

[tools.marker]
description = "Create a marker file"
command = {command}
parameters = {{ path = {{ type = "string", description = "where" }} }}
trust = {trust}

[profiles.bailian]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key_env = "DASHSCOPE_API_KEY"
retries = 0
tools = ["marker", "time"]
''', encoding="utf-8")
    env["LLMCHAT_CONFIG"] = str(path)
    env["DASHSCOPE_API_KEY"] = TEST_KEY
    return path


def marker_call(marker: Path) -> object:
    return openai_calls(("call_m1", "marker", [json.dumps({"path": str(marker)})]))


def tool_messages(fake_server) -> list[dict]:
    return [m for r in fake_server.requests if r.path.endswith("/chat/completions")
            for m in r.body["messages"] if m["role"] == "tool"]


def test_json_lists_the_calls_and_a_trusted_tool_runs_unasked(fake_server, env, tmp_path, llmchat):
    tools_config(fake_server, env, tmp_path, trust="true")
    marker = tmp_path / "made"
    fake_server.enqueue(marker_call(marker), openai_answer("Made it."))
    result = llmchat("ask", "--json", "make the marker")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "Made it." and marker.exists()
    (call,) = data["tool_calls"]
    assert (call["name"], call["arguments"], call["status"]) == ("marker", {"path": str(marker)}, "ok")
    assert isinstance(call["seconds"], float)
    first = fake_server.requests[0].body
    assert [t["function"]["name"] for t in first["tools"]] == ["marker", "time"]


def test_with_no_terminal_an_untrusted_call_is_declined_and_nothing_runs(fake_server, env, tmp_path):
    """A real process with no controlling terminal at all (its own session) and stdin a pipe."""
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "must-not-exist"
    fake_server.enqueue(marker_call(marker), openai_answer("Understood."))
    done = forkserver.run([sys.executable, "-m", "llmchat", "ask", "make it"], input=b"", capture_output=True,
                          env=env, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "Understood.\n"
    assert not marker.exists()
    assert "no terminal to ask for approval" in done.stderr.decode()
    assert tool_messages(fake_server)[0]["content"] == (
        "declined: no one to approve it (use --trust-tools or trust = true)")


def test_trust_tools_runs_without_asking(fake_server, env, tmp_path, llmchat):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "trusted"
    fake_server.enqueue(marker_call(marker), openai_answer("Done."))
    result = llmchat("ask", "--trust-tools", "--usage", "make it")
    assert result.code == 0, result.stderr
    assert marker.exists()
    assert f'⚙ marker(path="{marker}")' in result.stderr  # the call lines go where the usage line goes
    assert "\n→ 1 line, " in result.stderr  # touch prints nothing: the model reads "(no output)"
    assert tool_messages(fake_server)[0]["content"] == "(no output)"


def test_no_tools_offers_none(fake_server, env, tmp_path, llmchat):
    tools_config(fake_server, env, tmp_path)
    fake_server.enqueue(openai_answer("Plain."))
    assert llmchat("ask", "--no-tools", "hi").code == 0
    assert "tools" not in fake_server.requests[0].body


# ------------------------------------------------------------------------------------------ a terminal


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    return forkserver.spawn(sys.executable, ["-m", "llmchat", *args], env=env, encoding="utf-8",
                         dimensions=(30, 100), timeout=30)


def test_the_approval_on_a_terminal_yes_runs_it(fake_server, env, tmp_path):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "approved"
    fake_server.enqueue(marker_call(marker), openai_answer("Created."))
    child = spawn(env, "ask", "make it")
    child.expect_exact("Run it?")
    before = child.before
    assert not marker.exists()  # nothing ran before the answer
    child.sendline("y")
    raw = before + child.read()
    child.close()
    assert child.exitstatus == 0 and marker.exists()
    lines = screen_lines(raw, columns=100)
    assert any(line.startswith("⚙ marker(path=") for line in lines)
    assert any("marker (command): Create a marker file" in line for line in lines)
    assert any(line.startswith(f"touch {marker}") or f"touch {marker}" in line for line in lines)
    assert any(line.startswith("→ 1 line, ") for line in lines)
    assert "Created." in "\n".join(lines)


def test_the_approval_no_with_a_reason_goes_to_the_model(fake_server, env, tmp_path):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "declined"
    fake_server.enqueue(marker_call(marker), openai_answer("OK, I will not."))
    child = spawn(env, "ask", "make it")
    child.expect_exact("Run it?")
    child.sendline("n")
    child.expect_exact("Reason for the model")
    child.sendline("not in my home")
    child.read()
    child.close()
    assert child.exitstatus == 0 and not marker.exists()
    assert tool_messages(fake_server)[0]["content"] == "declined by the user: not in my home"


def test_the_approval_reads_the_terminal_when_stdin_is_a_pipe(fake_server, env, tmp_path):
    """`echo notes | llmchat ask …` in a terminal: stdin is data, the answer comes from /dev/tty."""
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "from-tty"
    fake_server.enqueue(marker_call(marker), openai_answer("Done."))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    command = f"echo some notes | {sys.executable} -m llmchat ask summarise"
    child = pexpect.spawn("/bin/sh", ["-c", command], env=env, encoding="utf-8", dimensions=(30, 100), timeout=30)
    child.expect_exact("Run it?")
    child.sendline("y")
    child.read()
    child.close()
    assert child.exitstatus == 0 and marker.exists()
    assert "some notes" in fake_server.requests[0].body["messages"][-1]["content"]


def test_always_in_the_chat_trusts_the_tool_for_the_session(fake_server, env, tmp_path, repl):
    tools_config(fake_server, env, tmp_path)
    first, second = tmp_path / "one", tmp_path / "two"
    fake_server.enqueue(marker_call(first), openai_answer("One."), marker_call(second), openai_answer("Two."))
    session = repl()
    session.enter("first")
    session.wait_text("Run it?")
    session.send("a\r")
    session.wait_prompt()
    assert first.exists()
    session.enter("second")
    session.wait_prompt()
    assert second.exists() and "Run it?" not in session.since()
    assert "Two." in session.since()


def test_ctrl_c_at_the_approval_stops_the_turn_and_the_chat_goes_on(fake_server, env, tmp_path, repl):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "never"
    fake_server.enqueue(marker_call(marker), openai_answer("Still here."))
    session = repl()
    session.enter("make it")
    session.wait_text("Run it?")
    session.send("\x03")
    session.wait_prompt()
    assert not marker.exists() and "interrupted" in session.since()
    session.ask("are you there?")  # the chat goes on; the interrupted call is re-sent with its result
    sent = session.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in sent][-4:] == ["user", "assistant", "tool", "user"]
    assert sent[-2]["content"] == "interrupted by the user"


def test_ctrl_c_during_a_slow_tool_kills_it_and_ends_the_turn(fake_server, env, tmp_path, repl):
    pid_file = tmp_path / "pid"
    command = f'["/bin/sh", "-c", "echo $$ > {pid_file}; exec sleep 60", "{{path}}"]'
    tools_config(fake_server, env, tmp_path, trust="true", command=command)
    fake_server.enqueue(marker_call(tmp_path / "x"))
    session = repl()
    session.enter("run the slow one")
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        session.pump()
    pid = int(pid_file.read_text())
    session.send("\x03")
    session.wait_prompt()
    assert "→ interrupted" in session.since()
    for _ in range(50):  # the tool's process group was killed
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the slow tool outlived Ctrl-C")


def test_batch_runs_trusted_tools_only_and_rows_list_their_calls(fake_server, env, tmp_path, llmchat):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "batch-marker"
    fake_server.enqueue(openai_calls(("c1", "time", [""]), ("c2", "marker", [json.dumps({"path": str(marker)})])),
                        openai_answer("It is late."))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("what time is it?\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = llmchat("batch", str(prompts), "-o", str(out), "--concurrency", "1")
    assert result.code == 0, result.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["answer"] == "It is late."
    clock, made = row["tool_calls"]
    assert clock["status"] == "ok" and clock["result"]  # `time` is trusted by default
    assert made["status"] == "declined" and not marker.exists()


def test_ask_c_after_a_tool_turn_sends_the_calls_and_results_again(fake_server, env, tmp_path, llmchat):
    tools_config(fake_server, env, tmp_path, trust="true")
    marker = tmp_path / "again"
    fake_server.enqueue(marker_call(marker), openai_answer("Made."), openai_answer("Yes, made."))
    assert llmchat("ask", "make it").code == 0
    result = llmchat("ask", "-c", "did you make it?")
    assert result.code == 0, result.stderr
    sent = fake_server.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"] == [{"id": "call_m1", "type": "function", "function": {
        "name": "marker", "arguments": json.dumps({"path": str(marker)})}}]
    assert (sent[2]["tool_call_id"], sent[2]["content"]) == ("call_m1", "(no output)")
    assert sent[3]["content"] == "Made."


def test_keys_typed_while_the_answer_streams_never_answer_the_approval(fake_server, env, tmp_path, repl):
    tools_config(fake_server, env, tmp_path)
    marker = tmp_path / "typed-ahead"
    slow = marker_call(marker)
    slow.chunk_delay = 0.3  # the call arrives over about a second
    fake_server.enqueue(slow, openai_answer("Fine."))
    session = repl()
    session.enter("make it")
    session.wait_for(lambda: len(session.chat_requests()) == 1, "the request")
    session.send("y\r")  # typed ahead while the call streams in, before the question exists
    session.wait_text("Run it?")
    time.sleep(0.3)
    assert not marker.exists()  # the early "y" did not approve it
    assert "discarded" in session.since()
    session.send("n\r")
    session.wait_text("Reason for the model")
    session.send("\r")
    session.wait_prompt()
    assert not marker.exists()
    assert tool_messages(fake_server)[0]["content"] == "declined by the user"
