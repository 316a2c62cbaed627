"""`llmchat ask` end to end: the real CLI, the real clients, real HTTP to the fake server.

Each test asserts on what a user or a script sees (stdout, stderr, exit code) and on what the server
received (messages, system prompt, thinking flags, options).
"""

from __future__ import annotations

import json

import pytest
from conftest import TEST_KEY
from fakeserver import Stream


def test_ollama_answer_streams_to_stdout_exactly(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "Why", "is", "the", "sky", "blue?")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: Why is the sky blue?\n"
    body = fake_server.last("/api/chat").body
    assert body["model"] == "qwen3:0.6b" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert "think" not in body  # unset in the profile: left to the server's default


def test_flags_reach_the_ollama_request(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-m", "qwen3:8b", "-s", "Be terse.", "--think", "--temperature", "0.2", "hi")
    assert run.code == 0, run.stderr
    body = fake_server.last("/api/chat").body
    assert body["model"] == "qwen3:8b" and body["think"] is True
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert body["options"] == {"temperature": 0.2, "num_ctx": 40960}  # qwen3's window, so Ollama cuts nothing
    assert run.stdout == "You said: hi\n"  # reasoning never reaches stdout
    assert llmchat("ask", "--no-think", "hi").code == 0
    assert fake_server.last("/api/chat").body["think"] is False


def test_profile_options_map_to_ollama_names(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text() + f'''
[profiles.tuned]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "{fake_server.url}"
top_p = 0.9
top_k = 20
seed = 7
stop = ["END"]
max_tokens = 64
context_window = 8192
options = {{ repeat_penalty = 1.1 }}
''')
    assert llmchat("ask", "-p", "tuned", "hi").code == 0
    assert fake_server.last("/api/chat").body["options"] == {
        "top_p": 0.9, "top_k": 20, "seed": 7, "stop": ["END"], "num_predict": 64, "num_ctx": 8192,
        "repeat_penalty": 1.1,
    }


def test_reasoning_and_usage_go_to_stderr_only_when_asked(fake_server, config_file, llmchat) -> None:
    quiet = llmchat("ask", "--think", "What is 2+2?")
    assert quiet.stdout == "You said: What is 2+2?\n" and "Let me think" not in quiet.stderr
    loud = llmchat("ask", "--think", "--usage", "What is 2+2?")
    assert loud.code == 0 and loud.stdout == quiet.stdout
    assert "Let me think about: What is 2+2?" in loud.stderr
    assert "tok" in loud.stderr  # the usage line
    assert "\x1b[" not in loud.stdout + loud.stderr


def test_inline_think_tags_from_older_ollama_are_split_out(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="The answer is 4.", reasoning="Two plus two.\n", inline_think=True))
    run = llmchat("ask", "--json", "2+2?")
    data = json.loads(run.stdout)
    assert data["answer"] == "The answer is 4." and data["reasoning"] == "Two plus two.\n"


def test_json_output_has_the_contract_fields_and_the_servers_numbers(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Four.", reasoning="Add them.", prompt_tokens=22, completion_tokens=9,
                               reasoning_tokens=4, cached_tokens=16))
    run = llmchat("ask", "-p", "bailian", "--think", "--json", "2+2?")
    assert run.code == 0, run.stderr
    data = json.loads(run.stdout)
    assert set(data) >= {"profile", "provider", "model", "answer", "reasoning", "finish_reason", "usage", "timing"}
    assert (data["profile"], data["provider"], data["model"]) == ("bailian", "bailian", "qwen-plus")
    assert (data["answer"], data["reasoning"], data["finish_reason"]) == ("Four.", "Add them.", "stop")
    assert data["usage"] == {"prompt_tokens": 22, "completion_tokens": 9, "total_tokens": 31,
                             "reasoning_tokens": 4, "cached_tokens": 16}
    assert data["timing"]["total_s"] > 0 and data["timing"]["ttft_s"] <= data["timing"]["total_s"]


def test_bailian_request_carries_key_thinking_budget_and_search(fake_server, config_file, llmchat) -> None:
    fake_server.api_key = TEST_KEY
    config_file.write_text(config_file.read_text().replace("retries = 0", "retries = 0\nthinking_budget = 200"))
    run = llmchat("ask", "-p", "bailian", "--think", "--search", "--temperature", "0.5", "你好")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: 你好\n"
    request = fake_server.last("/chat/completions")
    assert request.path == "/compatible-mode/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    body = request.body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["enable_thinking"], body["thinking_budget"], body["enable_search"]) == (True, 200, True)
    assert body["temperature"] == 0.5
    assert llmchat("ask", "-p", "bailian", "--no-think", "hi").code == 0
    body = fake_server.last("/chat/completions").body
    assert body["enable_thinking"] is False and "thinking_budget" not in body and "enable_search" not in body


def test_generic_openai_endpoint_without_key(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-p", "vllm", "hello")
    assert run.code == 0 and run.stdout == "You said: hello\n"
    body = fake_server.last("/v1/chat/completions").body
    assert "enable_thinking" not in body


def test_piped_stdin_is_joined_after_the_prompt(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "summarise", input="line one\nline two\n")
    assert run.code == 0
    assert fake_server.last("/api/chat").body["messages"][-1]["content"] == "summarise\n\nline one\nline two\n"


def test_bare_llmchat_with_piped_stdin_behaves_as_ask(fake_server, config_file, llmchat) -> None:
    run = llmchat("-p", "bailian", input="just stdin")
    assert run.code == 0 and run.stdout == "You said: just stdin\n"


def test_no_stream_prints_the_complete_answer_once(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Complete answer.", piece_size=2))
    run = llmchat("ask", "--no-stream", "q")
    assert run.code == 0 and run.stdout == "Complete answer.\n"


def test_ollama_model_without_thinking_is_retried_without_it(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-m", "llama3.2", "--think", "--usage", "hi")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: hi\n"
    assert "does not support thinking" in run.stderr
    chats = [r.body for r in fake_server.requests if r.path == "/api/chat"]
    assert [b.get("think") for b in chats] == [True, None]


def test_rate_limit_before_first_token_is_retried_visibly(fake_server, config_file, llmchat) -> None:
    from fakeserver import Raw

    config_file.write_text(config_file.read_text().replace("retries = 0", "retries = 1"))
    fake_server.enqueue(Raw.fixture("openai_error_rate_limit.json", headers={"Retry-After": "0"}))
    run = llmchat("ask", "-p", "bailian", "--usage", "hi")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: hi\n" and "Retrying in 0.0s (1/1)" in run.stderr
    assert len([r for r in fake_server.requests if r.path.endswith("/chat/completions")]) == 2


def test_help_imports_no_provider_client(env) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom llmchat.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'openai', 'ollama', 'httpx', 'httpx2'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "Usage" in proc.stdout


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_models_lists_what_the_server_offers(fake_server, config_file, llmchat, profile: str) -> None:
    run = llmchat("models", "-p", profile, "--json")
    assert run.code == 0, run.stderr
    names = [m["name"] for m in json.loads(run.stdout)]
    assert names == fake_server.models
    table = llmchat("models", "-p", profile)
    assert all(name in table.stdout for name in fake_server.models)


def test_hide_thinking_shows_no_reasoning_even_with_usage(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "--think", "--hide-thinking", "--usage", "q")
    assert run.code == 0 and run.stdout == "You said: q\n"
    assert "Let me think" not in run.stderr and "tok" in run.stderr


def test_usage_line_reports_the_servers_numbers(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Four.", reasoning="Add.", prompt_tokens=22, completion_tokens=382,
                               reasoning_tokens=210, cached_tokens=16))
    run = llmchat("ask", "-p", "bailian", "--think", "--usage", "2+2?")
    assert run.code == 0, run.stderr
    usage = run.stderr.strip().splitlines()[-1]
    assert "22" in usage and "382" in usage and "210" in usage and "16" in usage


def test_legacy_think_unsupported_text_is_recognised(fake_server, config_file, llmchat) -> None:
    from fakeserver import Raw

    fake_server.enqueue(Raw.fixture("ollama_error_think_unsupported_legacy.json"))
    run = llmchat("ask", "--think", "hi")
    assert run.code == 0 and run.stdout == "You said: hi\n"


def test_very_large_stdin_warns_that_it_will_not_fit(fake_server, config_file, llmchat) -> None:
    big = "word " * 6000  # ~7,500 tokens: over Ollama's default num_ctx of 4,096 (a model of unknown window)
    fake_server.context_lengths["llama3.2:latest"] = None  # the server does not say either
    run = llmchat("ask", "-m", "llama3.2", "summarise", input=big)
    assert run.code == 0
    assert "Warning: the input is about" in run.stderr and "4,096" in run.stderr and "num_ctx" in run.stderr
    body = fake_server.last("/api/chat").body
    assert body["messages"][-1]["content"].endswith(big)  # the question itself is never cut
    assert body["options"] == {"num_ctx": 4096}  # the window managed is the window the server uses
    small = llmchat("ask", "-m", "llama3.2", "summarise", input="word " * 100)
    assert "Warning" not in small.stderr


def test_cjk_text_is_estimated_per_character() -> None:
    from llmchat.core.tokens import estimate_tokens

    assert estimate_tokens("你好世界") == 4 and estimate_tokens("abcdefgh") == 2
