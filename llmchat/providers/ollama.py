"""Ollama's native /api/chat through the `ollama` package.

Native rather than /v1 because only the native API carries `think`, `options` such as num_ctx, and
exact generation timings; and because a mid-stream error is visible there but lost on /v1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
from llmchat.events import Event, Finish, Notice, Reasoning, Usage
from llmchat.providers import ChatOptions, Message, ModelInfo
from llmchat.providers.thinktags import ThinkTagSplitter


class OllamaProvider:
    def __init__(self, host: str, read_timeout: float) -> None:
        self.host = host
        self._read_timeout = read_timeout
        timeout = httpx.Timeout(connect=5.0, read=read_timeout, write=30.0, pool=5.0)
        self._client = ollama.Client(host=host, timeout=timeout)

    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        request = self._request(messages, options)
        try:
            yield from self._stream(request, options.model)
        except ThinkingUnsupported:
            # Only raised before any output: asking a non-thinking model to think is a 400 up front.
            request.pop("think")
            yield Notice(f"{options.model} does not support thinking; answering without it.")
            yield from self._stream(request, options.model)

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
        return request

    def _stream(self, request: dict[str, Any], model: str) -> Iterator[Event]:
        splitter = ThinkTagSplitter()
        output = False
        chunks = None
        try:
            chunks = self._client.chat(**request)
            for chunk in chunks:
                message = chunk.message
                if message.thinking:
                    output = True
                    yield Reasoning(message.thinking)
                if message.content:
                    for event in splitter.feed(message.content):
                        output = True
                        yield event
                if chunk.done:
                    yield from splitter.flush()
                    yield _usage(chunk)
                    yield Finish(chunk.done_reason)
                    return
            yield from splitter.flush()
            raise StreamBroken(
                f"Ollama at {self.host} ended the answer without finishing it.",
                hint="The server may have crashed or been stopped; check `ollama ps` and its logs, then retry.",
            )
        except ProviderError:
            raise
        except ollama.ResponseError as exc:
            raise self._response_error(exc, model) from None
        except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout):
            raise Unreachable(
                f"Cannot reach Ollama at {self.host}.",
                hint="Start it with `ollama serve`, or point the profile's base_url (or OLLAMA_HOST) at your server.",
            ) from None
        except httpx.TimeoutException:
            raise Timeout(
                f"Ollama at {self.host} sent nothing for {self._read_timeout:g} s.",
                hint="The model may still be loading or the server is overloaded; raise the profile's timeout "
                "or LLMCHAT_TIMEOUT, or retry.",
            ) from None
        except (httpx.TransportError, ValueError) as exc:
            what = "the connection broke" if isinstance(exc, httpx.TransportError) else "it sent malformed data"
            raise StreamBroken(
                f"Ollama at {self.host} stopped mid-answer: {what}."
                if output else f"Ollama at {self.host} failed before answering: {what}.",
                hint="Retry; if it keeps happening, check the server's logs.",
            ) from None
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                chunks.close()

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


def _usage(final: ollama.ChatResponse) -> Usage:
    prompt, completion = final.prompt_eval_count, final.eval_count
    return Usage(
        prompt=prompt, completion=completion,
        total=prompt + completion if prompt is not None and completion is not None else None,
        eval_seconds=final.eval_duration / 1e9 if final.eval_duration else None,
    )
