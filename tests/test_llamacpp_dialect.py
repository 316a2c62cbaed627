"""The fake server's second personality, llama.cpp's server, and what llmchat does with its dialect.

The real server (tests/real/) showed six defects that the DashScope-speaking fake could not: an empty
stream for a prompt that does not fit, a kept-alive connection closed behind the client's back, streams
cut by the next request, `json_schema` refused with a 500, `top_k` dropped, no usage. Each has a fast
test here against `FakeServer(dialect="llama.cpp")`, whose bytes are checked against the captures in
tests/wire/llamacpp_* first, and a test in tests/real/ against the real server.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import openai
import pytest
from fakeserver import Drop, FakeServer, Raw, Stream, llamacpp_too_long, load_fixture, manifest
from test_fakeserver import exchange, fixture_events

SSE_UTF8 = "text/event-stream; charset=utf-8"


@pytest.fixture
def llama(fake_server: FakeServer) -> FakeServer:
    fake_server.dialect = "llama.cpp"
    return fake_server


@pytest.fixture
def llama_config(llama: FakeServer, env: dict[str, str], tmp_path: Path) -> Path:
    """Profiles at the llama.cpp fake: `llama` (history truncate), `summ` (summarize), `k` (top_k)."""
    path = tmp_path / "config.toml"
    base = f'provider = "openai"\nmodel = "smollm2"\nbase_url = "{llama.url}/v1"\n'
    path.write_text(
        f'default_profile = "llama"\n\n[profiles.llama]\n{base}history = "truncate"\n\n'
        f'[profiles.summ]\n{base}history = "summarize"\n\n'
        f'[profiles.k]\n{base}top_k = 20\n',
        encoding="utf-8",
    )
    env["LLMCHAT_CONFIG"] = str(path)
    return path


def chat_requests(server: FakeServer) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def norm(data: bytes) -> bytes:
    data = re.sub(rb'"created": ?\d+', b'"created": 0', data)
    return re.sub(rb'"chatcmpl-[0-9a-f-]{36}"', b'"chatcmpl-ID"', data)


# ----------------------------------------------------------------------------------------------------
# The dialect, byte for byte against the captures
# ----------------------------------------------------------------------------------------------------


def test_stream_matches_the_capture_and_has_no_usage(llama: FakeServer) -> None:
    name = "llamacpp_stream_plain.sse"
    events = fixture_events(name)
    pieces = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[1:-2]]
    llama.enqueue(Stream(pieces=pieces, finish_reason="length"))
    ex = exchange(llama, "POST", "/v1/chat/completions", manifest()[name]["request"])
    assert ex.status == 200 and ex.complete and ex.headers["content-type"] == SSE_UTF8
    assert [norm(c) for c in ex.chunks or []] == [norm(e) for e in events]
    assert b"usage" not in ex.body


def test_nonstream_models_and_json_schema_refusal_match_the_captures(llama: FakeServer) -> None:
    name = "llamacpp_nonstream.json"
    llama.enqueue(Stream(answer="Hello! I'm a", finish_reason="length", prompt_tokens=32, completion_tokens=5))
    ex = exchange(llama, "POST", "/v1/chat/completions", manifest()[name]["request"])
    assert (ex.status, ex.headers["content-type"]) == (200, "application/json")
    assert norm(ex.body) == norm(load_fixture(name))  # the unknown model name is answered, and echoed
    ex = exchange(llama, "GET", "/v1/models")
    assert ex.body == load_fixture("llamacpp_models.json")
    name = "llamacpp_error_json_schema.json"
    ex = exchange(llama, "POST", "/v1/chat/completions", manifest()[name]["request"])
    assert (ex.status, ex.body) == (500, load_fixture(name))


def test_too_long_is_an_empty_stream_then_a_closed_connection_and_a_400_without_streaming(llama: FakeServer) -> None:
    llama.n_ctx = 256
    request = {"model": "smollm2", "messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 5}
    ex = exchange(llama, "POST", "/v1/chat/completions", {**request, "stream": True})
    assert (ex.status, ex.headers["content-type"], ex.chunks, ex.complete) == (200, SSE_UTF8, [], True)
    assert load_fixture("llamacpp_stream_too_long.sse") == b""
    ex = exchange(llama, "POST", "/v1/chat/completions", request)
    captured = json.loads(load_fixture("llamacpp_error_context_length.json"))
    sent = json.loads(ex.body)
    assert ex.status == 400 and sent["error"].keys() == captured["error"].keys()
    assert {k: v for k, v in sent["error"].items() if k != "message"} == \
        {k: v for k, v in captured["error"].items() if k != "message"}
    # The message is the server's format string: the capture's numbers give the capture's bytes.
    assert llamacpp_too_long(256, 431, 5) == load_fixture("llamacpp_error_context_length.json")


def test_a_waiting_request_cuts_the_running_stream(llama: FakeServer) -> None:
    llama.enqueue(Stream(answer="one two three four five six", piece_size=4, delay=0.2), Stream(answer="second"))
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(ex=exchange(
        llama, "POST", "/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "a"}],
                                                "stream": True})))
    thread.start()
    time.sleep(0.3)
    second = exchange(llama, "POST", "/v1/chat/completions",
                      {"model": "smollm2", "messages": [{"role": "user", "content": "b"}], "stream": True})
    thread.join(5)
    cut = first["ex"]
    assert not cut.complete and cut.chunks and cut.chunks[-1] == b"data: [DONE]\n\n"
    assert b"finish_reason\": \"stop" not in cut.body and len(cut.chunks) < 8
    assert json.loads(cut.chunks[0][6:])["choices"][0]["delta"] == {"role": "assistant"}  # as in the capture
    assert fixture_events("llamacpp_stream_cut.sse")[-1] == b"data: [DONE]\n\n"
    assert second.complete and b'"finish_reason": "stop"' in second.body


def test_ping_comments_while_the_model_is_slow(llama: FakeServer, llama_config, llmchat) -> None:
    llama.ping_interval = 0.05
    llama.enqueue(Stream(answer="late answer", first_delay=0.3))
    ex = exchange(llama, "POST", "/v1/chat/completions",
                  {"model": "smollm2", "messages": [{"role": "user", "content": "a"}], "stream": True})
    pings = [c for c in ex.chunks or [] if c.startswith(b": ping - ")]
    assert len(pings) >= 3
    assert re.fullmatch(rb": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00\n\n", pings[0])
    llama.enqueue(Stream(answer="late answer", first_delay=0.3))
    run = llmchat("ask", "hi")
    assert (run.code, run.stdout) == (0, "late answer\n")


# ----------------------------------------------------------------------------------------------------
# 1. A too-long conversation is recognised, compacted and answered; never "retry"
# ----------------------------------------------------------------------------------------------------


def test_too_long_conversation_is_compacted_and_answered(llama: FakeServer, llama_config, llmchat) -> None:
    llama.n_ctx = 400
    assert llmchat("ask", "A" * 800).code == 0  # ~204 tokens: fits
    llama.requests.clear()
    run = llmchat("ask", "-c", "B" * 800)  # with the first exchange ~620: the server sends an empty stream
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("You said: BBB")
    assert "too long" in run.stderr and "Retry" not in run.output
    sent = chat_requests(llama)
    assert [r.body["stream"] for r in sent] == [True, False, True]  # empty stream, the second look, compacted
    assert "A" * 800 not in json.dumps(sent[-1].body)


def test_a_question_too_long_by_itself_says_so_once_and_is_not_retried(llama: FakeServer, llama_config,
                                                                       llmchat) -> None:
    llama.n_ctx = 256
    run = llmchat("ask", "word " * 400)
    assert run.code == 1 and run.stdout == ""
    assert "too long for smollm2" in run.stderr and "maximum context length is 256 tokens" in run.stderr
    assert "Retry" not in run.stderr and "Cannot reach" not in run.stderr
    assert len(chat_requests(llama)) == 2  # the stream, the second look without streaming: nothing more


# ----------------------------------------------------------------------------------------------------
# 2. A stale kept-alive connection is retried once, silently; the address is printed once
# ----------------------------------------------------------------------------------------------------


def test_a_drop_before_any_response_byte_is_retried_once_silently(llama: FakeServer, llama_config,
                                                                  llmchat) -> None:
    llama.enqueue(Drop())
    run = llmchat("ask", "hi")
    assert (run.code, run.stdout, run.stderr) == (0, "You said: hi\n", "")
    assert len(chat_requests(llama)) == 2


def test_summary_call_failing_on_a_too_long_window_does_not_look_unreachable(llama: FakeServer, llama_config,
                                                                            llmchat) -> None:
    """The real server's sequence: the summary request overflows too (empty stream, connection closed),
    and the next request went out on the dead connection: "Cannot reach" a server that is up."""
    llama.n_ctx = 300
    assert llmchat("ask", "-p", "summ", "A" * 900).code == 0
    run = llmchat("ask", "-p", "summ", "-c", "B" * 200)
    assert "Cannot reach" not in run.output and "Retry the question" not in run.output
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("You said: BBB")


def test_cannot_reach_names_the_address_once(env, tmp_path: Path, llmchat) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(f'[profiles.x]\nprovider = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
                      "retries = 0\n", encoding="utf-8")
    run = llmchat("ask", "-p", "x", "hi", LLMCHAT_CONFIG=str(config))
    assert run.code == 1 and f"Cannot reach http://127.0.0.1:{port}/v1." in run.stderr
    assert run.stderr.count(f"127.0.0.1:{port}") == 1


# ----------------------------------------------------------------------------------------------------
# 3. An unfinished stream is retried (ask: while nothing was shown; batch: always)
# ----------------------------------------------------------------------------------------------------


def test_ask_retries_an_unfinished_stream_while_nothing_was_shown(llama: FakeServer, llama_config, llmchat) -> None:
    llama.enqueue(Stream(answer="", unfinished=True))
    run = llmchat("ask", "hi", "--usage")
    assert run.code == 0 and run.stdout == "You said: hi\n"
    assert "no finish_reason" in run.stderr and "Retrying in" in run.stderr


def test_ask_keeps_a_partial_answer_of_an_unfinished_stream_and_does_not_retry(llama: FakeServer, llama_config,
                                                                                llmchat) -> None:
    llama.enqueue(Stream(answer="Half an ans", unfinished=True))
    run = llmchat("ask", "hi")
    assert run.code == 1 and "Half an ans" in run.stdout
    assert "ended the stream before the answer was complete" in run.stderr
    assert len(chat_requests(llama)) == 1


def test_batch_at_concurrency_4_against_a_one_at_a_time_server_answers_every_row(
        llama: FakeServer, llama_config, llmchat, tmp_path: Path) -> None:
    llama.default_reply = Stream(delay=0.02, piece_size=2)
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"question number {n}\n" for n in range(1, 9)), encoding="utf-8")
    run = llmchat("batch", str(prompts), "--concurrency", "4", timeout=60)
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.code == 0, run.stderr
    assert [r["answer"] for r in rows] == [f"You said: question number {n}" for n in range(1, 9)]
    assert all(r["error"] is None for r in rows)
    assert "tokens not reported by the server" in run.stderr and "0 tokens" not in run.stderr
    assert any(r.body["stream"] for r in chat_requests(llama))


def test_batch_row_whose_stream_stays_unfinished_says_so_and_suggests_concurrency_1(
        llama: FakeServer, llama_config, llmchat, tmp_path: Path) -> None:
    llama.enqueue(*[Stream(answer="Half", unfinished=True)] * 3)
    prompts = tmp_path / "p.txt"
    prompts.write_text("only\n", encoding="utf-8")
    run = llmchat("batch", str(prompts), "--concurrency", "1", timeout=60)
    row = json.loads(run.stdout)
    assert run.code == 1 and row["error"]  # half an answer is not an answer: --resume reruns the row
    assert "unfinished" in row["error"] and "--concurrency 1" in row["error"] and "3 times" in row["error"]
    assert len(chat_requests(llama)) == 3


# ----------------------------------------------------------------------------------------------------
# 4. --schema: json_object + schema when json_schema is refused; errors once, never retried
# ----------------------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_schema_falls_back_to_json_object_with_the_schema(llama: FakeServer, llama_config, llmchat,
                                                          tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    llama.enqueue(Stream(answer='{"name": "Ada"}'))
    run = llmchat("ask", "Who?", "--schema", str(schema))
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == {"name": "Ada"} and "Retrying" not in run.stderr
    formats = [r.body["response_format"] for r in chat_requests(llama)]
    assert formats == [{"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
                       {"type": "json_object", "schema": SCHEMA}]


def test_schema_refused_in_both_forms_is_one_short_error(fake_server: FakeServer, config_file, llmchat,
                                                         tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    refusal = Raw(500, load_fixture("llamacpp_error_json_schema.json"))
    fake_server.enqueue(refusal, refusal)
    run = llmchat("ask", "-p", "vllm", "Who?", "--schema", str(schema))
    assert run.code == 1 and run.stdout == ""
    assert "does not support JSON schemas" in run.stderr and "--format json" in run.stderr
    assert "Retrying" not in run.stderr and "app.py" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2
    assert len(chat_requests(fake_server)) == 2


def test_a_schema_validation_error_is_not_retried(llama: FakeServer, llama_config, llmchat, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    llama.enqueue(Stream(answer='{"nom": 1}'))
    run = llmchat("ask", "Who?", "--schema", str(schema))
    assert run.code == 1 and "does not match the schema" in run.stderr
    assert len(chat_requests(llama)) == 2  # the refused json_schema, then the one answer: never asked again


def test_server_errors_are_one_line(fake_server: FakeServer, config_file, llmchat) -> None:
    body = json.dumps({"error": {"message": "boom\n\n  File \"/x/app.py\", line 3, in f\n    raise", "code": None}})
    fake_server.enqueue(Raw(500, body), Raw(500, body), Raw(500, body))
    run = llmchat("ask", "-p", "vllm", "hi")
    assert run.code == 1 and "boom" in run.stderr and "app.py" not in run.stderr
    assert run.stderr.count("boom") == 2  # the first retry notice and the error; "Failed again." between


# ----------------------------------------------------------------------------------------------------
# 5. top_k reaches an OpenAI-compatible server; 6. no usage is said, not left blank
# ----------------------------------------------------------------------------------------------------


def test_top_k_is_sent_to_an_openai_compatible_server(llama: FakeServer, llama_config, llmchat) -> None:
    assert llmchat("ask", "-p", "k", "hi").code == 0
    assert chat_requests(llama)[-1].body["top_k"] == 20


def test_usage_line_says_tokens_were_not_reported(llama: FakeServer, llama_config, llmchat) -> None:
    run = llmchat("ask", "hi", "--usage")
    assert run.code == 0 and "tokens not reported by the server" in run.stderr
    record = json.loads(llmchat("ask", "hi", "--json").stdout)
    assert set(record["usage"].values()) == {None} and record["answer"] == "You said: hi"


def test_the_openai_sdk_reads_the_dialect(llama: FakeServer) -> None:
    client = openai.OpenAI(base_url=llama.url + "/v1", api_key="x", max_retries=0)
    with client.chat.completions.create(model="whatever", messages=[{"role": "user", "content": "yo"}],
                                        stream=True) as chunks:
        parts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(parts) == "You said: yo"
