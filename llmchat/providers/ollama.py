"""Ollama's native /api/chat through the `ollama` package.

Native rather than /v1 because only the native API carries `think`, `options` such as num_ctx, and
exact generation timings; and because a mid-stream error is visible there but lost on /v1.

The blocking path (`stream`, used by `ask` and the REPL) and the asyncio path (`astream`, used by
batch) differ only in how they wait: request building, turning a chunk into events and mapping an
exception into an `llmchat.errors` error are shared, so both report failures in the same words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import ollama

from llmchat.errors import (
    BadRequest,
    ModelNotFound,
    ProviderError,
    RateLimited,
    ServerError,
    StreamBroken,
    ThinkingUnsupported,
    Timeout,
    Unreachable,
)
from llmchat.events import Answer, Event, Finish, Notice, Reasoning, Usage
from llmchat.providers import ChatOptions, Message, ModelInfo
from llmchat.providers.thinktags import ThinkTagSplitter


class OllamaProvider:
    def __init__(self, host: str, read_timeout: float) -> None:
        self.host = host
        self._read_timeout = read_timeout
        self._timeout = httpx.Timeout(connect=5.0, read=read_timeout, write=30.0, pool=5.0)
        self._client = ollama.Client(host=host, timeout=self._timeout)
        self._async_client: ollama.AsyncClient | None = None  # built on first `astream`

    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        request = self._request(messages, options)
        try:
            yield from self._stream(request, options.model)
        except ThinkingUnsupported:
            # Only raised before any output: asking a non-thinking model to think is a 400 up front.
            yield _without_thinking(request, options.model)
            yield from self._stream(request, options.model)

    async def astream(self, messages: Sequence[Message], options: ChatOptions) -> AsyncIterator[Event]:
        """`stream` for asyncio: same request, events and errors, many turns in flight on one loop."""
        request = self._request(messages, options)
        try:
            async for event in self._astream(request, options.model):
                yield event
        except ThinkingUnsupported:
            yield _without_thinking(request, options.model)
            async for event in self._astream(request, options.model):
                yield event

    async def aclose(self) -> None:
        """Close the asyncio client's connections while its event loop still runs; the next use reopens."""
        client, self._async_client = self._async_client, None
        if client is not None:
            await client.close()

    def _request(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        sampling = {
            "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
            "seed": options.seed, "stop": list(options.stop) if options.stop else None,
            "num_predict": options.max_tokens, "num_ctx": options.context_window,
        }
        request: dict[str, Any] = {
            "model": options.model,
            "messages": [dict(m) for m in messages],
            "stream": True,
            "options": {**{k: v for k, v in sampling.items() if v is not None}, **options.extra} or None,
        }
        if options.think is not None:  # unset: leave it to the server's default for the model
            request["think"] = options.think
        if options.format is not None:
            request["format"] = options.format
        return request

    def _stream(self, request: dict[str, Any], model: str) -> Iterator[Event]:
        reader = _ChunkReader()
        chunks = None
        try:
            chunks = self._client.chat(**request)
            for chunk in chunks:
                yield from reader.feed(chunk)
                if reader.done:
                    return
            yield from reader.flush()
            raise self._unfinished()
        except Exception as exc:
            if (error := self._translate(exc, model, reader.output)) is None:
                raise
            raise error from None
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                chunks.close()

    async def _astream(self, request: dict[str, Any], model: str) -> AsyncIterator[Event]:
        reader = _ChunkReader()
        chunks = None
        try:
            chunks = await self._aclient().chat(**request)
            async for chunk in chunks:
                for event in reader.feed(chunk):
                    yield event
                if reader.done:
                    return
            for event in reader.flush():
                yield event
            raise self._unfinished()
        except Exception as exc:
            if (error := self._translate(exc, model, reader.output)) is None:
                raise
            raise error from None
        finally:
            if chunks is not None and hasattr(chunks, "aclose"):
                await chunks.aclose()

    def _aclient(self) -> ollama.AsyncClient:
        if self._async_client is None:
            self._async_client = ollama.AsyncClient(host=self.host, timeout=self._timeout)
        return self._async_client

    def _unfinished(self) -> StreamBroken:
        return StreamBroken(
            f"Ollama at {self.host} ended the answer without finishing it.",
            hint="The server may have crashed or been stopped; check `ollama ps` and its logs, then retry.",
        )

    def _translate(self, exc: Exception, model: str, output: bool) -> ProviderError | None:
        """The error to raise for `exc`, or None to let it through unchanged (ours already, or a bug).

        The checks run in this order on purpose: httpx's ConnectTimeout is also a TimeoutException and
        a TransportError, and a refused connection must read as "cannot reach", not as a broken stream.
        """
        if isinstance(exc, ProviderError):
            return None
        if isinstance(exc, ollama.ResponseError):
            return self._response_error(exc, model)
        if isinstance(exc, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
            return Unreachable(
                f"Cannot reach Ollama at {self.host}.",
                hint="Start it with `ollama serve`, or point the profile's base_url (or OLLAMA_HOST) at your server.",
            )
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(
                f"Ollama at {self.host} sent nothing for {self._read_timeout:g} s.",
                hint="The model may still be loading or the server is overloaded; raise the profile's timeout "
                "or LLMCHAT_TIMEOUT, or retry.",
            )
        if isinstance(exc, (httpx.TransportError, ValueError)):
            what = "the connection broke" if isinstance(exc, httpx.TransportError) else "it sent malformed data"
            return StreamBroken(
                f"Ollama at {self.host} stopped mid-answer: {what}."
                if output else f"Ollama at {self.host} failed before answering: {what}.",
                hint="Retry; if it keeps happening, check the server's logs.",
            )
        return None

    def _response_error(self, exc: ollama.ResponseError, model: str) -> ProviderError:
        status, text = exc.status_code, str(exc.error)
        if status == -1:  # in-band {"error": …} line after the stream started
            return StreamBroken(
                f"Ollama stopped mid-answer: {text}",
                hint="Retry; if it keeps happening, check `ollama ps` and the logs.",
            )
        if status == 404 and text.strip() == "404 page not found":
            return BadRequest(
                f"{self.host} answered 404 for /api/chat: this does not look like Ollama's native API.",
                hint="Use the server root as base_url (e.g. http://localhost:11434, without /v1).",
            )
        if status == 404:
            return ModelNotFound(
                f"Ollama at {self.host} does not have the model '{model}'.",
                hint=f"Download it with `ollama pull {model}`, or list what you have with `llmchat models`.",
            )
        if status == 400 and "does not support thinking" in text:
            return ThinkingUnsupported(f"{model} does not support thinking.", hint="Use --no-think.")
        if status == 429:
            return RateLimited(f"Ollama is rate-limiting requests: {text}", hint="Wait a moment and retry.")
        if status >= 500:
            return ServerError(f"Ollama failed ({status}): {text}", hint="Retry; if it persists, check its logs.")
        return BadRequest(f"Ollama refused the request ({status}): {text}", hint="Check the profile's options.")

    def list_models(self) -> list[ModelInfo]:
        try:
            listing = self._client.list()
        except ollama.ResponseError as exc:
            raise self._response_error(exc, "") from None
        except (ConnectionError, httpx.TransportError):
            raise Unreachable(
                f"Cannot reach Ollama at {self.host}.",
                hint="Start it with `ollama serve`, or point the profile's base_url (or OLLAMA_HOST) at your server.",
            ) from None
        models = []
        for entry in listing.models:
            details = entry.details
            models.append(ModelInfo(
                name=entry.model or "", size=entry.size,
                family=details.family if details else None,
                parameters=details.parameter_size if details else None,
                quantization=details.quantization_level if details else None,
                modified=entry.modified_at.strftime("%Y-%m-%d") if entry.modified_at else None,
            ))
        return models


class _ChunkReader:
    """Turns the stream's `ChatResponse` objects into events; one per request, for either path.

    Returns lists rather than yielding, so the sync and async loops share it unchanged; `output`
    says whether any text was produced yet (it decides "stopped mid-answer" vs "failed before").
    """

    def __init__(self) -> None:
        self._splitter = ThinkTagSplitter()
        self.output = False
        self.done = False

    def feed(self, chunk: ollama.ChatResponse) -> list[Event]:
        events: list[Event] = []
        message = chunk.message
        if message.thinking:
            events.append(Reasoning(message.thinking))
        if message.content:
            events.extend(self._splitter.feed(message.content))
        self.output = self.output or any(isinstance(e, (Reasoning, Answer)) for e in events)
        if chunk.done:
            events.extend(self._splitter.flush())
            events.append(_usage(chunk))
            events.append(Finish(chunk.done_reason))
            self.done = True
        return events

    def flush(self) -> list[Event]:
        """The stream ended without `done`: whatever text the splitter held back, before the error."""
        return list(self._splitter.flush())


def _without_thinking(request: dict[str, Any], model: str) -> Notice:
    """Drop `think` from the request for the second try, and say so once."""
    request.pop("think")
    return Notice(f"{model} does not support thinking; answering without it.")


def _usage(final: ollama.ChatResponse) -> Usage:
    prompt, completion = final.prompt_eval_count, final.eval_count
    return Usage(
        prompt=prompt, completion=completion,
        total=prompt + completion if prompt is not None and completion is not None else None,
        eval_seconds=final.eval_duration / 1e9 if final.eval_duration else None,
    )
