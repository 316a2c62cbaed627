"""Adversarial checks of tool calling (the review of issues 15 and 16): a hostile model or MCP server and a
careless user must not get past the approval, leak a key, or reach the terminal with control sequences."""

from __future__ import annotations

import json

from conftest import TEST_KEY
from test_tools_cli import tool_messages, tools_config
from toolreplies import openai_answer, openai_calls


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
    result = llmchat_process("ask", "--trust-tools", "show me the environment")
    assert result.code == 0, result.stderr
    results = [m["content"] for m in tool_messages(fake_server)]
    (text,) = results
    assert "PATH=" in text
    assert TEST_KEY not in text and "ghp-review-secret-0123456789" not in text
    assert "DASHSCOPE_API_KEY=[redacted]" in text and "GITHUB_TOKEN=[redacted]" in text
