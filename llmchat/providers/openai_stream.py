"""Reading an OpenAI-compatible stream: the SDK's open response, line by line, into events.

The SDK stays the client (connection pool, headers, timeouts, the status-error mapping on the way in);
only the body is read here, as server-sent events whose JSON is decoded with `json.loads` and read as
plain dicts. Iterating the SDK's `Stream` instead builds a pydantic `ChatCompletionChunk` per event,
4.5× the cost on a long answer. What the SDK's iteration raises is raised the same way here: an
`{"error": …}` event is `openai.APIError`, a transport failure mid-body `APITimeoutError` or
`APIConnectionError` (with the transport's exception as the cause), a line that is not JSON ValueError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import openai

from llmchat.core.events import Answer, Event, Reasoning, Usage
from llmchat.providers.sse import LineSplitter, SSELines
from llmchat.providers.thinktags import ThinkTagSplitter
from llmchat.providers.tool_wire import CallAssembler


def _field(obj: Any, name: str) -> Any:
    """A field of a dict (the stream) or of an SDK object (a non-streamed answer); None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class DeltaReader:
    """Turns stream chunks (decoded JSON objects) into events; one per request, for either path.

    Returns lists rather than yielding, so the sync and async loops share it unchanged. `output`
    says whether any text was produced yet; `finished` holds the finish_reason once one arrives.
    A chunk whose shape is not the API's (a choice that is not an object, text that is not a string)
    is a ValueError: a malformed stream, like a line that is not JSON.
    """

    def __init__(self) -> None:
        self._splitter = ThinkTagSplitter()
        self.output = False
        self.finished: str | None = None
        self.chunks = 0  # none at all: llama.cpp's 200-with-an-empty-stream for an error (prompt too long)
        self._calls = CallAssembler()

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        self.chunks += 1
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else _malformed("a choice")
            if not isinstance(delta, dict):
                if delta is not None:
                    _malformed("a delta")
                delta = {}
            # Not part of the OpenAI schema: DashScope says reasoning_content, Ollama's /v1
            # says reasoning, and servers that think not at all send neither.
            if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
                events.append(Reasoning(_text(reasoning)))
            if content := delta.get("content"):
                if self._splitter.settled and type(content) is str:
                    events.append(Answer(content))
                else:
                    events.extend(self._splitter.feed(_text(content)))
            if tool_calls := delta.get("tool_calls"):
                self._calls.feed(tool_calls)
            if reason := choice.get("finish_reason"):
                self.finished = _text(reason)
        if events and not self.output:
            self.output = any(isinstance(e, (Reasoning, Answer)) for e in events)
        if usage := chunk.get("usage"):
            events.append(usage_of(usage))
        return events

    def flush(self) -> list[Event]:
        """End of the stream: the text the inline-<think> splitter was still holding back."""
        return list(self._splitter.flush())

    def calls(self) -> list[Event]:
        """The tool calls the response made, complete, once the stream ended well (before its Finish)."""
        return list(self._calls.calls()) if self._calls else []


def _malformed(what: str) -> Any:
    raise ValueError(f"{what} in the stream is not a JSON object")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a text field in the stream is not a string")
    return value


#: What the HTTP transport raises mid-body, as the SDK maps it (openai._streaming.Stream._iter_events):
#: a timeout, then any other request error. httpx2 under openai 3.x; `httpx` if the SDK ever goes back.
try:
    from openai._httpx2 import request_exceptions as _request_errors
    from openai._httpx2 import timeout_exceptions as _timeouts
except ImportError:  # pragma: no cover (another 3.x layout)
    import httpx

    def _timeouts() -> tuple[type[Exception], ...]:
        return (httpx.TimeoutException,)

    def _request_errors() -> tuple[type[Exception], ...]:
        return (httpx.RequestError,)


def _chunk(data: str, request: Any) -> dict[str, Any]:
    """One event's JSON; an `{"error": …}` object is the server failing mid-stream (APIError, as the SDK)."""
    chunk = json.loads(data)  # not JSON: ValueError, "a malformed stream"
    if not isinstance(chunk, dict):
        _malformed("a chunk")
    if error := chunk.get("error"):
        message = error.get("message") if isinstance(error, Mapping) else None
        raise openai.APIError(message=message if message and isinstance(message, str)
                              else "An error occurred during streaming", request=request, body=error)
    return chunk


def chunks(response: Any) -> Iterator[dict[str, Any]]:
    """The chunks of an open streaming response, read as raw lines: no SDK object per chunk."""
    events, lines = SSELines(), LineSplitter()
    try:
        for raw in response.iter_bytes():
            for line in lines.feed(raw):
                if (data := events.feed(line)) is not None:
                    yield _chunk(data, response.request)
                elif events.done:
                    return
        for line in lines.end():
            events.feed(line)  # an event without its closing blank line is dropped, as the SDK does
    except _timeouts() as err:
        raise openai.APITimeoutError(request=response.request) from err
    except _request_errors() as err:
        raise openai.APIConnectionError(request=response.request) from err


async def achunks(response: Any) -> AsyncIterator[dict[str, Any]]:
    """`chunks` for asyncio."""
    events, lines = SSELines(), LineSplitter()
    try:
        async for raw in response.aiter_bytes():
            for line in lines.feed(raw):
                if (data := events.feed(line)) is not None:
                    yield _chunk(data, response.request)
                elif events.done:
                    return
        for line in lines.end():
            events.feed(line)
    except _timeouts() as err:
        raise openai.APITimeoutError(request=response.request) from err
    except _request_errors() as err:
        raise openai.APIConnectionError(request=response.request) from err


def usage_of(usage: Any) -> Usage:
    """A usage object: a dict from the stream, the SDK's model from a non-streamed answer."""
    completion_details = _field(usage, "completion_tokens_details")
    prompt_details = _field(usage, "prompt_tokens_details")
    return Usage(
        prompt=_field(usage, "prompt_tokens"), completion=_field(usage, "completion_tokens"),
        total=_field(usage, "total_tokens"),
        reasoning=_field(completion_details, "reasoning_tokens"), cached=_field(prompt_details, "cached_tokens"),
    )
