"""Ollama's native /api/chat through the `ollama` package.

Native rather than /v1 because only the native API carries `think`, `options` such as num_ctx, and
exact generation timings; and because a mid-stream error is visible there but lost on /v1.

The blocking path (`stream`, used by `ask` and the REPL) and the asyncio path (`astream`, used by
batch) differ only in how they wait: request building, turning a chunk into events and mapping an
exception into an `llmchat.core.errors` error are shared, so both report failures in the same words.
"""

from __future__ import annotations

import json
import json.scanner
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import httpx
import ollama

from llmchat.config.profile import mask_url
from llmchat.core.errors import (
    BadRequest,
    ModelNotFound,
    ProviderError,
    RateLimited,
    ServerError,
    StreamBroken,
    ThinkingUnsupported,
    Timeout,
    ToolsUnsupported,
    Unreachable,
)
from llmchat.core.events import Answer, Event, Finish, Notice, Reasoning, Usage
from llmchat.core.images import attach, for_ollama
from llmchat.core.tools import ToolCall
from llmchat.providers import (
    ChatOptions,
    Message,
    ModelInfo,
    PullProgress,
    connect_timeout,
    gateway_error,
    html_page_error,
    looks_like_html,
    parse_retry_after,
)
from llmchat.providers.thinktags import ThinkTagSplitter
from llmchat.providers.tool_wire import ollama_calls, ollama_messages


class OllamaProvider:
    #: Ollama takes image bytes (base64) only; it never fetches a URL.
    image_urls = False

    def __init__(self, host: str, read_timeout: float) -> None:
        self.host = mask_url(host)  # what messages show: never a password in the URL
        self._url = host
        self._read_timeout = read_timeout
        self._timeout = httpx.Timeout(connect=connect_timeout(read_timeout), read=read_timeout, write=30.0, pool=5.0)
        self._client = ollama.Client(host=host, timeout=self._timeout, event_hooks=_HOOKS, **_default_tls())
        self._async_client: ollama.AsyncClient | None = None  # built on first `astream`
        #: What `/api/show` said per model, asked at most once per model while it answers: the vision
        #: check and the context window share one call. `_unshown`: models whose call failed, so the
        #: window (a hint) falls back without asking again on every turn.
        self._capabilities: dict[str, frozenset[str] | None] = {}
        self._context_lengths: dict[str, int | None] = {}
        self._unshown: set[str] = set()

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
            "messages": for_ollama(ollama_messages(attach(messages, options.images))),
            "stream": True,
        }
        if chosen := {**{k: v for k, v in sampling.items() if v is not None}, **options.extra}:
            request["options"] = chosen
        if options.tool_specs:
            request["tools"] = [spec.wire() for spec in options.tool_specs]
        if options.think is not None:  # unset: leave it to the server's default for the model
            request["think"] = options.think
        if options.format is not None:  # "json" or a JSON Schema object, as Ollama spells both
            request["format"] = dict(options.format) if isinstance(options.format, Mapping) else options.format
        return request

    def _stream(self, request: dict[str, Any], model: str) -> Iterator[Event]:
        reader = _ChunkReader()
        chunks = None
        try:
            chunks = self._lines(request)
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
            chunks = self._alines(request)
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

    def _lines(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST /api/chat through the client's own connection pool and yield each NDJSON line as a dict.

        The `ollama` client would build a pydantic `ChatResponse` per line (half the cost of a long
        answer) and its models drop what llmchat needs (tool call ids, `tool_call_id`): its httpx client
        (host, headers, timeouts, hooks) is used as is, and its error semantics are kept — an HTTP error
        is `ResponseError(body, status)`, an in-band `{"error": …}` line `ResponseError(text)` (status -1).
        """
        with self._client._client.stream("POST", "/api/chat", json=request) as response:
            if response.is_error:
                response.read()
                raise ollama.ResponseError(response.text, response.status_code)
            self._check_not_a_page(response)
            pending, parts = NDJSONLines(), self._parts()
            for data in response.iter_bytes():
                yield from parts(pending.feed(data))
            yield from parts(pending.end())

    async def _alines(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`_lines` for asyncio."""
        async with self._aclient()._client.stream("POST", "/api/chat", json=request) as response:
            if response.is_error:
                await response.aread()
                raise ollama.ResponseError(response.text, response.status_code)
            self._check_not_a_page(response)
            pending, parts = NDJSONLines(), self._parts()
            async for data in response.aiter_bytes():
                for part in parts(pending.feed(data)):
                    yield part
            for part in parts(pending.end()):
                yield part

    def _check_not_a_page(self, response: httpx.Response) -> None:
        """A 200 with a web page (a captive portal, a proxy): say so, instead of "malformed data"."""
        if looks_like_html("", response.headers.get("content-type")):
            raise html_page_error(self.host, "Ollama's API", _ROOT)

    def _parts(self) -> Callable[[list[str]], Iterator[dict[str, Any]]]:
        """The stream's lines as dicts, one by one, for both loops; the first line that is no JSON but looks
        like a web page (one sent without its content type) is the HTML-page error, not "malformed data"."""
        first = True

        def parts(lines: list[str]) -> Iterator[dict[str, Any]]:
            nonlocal first
            for line in lines:
                if not first:
                    yield _part(line)
                    continue
                first = False
                try:
                    yield _part(line)
                except ValueError:
                    if looks_like_html(line):
                        raise html_page_error(self.host, "Ollama's API", _ROOT) from None
                    raise

        return parts

    def _aclient(self) -> ollama.AsyncClient:
        if self._async_client is None:
            self._async_client = ollama.AsyncClient(host=self._url, timeout=self._timeout, event_hooks=_ASYNC_HOOKS,
                                                    **_default_tls())
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
            error = self._response_error(exc, model)
            if error.retryable:  # the client keeps no headers: the response hook saw them
                error.retry_after = parse_retry_after(_ERROR_HEADERS.get().get("retry-after"))
            return error
        if isinstance(exc, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
            timed_out = isinstance(exc, httpx.ConnectTimeout)
            waited = f" (no connection within {self._timeout.connect:g} s)" if timed_out else ""
            return Unreachable(
                f"Cannot reach Ollama at {self.host}{waited}.",
                hint="Start it with `ollama serve`, or point the profile's base_url (or OLLAMA_HOST) at your server.",
            )
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(
                f"Ollama at {self.host} sent nothing for {self._read_timeout:g} s.",
                hint="The model may still be loading or the server is overloaded; raise the profile's timeout "
                "or LLMCHAT_TIMEOUT, or retry.",
            )
        # RecursionError: JSON nested thousands deep (a tool call's arguments), which the decoder cannot read
        if isinstance(exc, (httpx.TransportError, ValueError, RecursionError)):
            what = "the connection broke" if isinstance(exc, httpx.TransportError) else "it sent malformed data"
            return StreamBroken(
                f"Ollama at {self.host} stopped mid-answer: {what}."
                if output else f"Ollama at {self.host} failed before answering: {what}.",
                hint="Retry; if it keeps happening, check the server's logs.",
            )
        return None

    def _response_error(self, exc: ollama.ResponseError, model: str, path: str = "/api/chat") -> ProviderError:
        status, text = exc.status_code, str(exc.error)
        if status != -1 and (gateway := gateway_error(
                f"Ollama at {self.host}", status, text, _ERROR_HEADERS.get().get("content-type"))) is not None:
            return gateway
        if status == -1:  # in-band {"error": …} line after the stream started
            return StreamBroken(
                f"Ollama stopped mid-answer: {text}",
                hint="Retry; if it keeps happening, check `ollama ps` and the logs.",
            )
        if status == 404 and text.strip() == "404 page not found":
            return BadRequest(
                f"{self.host} answered 404 for {path}: this does not look like Ollama's native API.",
                hint="Use the server root as base_url (e.g. http://localhost:11434, without /v1).",
            )
        if status == 404:
            return ModelNotFound(
                f"Ollama at {self.host} does not have the model '{model}'.",
                hint=f"Download it with `llmchat pull {model}` (or `ollama pull {model}`), "
                "or list what you have with `llmchat models`.",
            )
        if status == 400 and "does not support tools" in text:
            return ToolsUnsupported(f"{model} cannot call tools: {text}", hint="Use a model that can, or --no-tools.")
        if status == 400 and "does not support thinking" in text:
            return ThinkingUnsupported(f"{model} does not support thinking.", hint="Use --no-think.")
        if status == 429:
            return RateLimited(f"Ollama is rate-limiting requests: {text}", hint="Wait a moment and retry.")
        if status >= 500:
            return ServerError(f"Ollama failed ({status}): {text}", hint="Retry; if it persists, check its logs.")
        return BadRequest(f"Ollama refused the request ({status}): {text}", hint="Check the profile's options.")

    # -- metadata and model management: the same error mapping as the chat calls ----------------

    def list_models(self) -> list[ModelInfo]:
        """`/api/tags`, read raw: the client's ListResponse drops v0.30's per-model `capabilities`."""
        data = self._get_json("/api/tags", "")
        return [_model_info(entry) for entry in data.get("models") or [] if isinstance(entry, dict)]

    def version(self) -> str:
        """The server's version (`/api/version`; the client has no method for it)."""
        return str(self._get_json("/api/version", "").get("version") or "unknown")

    def show(self, model: str) -> ModelInfo:
        """One model's details and capabilities (`/api/show`); ModelNotFound when the server lacks it."""
        try:
            shown = self._client.show(model)
        except Exception as exc:
            if (error := self._translate(exc, model, False)) is None:
                raise
            raise error from None
        details = shown.details
        capabilities = tuple(shown.capabilities) if shown.capabilities is not None else None
        self._capabilities[model] = frozenset(capabilities) if capabilities is not None else None
        self._context_lengths[model] = _context_length(shown.modelinfo)
        self._unshown.discard(model)
        return ModelInfo(
            name=model, family=details.family if details else None,
            parameters=details.parameter_size if details else None,
            quantization=details.quantization_level if details else None,
            modified=shown.modified_at.strftime("%Y-%m-%d") if shown.modified_at else None,
            capabilities=capabilities,
        )

    def capabilities(self, model: str) -> frozenset[str] | None:
        """From `/api/show` (once per model and provider); None from servers older than 0.9 that do not say."""
        if model not in self._capabilities:
            self.show(model)
        return self._capabilities[model]

    def context_length(self, model: str) -> int | None:
        """`model_info["<architecture>.context_length"]` from `/api/show`: the length the model was trained
        for. Asked once per model; any failure (404, 500, a proxy's page, a shape this code does not know)
        is None, remembered, and the caller falls back to its table: a hint must never fail a turn."""
        if model not in self._context_lengths and model not in self._unshown:
            try:
                self.show(model)
            except Exception:  # noqa: BLE001 (whatever went wrong, the server did not say)
                self._unshown.add(model)
        return self._context_lengths.get(model)

    def pull(self, model: str) -> Iterator[PullProgress]:
        """Download `model` into the server, yielding its streamed progress lines until "success"."""
        try:
            for part in self._client.pull(model, stream=True):
                yield PullProgress(status=part.status or "", digest=part.digest or None,
                                   total=part.total or None, completed=part.completed or None)
        except ollama.ResponseError as exc:
            raise self._pull_error(exc, model) from None
        except Exception as exc:
            if (error := self._translate(exc, model, False)) is None:
                raise
            raise error from None
        self._capabilities.pop(model, None)
        self._context_lengths.pop(model, None)
        self._unshown.discard(model)

    def _pull_error(self, exc: ollama.ResponseError, model: str) -> ProviderError:
        """Pull failures arrive in-band (status 200, an {"error": …} line), so the text tells them apart."""
        text = str(exc.error)
        if exc.status_code != -1:  # refused before streaming: an HTTP status like any other call's
            return self._response_error(exc, model, "/api/pull")  # the call that failed, named as it is
        if "does not exist" in text or "not found" in text:
            return ModelNotFound(f"The Ollama registry has no model '{model}' ({text}).",
                                 hint="Check the name and tag at https://ollama.com/search, e.g. qwen3:8b.")
        return ProviderError(f"Ollama could not pull '{model}': {text}",
                             hint="Check the server's network and disk space (its logs say more), then retry.")

    def _get_json(self, path: str, model: str) -> dict[str, Any]:
        # `_request_raw` is the client's own request-and-raise (ollama 0.6.x, pinned in pyproject).
        try:
            response = self._client._request_raw("GET", path)
        except Exception as exc:
            if (error := self._translate(exc, model, False)) is None:
                raise
            raise error from None
        try:
            data = response.json()
        except ValueError:  # a proxy's or portal's page, or nothing at all, where Ollama sends JSON
            raise self._not_json(path, response) from None
        return data if isinstance(data, dict) else {}

    def _not_json(self, path: str, response: httpx.Response) -> ProviderError:
        text = response.text
        gateway = gateway_error(f"Ollama at {self.host}", response.status_code, text,
                                response.headers.get("content-type"))
        if gateway is not None:
            return gateway
        what = "an empty body" if not text.strip() else "something that is not JSON"
        error = BadRequest(f"{self.host} answered {path} with {what}: this does not look like Ollama.",
                           hint="Point the profile's base_url (or OLLAMA_HOST) at Ollama's root, e.g. "
                           "http://localhost:11434, and check any proxy (HTTP_PROXY / HTTPS_PROXY).")
        error.not_the_api = True
        return error


_ROOT = "Ollama's root, e.g. http://localhost:11434, without /v1"

#: Headers of the last error response in this thread or task. The ollama client turns an HTTP error
#: into ResponseError(text, status) and drops the headers, so a response hook keeps the two that
#: matter: Retry-After (honoured like Bailian's) and Content-Type (an HTML page from a proxy).
_ERROR_HEADERS: ContextVar[dict[str, str]] = ContextVar("llmchat_ollama_error_headers", default={})  # noqa: B039


def _keep_error_headers(response: httpx.Response) -> None:
    if response.status_code >= 400:
        _ERROR_HEADERS.set({name: response.headers[name] for name in ("retry-after", "content-type")
                            if name in response.headers})


async def _akeep_error_headers(response: httpx.Response) -> None:
    _keep_error_headers(response)


_HOOKS = {"response": [_keep_error_headers]}
_ASYNC_HOOKS = {"response": [_akeep_error_headers]}


def _default_tls() -> dict[str, Any]:
    """The TLS context of the client `import ollama` already made (its module-level default), to share.

    httpx makes a TLS context for every client, loading the CA bundle: about 45 ms, a sixth of a short
    question. That client was made with httpx's defaults, as ours is (we set no TLS option), so the
    context is the one ours would build; where the library's layout differs, ours builds its own.
    """
    default = getattr(ollama, "_client", None)
    context = getattr(getattr(getattr(getattr(default, "_client", None), "_transport", None), "_pool", None),
                      "_ssl_context", None)
    return {"verify": context} if isinstance(context, ssl.SSLContext) else {}


def _context_length(info: Mapping[str, Any] | None) -> int | None:
    """The trained context length in `/api/show`'s `model_info`: the key is `<general.architecture>.context_length`
    (qwen3.context_length, llama.context_length); None when absent or not a positive integer."""
    if not isinstance(info, Mapping):
        return None
    architecture = info.get("general.architecture")
    value = info.get(f"{architecture}.context_length") if isinstance(architecture, str) else None
    if value is None:  # no architecture key: accept the one context_length there is, if only one
        found = [v for k, v in info.items() if isinstance(k, str) and k.endswith(".context_length")]
        value = found[0] if len(found) == 1 else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _model_info(entry: dict[str, Any]) -> ModelInfo:
    """A `/api/tags` entry; `capabilities` only from servers >= 0.30, which list them per model."""
    details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
    capabilities = entry.get("capabilities")
    modified = entry.get("modified_at")
    return ModelInfo(
        name=entry.get("model") or entry.get("name") or "", size=entry.get("size"),
        family=details.get("family") or None, parameters=details.get("parameter_size") or None,
        quantization=details.get("quantization_level") or None,
        modified=modified[:10] if isinstance(modified, str) and modified else None,
        capabilities=tuple(capabilities) if isinstance(capabilities, list) else None,
    )


class _ChunkReader:
    """Turns the stream's `ChatResponse` objects into events; one per request, for either path.

    Returns lists rather than yielding, so the sync and async loops share it unchanged; `output`
    says whether any text was produced yet (it decides "stopped mid-answer" vs "failed before").
    """

    def __init__(self) -> None:
        self._splitter = ThinkTagSplitter()
        self.output = False
        self._plain = False  # output started and the splitter settled: the one-step path applies
        self.done = False
        self.calls: list[ToolCall] = []

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        message = chunk.get("message") or {}
        if not isinstance(message, dict):
            raise ValueError("a chunk's message is not an object")
        thinking, content = message.get("thinking"), message.get("content")
        # Most lines of a long answer: a piece of answer text and nothing else, once the splitter has
        # seen that no <think> tag opens it. One event, without the general path's checks.
        if (self._plain and content and type(content) is str and not thinking and not chunk.get("done")
                and not message.get("tool_calls")):
            return [Answer(content)]
        events: list[Event] = []
        if thinking and isinstance(thinking, str):
            events.append(Reasoning(thinking))
        if content and isinstance(content, str):
            if self._splitter.settled:
                events.append(Answer(content))
            else:
                events.extend(self._splitter.feed(content))
        if calls := message.get("tool_calls"):  # complete calls, never partial (tools.md §7)
            self.calls.extend(ollama_calls(calls, len(self.calls)))
        if events and not self.output:
            self.output = any(isinstance(e, (Reasoning, Answer)) for e in events)
        self._plain = self.output and self._splitter.settled  # (settled stays so: only this path feeds it)
        if chunk.get("done"):
            events.extend(self._splitter.flush())
            events.extend(self.calls)
            events.append(_usage(chunk))
            reason = chunk.get("done_reason")
            events.append(Finish(reason if isinstance(reason, str) else None))
            self.done = True
        return events

    def flush(self) -> list[Event]:
        """The stream ended without `done`: whatever text the splitter held back, before the error."""
        return list(self._splitter.flush())


def _without_thinking(request: dict[str, Any], model: str) -> Notice:
    """Drop `think` from the request for the second try, and say so once."""
    request.pop("think")
    return Notice(f"{model} does not support thinking; answering without it.")


class NDJSONLines:
    """Bytes in, complete non-blank lines out, decoded as UTF-8 (an invalid byte becomes U+FFFD, as
    httpx's `iter_lines` decodes). Splitting bytes on b"\\n" skips httpx's text and line decoders, a
    tenth of a long answer's cost; a "\\r" left at a line's end is JSON whitespace."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        return [line.decode("utf-8", "replace") for line in lines if line and not line.isspace()]

    def end(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", "replace")] if rest.strip() else []


_DECODER = json.JSONDecoder()  # json.loads' own
_decode = _DECODER.decode
#: The decoder's C scanner, called directly: a line that is exactly one JSON value (every line Ollama sends)
#: is read without `decode`'s two whitespace matches and its Python frames, half of json.loads' time.
_scan = json.scanner.make_scanner(_DECODER)


def _part(line: str) -> dict[str, Any]:
    """One NDJSON line: an object, or the in-band error Ollama sends after the stream started."""
    try:
        part, end = _scan(line, 0)
    except StopIteration:  # the scanner's "no value here": leading whitespace, or not JSON
        end = -1
    if end != len(line):  # whitespace around the value, more after it, or not JSON at all:
        part = _decode(line)  # json.loads' own answer (ValueError, "it sent malformed data")
    if not isinstance(part, dict):
        raise ValueError("a stream line is not a JSON object")
    if error := part.get("error"):
        raise ollama.ResponseError(str(error))
    return part


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(final: dict[str, Any]) -> Usage:
    prompt, completion = _count(final.get("prompt_eval_count")), _count(final.get("eval_count"))
    duration = _count(final.get("eval_duration"))
    return Usage(
        prompt=prompt, completion=completion,
        total=prompt + completion if prompt is not None and completion is not None else None,
        eval_seconds=duration / 1e9 if duration else None,
    )
