"""Tests for the fake server: real clients parse it, and its bytes match the recorded real servers.

Two kinds of proof:

* the real ``ollama`` (0.6.3, httpx) and ``openai`` (3.x, httpx2) clients parse every reply and map every
  failure to the exception class they raise against the real servers (``tests/wire/manifest.json``,
  ``ollama-api.md`` §2.4/§3.4);
* the server regenerates each recorded stream/body in ``tests/wire/`` from the same pieces and the bytes
  are compared, after normalising only what differs per run (timestamps, durations, ids, ``created``).
  A raw-socket client checks the HTTP framing too: one chunk per NDJSON line / SSE event, and the
  presence or absence of the final 0-length chunk.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest_server  # noqa: E402
from fakeserver import (  # noqa: E402
    WIRE_DIR,
    Drop,
    FakeServer,
    Raw,
    Stall,
    Stream,
    dashscope_json,
    go_json,
    go_quote,
    load_fixture,
    manifest,
    rfc3339nano,
)

# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------

# The shared fixture; conftest.py re-exports it too (same object, so either source works).
fake_server = conftest_server.fake_server


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] | None  # HTTP chunk payloads when chunked
    complete: bool  # chunked body ended with the 0-length chunk (always True otherwise)


def exchange(
    server: FakeServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Exchange:
    """One request over a raw socket (Connection: close), keeping the HTTP chunk boundaries."""
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    parts: list[bytes] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        while data := sock.recv(1 << 16):
            parts.append(data)
    head, _, rest = b"".join(parts).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    status = int(status_line.split()[1])
    if hdrs.get("transfer-encoding") != "chunked":
        return Exchange(status, hdrs, rest, None, True)
    chunks: list[bytes] = []
    complete = False
    pos = 0
    while pos < len(rest):
        eol = rest.index(b"\r\n", pos)
        size = int(rest[pos:eol], 16)
        start = eol + 2
        if size == 0:
            complete = rest[start:] == b"\r\n"
            break
        chunks.append(rest[start : start + size])
        assert rest[start + size : start + size + 2] == b"\r\n"
        pos = start + size + 2
    return Exchange(status, hdrs, b"".join(chunks), chunks, complete)


_TS = re.compile(rb'"created_at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z)"')
_DUR = re.compile(rb'"(total|load|prompt_eval|eval)_duration":\d+')
_GO_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")


def norm_ollama(data: bytes) -> bytes:
    """Blank out what differs per run: timestamps and durations."""
    return _DUR.sub(rb'"\1_duration":0', _TS.sub(b'"created_at":"T"', data))


def norm_dashscope(data: bytes) -> bytes:
    data = re.sub(rb'"created":\d+', b'"created":0', data)
    data = re.sub(rb'"chatcmpl-[0-9a-f-]{36}"', b'"chatcmpl-ID"', data)
    return re.sub(rb'"request_id":"[0-9a-f-]{36}"', b'"request_id":"RID"', data)


def fixture_lines(name: str) -> list[bytes]:
    return load_fixture(name).splitlines(keepends=True)


def fixture_events(name: str) -> list[bytes]:
    return [e + b"\n\n" for e in load_fixture(name).split(b"\n\n") if e]


def request_of(name: str) -> dict[str, Any]:
    return dict(manifest()[name]["request"])


def check_go_timestamps_and_durations(lines: list[bytes]) -> None:
    stamps = [m.group(1).decode() for line in lines for m in [_TS.search(line)] if m]
    assert stamps and all(_GO_TS.fullmatch(s) for s in stamps), stamps[:3]
    assert stamps == sorted(stamps, key=lambda s: (s[:19], float("0" + s[19:-1] if len(s) > 20 else "0")))
    final = json.loads(lines[-1])
    assert (
        final["total_duration"]
        >= final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    )


def ollama_client(server: FakeServer, timeout: float = 5.0) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=timeout)


def openai_client(
    server: FakeServer, timeout: float = 5.0, max_retries: int = 0, api_key: str = "sk-test"
) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/compatible-mode/v1", api_key=api_key, timeout=timeout, max_retries=max_retries
    )


USER = [{"role": "user", "content": "hello"}]


# ----------------------------------------------------------------------------------------------------
# The fixture copy and the serialisers
# ----------------------------------------------------------------------------------------------------


def test_wire_dir_holds_every_fixture_of_the_manifest() -> None:
    names = {p.name for p in WIRE_DIR.iterdir()}
    listed = {k for k in manifest() if not k.startswith("_")}
    assert listed <= names
    assert names == listed | {"README.md", "manifest.json"}


def _ollama_fixture_docs() -> list[tuple[str, bytes]]:
    docs = []
    for name in sorted(manifest()):
        if name.startswith("ollama_") and name.endswith(".json"):
            docs.append((name, load_fixture(name)))
        elif name.startswith("ollama_") and name.endswith(".ndjson"):
            docs += [(name, line.rstrip(b"\n")) for line in fixture_lines(name)]
        elif name == "ollama_v1_stream_thinking.sse":
            docs += [
                (name, e[len(b"data: ") :].rstrip(b"\n")) for e in fixture_events(name) if b"[DONE]" not in e
            ]
    return docs


_OLLAMA_DOCS = _ollama_fixture_docs()


@pytest.mark.parametrize(
    ("name", "doc"), _OLLAMA_DOCS, ids=[f"{n}:{i}" for i, (n, _) in enumerate(_OLLAMA_DOCS)]
)
def test_go_json_reproduces_every_ollama_document(name: str, doc: bytes) -> None:
    assert go_json(json.loads(doc)).encode() == doc


def _dashscope_fixture_docs() -> list[tuple[str, bytes]]:
    docs = []
    for name in sorted(manifest()):
        if name.startswith("openai_") and name.endswith(".json"):
            docs.append((name, load_fixture(name)))
        elif name.startswith("openai_") and name.endswith(".sse"):
            docs += [
                (name, e[len(b"data: ") :].rstrip(b"\n")) for e in fixture_events(name) if b"[DONE]" not in e
            ]
    return docs


_DASHSCOPE_DOCS = _dashscope_fixture_docs()


@pytest.mark.parametrize(
    ("name", "doc"), _DASHSCOPE_DOCS, ids=[f"{n}:{i}" for i, (n, _) in enumerate(_DASHSCOPE_DOCS)]
)
def test_dashscope_json_reproduces_every_dashscope_document(name: str, doc: bytes) -> None:
    assert dashscope_json(json.loads(doc)).encode() == doc


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (0.6, "0.6"),
        (1000000.0, "1000000"),
        (1e16, "10000000000000000"),
        (1e21, "1e+21"),
        (-0.0, "-0"),
        (0.95, "0.95"),
    ],
)
def test_go_json_floats(value: float, text: str) -> None:
    assert go_json(value) == text


def test_go_json_strings() -> None:
    assert (
        go_json('<think>&\u2028\u2029×😊中文\x01\n"\\')
        == '"\\u003cthink\\u003e\\u0026\\u2028\\u2029×😊中文\\u0001\\n\\"\\\\"'
    )
    assert go_json("bad \ud800") == '"bad \\ufffd"'
    assert go_quote("llama3.2") == '"llama3.2"'
    assert go_quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'


def test_rfc3339nano_trims_like_go() -> None:
    assert rfc3339nano(1_773_480_413_000_000_000) == "2026-03-14T09:26:53Z"
    assert rfc3339nano(1_773_480_413_120_000_000) == "2026-03-14T09:26:53.12Z"
    assert rfc3339nano(1_773_480_413_665_415_077) == "2026-03-14T09:26:53.665415077Z"


# ----------------------------------------------------------------------------------------------------
# Byte-faithful generation: regenerate each recorded stream and compare
# ----------------------------------------------------------------------------------------------------


def _ollama_pieces(name: str) -> tuple[list[str], list[str], dict[str, Any]]:
    objs = [json.loads(line) for line in fixture_lines(name)]
    thinking = [o["message"]["thinking"] for o in objs[:-1] if o["message"].get("thinking")]
    content = [o["message"]["content"] for o in objs[:-1] if not o["message"].get("thinking")]
    return thinking, content, objs[-1]


def test_ollama_thinking_stream_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_chat_stream_thinking.ndjson"
    thinking, content, final = _ollama_pieces(name)
    fake_server.enqueue(
        Stream(reasoning_pieces=thinking, pieces=content, prompt_tokens=final["prompt_eval_count"])
    )
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.status == 200 and ex.complete
    assert ex.headers["content-type"] == "application/x-ndjson"
    expected = fixture_lines(name)
    assert ex.chunks is not None and len(ex.chunks) == len(expected) == manifest()[name]["expect"]["chunks"]
    assert [norm_ollama(c) for c in ex.chunks] == [norm_ollama(line) for line in expected]
    assert json.loads(ex.chunks[-1])["eval_count"] == 153  # 149 emitted + 4 swallowed tag tokens
    check_go_timestamps_and_durations(ex.chunks)


def test_ollama_plain_stream_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_chat_stream_plain.ndjson"
    _, content, final = _ollama_pieces(name)
    fake_server.enqueue(Stream(pieces=content, prompt_tokens=final["prompt_eval_count"]))
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.complete and ex.chunks is not None
    assert [norm_ollama(c) for c in ex.chunks] == [norm_ollama(line) for line in fixture_lines(name)]
    check_go_timestamps_and_durations(ex.chunks)


def test_ollama_midstream_error_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_chat_stream_midstream_error.ndjson"
    lines = fixture_lines(name)
    pieces = [json.loads(line)["message"]["content"] for line in lines[:-1]]
    fake_server.enqueue(Stream(pieces=pieces + ["more", "text"], error_after=6))
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.status == 200 and ex.complete and ex.chunks is not None
    assert [norm_ollama(c) for c in ex.chunks] == [norm_ollama(line) for line in lines]


def test_ollama_inline_think_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_inline_think_tags.ndjson"
    lines = fixture_lines(name)
    pieces = [json.loads(line)["message"]["content"] for line in lines[:-1]]
    close = pieces.index("</think>")
    assert pieces[:2] == ["<think>", "\n"] and pieces[close + 1] == "\n\n"
    fake_server.models.append("qwen3:latest")
    fake_server.enqueue(
        Stream(
            reasoning_pieces=pieces[2:close], pieces=pieces[close + 2 :], inline_think=True, prompt_tokens=10
        )
    )
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.chunks is not None and ex.complete
    # The capture is from a <= 0.11 server (done_reason before done); we emit the >= 0.12 order.
    expected = [
        norm_ollama(line).replace(b'"done_reason":"stop","done":true', b'"done":true,"done_reason":"stop"')
        for line in lines
    ]
    assert [norm_ollama(c) for c in ex.chunks] == expected
    assert b"\\u003cthink\\u003e" in ex.chunks[0]


def test_ollama_inline_empty_think_block_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_inline_think_empty.ndjson"
    lines = fixture_lines(name)
    pieces = [json.loads(line)["message"]["content"] for line in lines[:-1]]
    fake_server.models.append("deepseek-r1:1.5b")
    fake_server.enqueue(Stream(reasoning="", pieces=pieces[4:], inline_think=True, prompt_tokens=5))
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.chunks is not None
    expected = [
        norm_ollama(line).replace(b'"done_reason":"stop","done":true', b'"done":true,"done_reason":"stop"')
        for line in lines
    ]
    assert [norm_ollama(c) for c in ex.chunks] == expected


def test_ollama_nonstream_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_chat_nonstream.json"
    doc = json.loads(load_fixture(name))
    fake_server.enqueue(
        Stream(
            answer=doc["message"]["content"],
            reasoning=doc["message"]["thinking"],
            prompt_tokens=18,
            completion_tokens=153,
        )
    )
    ex = exchange(fake_server, "POST", "/api/chat", request_of(name))
    assert ex.status == 200 and ex.chunks is None
    assert ex.headers["content-type"] == "application/json; charset=utf-8"
    assert int(ex.headers["content-length"]) == len(ex.body)
    assert not ex.body.endswith(b"\n")
    assert norm_ollama(ex.body) == norm_ollama(load_fixture(name))


def _dashscope_pieces(name: str) -> tuple[list[str], list[str], dict[str, Any]]:
    objs = [json.loads(e[len(b"data: ") :]) for e in fixture_events(name) if b"[DONE]" not in e]
    deltas = [
        o["choices"][0]["delta"]
        for o in objs[1:]
        if o["choices"] and o["choices"][0]["finish_reason"] is None
    ]
    reasoning = [d["reasoning_content"] for d in deltas if d.get("reasoning_content")]
    content = [d["content"] for d in deltas if d.get("content")]
    return reasoning, content, objs[-1]["usage"]


@pytest.mark.parametrize(
    "name", ["openai_dashscope_stream_thinking.sse", "openai_dashscope_stream_plain.sse"]
)
def test_dashscope_stream_matches_fixture(fake_server: FakeServer, name: str) -> None:
    reasoning, content, usage = _dashscope_pieces(name)
    fake_server.enqueue(
        Stream(
            reasoning_pieces=reasoning,
            pieces=content,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            reasoning_tokens=usage.get("completion_tokens_details", {}).get("reasoning_tokens"),
        )
    )
    ex = exchange(fake_server, "POST", "/compatible-mode/v1/chat/completions", request_of(name))
    assert ex.status == 200 and ex.complete and ex.chunks is not None
    assert ex.headers["content-type"] == "text/event-stream"
    expected = fixture_events(name)
    assert [norm_dashscope(c) for c in ex.chunks] == [norm_dashscope(e) for e in expected]
    objs = [json.loads(c[6:]) for c in ex.chunks[:-1]]
    assert len({o["id"] for o in objs}) == 1 and len({o["created"] for o in objs}) == 1
    assert re.fullmatch(
        r"chatcmpl-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", objs[0]["id"]
    )


def test_dashscope_nonstream_matches_fixture(fake_server: FakeServer) -> None:
    name = "openai_dashscope_nonstream.json"
    doc = json.loads(load_fixture(name))
    fake_server.enqueue(
        Stream(answer=doc["choices"][0]["message"]["content"], prompt_tokens=22, completion_tokens=33)
    )
    ex = exchange(fake_server, "POST", "/compatible-mode/v1/chat/completions", request_of(name))
    assert ex.status == 200 and ex.headers["content-type"] == "application/json"
    assert norm_dashscope(ex.body) == norm_dashscope(load_fixture(name))


@pytest.mark.parametrize(
    ("name", "path", "body"),
    [
        ("ollama_error_model_not_found.json", "/api/chat", None),
        ("ollama_error_think_unsupported.json", "/api/chat", None),
        ("ollama_error_think_level_unsupported.json", "/api/chat", None),
        (
            "ollama_error_bad_think_value.json",
            "/api/chat",
            {"model": "qwen3:8b", "messages": [], "think": "extreme"},
        ),
        (
            "openai_error_thinking_nonstream.json",
            "/compatible-mode/v1/chat/completions",
            {"model": "qwen3-max", "messages": USER, "stream": False, "enable_thinking": True},
        ),
    ],
)
def test_error_bodies_are_exact(fake_server: FakeServer, name: str, path: str, body: Any) -> None:
    meta = manifest()[name]
    ex = exchange(fake_server, "POST", path, body if body is not None else meta["request"])
    assert (ex.status, ex.headers["content-type"], ex.body) == (
        meta["status"],
        meta["content_type"],
        load_fixture(name),
    )
    assert fake_server.pending == 0


def test_openai_model_not_found_body_has_the_fixture_shape(fake_server: FakeServer) -> None:
    ex = exchange(fake_server, "POST", "/v1/chat/completions", {"model": "qwen-pluss", "messages": USER})
    assert ex.status == 404
    assert norm_dashscope(ex.body) == norm_dashscope(load_fixture("openai_error_model_not_found.json"))


def test_ollama_show_404_and_name_resolution(fake_server: FakeServer) -> None:
    ex = exchange(fake_server, "POST", "/api/show", {"model": "qwen3:14b"})
    assert (ex.status, ex.body) == (404, load_fixture("ollama_error_model_not_found.json"))
    assert exchange(fake_server, "POST", "/api/show", {"model": "llama3.2"}).status == 200
    assert exchange(fake_server, "POST", "/api/chat", {"model": "llama3.2", "messages": USER}).status == 200


def test_invalid_key_body_is_exact_and_never_echoes_the_key(fake_server: FakeServer) -> None:
    fake_server.api_key = "sk-right-key"
    for path in ("/compatible-mode/v1/chat/completions", "/v1/models"):
        method = "GET" if path.endswith("models") else "POST"
        ex = exchange(
            fake_server,
            method,
            path,
            {"model": "qwen-plus", "messages": USER},
            headers={"Authorization": "Bearer sk-wrong-key"},
        )
        assert (ex.status, ex.body) == (401, load_fixture("openai_error_invalid_key.json"))
        assert b"sk-" not in ex.body and b"sk-" not in json.dumps(ex.headers).encode()
    ok = exchange(
        fake_server,
        "POST",
        "/v1/chat/completions",
        {"model": "qwen-plus", "messages": USER},
        headers={"Authorization": "Bearer sk-right-key"},
    )
    assert ok.status == 200 and b"sk-right-key" not in ok.body


def test_plain_routes(fake_server: FakeServer) -> None:
    root = exchange(fake_server, "GET", "/")
    assert (root.status, root.body) == (200, b"Ollama is running")
    assert root.headers["content-type"].startswith("text/plain")
    assert "server" not in root.headers and "date" in root.headers
    assert exchange(fake_server, "GET", "/api/version").body == load_fixture("ollama_version.json")
    for method, path in (("GET", "/nope"), ("GET", "/api/chat"), ("POST", "/v1/responses")):
        ex = exchange(fake_server, method, path)
        assert (ex.status, ex.headers["content-type"], ex.body) == (404, "text/plain", b"404 page not found")


def test_tags_and_show_follow_the_fixture_shapes(fake_server: FakeServer) -> None:
    fake_server.vision_models.add("qwen3:8b")
    tags = json.loads(exchange(fake_server, "GET", "/api/tags").body)
    shape = json.loads(load_fixture("ollama_tags.json"))["models"][0]
    assert [m["name"] for m in tags["models"]] == fake_server.models
    for model in tags["models"]:
        assert list(model) == list(shape) and list(model["details"]) == list(shape["details"])
    raw = exchange(fake_server, "POST", "/api/show", {"model": "qwen3:8b"}).body
    show = json.loads(raw)
    assert list(show) == list(json.loads(load_fixture("ollama_show_qwen3.json")))
    assert show["capabilities"] == ["completion", "vision", "thinking"]
    assert show["model_info"]["qwen3.context_length"] == 40960
    assert b'"qwen3.attention.layer_norm_rms_epsilon":0.000001' in raw  # Go float formatting
    llama = json.loads(exchange(fake_server, "POST", "/api/show", {"model": "llama3.2:latest"}).body)
    assert llama["capabilities"] == ["completion"]
    assert (
        llama["model_info"]["general.architecture"] == "llama"
        and "llama.context_length" in llama["model_info"]
    )


def test_framing_each_piece_is_its_own_chunk_and_cut_leaves_no_terminator(fake_server: FakeServer) -> None:
    fake_server.enqueue(
        Stream(pieces=["a", "b", "c"], cut_after=2), Stream(pieces=["a", "b", "c"], cut_after=2)
    )
    ex = exchange(fake_server, "POST", "/api/chat", {"model": "qwen3:8b", "messages": USER})
    assert ex.chunks is not None and len(ex.chunks) == 2 and not ex.complete
    assert b'"done":true' not in ex.body
    ex = exchange(
        fake_server, "POST", "/v1/chat/completions", {"model": "qwen-plus", "messages": USER, "stream": True}
    )
    assert ex.chunks is not None and len(ex.chunks) == 3 and not ex.complete  # role chunk + 2 pieces
    assert b"[DONE]" not in ex.body and b'"finish_reason":"stop"' not in ex.body


def test_dashscope_in_band_error_event(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(pieces=["a", "b"], error_after=1, error="boom"))
    ex = exchange(
        fake_server, "POST", "/v1/chat/completions", {"model": "qwen-plus", "messages": USER, "stream": True}
    )
    assert ex.complete and ex.chunks is not None and len(ex.chunks) == 3
    assert json.loads(ex.chunks[-1][6:])["error"]["message"] == "boom"
    assert ex.chunks[-1].startswith(b'data: {"error":{"code":"internal_error",')


def test_raw_fixture_replay_is_chunked_per_line(fake_server: FakeServer) -> None:
    fake_server.enqueue(Raw.fixture("ollama_chat_stream_plain.ndjson"))
    ex = exchange(fake_server, "POST", "/api/chat", {"model": "qwen3:8b", "messages": USER})
    assert ex.chunks == fixture_lines("ollama_chat_stream_plain.ndjson") and ex.complete
    fake_server.enqueue(Raw.fixture("openai_dashscope_stream_plain.sse"))
    ex = exchange(fake_server, "POST", "/v1/chat/completions", {"model": "qwen-plus", "messages": USER})
    assert ex.chunks == fixture_events("openai_dashscope_stream_plain.sse")
    assert ex.headers["content-type"] == "text/event-stream"


# ----------------------------------------------------------------------------------------------------
# The real ollama client
# ----------------------------------------------------------------------------------------------------


def test_ollama_client_streams_default_reply_and_history(fake_server: FakeServer) -> None:
    client = ollama_client(fake_server)
    chunks = list(client.chat(model="qwen3:8b", messages=USER, stream=True, think=False))
    assert "".join(c.message.content or "" for c in chunks) == "You said: hello"
    assert all(c.message.thinking is None for c in chunks)
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count == len(chunks) - 1
    assert last.prompt_eval_count == len("hello") // 4 + 4
    history = USER + [
        {"role": "assistant", "content": "You said: hello"},
        {"role": "user", "content": "again"},
    ]
    reply = client.chat(model="qwen3:8b", messages=history)
    assert reply.message.content == "You said: again"
    assert fake_server.last("/api/chat").body["messages"] == history
    assert fake_server.last("/api/chat").body["stream"] is False


def test_ollama_client_thinking(fake_server: FakeServer) -> None:
    client = ollama_client(fake_server)
    chunks = list(client.chat(model="qwen3:8b", messages=USER, stream=True, think=True))
    thinking = [c.message.thinking for c in chunks if c.message.thinking]
    assert "".join(thinking) == "Let me think about: hello"
    assert all(c.message.content == "" for c in chunks if c.message.thinking)
    content_pieces = [c.message.content for c in chunks if c.message.content]
    assert "".join(content_pieces) == "You said: hello"
    assert chunks[-1].eval_count == len(thinking) + len(content_pieces) + 4
    full = client.chat(model="qwen3:8b", messages=USER, think=True)
    assert (full.message.thinking, full.message.content) == ("Let me think about: hello", "You said: hello")


def test_ollama_client_inline_think_and_think_by_default(fake_server: FakeServer) -> None:
    client = ollama_client(fake_server)
    fake_server.enqueue(Stream(reasoning="hmm", answer="Hi", inline_think=True))
    text = "".join(c.message.content or "" for c in client.chat(model="qwen3:8b", messages=USER, stream=True))
    assert text == "<think>\nhmm</think>\n\nHi"
    fake_server.think_by_default = True
    assert client.chat(model="qwen3:8b", messages=USER).message.thinking == "Let me think about: hello"
    assert client.chat(model="llama3.2", messages=USER).message.thinking is None


def test_ollama_client_list_and_show(fake_server: FakeServer) -> None:
    client = ollama_client(fake_server)
    assert [m.model for m in client.list().models] == fake_server.models
    assert client.show("qwen3:8b").capabilities == ["completion", "thinking"]
    assert client.show("llama3.2").capabilities == ["completion"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope:1b")
    assert err.value.status_code == 404 and err.value.error == "model 'nope:1b' not found"


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_http_errors(fake_server: FakeServer, stream: bool) -> None:
    client = ollama_client(fake_server)

    def chat(model: str, **kw: Any) -> Any:
        result = client.chat(model=model, messages=USER, stream=stream, **kw)
        return list(result) if stream else result

    with pytest.raises(ollama.ResponseError) as err:
        chat("qwen3:14b")
    assert (err.value.status_code, err.value.error) == (404, "model 'qwen3:14b' not found")
    with pytest.raises(ollama.ResponseError) as err:
        chat("llama3.2", think=True)
    assert (err.value.status_code, err.value.error) == (400, '"llama3.2" does not support thinking')
    fake_server.enqueue(Raw(500, b'{"error":"model runner has unexpectedly stopped"}', "application/json"))
    with pytest.raises(ollama.ResponseError) as err:
        chat("qwen3:8b")
    assert err.value.status_code == 500
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=fake_server.url + "/v1").chat(model="qwen3:8b", messages=USER)
    assert (err.value.status_code, err.value.error) == (404, "404 page not found")


def test_ollama_client_midstream_error(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(answer="abcdefgh", piece_size=2, error_after=2))
    got: list[str] = []
    with pytest.raises(ollama.ResponseError) as err:
        for chunk in ollama_client(fake_server).chat(model="qwen3:8b", messages=USER, stream=True):
            got.append(chunk.message.content or "")
    assert got == ["ab", "cd"]
    assert err.value.status_code == -1
    assert err.value.error == "an error was encountered while running the model: unexpected EOF"


def test_ollama_client_transport_failures(fake_server: FakeServer) -> None:
    client = ollama_client(fake_server, timeout=0.3)
    fake_server.enqueue(Stream(answer="abcdef", piece_size=1, cut_after=3))
    got: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        for chunk in client.chat(model="qwen3:8b", messages=USER, stream=True):
            got.append(chunk.message.content or "")
    assert got == ["a", "b", "c"]

    fake_server.enqueue(Drop())
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.chat(model="qwen3:8b", messages=USER, stream=True))

    fake_server.enqueue(Stall(5))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.chat(model="qwen3:8b", messages=USER)
    assert time.monotonic() - started < 2

    fake_server.enqueue(Stream(answer="abcdef", piece_size=1, stall_after=2, stall_seconds=5))
    got = []
    with pytest.raises(httpx.ReadTimeout):
        for chunk in client.chat(model="qwen3:8b", messages=USER, stream=True):
            got.append(chunk.message.content or "")
    assert got == ["a", "b"]


def test_stream_is_delivered_incrementally(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(pieces=["a", "b", "c", "d"], delay=0.15, first_delay=0.2))
    started = time.monotonic()
    arrivals = []
    for _chunk in ollama_client(fake_server).chat(model="qwen3:8b", messages=USER, stream=True):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[0] >= 0.18  # the headers and first line wait for first_delay
    assert arrivals[-1] >= 0.2 + 4 * 0.15 - 0.05
    # Pieces arrive as they are written, not all at the end (gaps are not asserted: scheduling jitter).
    assert arrivals[-1] - arrivals[0] >= 0.4


# ----------------------------------------------------------------------------------------------------
# The real openai client (3.x on httpx2) against the DashScope shapes
# ----------------------------------------------------------------------------------------------------


def test_openai_client_thinking_stream_with_usage(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(cached_tokens=7))
    client = openai_client(fake_server)
    stream = client.chat.completions.create(
        model="qwen-plus",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"enable_thinking": True},
    )
    chunks = list(stream)
    body = fake_server.last("/chat/completions").body
    assert body["enable_thinking"] is True and body["stream_options"] == {"include_usage": True}
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert (reasoning, content) == ("Let me think about: hello", "You said: hello")
    assert deltas[0].role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    pieces = sum(1 for d in deltas if d.content or getattr(d, "reasoning_content", None))
    assert usage.completion_tokens == pieces and usage.total_tokens == usage.prompt_tokens + pieces
    assert usage.completion_tokens_details.reasoning_tokens == len("Let me think about: hello") // 3 + 1
    assert usage.prompt_tokens_details.cached_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_client_plain_stream_without_usage(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(answer="Hi there", finish_reason="length"))
    chunks = list(
        openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=USER, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi there"
    assert not hasattr(chunks[1].choices[0].delta, "reasoning_content")
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1


def test_openai_client_nonstream_and_models(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    reply = client.chat.completions.create(model="qwen3-max", messages=USER)
    assert reply.choices[0].message.content == "You said: hello"
    assert reply.usage is not None and reply.usage.prompt_tokens_details.cached_tokens == 0
    assert [m.id for m in client.models.list()] == fake_server.models
    v1 = openai.OpenAI(base_url=fake_server.url + "/v1", api_key="k", max_retries=0)
    assert v1.chat.completions.create(model="qwen-plus", messages=USER).choices[0].message.content


def test_openai_client_status_errors(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="qwen-pluss", messages=USER, stream=True)
    assert nf.value.code == "model_not_found" and "qwen-pluss" in nf.value.message
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="qwen-plus", messages=USER, extra_body={"enable_thinking": True})
    assert br.value.code == "invalid_parameter_error"
    fake_server.api_key = "sk-good"
    with pytest.raises(openai.AuthenticationError) as auth:
        client.chat.completions.create(model="qwen-plus", messages=USER)
    assert auth.value.code == "invalid_api_key" and "sk-test" not in str(auth.value.body)
    good = openai_client(fake_server, api_key="sk-good")
    assert good.chat.completions.create(model="qwen-plus", messages=USER).choices[0].message.content
    assert fake_server.last().headers["authorization"] == "Bearer sk-good"


_SDK_ERRORS = sorted(
    (name, meta) for name, meta in manifest().items() if isinstance(meta, dict) and "sdk_exception" in meta
)


@pytest.mark.parametrize(("name", "meta"), _SDK_ERRORS, ids=[n for n, _ in _SDK_ERRORS])
def test_openai_client_maps_every_error_fixture(
    fake_server: FakeServer, name: str, meta: dict[str, Any]
) -> None:
    expected = getattr(openai, meta["sdk_exception"].split()[0].removeprefix("openai."))
    fake_server.enqueue(Raw.fixture(name))
    with pytest.raises(expected) as err:
        openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=USER, stream=True)
    assert err.value.status_code == meta["status"] and err.value.code == meta["code"]
    assert err.value.response.json()["request_id"]


def test_openai_client_retries_a_429_then_streams(fake_server: FakeServer) -> None:
    fake_server.enqueue(Raw.fixture("openai_error_rate_limit.json", headers={"retry-after-ms": "10"}))
    client = openai_client(fake_server, max_retries=1)
    chunks = list(client.chat.completions.create(model="qwen-plus", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: hello"
    assert [r.path for r in fake_server.requests] == ["/compatible-mode/v1/chat/completions"] * 2
    assert fake_server.requests[1].headers["x-stainless-retry-count"] == "1"


def test_openai_client_in_band_and_transport_failures(fake_server: FakeServer) -> None:
    client = openai_client(fake_server, timeout=0.3)

    fake_server.enqueue(Stream(answer="abcdef", piece_size=1, error_after=2))
    got: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="qwen-plus", messages=USER, stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert not isinstance(err.value, openai.APIStatusError)
    assert err.value.code == "internal_error" and got == ["", "a", "b"]

    fake_server.enqueue(Stream(answer="abcdef", piece_size=1, cut_after=2))
    with pytest.raises(openai.APIConnectionError) as conn:
        list(client.chat.completions.create(model="qwen-plus", messages=USER, stream=True))
    assert not isinstance(conn.value, openai.APITimeoutError)

    fake_server.enqueue(Drop())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="qwen-plus", messages=USER)

    fake_server.enqueue(Stall(5))
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="qwen-plus", messages=USER, stream=True)

    fake_server.enqueue(Stream(answer="abcdef", piece_size=1, stall_after=1, stall_seconds=5))
    with pytest.raises(openai.APITimeoutError):
        list(client.chat.completions.create(model="qwen-plus", messages=USER, stream=True))


# ----------------------------------------------------------------------------------------------------
# Server mechanics
# ----------------------------------------------------------------------------------------------------


def test_recording_and_last(fake_server: FakeServer) -> None:
    exchange(
        fake_server,
        "POST",
        "/api/chat?x=1",
        {"model": "qwen3:8b", "messages": USER},
        headers={"X-Custom": "Yes"},
    )
    exchange(fake_server, "GET", "/api/tags")
    rec = fake_server.last("/api/chat")
    assert (rec.method, rec.path, rec.query) == ("POST", "/api/chat", "x=1")
    assert rec.headers["x-custom"] == "Yes" and rec.body["model"] == "qwen3:8b"
    assert json.loads(rec.raw) == rec.body
    assert fake_server.last().path == "/api/tags"
    with pytest.raises(LookupError):
        fake_server.last("/v1/models")
    exchange(fake_server, "POST", "/api/chat", None)
    assert fake_server.last().body is None and fake_server.last().raw == b""


def test_queue_is_fifo_shared_and_skips_rejected_requests(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(answer="one"), Stream(answer="two"))
    client = ollama_client(fake_server)
    with pytest.raises(ollama.ResponseError):
        client.chat(model="nope", messages=USER)  # rejected before the queue
    assert client.chat(model="qwen3:8b", messages=USER).message.content == "one"
    oa = openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=USER)
    assert oa.choices[0].message.content == "two"
    assert client.chat(model="qwen3:8b", messages=USER).message.content == "You said: hello"
    assert fake_server.pending == 0


def test_client_going_away_is_recorded(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(answer="x" * 200, piece_size=1, delay=0.02))
    stream = ollama_client(fake_server).chat(model="qwen3:8b", messages=USER, stream=True)
    assert next(stream).message.content == "x"
    stream.close()  # closes the HTTP response, hence the connection
    deadline = time.monotonic() + 3
    while not fake_server.last("/api/chat").aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_server.last("/api/chat").aborted
    fake_server.enqueue(Stream(answer="ab", cut_after=1))
    exchange(fake_server, "POST", "/api/chat", {"model": "qwen3:8b", "messages": USER})
    assert not fake_server.last().aborted  # a scripted cut is not the client going away


def test_twenty_thousand_pieces_stream_fast(fake_server: FakeServer) -> None:
    for path, model in (("/api/chat", "qwen3:8b"), ("/v1/chat/completions", "qwen-plus")):
        fake_server.enqueue(Stream(answer="x" * 20_000, piece_size=1))
        started = time.monotonic()
        ex = exchange(fake_server, "POST", path, {"model": model, "messages": USER, "stream": True})
        elapsed = time.monotonic() - started
        assert ex.chunks is not None and len(ex.chunks) >= 20_001 and ex.complete
        assert elapsed < 1.5, f"{path}: {elapsed:.2f}s"


def test_stop_wakes_stalled_handlers_and_frees_the_port() -> None:
    server = FakeServer().start()
    server.enqueue(Stall(30))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            ollama.Client(host=server.url, timeout=20).chat(model="qwen3:8b", messages=USER)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 3
    # the server hung up: a clean close or, when the close races the client's read, a reset
    assert errors and isinstance(errors[0], (httpx.RemoteProtocolError, httpx.ReadError)), errors
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = server.url


def test_context_manager_and_given_port() -> None:
    with FakeServer() as first:
        port = first.port
        assert first.url == f"http://127.0.0.1:{port}"
    with FakeServer(port=port) as again:
        assert exchange(again, "GET", "/").body == b"Ollama is running"


def test_runs_as_a_script() -> None:
    script = Path(__file__).resolve().parent / "fakeserver.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--answer-chars", "500", "--piece-size", "7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(url + "/", timeout=5).text == "Ollama is running"
        chunks = list(ollama.Client(host=url, timeout=5).chat(model="qwen3:8b", messages=USER, stream=True))
        assert len("".join(c.message.content or "" for c in chunks)) == 500
        assert len(chunks) == 500 // 7 + 2
    finally:
        proc.terminate()
        proc.wait(5)
