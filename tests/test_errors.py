"""Every failure: one clear paragraph on stderr, the exit code of DESIGN §5, no traceback, no key."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import forkserver
import pytest
from conftest import TEST_KEY
from fakeserver import Drop, Raw, Stall, Stream


def assert_clean_failure(run, code: int, *phrases: str) -> None:
    assert run.code == code, (run.code, run.stdout, run.stderr)
    assert "Traceback" not in run.output
    assert TEST_KEY not in run.output
    # One paragraph, last on stderr (an interrupted answer's marker may come before it).
    assert run.stderr.count("Error: ") == 1 and run.stderr.rindex("Error: ") > run.stderr.find("[interrupted]")
    error = run.stderr[run.stderr.index("Error: "):]
    for phrase in phrases:
        assert phrase in error, run.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ollama_unreachable(config_file, llmchat) -> None:
    port = closed_port()
    config_file.write_text(config_file.read_text().replace("qwen3:0.6b\"\nbase_url = \"http://127.0.0.1:",
                                                           f"qwen3:0.6b\"\nbase_url = \"http://127.0.0.1:{port}#"))
    run = llmchat("ask", "hi", LLMCHAT_CONFIG=str(config_file))
    assert_clean_failure(run, 1, "Cannot reach Ollama", "ollama serve")


def test_ollama_host_environment_is_used_when_profile_sets_none(env, llmchat) -> None:
    run = llmchat("ask", "hi", OLLAMA_HOST=f"127.0.0.1:{closed_port()}")
    assert_clean_failure(run, 1, "Cannot reach Ollama at http://127.0.0.1:")


def test_unknown_ollama_model(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-m", "qwen3:14b", "hi")
    assert_clean_failure(run, 1, "does not have the model 'qwen3:14b'", "ollama pull qwen3:14b")


def test_missing_key_variable_is_checked_before_any_request(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-p", "bailian", "hi", DASHSCOPE_API_KEY="")
    assert_clean_failure(run, 2, "DASHSCOPE_API_KEY", "set but empty")  # issue 17: empty is not "not set"
    assert fake_server.requests == []


def test_rejected_key_names_variable_and_region_never_the_key(fake_server, config_file, llmchat) -> None:
    fake_server.api_key = "sk-the-right-one"
    run = llmchat("ask", "-p", "bailian", "hi")
    assert_clean_failure(run, 1, "rejected the API key (401 invalid_api_key)", "DASHSCOPE_API_KEY")
    assert "region" not in run.stderr  # its own base_url (the test server): regions do not apply (issue 17)


def test_unknown_bailian_model(fake_server, config_file, llmchat) -> None:
    run = llmchat("ask", "-p", "bailian", "-m", "qwen9-ultra", "hi")
    assert_clean_failure(run, 1, "does not offer the model 'qwen9-ultra'", "llmchat models")


@pytest.mark.parametrize(
    ("fixture", "status", "phrases"),
    [
        ("openai_error_rate_limit.json", 429, ["rate-limiting", "limit_requests"]),
        ("openai_error_quota_tpm.json", 429, ["rate-limiting", "insufficient_quota"]),
        ("openai_error_context_length.json", 400, ["too long for qwen-plus", "new conversation"]),
        ("openai_error_arrearage.json", 400, ["overdue", "Arrearage"]),
        ("openai_error_data_inspection.json", 400, ["content moderation"]),
        ("openai_error_thinking_nonstream.json", 400, ["refused the request (400 invalid_parameter_error)"]),
    ],
)
def test_dashscope_error_bodies(fake_server, config_file, llmchat, fixture: str, status: int, phrases) -> None:
    fake_server.enqueue(Raw.fixture(fixture, status=status))
    run = llmchat("ask", "-p", "bailian", "hi")
    assert_clean_failure(run, 1, *phrases, "request id")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(fake_server, config_file, llmchat, status: int) -> None:
    body = '{"error":{"message":"An internal error has occured","type":"internal_error","code":"internal_error"}}'
    fake_server.enqueue(Raw(status=status, body=body))
    assert_clean_failure(llmchat("ask", "-p", "bailian", "hi"), 1, f"failed ({status}")
    busy = Raw(status=status, body='{"error":"server busy, please try again."}',
               content_type="application/json; charset=utf-8", headers={"Retry-After": "0"})  # no sleeping
    fake_server.enqueue(busy, busy, busy)  # the first try and the profile's default two retries
    run = llmchat("ask", "--think", "hi")
    assert_clean_failure(run, 1, f"Ollama failed ({status})")
    assert run.stderr.count("Retrying in") == 2


def test_sse_stream_cut_mid_answer_keeps_the_partial_answer(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="The first part arrives and then", piece_size=4, cut_after=3))
    run = llmchat("ask", "-p", "bailian", "hi")
    assert_clean_failure(run, 1, "broke mid-answer")
    assert run.stdout.startswith("The first pa")
    assert "[interrupted]" in run.stderr


def test_sse_body_that_ends_without_finish_or_done(fake_server, config_file, llmchat) -> None:
    events = Raw.fixture("openai_dashscope_stream_plain.sse").body.split(b"\n\n")
    answer_events = [e for e in events if b'"finish_reason":null' in e and b'"content":""' not in e]
    fake_server.enqueue(Raw(status=200, body=b"\n\n".join(answer_events[:3]) + b"\n\n",
                            content_type="text/event-stream", chunked=True))
    run = llmchat("ask", "-p", "bailian", "hi")
    assert_clean_failure(run, 1, "ended the stream before the answer was complete")
    assert run.stdout.strip()


def test_ndjson_stream_cut_mid_answer(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Partial ollama answer here", piece_size=4, cut_after=2))
    run = llmchat("ask", "hi")
    assert_clean_failure(run, 1, "stopped mid-answer")
    assert run.stdout.startswith("Partial ")


def test_ollama_in_band_error_line(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Raw.fixture("ollama_chat_stream_midstream_error.ndjson"))
    run = llmchat("ask", "hi")
    assert_clean_failure(run, 1, "unexpected EOF")
    assert run.stdout  # the six chunks that arrived are kept


def test_connection_dropped_before_any_answer(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Drop())
    assert_clean_failure(llmchat("ask", "hi"), 1, "Ollama")
    # OpenAI-compatible: a drop before any response byte is sent again once, silently (a stale
    # kept-alive connection fails like this); the second drop is the error.
    fake_server.enqueue(Drop(), Drop())
    assert_clean_failure(llmchat("ask", "-p", "bailian", "hi"), 1, "Bailian")
    assert fake_server.pending == 0


def test_stalled_server_times_out_with_the_configured_limit(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stall(seconds=10))
    started = time.monotonic()
    run = llmchat("ask", "hi", LLMCHAT_TIMEOUT="1")
    assert_clean_failure(run, 1, "sent nothing for 1 s", "timeout")
    assert time.monotonic() - started < 8


def test_stream_that_stalls_after_some_tokens(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Some words then silence", piece_size=5, stall_after=2, stall_seconds=10))
    run = llmchat("ask", "-p", "bailian", "hi", LLMCHAT_TIMEOUT="1")
    assert_clean_failure(run, 1, "sent nothing for 1 s")
    assert run.stdout.startswith("Some words")


def test_wrong_ollama_base_path(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text().replace(
        f'base_url = "{fake_server.url}"\n', f'base_url = "{fake_server.url}/v1"\n', 1))
    assert_clean_failure(llmchat("ask", "hi"), 1, "does not look like Ollama's native API")


@pytest.mark.parametrize(
    ("args", "stdin", "code", "phrase"),
    [
        (["ask", "-p", "nope", "hi"], None, 2, "Unknown profile 'nope'"),
        (["ask", "--temperature", "9", "hi"], None, 2, "--temperature"),
        (["ask", "--bogus"], None, 2, "--bogus"),
        (["ask"], "", 2, "Nothing to ask"),
        (["ask", "   "], None, 2, "Nothing to ask"),
        (["ask", "hi"], b"\xff\xfe\x00binary", 2, "not UTF-8"),
    ],
)
def test_bad_input(fake_server, config_file, llmchat, args, stdin, code: int, phrase: str) -> None:
    run = llmchat(*args, input=stdin)
    assert run.code == code, run.output
    assert "Traceback" not in run.output and phrase in run.stderr
    assert fake_server.requests == []


def test_invalid_toml_is_a_configuration_error(config_file, llmchat) -> None:
    config_file.write_text('[profiles.x\nprovider = "ollama"\n')
    run = llmchat("ask", "hi")
    assert_clean_failure(run, 2, str(config_file), "line 1", "not valid TOML")


def test_debug_shows_the_traceback(fake_server, config_file, llmchat_process) -> None:
    # A real process: the traceback is the interpreter's own, printed as the exception leaves main().
    run = llmchat_process("ask", "-m", "qwen3:14b", "hi", LLMCHAT_DEBUG="1")
    assert run.code == 1 and "Traceback" in run.stderr and "ModelNotFound" in run.stderr


def test_ctrl_c_mid_answer_exits_130_and_keeps_the_partial_answer(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="word " * 200, piece_size=5, delay=0.05))
    proc = forkserver.Popen([sys.executable, "-m", "llmchat", "ask", "hi"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(5)  # the answer has started
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    out, err_text = (first + rest).decode(), err.decode()
    assert out.startswith("word ") and len(out) < 1000
    assert "[interrupted]" in err_text and "Interrupted." in err_text and "Traceback" not in err_text


def test_malformed_json_chunk(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Raw(status=200, body=b'data: {"choices":[{"delta":{"content":"ok"\n\n',
                            content_type="text/event-stream", chunked=True))
    assert_clean_failure(llmchat("ask", "-p", "bailian", "hi"), 1, "malformed stream")
    fake_server.enqueue(Raw(status=200, body=b'{"model":"qwen3:0.6b","message":{"role":"assistant","content":"a"}\n'
                                             b'{not json}\n', content_type="application/x-ndjson", chunked=True))
    assert_clean_failure(llmchat("ask", "hi"), 1, "malformed data")


def test_permission_denied(fake_server, config_file, llmchat) -> None:
    body = ('{"error":{"message":"Model access denied.","type":"invalid_request_error","param":null,'
            '"code":"Model.AccessDenied"},"request_id":"5a4c1f3e-0000-4000-8000-000000000000"}')
    fake_server.enqueue(Raw(status=403, body=body))
    assert_clean_failure(llmchat("ask", "-p", "bailian", "hi"), 1, "denied access (403 Model.AccessDenied)",
                         "DASHSCOPE_API_KEY", "5a4c1f3e")


def test_inline_key_in_private_config_is_sent_but_never_shown(fake_server, config_file, llmchat) -> None:
    fake_server.api_key = TEST_KEY
    config_file.write_text(config_file.read_text() + f'''
[profiles.inline]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key = "{TEST_KEY}"
''')
    config_file.chmod(0o600)
    run = llmchat("ask", "-p", "inline", "hi", DASHSCOPE_API_KEY="")
    assert run.code == 0 and run.stdout == "You said: hi\n"
    assert "Warning: profiles.inline keeps its API key in" in run.stderr
    assert fake_server.last("/chat/completions").headers["authorization"] == f"Bearer {TEST_KEY}"
    show = llmchat("config", "show")
    assert show.code == 0 and 'api_key = "***"' in show.stdout
    config_file.chmod(0o644)
    refused = llmchat("ask", "-p", "inline", "hi")
    assert_clean_failure(refused, 2, "can be read by other users", "chmod 600")
    config_file.write_text(config_file.read_text().replace(TEST_KEY, "sk-gone"))  # the scan must not find it


def test_unreadable_config_path(config_file, llmchat) -> None:
    run = llmchat("ask", "hi", LLMCHAT_CONFIG=str(config_file.parent))
    assert_clean_failure(run, 2, "is a directory, not a TOML file")


@pytest.fixture
def unanswered_port():
    """A port whose listen queue is full: a connect to it hangs (a connect timeout), as behind a
    firewall that drops packets, without sending anything beyond this machine."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)
    yield port
    filler.close()
    server.close()


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_connect_timeout(config_file, llmchat, unanswered_port: int, profile: str) -> None:
    text = config_file.read_text()
    start = text.index("base_url", text.index(f"[profiles.{profile}]"))
    end = text.index("\n", start)
    path = "/compatible-mode/v1" if profile == "bailian" else ""
    config_file.write_text(text[:start] + f'base_url = "http://127.0.0.1:{unanswered_port}{path}"' + text[end:])
    started = time.monotonic()
    run = llmchat("ask", "-p", profile, "hi", LLMCHAT_TIMEOUT="1")
    assert_clean_failure(run, 1, "Cannot reach", "no connection within 1 s")
    assert time.monotonic() - started < 10
