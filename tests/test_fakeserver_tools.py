"""The fake server's tool calling (issue 15), driven through the real ``ollama`` and ``openai`` clients.

What is proved here: the scripted calls reach each client exactly as the real servers send them (Ollama's
complete calls with object arguments and ``call_`` ids in Go field order; DashScope's deltas assembled by
index, ``"id":""`` continuations, argument strings cut inside "杭州", ``"function":{}``, the
``tool_calls`` finish), with or without streaming, and that malformed follow-ups are refused with the real
servers' 400 bodies. The ollama client 0.6.3 drops call ids (its pydantic models lack them), so the id
assertions read the raw lines with httpx.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest_server  # noqa: E402
from fakeserver import (  # noqa: E402
    DASHSCOPE_ARGUMENTS_NOT_JSON,
    DASHSCOPE_TOOL_NOT_A_RESPONSE,
    OLLAMA_ARGUMENTS_NOT_OBJECT,
    VLLM_NO_AUTO_TOOL_CHOICE,
    Call,
    FakeServer,
    Stream,
    load_fixture,
    manifest,
)

fake_server = conftest_server.fake_server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time now.", "parameters": {}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "杭州天气怎么样？现在几点？"}]
HANGZHOU = '{"city": "杭州"}'
OLLAMA_ID = re.compile(r"call_[a-z0-9]{8}")
DASHSCOPE_ID = re.compile(r"call_[0-9a-f]{22}")


def ollama_client(server: FakeServer) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=5)


def openai_client(server: FakeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/compatible-mode/v1", api_key="sk-test", timeout=5, max_retries=0)


def ndjson(server: FakeServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw NDJSON lines of an Ollama chat, parsed (ids and all)."""
    response = httpx.post(server.url + "/api/chat", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def sse(server: FakeServer, body: dict[str, Any]) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The raw SSE events of a DashScope stream: the bytes, and the parsed JSON of each (``[DONE]`` left out)."""
    response = httpx.post(server.url + "/compatible-mode/v1/chat/completions", json=body, timeout=5)
    assert response.status_code == 200, response.text
    events = [e + b"\n\n" for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]\n\n"
    return events, [json.loads(e[len(b"data: "):]) for e in events[:-1]]


def http_chunks(server: FakeServer, path: str, body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """One request over a raw socket: the response head and the payload of each HTTP chunk, as sent."""
    payload = json.dumps(body, ensure_ascii=False).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(payload), payload))
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks, pos = [], 0
    while (size := int(rest[pos:rest.index(b"\r\n", pos)], 16)) > 0:
        start = rest.index(b"\r\n", pos) + 2
        chunks.append(rest[start:start + size])
        pos = start + size + 2
    return head, chunks


def norm(data: bytes) -> bytes:
    """Blank what differs per run: timestamps, durations, ``created``, the chatcmpl and request ids."""
    data = re.sub(rb'"created_at":"[^"]+"', b'"created_at":"T"', data)
    data = re.sub(rb'"(total|load|prompt_eval|eval)_duration":\d+', rb'"\1_duration":0', data)
    data = re.sub(rb'"created":\d+', b'"created":0', data)
    data = re.sub(rb"chatcmpl-[0-9a-f-]{36}", b"chatcmpl-ID", data)
    return re.sub(rb'"request_id":"[0-9a-f-]{36}"', b'"request_id":"RID"', data)


def tool_round(calls: list[dict[str, Any]], results: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The assistant's tool-call turn and one tool message per (id, content), in the OpenAI form."""
    assistant = {"role": "assistant", "content": "", "tool_calls": calls}
    return [assistant, *({"role": "tool", "tool_call_id": i, "content": c} for i, c in results)]


def openai_call(call_id: str, name: str = "get_weather", arguments: Any = HANGZHOU) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# ----------------------------------------------------------------------------------------------------
# The recorded shapes in tests/wire/
# ----------------------------------------------------------------------------------------------------


def test_ollama_tool_call_stream_matches_fixture(fake_server: FakeServer) -> None:
    name = "ollama_chat_stream_tool_calls.ndjson"
    fake_server.tool_models.add("qwen3:8b")
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}, id="call_k3x9a2b1"),
                                           Call("get_time", id="call_7fq2m0zd")],
                               prompt_tokens=231, completion_tokens=38))
    head, chunks = http_chunks(fake_server, "/api/chat", manifest()[name]["request"])
    assert b"Content-Type: application/x-ndjson" in head
    assert [norm(c) for c in chunks] == [norm(line) for line in load_fixture(name).splitlines(keepends=True)]


def test_dashscope_tool_call_stream_matches_fixture(fake_server: FakeServer) -> None:
    name = "openai_dashscope_stream_tool_calls.sse"
    fake_server.enqueue(Stream(tool_calls=[Call("get_current_weather", {"location": "杭州市"},
                                                id="call_0bdcc155f2534f65a05cb1")]))
    head, chunks = http_chunks(fake_server, "/compatible-mode/v1/chat/completions", manifest()[name]["request"])
    assert b"Content-Type: text/event-stream" in head
    expected = [e + b"\n\n" for e in load_fixture(name).split(b"\n\n") if e]
    assert [norm(c) for c in chunks] == [norm(e) for e in expected]


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("openai_error_tool_not_a_response.json", "/compatible-mode/v1/chat/completions"),
        ("openai_error_tool_calls_unanswered.json", "/compatible-mode/v1/chat/completions"),
        ("openai_error_tool_arguments_not_json.json", "/compatible-mode/v1/chat/completions"),
        ("ollama_error_tools_unsupported.json", "/api/chat"),
        ("ollama_error_tool_arguments_not_object.json", "/api/chat"),
        ("vllm_error_auto_tool_choice.json", "/v1/chat/completions"),
    ],
)
def test_tool_error_bodies_match_fixtures(fake_server: FakeServer, name: str, path: str) -> None:
    meta = manifest()[name]
    fake_server.models += ["gemma3:4b", "Qwen/Qwen3-8B"]
    fake_server.refuse_tools = name.startswith("vllm_")
    response = httpx.post(fake_server.url + path, json=meta["request"], timeout=5)
    assert (response.status_code, response.headers["content-type"]) == (meta["status"], meta["content_type"])
    assert norm(response.content) == norm(load_fixture(name))
    assert fake_server.pending == 0


# ----------------------------------------------------------------------------------------------------
# Ollama /api/chat
# ----------------------------------------------------------------------------------------------------


def test_ollama_client_sees_two_calls_then_the_answer_of_the_next_round(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    fake_server.enqueue(
        Stream(tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")]),
        Stream(answer="杭州晴，22°C。"),
    )
    client = ollama_client(fake_server)
    chunks = list(client.chat(model="qwen3:8b", messages=ASK, tools=TOOLS, stream=True))
    calls = [c for chunk in chunks for c in chunk.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "杭州"}),
        ("get_time", {}),
    ]
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
    assert "".join(c.message.content or "" for c in chunks) == ""

    follow_up = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": c.function.name,
                                                                          "arguments": dict(c.function.arguments)}}
                                                            for c in calls]},
        {"role": "tool", "tool_name": "get_weather", "content": "晴, 22°C"},
        {"role": "tool", "tool_name": "get_time", "content": "10:00"},
    ]
    answer = "".join(c.message.content for c in client.chat(model="qwen3:8b", messages=follow_up, tools=TOOLS,
                                                            stream=True))
    assert answer == "杭州晴，22°C。"
    last = fake_server.chats[-1]
    assert [m["tool_name"] for m in last.tool_results] == ["get_weather", "get_time"]
    assert [c["function"]["arguments"] for c in last.sent_tool_calls] == [{"city": "杭州"}, {}]
    assert last.tool_names == ["get_weather", "get_time"]


def test_ollama_call_lines_are_go_shaped_with_ids_and_rising_index(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "<杭州&>", "days": 2}), Call("get_time")]))
    response = httpx.post(fake_server.url + "/api/chat", timeout=5,
                          json={"model": "qwen3:8b", "messages": ASK, "tools": TOOLS})
    lines = response.text.splitlines()
    assert len(lines) == 3
    ids = [m.group(0) for m in re.finditer(r"call_[a-z0-9]{8}", response.text)]
    assert len(ids) == 2 and ids[0] != ids[1]
    stamp = re.compile(r'"created_at":"[^"]+"')
    assert stamp.sub('"created_at":"T"', lines[0]) == (
        '{"model":"qwen3:8b","created_at":"T","message":{"role":"assistant","content":"","tool_calls":['
        '{"id":"' + ids[0] + '","function":{"index":0,"name":"get_weather",'
        '"arguments":{"city":"\\u003c杭州\\u0026\\u003e","days":2}}}]},"done":false}'
    )
    assert '"tool_calls":[{"id":"' + ids[1] + '","function":{"index":1,"name":"get_time","arguments":{}}}]' in lines[1]
    final = json.loads(lines[2])
    assert final["done"] is True and final["done_reason"] == "stop" and "tool_calls" not in final["message"]
    assert final["eval_count"] > 0


def test_ollama_calls_together_and_an_old_server_without_ids(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    body = {"model": "qwen3:8b", "messages": ASK, "tools": TOOLS}
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"z": 1, "a": 2}), Call("get_time")],
                               calls_together=True))
    lines = ndjson(fake_server, body)
    assert len(lines) == 2
    together = lines[0]["message"]["tool_calls"]
    assert [c["function"]["index"] for c in together] == [0, 1]
    assert all(OLLAMA_ID.fullmatch(c["id"]) for c in together)
    assert list(together[0]["function"]["arguments"]) == ["z", "a"]  # >= 0.14 keeps the model's key order

    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"z": 1, "a": 2})], call_ids=False))
    response = httpx.post(fake_server.url + "/api/chat", json=body, timeout=5)
    assert '"tool_calls":[{"function":{"index":0,"name":"get_weather","arguments":{"a":2,"z":1}}}]' in response.text
    assert '"id"' not in response.text


def test_ollama_thinking_then_calls_and_the_nonstream_form(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    fake_server.enqueue(Stream(reasoning="需要查天气。", answer="我查一下。",
                               tool_calls=[Call("get_weather", {"city": "杭州"})]))
    lines = ndjson(fake_server, {"model": "qwen3:8b", "messages": ASK, "tools": TOOLS, "think": True})
    assert "".join(line["message"].get("thinking", "") for line in lines) == "需要查天气。"
    assert "".join(line["message"]["content"] for line in lines) == "我查一下。"
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["function"]["arguments"] == {"city": "杭州"}
    kinds = ["thinking" if line["message"].get("thinking") else "calls" if "tool_calls" in line["message"]
             else "done" if line["done"] else "content" for line in lines]
    assert kinds.index("calls") > max(i for i, k in enumerate(kinds) if k == "content")  # text, then the call

    fake_server.enqueue(Stream(answer="", tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")]))
    reply = ollama_client(fake_server).chat(model="qwen3:8b", messages=ASK, tools=TOOLS, stream=False)
    assert [c.function.name for c in reply.message.tool_calls] == ["get_weather", "get_time"]
    fake_server.enqueue(Stream(tool_calls=[Call("get_time", id="call_abcdefgh")]))
    raw = httpx.post(fake_server.url + "/api/chat", timeout=5,
                     json={"model": "qwen3:8b", "messages": ASK, "tools": TOOLS, "stream": False})
    message = raw.json()["message"]
    assert not raw.text.endswith("\n")
    assert list(message) == ["role", "content", "tool_calls"]
    assert message["tool_calls"] == [{"id": "call_abcdefgh", "function": {"index": 0, "name": "get_time",
                                                                            "arguments": {}}}]
    assert raw.json()["done_reason"] == "stop"


def test_ollama_model_without_the_tools_capability_refuses_tools(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    client = ollama_client(fake_server)
    assert client.show("qwen3:8b").capabilities == ["completion", "tools", "thinking"]
    assert client.show("llama3.2").capabilities == ["completion"]
    for stream in (True, False):
        with pytest.raises(ollama.ResponseError) as caught:
            result = client.chat(model="llama3.2", messages=ASK, tools=TOOLS, stream=stream)
            if stream:
                list(result)
        assert caught.value.status_code == 400
        assert caught.value.error == "registry.ollama.ai/library/llama3.2:latest does not support tools"
    raw = httpx.post(fake_server.url + "/api/chat", json={"model": "llama3.2", "messages": ASK, "tools": TOOLS})
    assert raw.content == b'{"error":"registry.ollama.ai/library/llama3.2:latest does not support tools"}'
    assert "".join(c.message.content for c in client.chat(model="llama3.2", messages=ASK, stream=True))  # no tools
    assert client.chat(model="llama3.2", messages=ASK, tools=[], stream=False).message.content  # empty list: fine


def test_ollama_tool_models_show_in_v030_tags_and_a_failure_between_calls(fake_server: FakeServer) -> None:
    fake_server.tool_models.add("qwen3:8b")
    fake_server.tags_capabilities = True
    tags = {m["name"]: m["capabilities"] for m in httpx.get(fake_server.url + "/api/tags").json()["models"]}
    assert tags["qwen3:8b"] == ["completion", "tools", "thinking"] and tags["qwen3:0.6b"] == ["completion", "thinking"]

    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")], error_after=1))
    seen = []
    with pytest.raises(ollama.ResponseError) as caught:
        for chunk in ollama_client(fake_server).chat(model="qwen3:8b", messages=ASK, tools=TOOLS, stream=True):
            seen += [c.function.name for c in chunk.message.tool_calls or []]
    assert seen == ["get_weather"]  # the first call's line, then the in-band error line
    assert "an error was encountered while running the model" in caught.value.error


def test_ollama_arguments_sent_back_as_a_string_are_a_400(fake_server: FakeServer) -> None:
    history = [*ASK, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abcdefgh", "function": {"index": 0, "name": "get_weather", "arguments": HANGZHOU}}]},
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "call_abcdefgh", "content": "晴"}]
    response = httpx.post(fake_server.url + "/api/chat", json={"model": "qwen3:8b", "messages": history}, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": OLLAMA_ARGUMENTS_NOT_OBJECT}
    assert response.content == b'{"error":"Value looks like object, but can\'t find closing \'}\' symbol"}'
    assert fake_server.pending == 0  # refused before a reply was taken


# ----------------------------------------------------------------------------------------------------
# DashScope compatible mode
# ----------------------------------------------------------------------------------------------------


def test_openai_stream_helper_assembles_two_interleaved_calls_cut_inside_hangzhou(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(
        tool_calls=[Call("get_weather", {"city": "杭州"}, split_at=(8, 11)),  # ' "杭' | '州"}'
                    Call("get_time", empty_delta=True)],
        interleave_calls=True,
    ))
    client = openai_client(fake_server)
    with client.chat.completions.stream(model="qwen-plus", messages=ASK, tools=TOOLS, tool_choice="auto",
                                        parallel_tool_calls=True, stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", HANGZHOU),
                                                                       ("get_time", "{}")]
    assert all(DASHSCOPE_ID.fullmatch(c.id) for c in calls) and calls[0].id != calls[1].id
    assert final.usage is not None and final.usage.completion_tokens > 0
    request = fake_server.last("/chat/completions")
    assert request.tool_names == ["get_weather", "get_time"]
    assert request.tool_choice == "auto" and request.parallel_tool_calls is True


def test_dashscope_deltas_are_byte_shaped_like_the_capture(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}, split_at=(8, 11), empty_delta=True)]))
    events, chunks = sse(fake_server, {"model": "qwen-plus", "messages": ASK, "tools": TOOLS, "stream": True})
    call_id = chunks[0]["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert DASHSCOPE_ID.fullmatch(call_id)
    choices = [e.split(b',"object":')[0].decode() for e in events[:-1]]
    assert choices == [
        'data: {"choices":[{"delta":{"content":null,"tool_calls":[{"index":0,"id":"' + call_id + '","type":"function",'
        '"function":{"name":"get_weather","arguments":"{\\"city\\":"}}],"role":"assistant"},"finish_reason":null,'
        '"index":0,"logprobs":null}]',
        'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":" \\"杭"},"index":0,"id":"",'
        '"type":"function"}]},"index":0}]',
        'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"州\\"}"},"index":0,"id":"",'
        '"type":"function"}]},"index":0}]',
        'data: {"choices":[{"delta":{"content":null,"tool_calls":[{"function":{},"index":0,"id":"",'
        '"type":"function"}]},"finish_reason":null,"index":0,"logprobs":null}]',
        'data: {"choices":[{"finish_reason":"tool_calls","delta":{},"index":0,"logprobs":null}]',
    ]
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1


def test_openai_manual_accumulation_by_index_never_overwrites_with_empty_ids(fake_server: FakeServer) -> None:
    """What a provider does by hand: key by index, keep the first id/name, join the argument pieces."""
    fake_server.enqueue(Stream(answer="好的，", tool_calls=[
        Call("get_weather", {"city": "杭州"}, pieces=["", '{"ci', 'ty": "杭', '州"}']),
        Call("get_weather", {"city": "北京"}, piece_size=2),
    ]))
    stream = openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS,
                                                                parallel_tool_calls=True, stream=True)
    calls: dict[int, dict[str, str]] = {}
    text, finish, empty_ids = "", None, 0
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                empty_ids += delta.id == ""
                entry["id"] = entry["id"] or (delta.id or "")
                if delta.function is not None:
                    entry["name"] = entry["name"] or (delta.function.name or "")
                    entry["arguments"] += delta.function.arguments or ""
    assert text == "好的，" and finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "杭州"}), ("get_weather", {"city": "北京"})]
    assert empty_ids >= 5 and all(DASHSCOPE_ID.fullmatch(c["id"]) for c in calls.values())


def test_one_call_per_response_unless_parallel_calls_are_asked_for(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    two = [Call("get_weather", {"city": "杭州"}), Call("get_time")]
    fake_server.enqueue(Stream(tool_calls=two), Stream(tool_calls=two), Stream(tool_calls=two))
    names = []
    for parallel in (None, False, True):
        extra = {} if parallel is None else {"parallel_tool_calls": parallel}
        with client.chat.completions.stream(model="qwen-plus", messages=ASK, tools=TOOLS, **extra) as stream:
            names.append([c.function.name for c in stream.get_final_completion().choices[0].message.tool_calls])
    assert names == [["get_weather"], ["get_weather"], ["get_weather", "get_time"]]
    fake_server.single_call_unless_parallel = False
    fake_server.enqueue(Stream(tool_calls=two))
    reply = client.chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS)
    assert len(reply.choices[0].message.tool_calls) == 2


def test_invalid_argument_json_arrives_verbatim(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", '{"city": "杭', split_at=(5,))]),
                        Stream(tool_calls=[Call("get_weather", "")]))
    client = openai_client(fake_server)
    with client.chat.completions.stream(model="qwen-plus", messages=ASK, tools=TOOLS) as stream:
        call = stream.get_final_completion().choices[0].message.tool_calls[0]
    assert call.function.arguments == '{"city": "杭'
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    with client.chat.completions.stream(model="qwen-plus", messages=ASK, tools=TOOLS) as stream:
        assert stream.get_final_completion().choices[0].message.tool_calls[0].function.arguments == ""


def test_utf8_characters_cut_across_http_chunks_still_assemble(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"})], cut_chars=True))
    _, chunks = http_chunks(fake_server, "/compatible-mode/v1/chat/completions",
                            {"model": "qwen-plus", "messages": ASK, "tools": TOOLS, "stream": True})
    cut = [c for c in chunks if c[-1] >= 0xC0]
    assert cut, "no HTTP chunk ends inside a UTF-8 character"
    with pytest.raises(UnicodeDecodeError):
        cut[0].decode("utf-8")
    assert "杭州".encode() in b"".join(chunks)

    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}, split_at=(11,))], cut_chars=True))
    with openai_client(fake_server).chat.completions.stream(model="qwen-plus", messages=ASK, tools=TOOLS) as stream:
        assert stream.get_final_completion().choices[0].message.tool_calls[0].function.arguments == HANGZHOU


def test_dashscope_nonstream_tool_calls_and_thinking_stream(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")]))
    reply = openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS,
                                                               parallel_tool_calls=True)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == ""
    assert [(c.function.name, c.function.arguments, c.type) for c in choice.message.tool_calls] == [
        ("get_weather", HANGZHOU, "function"), ("get_time", "{}", "function")]

    fake_server.enqueue(Stream(reasoning="查一下。", tool_calls=[Call("get_time")]))
    stream = openai_client(fake_server).chat.completions.create(
        model="qwen-plus", messages=ASK, tools=TOOLS, stream=True, extra_body={"enable_thinking": True})
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.model_extra.get("reasoning_content") == ""
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    assert reasoning == "查一下。"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ----------------------------------------------------------------------------------------------------
# llama.cpp dialect (llama-cpp-python's server): a named tool_choice is the only way to a call
# ----------------------------------------------------------------------------------------------------

NAMED = {"type": "function", "function": {"name": "get_weather"}}
PARIS_TOKENS = ["{", ' "', "city", '":', ' "', "Paris", '"', " }"]


def norm_llama(data: bytes) -> bytes:
    data = re.sub(rb'"created": ?\d+', b'"created": 0', data)
    return re.sub(rb"cmpl-[0-9a-f-]{36}", b"cmpl-ID", data)


def test_llamacpp_forced_call_matches_the_captures(fake_server: FakeServer) -> None:
    fake_server.dialect = "llama.cpp"
    name = "llamacpp_stream_tool_call.sse"
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", '{ "city": "Paris" }', pieces=PARIS_TOKENS)]))
    head, chunks = http_chunks(fake_server, "/v1/chat/completions", manifest()[name]["request"])
    assert b"content-type: text/event-stream; charset=utf-8" in head.lower()
    expected = [e + b"\n\n" for e in load_fixture(name).split(b"\n\n") if e]
    assert [norm_llama(c) for c in chunks] == [norm_llama(e) for e in expected]
    name = "llamacpp_nonstream_tool_call.json"
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", '{ "city": "Paris" }')], prompt_tokens=37,
                               completion_tokens=8))
    response = httpx.post(fake_server.url + "/v1/chat/completions", json=manifest()[name]["request"], timeout=5)
    assert norm_llama(response.content) == norm_llama(load_fixture(name))


def test_llamacpp_repeats_id_and_name_in_every_delta(fake_server: FakeServer) -> None:
    """The trap the capture shows: the openai SDK's own accumulator joins the repeated names and ids;
    keeping the first id and name (as llmchat's assembler must) gives the call."""
    fake_server.dialect = "llama.cpp"
    client = openai.OpenAI(base_url=fake_server.url + "/v1", api_key="k", timeout=5, max_retries=0)
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "Paris"})]))
    with client.chat.completions.stream(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice=NAMED) as stream:
        joined = stream.get_final_completion().choices[0].message.tool_calls[0]
    assert joined.function.name == "get_weather" * 3 and joined.function.arguments == '{"city": "Paris"}'

    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "Paris"})]))
    name, call_id, arguments, finish = "", "", "", None
    for chunk in client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice=NAMED,
                                                stream=True):
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            call_id = call_id or delta.id or ""
            name = name or delta.function.name or ""
            arguments += delta.function.arguments or ""
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")
    assert re.fullmatch(r"call__0_get_weather_cmpl-[0-9a-f-]{36}", call_id)


@pytest.mark.parametrize("stream", [False, True])
def test_llamacpp_refuses_an_assistant_turn_with_null_content(fake_server: FakeServer, stream: bool) -> None:
    fake_server.dialect = "llama.cpp"
    name = "llamacpp_error_assistant_content_null.json"
    request = {**json.loads(json.dumps(manifest()[name]["request"])), "stream": stream}  # a copy: edited below
    response = httpx.post(fake_server.url + "/v1/chat/completions", json=request, timeout=5)
    assert (response.status_code, response.content) == (500, load_fixture(name))
    request["messages"][1]["content"] = ""  # the form llmchat sends: accepted
    fake_server.enqueue(Stream(answer="Sunny."))
    assert httpx.post(fake_server.url + "/v1/chat/completions", json=request, timeout=5).status_code == 200


def test_llamacpp_ignores_tools_without_a_named_choice(fake_server: FakeServer) -> None:
    fake_server.dialect = "llama.cpp"
    client = openai.OpenAI(base_url=fake_server.url + "/v1", api_key="k", timeout=5, max_retries=0)
    for choice in (None, "auto", "required"):
        fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "Paris"})]))
        extra = {} if choice is None else {"tool_choice": choice}
        reply = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], **extra)
        assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.content == "You said: " + ASK[0]["content"]
    fake_server.enqueue(Stream(answer="ignored"))  # no scripted call: the named tool is called, arguments {}
    reply = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice=NAMED)
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments, reply.choices[0].message.content) == ("get_weather", "{}",
                                                                                                None)


# ----------------------------------------------------------------------------------------------------
# Follow-up validation (DashScope's 400s) and the refusing server
# ----------------------------------------------------------------------------------------------------


def bad_request(server: FakeServer, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Send through the openai client, expect its BadRequestError, and return the raw error body."""
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(server).chat.completions.create(model="qwen-plus", messages=messages, **extra)
    assert caught.value.status_code == 400
    return caught.value.response.json()


def test_a_complete_follow_up_is_accepted_and_readable(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(answer="晴，22°C；现在 10:00。"))
    history = [*ASK, *tool_round([openai_call("call_a"), openai_call("call_b", "get_time", "{}")],
                                 [("call_b", "10:00"), ("call_a", "晴, 22°C")])]
    reply = openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=history, tools=TOOLS)
    assert reply.choices[0].message.content == "晴，22°C；现在 10:00。"
    request = fake_server.last("/chat/completions")
    assert [c["id"] for c in request.sent_tool_calls] == ["call_a", "call_b"]
    assert [(m["tool_call_id"], m["content"]) for m in request.tool_results] == [("call_b", "10:00"),
                                                                                 ("call_a", "晴, 22°C")]


def test_a_tool_message_answering_no_call_is_a_400(fake_server: FakeServer) -> None:
    wrong_id = [*ASK, *tool_round([openai_call("call_a")], [("call_zzz", "晴")])]
    body = bad_request(fake_server, wrong_id)
    assert body["error"] == {
        "code": "invalid_parameter_error", "param": None,
        "message": '<400> InternalError.Algo.InvalidParameter: messages with role "tool" must be a response to a '
                   'preceeding message with "tool_calls".',
        "type": "invalid_request_error",
    }
    assert body["id"] == "chatcmpl-" + body["request_id"]
    orphan = [*ASK, {"role": "tool", "tool_call_id": "call_a", "content": "晴"}]
    assert bad_request(fake_server, orphan)["error"]["message"].endswith(DASHSCOPE_TOOL_NOT_A_RESPONSE)
    raw = httpx.post(fake_server.url + "/compatible-mode/v1/chat/completions", json={"model": "qwen-plus",
                                                                                     "messages": orphan})
    assert raw.content.startswith(b'{"error":{"code":"invalid_parameter_error","param":null,"message":"<400> ')


def test_fewer_tool_messages_than_calls_is_a_400_naming_the_message(fake_server: FakeServer) -> None:
    history = [*ASK, *tool_round([openai_call("call_a"), openai_call("call_b", "get_time", "{}")],
                                 [("call_a", "晴")]), {"role": "user", "content": "还有呢？"}]
    message = bad_request(fake_server, history)["error"]["message"]
    assert message == (
        '<400> InternalError.Algo.InvalidParameter: An assistant message with "tool_calls" must be followed by tool '
        'messages responding to each "tool_call_id". The following tool_call_ids did not have response messages: '
        "message[3].role"
    )
    assert bad_request(fake_server, history[:-1])["error"]["message"].endswith("message[3].role")


@pytest.mark.parametrize("arguments", [{"city": "杭州"}, None, '{"city": "杭'])
def test_arguments_sent_back_must_be_a_json_string(fake_server: FakeServer, arguments: Any) -> None:
    history = [*ASK, *tool_round([openai_call("call_a", arguments=arguments)], [("call_a", "晴")])]
    message = bad_request(fake_server, history)["error"]["message"]
    assert message == "<400> InternalError.Algo.InvalidParameter: " + DASHSCOPE_ARGUMENTS_NOT_JSON
    if isinstance(arguments, str):  # a server that does not parse them (the knob) takes invalid JSON
        fake_server.check_tool_arguments = False
        assert openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=history).choices


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([{"type": "function"}], "Missing required parameter: 'tools[0].function'."),
        ([WEATHER, {"type": "function", "function": {"description": "x"}}],
         "Missing required parameter: 'tools[1].function.name'."),
        ([{"type": "retrieval", "function": {"name": "x"}}],
         "Invalid value for 'tools[0].type': supported values are: 'function'."),
        ([{"type": "function", "function": {"name": "x", "parameters": "none"}}],
         "Invalid type for 'tools[0].function.parameters': expected an object."),
    ],
)
def test_malformed_tools_are_a_400(fake_server: FakeServer, tools: list[Any], expected: str) -> None:
    body = bad_request(fake_server, ASK, tools=tools)
    assert body["error"]["message"] == "<400> InternalError.Algo.InvalidParameter: " + expected


def test_tool_choice_checks(fake_server: FakeServer) -> None:
    body = bad_request(fake_server, ASK, tools=TOOLS, tool_choice="required", stream=True,
                       extra_body={"enable_thinking": True})
    assert body["error"]["message"].endswith(
        "The tool_choice parameter does not support being set to required or object in thinking mode")
    body = bad_request(fake_server, ASK, tools=TOOLS,
                       tool_choice={"type": "function", "function": {"name": "get_news"}})
    assert body["error"]["message"].endswith(
        'Invalid value for "tool_choice": no function named "get_news" was specified in the "tools" parameter.')
    named = {"type": "function", "function": {"name": "get_time"}}
    assert openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS,
                                                              tool_choice=named).choices


def test_a_server_that_refuses_tools_answers_like_vllm(fake_server: FakeServer) -> None:
    fake_server.refuse_tools = True
    body = bad_request(fake_server, ASK, tools=TOOLS)
    assert body == {"error": {"message": VLLM_NO_AUTO_TOOL_CHOICE, "type": "BadRequestError", "param": None,
                              "code": 400}}
    assert bad_request(fake_server, ASK, tools=TOOLS, tool_choice="auto") == body
    raw = httpx.post(fake_server.url + "/v1/chat/completions", json={"model": "qwen-plus", "messages": ASK,
                                                                     "tools": TOOLS})
    assert raw.content == (b'{"error":{"message":"\\"auto\\" tool choice requires --enable-auto-tool-choice and '
                           b'--tool-call-parser to be set","type":"BadRequestError","param":null,"code":400}}')
    client = openai_client(fake_server)
    assert client.chat.completions.create(model="qwen-plus", messages=ASK).choices  # without tools: fine
    assert client.chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS, tool_choice="none").choices


def test_a_stream_cut_in_the_middle_of_the_call_deltas(fake_server: FakeServer) -> None:
    fake_server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}, split_at=(8, 11))], cut_after=2))
    stream = openai_client(fake_server).chat.completions.create(model="qwen-plus", messages=ASK, tools=TOOLS,
                                                                stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen += [d.function.arguments for c in chunk.choices for d in c.delta.tool_calls or [] if d.function]
    assert seen == ['{"city":', ' "杭']  # two call deltas, then the connection dropped without [DONE]


# ----------------------------------------------------------------------------------------------------
# A whole tool loop, as the usage guide scripts it
# ----------------------------------------------------------------------------------------------------


def test_a_round_of_two_parallel_calls_then_the_final_answer(fake_server: FakeServer) -> None:
    fake_server.enqueue(
        Stream(tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")]),
        Stream(answer="杭州晴，现在 10:00。"),
    )
    client = openai_client(fake_server)
    messages: list[Any] = list(ASK)
    for _ in range(3):
        with client.chat.completions.stream(model="qwen-plus", messages=messages, tools=TOOLS,
                                            parallel_tool_calls=True) as stream:
            message = stream.get_final_completion().choices[0].message
        if not message.tool_calls:
            break
        messages.append({"role": "assistant", "content": message.content or "",
                         "tool_calls": [openai_call(c.id, c.function.name, c.function.arguments)
                                        for c in message.tool_calls]})
        messages += [{"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"}
                     for c in message.tool_calls]
    assert message.content == "杭州晴，现在 10:00。"
    assert len(fake_server.chats) == 2 and fake_server.pending == 0
    first, second = fake_server.chats
    assert first.tool_results == [] and [m["content"] for m in second.tool_results] == [
        "result of get_weather", "result of get_time"]
    assert [c["id"] for c in second.sent_tool_calls] == [m["tool_call_id"] for m in second.tool_results]
