"""Bailian (DashScope compatible mode) and any OpenAI-compatible endpoint through the `openai` package.

The SDK's own retries are turned off (max_retries=0): a silent 1.3 s of retrying hides what is going
on, so retrying is the turn loop's job, where it can be shown to the user.

`stream` (blocking: `ask`, the REPL) and `astream` (asyncio: batch) share the request body, the
per-chunk event extraction and the error mapping, so both fail with the same messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import openai

from llmchat.config import mask_url
from llmchat.errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    ProviderError,
    RateLimited,
    ServerError,
    StreamBroken,
    Timeout,
    Unreachable,
)
from llmchat.events import Answer, Event, Finish, Reasoning, Usage
from llmchat.images import attach, for_openai
from llmchat.providers import ChatOptions, Message, ModelInfo, connect_timeout, gateway_error, parse_retry_after
from llmchat.providers.thinktags import ThinkTagSplitter
from llmchat.structured import mention_json, response_format


class OpenAICompatProvider:
    #: The server fetches `image_url` URLs itself (Qwen-VL on Bailian documents only URLs).
    image_urls = True

    def __init__(
        self, base_url: str, api_key: str | None, read_timeout: float, *, bailian: bool,
        key_variable: str | None, region: str | None,
    ) -> None:
        self.base_url = mask_url(base_url)  # what messages show: never a password in the URL
        self._url = base_url
        self.bailian = bailian
        self._key = api_key
        self._key_variable = key_variable
        self._region = region
        self._read_timeout = read_timeout
        self._server = "Bailian" if bailian else self.base_url
        # Servers without keys (vLLM, LM Studio) accept any bearer token; the SDK insists on one.
        self._client = openai.OpenAI(**self._client_settings())
        self._async_client: openai.AsyncOpenAI | None = None  # built on first `astream`

    def _client_settings(self) -> dict[str, Any]:
        return {
            "base_url": self._url, "api_key": self._key or "EMPTY", "max_retries": 0,
            "timeout": openai.Timeout(self._read_timeout, connect=connect_timeout(self._read_timeout)),
        }

    def _aclient(self) -> openai.AsyncOpenAI:
        if self._async_client is None:
            self._async_client = openai.AsyncOpenAI(**self._client_settings())
        return self._async_client

    async def aclose(self) -> None:
        """Close the asyncio client's connections while its event loop still runs; the next use reopens."""
        client, self._async_client = self._async_client, None
        if client is not None:
            await client.close()

    def _body(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": options.model,
            "messages": for_openai(attach(messages, options.images)),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key in ("temperature", "top_p", "max_tokens", "seed"):
            if (value := getattr(options, key)) is not None:
                body[key] = value
        if options.stop:
            body["stop"] = list(options.stop)
        extra: dict[str, Any] = {}
        if self.bailian:
            if options.think is not None:
                extra["enable_thinking"] = options.think
            if options.thinking_budget is not None and options.think is not False:
                extra["thinking_budget"] = options.thinking_budget
            if options.search is not None:
                extra["enable_search"] = options.search
            if options.top_k is not None:
                extra["top_k"] = options.top_k
        extra.update(options.extra)
        if extra:
            body["extra_body"] = extra
        if options.format is not None:
            body["response_format"] = response_format(options.format)
            body["messages"] = mention_json(body["messages"], options.format)
        return body

    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        reader = _DeltaReader()
        try:
            with self._client.chat.completions.create(**self._body(messages, options)) as chunks:
                for chunk in chunks:
                    yield from reader.feed(chunk)
            yield from reader.flush()
        except Exception as exc:
            if (error := self._translate(exc, options.model, reader.output)) is None:
                raise
            raise error from None
        yield self._finish(reader)

    async def astream(self, messages: Sequence[Message], options: ChatOptions) -> AsyncIterator[Event]:
        """`stream` for asyncio: same body, events and errors, many turns in flight on one loop."""
        reader = _DeltaReader()
        try:
            async with await self._aclient().chat.completions.create(**self._body(messages, options)) as chunks:
                async for chunk in chunks:
                    for event in reader.feed(chunk):
                        yield event
            for event in reader.flush():
                yield event
        except Exception as exc:
            if (error := self._translate(exc, options.model, reader.output)) is None:
                raise
            raise error from None
        yield self._finish(reader)

    def _finish(self, reader: _DeltaReader) -> Finish:
        """The closing event, or StreamBroken when the stream ended without a finish_reason."""
        if reader.finished is None:
            raise StreamBroken(
                f"{self._server} ended the stream before the answer was complete.", hint="Retry the question."
            )
        return Finish(reader.finished)

    def _translate(self, exc: Exception, model: str, output: bool) -> ProviderError | None:
        """The error to raise for `exc`, or None to let it through unchanged (ours already, or a bug).

        The order matters: APITimeoutError is an APIConnectionError, and both (like APIStatusError)
        are APIError, which alone means an error event inside an otherwise good stream.
        """
        if isinstance(exc, ProviderError):
            return None
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, model)
        if isinstance(exc, openai.APITimeoutError) and type(exc.__cause__).__name__ == "ConnectTimeout":
            return Unreachable(  # httpx or httpx2, by name: the SDK's transport differs by major version
                f"Cannot reach {self._server} at {self.base_url} "
                f"(no connection within {connect_timeout(self._read_timeout):g} s).",
                hint="Check your network, proxy and the profile's base_url / region.",
            )
        if isinstance(exc, openai.APITimeoutError):
            return Timeout(
                f"{self._server} sent nothing for {self._read_timeout:g} s.",
                hint="Retry, or raise the profile's timeout (or LLMCHAT_TIMEOUT).",
            )
        if isinstance(exc, openai.APIConnectionError):
            if output:
                return StreamBroken(f"The connection to {self._server} broke mid-answer.", hint="Retry the question.")
            return Unreachable(
                f"Cannot reach {self._server} at {self.base_url}.",
                hint="Check your network, proxy and the profile's base_url / region.",
            )
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return StreamBroken(
                f"{self._server} stopped mid-answer: {self._redact(exc.message)}", hint="Retry the question."
            )
        if isinstance(exc, ValueError):  # a data line that is not JSON
            return StreamBroken(
                f"{self._server} sent a malformed stream (a chunk that is not JSON).",
                hint="Retry; if it keeps happening, the endpoint may not be OpenAI-compatible.",
            )
        return None

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _status_error(self, exc: openai.APIStatusError, model: str) -> ProviderError:
        error = _gateway(self._server, exc) or self._api_error(exc, model)
        error.retry_after = _retry_after(exc)
        return error

    def _api_error(self, exc: openai.APIStatusError, model: str) -> ProviderError:
        status, code = exc.status_code, str(exc.code or "")
        body = exc.body if isinstance(exc.body, dict) else {}
        message = self._redact(str(body.get("message") or exc.message))
        request_id = _request_id(exc)
        ref = f" (request id {request_id})" if request_id else ""
        if status in (401, 403):
            variable = self._key_variable or "the profile's api_key_env"
            what = "rejected the API key" if status == 401 else "denied access"
            hint = f"Check the key in {variable}."
            if self.bailian:
                hint += (f" Bailian keys are per region and this profile uses {self._region or 'beijing'} "
                         f"({self.base_url}); a key from the other region fails like this. "
                         'Switch with region = "singapore" or "beijing".')
            error = AuthFailed(f"{self._server} {what} ({status} {code or 'unauthorized'}){ref}.", hint=hint)
        elif status == 404 and code in ("model_not_found", "model_not_supported", ""):
            error = ModelNotFound(
                f"{self._server} does not offer the model '{model}' to this key ({status}){ref}.",
                hint="Check the model name; `llmchat models` lists what the server offers.",
            )
        elif status == 429:
            error = RateLimited(
                f"{self._server} is rate-limiting this key ({code or 'too many requests'}){ref}.",
                hint="Wait a moment and retry, or lower the request rate.",
            )
        elif status == 400 and (code == "context_length_exceeded" or "input length" in message):
            error = ContextTooLong(
                f"The conversation is too long for {model}: {message}{ref}",
                hint="Start a new conversation or shorten the input.",
            )
        elif code == "Arrearage":
            error = BadRequest(
                f"{self._server} refused the request: the account is overdue (Arrearage){ref}.",
                hint="Top up or settle the Alibaba Cloud account, then retry.",
            )
        elif code == "data_inspection_failed":
            error = BadRequest(
                f"{self._server} refused the content (data_inspection_failed: content moderation){ref}.",
                hint="Rephrase the input; the provider's moderation flagged it.",
            )
        elif status >= 500:
            error = ServerError(f"{self._server} failed ({status} {code}): {message}{ref}", hint="Retry later.")
        else:
            error = BadRequest(
                f"{self._server} refused the request ({status} {code}): {message}{ref}",
                hint="Check the profile's model and options.",
            )
        return error

    def capabilities(self, model: str) -> frozenset[str] | None:
        """OpenAI-compatible servers do not say what a model can do: None, the server's answer decides."""
        return None

    def list_models(self) -> list[ModelInfo]:
        """`GET /models`, read from the raw response: a proxy's page or an empty body where the list
        should be is reported as such, not as the SDK's AttributeError deep inside its page parser."""
        try:
            response = self._client.models.with_raw_response.list().http_response
            return _model_list(self._server, response)
        except openai.APIStatusError as exc:
            raise self._status_error(exc, "") from None
        except openai.APIConnectionError:
            raise Unreachable(
                f"Cannot reach {self._server} at {self.base_url}.",
                hint="Check your network, proxy and the profile's base_url / region.",
            ) from None


class _DeltaReader:
    """Turns stream chunks into events; one per request, for either path.

    Returns lists rather than yielding, so the sync and async loops share it unchanged. `output`
    says whether any text was produced yet; `finished` holds the finish_reason once one arrives.
    """

    def __init__(self) -> None:
        self._splitter = ThinkTagSplitter()
        self.output = False
        self.finished: str | None = None

    def feed(self, chunk: Any) -> list[Event]:
        events: list[Event] = []
        for choice in chunk.choices:
            delta = choice.delta
            # Not part of the OpenAI schema: DashScope says reasoning_content, Ollama's /v1
            # says reasoning, and servers that think not at all send neither.
            reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
            if reasoning:
                events.append(Reasoning(reasoning))
            if delta.content:
                events.extend(self._splitter.feed(delta.content))
            if choice.finish_reason:
                self.finished = choice.finish_reason
        self.output = self.output or any(isinstance(e, (Reasoning, Answer)) for e in events)
        if chunk.usage:
            events.append(_usage(chunk.usage))
        return events

    def flush(self) -> list[Event]:
        """End of the stream: the text the inline-<think> splitter was still holding back."""
        return list(self._splitter.flush())


def _usage(usage: Any) -> Usage:
    completion_details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        prompt=usage.prompt_tokens, completion=usage.completion_tokens, total=usage.total_tokens,
        reasoning=getattr(completion_details, "reasoning_tokens", None),
        cached=getattr(prompt_details, "cached_tokens", None),
    )


def _request_id(exc: openai.APIStatusError) -> str | None:
    try:
        data = exc.response.json()
    except Exception:  # not JSON: no id to show
        return exc.request_id
    return (data.get("request_id") if isinstance(data, dict) else None) or exc.request_id


def _retry_after(exc: openai.APIStatusError) -> float | None:
    return parse_retry_after(exc.response.headers.get("retry-after"))


def _model_list(server: str, response: Any) -> list[ModelInfo]:
    """The `data` list of a `/models` answer; BadRequest when the body is not one (HTML, empty, other JSON)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        text = response.text
        error = gateway_error(server, response.status_code, text, response.headers.get("content-type"))
        what = "an empty body" if not text.strip() else "something that is not a list of models"
        if error is None:
            error = BadRequest(f"{server} answered GET /models with {what}.",
                               hint="Check the profile's base_url (the API's root, e.g. …/v1) and any proxy.")
            error.not_the_api = True
        raise error
    return [ModelInfo(name=str(m["id"]), owner=m.get("owned_by") if isinstance(m.get("owned_by"), str) else None)
            for m in entries if isinstance(m, dict) and m.get("id")]


def _gateway(server: str, exc: openai.APIStatusError) -> ProviderError | None:
    """A proxy's HTML page or empty 502/503/504 instead of the API's JSON error (providers.gateway_error)."""
    try:
        text = exc.response.text
    except Exception:  # the body was never read (a stream cut short): judge by the headers alone
        text = ""
    return gateway_error(server, exc.status_code, text, exc.response.headers.get("content-type"))
