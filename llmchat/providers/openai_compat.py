"""Bailian (DashScope compatible mode) and any OpenAI-compatible endpoint through the `openai` package.

The SDK's own retries are turned off (max_retries=0): a silent 1.3 s of retrying hides what is going
on, so retrying is the turn loop's job, where it can be shown to the user.

`stream` (blocking: `ask`, the REPL) and `astream` (asyncio: batch) share the request body, the
per-chunk event extraction and the error mapping, so both fail with the same messages.

A few things are settled here, once and silently, because only the wire can tell them apart (all seen
on llama.cpp's server, tests/real/): a request that dies before any response byte on a kept-alive
connection the server had closed is sent again; a stream with no chunk at all (the server's way of
failing after the headers, e.g. a prompt longer than its window) is followed by the same request
without streaming, whose answer or error is the real one; a refused `json_schema` is sent again as
`json_object` with the schema. A stream that ends without a finish_reason is `StreamUnfinished`, for
the turn loop (and batch) to retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any

import openai

from llmchat.config.profile import mask_url
from llmchat.core.errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    ProviderError,
    RateLimited,
    ServerError,
    StreamBroken,
    StreamUnfinished,
    Timeout,
    ToolsUnsupported,
    Unreachable,
)
from llmchat.core.events import Event, Finish, Reasoning
from llmchat.core.images import attach, for_openai
from llmchat.providers import (
    ChatOptions,
    Message,
    ModelInfo,
    connect_timeout,
    gateway_error,
    html_page_error,
    looks_like_html,
    parse_retry_after,
)
from llmchat.providers.json_mode import as_json_object, mention_json, response_format
from llmchat.providers.openai_stream import DeltaReader, achunks, chunks, usage_of
from llmchat.providers.thinktags import ThinkTagSplitter
from llmchat.providers.tool_wire import message_calls, openai_messages, openai_tools, refuses_tools


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
        # Once the server refused `json_schema`, later requests use `json_object` + `schema` at once.
        self._json_object_schema = False
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
            "messages": for_openai(openai_messages(attach(messages, options.images))),
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
        if options.top_k is not None:  # not OpenAI's, but DashScope, vLLM and llama.cpp all take it
            extra["top_k"] = options.top_k
        extra.update(options.extra)
        if extra:
            body["extra_body"] = extra
        if options.format is not None:
            body["response_format"] = response_format(options.format)
            body["messages"] = mention_json(body["messages"], options.format)
        if options.tool_specs:
            body.update(openai_tools(options.tool_specs))
        return body

    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        body = self._body(messages, options)
        reader = DeltaReader()
        try:
            with closing(self._create(body)) as response:
                self._check_not_a_page(response.http_response.headers.get("content-type"))
                for chunk in chunks(response.http_response):
                    yield from reader.feed(chunk)
            yield from reader.flush()
            if reader.chunks == 0:  # an empty stream says nothing: ask again without streaming to learn why
                yield from self._events_of(self._create(_not_streaming(body)))
                return
        except Exception as exc:
            if (error := self._translate(exc, options.model, reader.output, tools="tools" in body)) is None:
                raise
            raise error from None
        yield from reader.calls()
        yield self._finish(reader)

    async def astream(self, messages: Sequence[Message], options: ChatOptions) -> AsyncIterator[Event]:
        """`stream` for asyncio: same body, events and errors, many turns in flight on one loop."""
        body = self._body(messages, options)
        reader = DeltaReader()
        try:
            response = await self._acreate(body)
            try:
                self._check_not_a_page(response.http_response.headers.get("content-type"))
                async with aclosing(achunks(response.http_response)) as parts:
                    async for chunk in parts:
                        for event in reader.feed(chunk):
                            yield event
            finally:
                await response.close()
            for event in reader.flush():
                yield event
            if reader.chunks == 0:
                for event in self._events_of(await self._acreate(_not_streaming(body))):
                    yield event
                return
        except Exception as exc:
            if (error := self._translate(exc, options.model, reader.output, tools="tools" in body)) is None:
                raise
            raise error from None
        for event in reader.calls():
            yield event
        yield self._finish(reader)

    # -- sending: a stale pooled connection and a refused json_schema are handled here, silently ----------

    def _create(self, body: dict[str, Any]) -> Any:
        """`chat.completions.create`, once more in the json_object form when the server refuses json_schema.

        A streaming body gets the SDK's open `APIResponse` (`with_streaming_response`, entered: the
        request is made and its status checked here, so the retries below see its errors), whose lines
        `_chunks` reads; a non-streaming one the SDK's parsed completion."""
        body = self._schema_form(body)
        try:
            return self._send(body)
        except openai.APIStatusError as exc:
            if (fallback := self._schema_fallback(body, exc)) is None:
                raise
        try:
            return self._send(fallback)
        except openai.APIStatusError as exc:
            raise self._schema_refused(exc) from None

    def _send(self, body: dict[str, Any]) -> Any:
        """One request; sent again, silently, when it failed on a stale kept-alive connection."""
        try:
            return self._request(body)
        except openai.APIConnectionError as exc:
            if not _stale_connection(exc):
                raise
        return self._request(body)

    def _request(self, body: dict[str, Any]) -> Any:
        completions = self._client.chat.completions
        if body.get("stream"):
            return completions.with_streaming_response.create(**body).__enter__()
        return completions.create(**body)

    async def _acreate(self, body: dict[str, Any]) -> Any:
        """`_create` for asyncio."""
        body = self._schema_form(body)
        try:
            return await self._asend(body)
        except openai.APIStatusError as exc:
            if (fallback := self._schema_fallback(body, exc)) is None:
                raise
        try:
            return await self._asend(fallback)
        except openai.APIStatusError as exc:
            raise self._schema_refused(exc) from None

    async def _asend(self, body: dict[str, Any]) -> Any:
        try:
            return await self._arequest(body)
        except openai.APIConnectionError as exc:
            if not _stale_connection(exc):
                raise
        return await self._arequest(body)

    async def _arequest(self, body: dict[str, Any]) -> Any:
        completions = self._aclient().chat.completions
        if body.get("stream"):
            return await completions.with_streaming_response.create(**body).__aenter__()
        return await completions.create(**body)

    def _schema_form(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body in the schema form this server is known to take (json_object + schema after a refusal)."""
        if self._json_object_schema and _wants_json_schema(body):
            return {**body, "response_format": as_json_object(body["response_format"])}
        return body

    def _schema_fallback(self, body: dict[str, Any], exc: openai.APIStatusError) -> dict[str, Any] | None:
        """The body to try after the server refused `json_schema`, or None when that was not the refusal.

        llama.cpp's server answers 500 to `json_schema` and takes `{"type": "json_object", "schema": …}`;
        others answer 400/422. Only a refusal that names response_format or json_schema counts, so an
        unrelated 500 is still a server error for the turn loop to retry.
        """
        if not _wants_json_schema(body) or exc.status_code not in (400, 422, 500):
            return None
        text = str(exc.body if exc.body is not None else exc.message)
        if "json_schema" not in text and "response_format" not in text:
            return None
        self._json_object_schema = True
        return {**body, "response_format": as_json_object(body["response_format"])}

    def _schema_refused(self, exc: openai.APIStatusError) -> ProviderError:
        """Both schema forms refused: say so once, with the way that works, instead of a retried 5xx."""
        self._json_object_schema = False
        if exc.status_code not in (400, 422, 500):
            return self._status_error(exc, "")
        return BadRequest(
            f"{self._server} does not support JSON schemas: it refused response_format json_schema, and "
            f"json_object with a schema ({exc.status_code}).",
            hint="Use --format json to ask for JSON without a schema.",
        )

    def _events_of(self, completion: Any) -> Iterator[Event]:
        """The events of a non-streaming answer (the second look after an empty stream)."""
        if isinstance(completion, str):  # the SDK's answer for a body it could not read as JSON
            self._check_not_a_page(None, completion)
            error = BadRequest(f"{self._server} answered with something that is not JSON: this does not look like "
                               "an OpenAI-compatible API.", hint="Check the profile's base_url (the API's root, e.g. "
                               "…/v1) and any proxy (HTTP_PROXY / HTTPS_PROXY).")
            error.not_the_api = True
            raise error
        splitter = ThinkTagSplitter()
        finish: str | None = None
        for choice in completion.choices or []:
            message = choice.message
            reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
            if reasoning:
                yield Reasoning(reasoning)
            if message.content:
                yield from splitter.feed(message.content)
            finish = choice.finish_reason or finish
        yield from splitter.flush()
        for choice in completion.choices or []:
            yield from message_calls(getattr(choice.message, "tool_calls", None))
        if completion.usage:
            yield usage_of(completion.usage)
        if finish is None:
            raise StreamBroken(f"{self._server} sent an answer without a finish_reason.",
                               hint="The endpoint may not be OpenAI-compatible.")
        yield Finish(finish)

    def _check_not_a_page(self, content_type: str | None, body: str = "") -> None:
        """A 200 with a web page (a captive portal, a proxy): say so, instead of "a malformed stream"."""
        if looks_like_html(body, content_type):
            raise html_page_error(self.base_url, "an OpenAI-compatible API", "the API's root, e.g. …/v1")

    def _finish(self, reader: DeltaReader) -> Finish:
        """The closing event, or StreamUnfinished when the stream ended without a finish_reason."""
        if reader.finished is None:
            raise StreamUnfinished(
                f"{self._server} ended the stream before the answer was complete (no finish_reason).",
                hint="A server that runs one request at a time (llama.cpp) cuts a stream when another "
                     "request arrives; ask again when it is idle.",
            )
        return Finish(reader.finished)

    def _translate(self, exc: Exception, model: str, output: bool, *, tools: bool = False) -> ProviderError | None:
        """The error to raise for `exc`, or None to let it through unchanged (ours already, or a bug).

        The order matters: APITimeoutError is an APIConnectionError, and both (like APIStatusError)
        are APIError, which alone means an error event inside an otherwise good stream. With `tools`
        offered, a refusal that names them is `ToolsUnsupported` (the turn loop asks again without).
        """
        if isinstance(exc, ProviderError):
            return None
        if isinstance(exc, openai.APIStatusError):
            if tools and exc.status_code in (400, 422, 500) and refuses_tools(str(exc.body or exc.message)):
                return ToolsUnsupported(
                    f"{self._server} does not take tools for {model} ({exc.status_code}): "
                    f"{_one_line(self._redact(str(exc.message)))}",
                    hint="Use a model or server that can call tools, or --no-tools.",
                )
            return self._status_error(exc, model)
        if isinstance(exc, openai.APITimeoutError) and type(exc.__cause__).__name__ == "ConnectTimeout":
            return Unreachable(  # httpx or httpx2, by name: the SDK's transport differs by major version
                f"Cannot reach {self._where()} (no connection within {connect_timeout(self._read_timeout):g} s).",
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
                f"Cannot reach {self._where()}.",
                hint="Check your network, proxy and the profile's base_url / region.",
            )
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return StreamBroken(
                f"{self._server} stopped mid-answer: {self._redact(exc.message)}", hint="Retry the question."
            )
        if isinstance(exc, (ValueError, RecursionError)):  # a data line that is not JSON (or nested too deep)
            return StreamBroken(
                f"{self._server} sent a malformed stream (a chunk that is not JSON).",
                hint="Retry; if it keeps happening, the endpoint may not be OpenAI-compatible.",
            )
        return None

    def _where(self) -> str:
        """"Bailian at URL", or just the URL (the server's name IS its address: never print it twice)."""
        return f"{self._server} at {self.base_url}" if self.bailian else self.base_url

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _status_error(self, exc: openai.APIStatusError, model: str) -> ProviderError:
        error = _gateway(self._server, exc) or self._api_error(exc, model)
        error.retry_after = _retry_after(exc)
        return error

    def _api_error(self, exc: openai.APIStatusError, model: str) -> ProviderError:
        status, code = exc.status_code, str(exc.code or "")
        body = exc.body if isinstance(exc.body, dict) else {}
        message = _one_line(self._redact(str(body.get("message") or exc.message)))
        request_id = _request_id(exc)
        ref = f" (request id {request_id})" if request_id else ""
        if status in (401, 403):
            variable = self._key_variable or "the profile's api_key_env"
            what = "rejected the API key" if status == 401 else "denied access"
            hint = f"Check the key in {variable}."
            if self.bailian and self._region is not None:  # a custom base_url has no region to talk about
                hint += (f" Bailian keys are per region and this profile uses {self._region} "
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

    def context_length(self, model: str) -> int | None:
        """`/models` gives no window (Bailian's and vLLM's list only names): None, without a request."""
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
                f"Cannot reach {self._where()}.",
                hint="Check your network, proxy and the profile's base_url / region.",
            ) from None


def _not_streaming(body: dict[str, Any]) -> dict[str, Any]:
    """The same request without streaming: a server that sent an empty stream then answers with its error."""
    return {**{k: v for k, v in body.items() if k != "stream_options"}, "stream": False}


def _wants_json_schema(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


def _stale_connection(exc: openai.APIConnectionError) -> bool:
    """A failure after the connection was made but before any response byte: a kept-alive connection the
    server had already closed (llama.cpp's closes after an empty stream; httpx notices only on use).

    httpx does not say whether a connection was reused, so this is told by the cause: a refused or
    timed-out connect means the server is not there, and is reported at once.
    """
    if isinstance(exc, openai.APITimeoutError):
        return False
    return type(exc.__cause__).__name__ in ("RemoteProtocolError", "ReadError", "WriteError")


def _one_line(text: str, limit: int = 240) -> str:
    """A server's error text as one short line: whitespace collapsed, a Python traceback tail dropped."""
    text = text.split('  File "', 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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
