"""The byte-level line splitters the providers read streams with, against the splitting they replace.

Every way of cutting a recorded body into reads must give the lines httpx's `iter_lines` (Ollama's
NDJSON) or the openai SDK's SSE decoder (the OpenAI-compatible stream) gives for the whole body.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai._streaming import SSEDecoder

from llmchat.providers.ollama import NDJSONLines, _part
from llmchat.providers.sse import LineSplitter, SSELines

SSE_BODY = ('data: {"a": "é"}\r\n\r\n: ping\r\ndata: {"b":\ndata: 2}\n\nevent: x\rdata: {"c": 3}\r\r'
            'id: 7\n\n\ndata: [DONE]\n\n').encode()
NDJSON_BODY = '{"a": "é"}\n\n{"b": 2}\r\n  \n{"c": "中文"}'.encode()


def cuts(body: bytes):
    """The body cut into two reads at every byte, and into one-byte reads."""
    for at in range(len(body) + 1):
        yield [body[:at], body[at:]]
    yield [body[i:i + 1] for i in range(len(body))]


def sse_events(reads: list[bytes]) -> list[str]:
    splitter, events, out = LineSplitter(), SSELines(), []
    for read in reads:
        for line in splitter.feed(read):
            if (data := events.feed(line)) is not None:
                out.append(data)
    for line in splitter.end():
        events.feed(line)
    return out


def test_sse_lines_and_events_match_the_sdk_decoder_however_the_body_is_cut() -> None:
    expected = [event.data for event in SSEDecoder().iter_bytes(iter([SSE_BODY]))]
    expected = expected[:expected.index("[DONE]")]  # the SDK stops reading at [DONE]
    assert expected == ['{"a": "é"}', '{"b":\n2}', '{"c": 3}', "", ""]  # once an id came, every blank line is an event
    for reads in cuts(SSE_BODY):
        assert sse_events(reads) == expected, reads


def test_a_byte_that_is_not_utf8_is_a_malformed_stream() -> None:
    with pytest.raises(ValueError):
        LineSplitter().feed(b"data: \xff\n")


def test_ndjson_lines_match_httpx_however_the_body_is_cut() -> None:
    expected = [line for line in httpx.Response(200, content=NDJSON_BODY).iter_lines() if line.strip()]
    for reads in cuts(NDJSON_BODY):
        lines = NDJSONLines()
        got = [line for read in reads for line in lines.feed(read)] + lines.end()
        assert [line.strip() for line in got] == expected, reads


@pytest.mark.parametrize("line", ['{"done":false}', '{"done":false}\r', ' {"done":false}', '\t{"done":false} '])
def test_an_ndjson_line_is_read_as_json_loads_reads_it(line: str) -> None:
    assert _part(line) == json.loads(line) == {"done": False}


@pytest.mark.parametrize("line", ['{"done":false} {"done":true}', '{"done":false}x', "not json", '{"done":', "[1]",
                                  '"x"'])
def test_an_ndjson_line_that_is_not_one_object_is_malformed(line: str) -> None:
    with pytest.raises(ValueError):
        _part(line)
