"""The provider interface: the only code that talks HTTP to a model server.

Each wire protocol lives in its own module and imports its client library only when a profile uses
it, so `llmchat --help` and the REPL's startup never pay for `openai`, `ollama` or `httpx`.
"""

from __future__ import annotations

import email.utils
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from llmchat.core import collector
from llmchat.core.conversation import Message
from llmchat.core.errors import BadRequest, MissingApiKey, ProviderError, RateLimited, ServerError
from llmchat.core.images import Image, ImageError

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.core.environment import Environment
    from llmchat.core.events import Event
    from llmchat.core.tools import ToolSpec

#: {"role": "system" | "user" | "assistant", "content": str}; a user message may also carry
#: "images": a tuple of `llmchat.core.images.Image`, which each provider turns into its own wire form.
#: Tool rounds arrive in the neutral form of `core.conversation.tool_messages` (an assistant message with
#: "reasoning" and "tool_calls" of `ToolCall`, then "tool" messages with "tool_call_id" and "name");
#: `providers.tool_wire` turns them into each protocol's form (tools.md §7-8).
CONNECT_TIMEOUT_S = 5.0  # a server that accepts no connection within this is treated as unreachable


def connect_timeout(read_timeout: float) -> float:
    """Seconds to wait for a connection: 5, or less when the read timeout is shorter (LLMCHAT_TIMEOUT=1)."""
    return min(CONNECT_TIMEOUT_S, read_timeout)


@dataclass(frozen=True)
class ChatOptions:
    """What one request asks of the model, independent of the wire protocol."""

    model: str
    think: bool | None = None
    thinking_budget: int | None = None
    search: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    context_window: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: "json" asks for a JSON answer (Ollama `format`, OpenAI `response_format` json_object); a JSON Schema
    #: (a mapping) asks for JSON that follows it (Ollama `format`, OpenAI json_schema); None: free text.
    format: str | Mapping[str, Any] | None = None
    #: Images for this request's question: added to the LAST user message by the provider. They ride on
    #: the options rather than the message list because the turn loop builds the messages from text.
    images: tuple[Image, ...] = ()
    #: The tools offered to the model (core/tools.py); empty: none, and no `tools` key is sent.
    tool_specs: tuple[ToolSpec, ...] = ()

    @classmethod
    def from_profile(cls, profile: Profile) -> ChatOptions:
        """Every request setting the profile has a field of the same name for (model, think, temperature,
        stop, …), so a new setting needs no list kept here; the profile's `options` ride as `extra`."""
        shared = {f.name for f in fields(cls)} & {f.name for f in fields(profile)}
        return cls(**{name: getattr(profile, name) for name in shared}, extra=profile.options)


@dataclass(frozen=True)
class ModelInfo:
    """A model the server offers; fields the server does not report stay None."""

    name: str
    size: int | None = None
    family: str | None = None
    parameters: str | None = None
    quantization: str | None = None
    modified: str | None = None
    owner: str | None = None
    #: What the server says the model can do ("completion", "tools", "vision", "thinking", …); None: not said.
    capabilities: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PullProgress:
    """One line of Ollama's streamed `/api/pull`: a phase ("pulling manifest", "success"), or a layer's bytes."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class Provider(Protocol):
    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        """Send the conversation; yield events as the server streams. Raises ProviderError."""
        ...

    def astream(self, messages: Sequence[Message], options: ChatOptions) -> AsyncIterator[Event]:
        """`stream` for asyncio (batch): the same request, events and errors, without blocking the loop."""
        ...

    def list_models(self) -> list[ModelInfo]: ...

    def capabilities(self, model: str) -> frozenset[str] | None:
        """What the server says `model` can do, or None when this kind of server does not say."""
        ...

    def context_length(self, model: str) -> int | None:
        """The context length the server says `model` was trained for; None when this kind of server
        does not say, or the answer cannot be had. Never raises: it is a hint, not a requirement."""
        ...


def api_key_for(profile: Profile, variables: Mapping[str, str] | None = None) -> str | None:
    """The profile's key from its environment variable (in `variables`, default the process's), checked
    before any request is made."""
    if profile.api_key:  # written in an owner-only config file (config.py refuses any other)
        return profile.api_key
    variable = profile.key_variable
    if variable is None:
        return None
    given = (os.environ if variables is None else variables).get(variable)
    key = (given or "").strip()
    if not key:
        regional = profile.provider == "bailian" and not profile.base_url  # a region's URL, not the user's own
        where = f"{profile.region or 'beijing'}-region key" if regional else "key"
        shown = profile.shown_endpoint if variables is None else profile.shown_endpoint_in(variables)
        state = "which is not set" if given is None else "which is set but empty"
        raise MissingApiKey(
            f"Profile '{profile.name}' needs an API key in the environment variable {variable}, {state}.",
            hint=f"Export it first: export {variable}=sk-…  (a {where} for {shown}).",
        )
    return key


def connect(profile: Profile, *, require_key: bool = True, environment: Environment | None = None) -> Provider:
    """A provider for the profile; imports the matching client library on first use.

    OLLAMA_HOST, LLMCHAT_TIMEOUT and the API key variable are read from `environment` (None: the
    process's, for callers not yet given one).

    `require_key=False` (doctor) connects even when the key variable is unset, to see whether the
    server answers at all; any request that needs the key then fails with the server's 401.
    """
    return prepare(profile, require_key=require_key, environment=environment)()


def prepare(profile: Profile, *, require_key: bool = True,
            environment: Environment | None = None) -> Callable[[], Provider]:
    """`connect` in two steps: every check a user must hear about at once (a missing key, a bad
    OLLAMA_HOST or timeout) is made now, cheaply; the returned call imports the client library and
    makes the client (hundreds of ms), so the chat can run it while the person types (repl/preload)."""
    variables = os.environ if environment is None else environment.variables
    if profile.provider == "ollama":
        host, read_timeout = profile.endpoint_in(variables), profile.read_timeout(variables)

        def ollama() -> Provider:
            from llmchat.providers.ollama import OllamaProvider

            return OllamaProvider(host=host, read_timeout=read_timeout)

        return _releasing(ollama)
    try:
        key = api_key_for(profile, variables)
    except MissingApiKey:
        if require_key:
            raise
        key = None
    endpoint, timeout = profile.endpoint_in(variables), profile.read_timeout(variables)

    def openai_compatible() -> Provider:
        from llmchat.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(
            base_url=endpoint, api_key=key, read_timeout=timeout, bailian=profile.provider == "bailian",
            key_variable=profile.key_variable,
            # a region only where the URL is the region's: with its own base_url, a key is just that server's
            region=(profile.region or "beijing") if profile.provider == "bailian" and not profile.base_url else None,
        )

    return _releasing(openai_compatible)


def _releasing(make: Callable[[], Provider]) -> Callable[[], Provider]:
    """`make`, then the garbage collector back on: the client library was the last big import of start-up
    (core/collector; a no-op unless the `llmchat` command held the collector off)."""

    def made() -> Provider:
        try:
            return make()
        finally:
            collector.release()

    return made


# ---------------------------------------------------------------------- what both wire protocols share


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, in either of its forms (RFC 9110 §10.2.3):
    delay-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"). None when absent or
    unreadable; a date in the past is 0; nan and inf are unreadable (a server cannot mean them)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            from datetime import UTC

            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


GATEWAY_STATUSES = (502, 503, 504)


def looks_like_html(body: str, content_type: str | None = None) -> bool:
    """True for a web page (a proxy's error page, a login portal) where an API's JSON was expected."""
    if content_type and "html" in content_type.lower():
        return True
    head = body.lstrip()[:512].lower()
    return head.startswith("<") and any(tag in head for tag in ("<html", "<!doctype html", "<head", "<body",
                                                                 "<title"))


def gateway_error(server: str, status: int, body: str, content_type: str | None = None) -> ProviderError | None:
    """The error for an answer that came from something in front of the model server: an HTML page
    (nginx's "502 Bad Gateway", a firewall's block page) or an empty 502/503/504. One short message
    naming the status; the page itself is never shown. None: a normal API error, mapped as usual.
    """
    html = looks_like_html(body, content_type)
    if not html and not (status in GATEWAY_STATUSES and not body.strip()):
        return None
    try:
        from http import HTTPStatus

        phrase = f" {HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    what = "an HTML page" if html else "an empty body"
    error: ProviderError
    if status in GATEWAY_STATUSES:
        error = ServerError(
            f"{server} answered {status}{phrase} with {what}: a proxy or gateway answered, not the model server.",
            hint="The server behind it may be down, restarting or overloaded: retry later. If it persists, "
            "check the proxy (HTTP_PROXY / HTTPS_PROXY) and the profile's base_url.",
        )
    else:
        kind = ServerError if status >= 500 else RateLimited if status == 429 else BadRequest
        error = kind(
            f"{server} answered {status}{phrase} with {what}, not an API response: a proxy, a login page or a "
            "web site answered instead of the model server.",
            hint="Check the profile's base_url (the API's root, e.g. …/v1 for OpenAI-compatible servers, the "
            "server root for Ollama) and any proxy (HTTP_PROXY / HTTPS_PROXY).",
        )
    error.brief = f"{status}{phrase} from a proxy or gateway."
    error.not_the_api = True
    return error


def html_page_error(url: str, api: str, root: str) -> BadRequest:
    """The error for a 200 that carries a web page where the chat's stream or JSON was expected: a captive
    portal (a hotel's or airport's Wi-Fi login), a proxy's page, or a base_url that names a web site.
    Parsed as the API, it would read as a malformed stream; retrying would get the same page."""
    error = BadRequest(
        f"The server at {url} answered with an HTML page, not {api}: is base_url right? A proxy or a captive "
        "portal (a Wi-Fi login page) may have answered instead of the model server.",
        hint="Open the address in a browser to see what answers (log in to the network if it asks), and check "
        f"the profile's base_url ({root}) and any proxy (HTTP_PROXY / HTTPS_PROXY).",
    )
    error.brief = "an HTML page instead of the API."
    error.not_the_api = True
    return error


def check_images(provider: Provider, model: str, images: Sequence[Image], *, in_chat: bool = False) -> None:
    """Before sending: the provider can take these images, and the model can see (when the server says).

    Ollama reports capabilities (`/api/show`); OpenAI-compatible servers do not, so there the server's
    own answer decides. Raises ImageError (exit 2): no model call was made, the input must change.
    `in_chat`: the hint names the chat's `/model` instead of the command line's `-m`.
    """
    if not images:
        return
    if not getattr(provider, "image_urls", True):
        for image in images:
            image.base64()  # raises for a URL, with the fix
    capabilities = provider.capabilities(model)
    if capabilities is not None and "vision" not in capabilities:
        shown = ", ".join(sorted(capabilities)) or "none reported"
        raise ImageError(
            f"{model} cannot see images (its capabilities: {shown}).",
            hint="Switch to a vision model, e.g. /model qwen2.5vl or /model gemma3; /model lists the server's "
            "models." if in_chat else
            "Use a vision model, e.g. -m qwen2.5vl or -m gemma3; `llmchat models` shows which can see.",
        )
