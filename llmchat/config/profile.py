"""Profiles: which server, which model, which persona and parameters a chat uses.

Sources, lowest to highest precedence: built-in profiles, the TOML config file, the environment
(LLMCHAT_PROFILE, OLLAMA_HOST, LLMCHAT_TIMEOUT), and command-line flags. Validation errors name the
file, the line, the key and what is allowed, because a config file is edited by hand.

`Profile` is the one model of a profile: its fields, their types (Literal for the closed sets) and
their ranges (`LIMITS`, attached with Annotated) are written once, there. It stays a frozen
dataclass so that importing this module (which `llmchat --help` does) costs no pydantic; a config
file is checked by a pydantic model derived from it on first use (`config.load._file_model`: extra="forbid",
strict types), and pydantic's errors are turned into the messages above.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, Literal, get_args

from llmchat.core.errors import ConfigError
from llmchat.core.pricing import Price

ProviderName = Literal["ollama", "bailian", "openai"]
ThinkingDisplay = Literal["collapse", "show", "hide"]
HistoryStrategy = Literal["keep", "truncate", "summarize"]  # context.py implements them
Region = Literal["beijing", "singapore"]

PROVIDERS: tuple[str, ...] = get_args(ProviderName)
THINKING_DISPLAYS: tuple[str, ...] = get_args(ThinkingDisplay)
HISTORY_STRATEGIES: tuple[str, ...] = get_args(HistoryStrategy)
REGIONS: dict[str, str] = {
    "beijing": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "singapore": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
assert tuple(REGIONS) == get_args(Region)
DEFAULT_OLLAMA_URL = "http://localhost:11434"
DEFAULT_TIMEOUT_S = 300.0
CONFIG_FILENAME = "config.toml"
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Range:
    """The values one numeric setting may take. Finite always: TOML spells `nan` and `inf`, and
    `float()` reads them from the environment, but no server means anything by them (an infinite
    timeout overflows the socket layer, a NaN temperature becomes invalid JSON)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is not allowed: (low, high]
    integer: bool = False

    def allows(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """"a number from 0 to 2", "an integer from 1 to 2147483647", "a number above 0, up to 86400"."""
        kind = "an integer" if self.integer else "a number"
        low, high = (f"{b:g}" if isinstance(b, float) else str(b) for b in (self.low, self.high))
        if self.low is not None and self.high is not None:
            return f"{kind} above {low}, up to {high}" if self.low_open else f"{kind} from {low} to {high}"
        if self.low is not None:
            return f"{kind} above {low}" if self.low_open else f"{kind} of at least {low}"
        return kind

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """As Annotated metadata on a Profile field: pydantic checks the value against this range.

        Called only when the config-file model is built (pydantic is imported then, never before)."""
        from pydantic_core import PydanticCustomError, core_schema

        def check(value: Any) -> Any:
            if value is not None and not self.allows(value):
                raise PydanticCustomError("out_of_range", "expected {allowed}", {"allowed": self.describe()})
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))


#: The one table of numeric limits: the config file, LLMCHAT_TIMEOUT, the command-line flags (Typer's
#: min/max come from here) and `apply_overrides` all check against it, so they cannot drift apart.
LIMITS: dict[str, Range] = {
    "temperature": Range(0.0, 2.0),
    "top_p": Range(0.0, 1.0, low_open=True),
    "top_k": Range(1, _INT32_MAX, integer=True),
    "max_tokens": Range(1, _INT32_MAX, integer=True),
    "seed": Range(integer=True),
    "thinking_budget": Range(1, _INT32_MAX, integer=True),
    "context_window": Range(1, _INT32_MAX, integer=True),
    "timeout": Range(0.0, 86_400.0, low_open=True),  # seconds; a day is already longer than any answer
    "retries": Range(0, 100, integer=True),
    "max_tool_rounds": Range(1, 1000, integer=True),  # model calls with tools per question
    "tool_output_limit": Range(1, 10_000_000, integer=True),  # characters of one tool result sent back
}
#: Each price (per 1,000 tokens): any finite amount, zero included.
PRICE_RANGE = Range(0.0)


def out_of_range(key: str, value: object) -> str | None:
    """What is allowed for `key`, when `value` is not (None: fine, or not a numeric setting)."""
    limit = LIMITS.get(key)
    return None if limit is None or limit.allows(value) else limit.describe()


_NOT_A_KEY = {"key": False}  # a Profile field that is not a key of a [profiles.NAME] table (api_key: see _inline_key)


def _allowed(text: str) -> dict[str, str]:
    """Field metadata: how an error message describes the values a key takes, where the type cannot say."""
    return {"allowed": text}


@dataclass(frozen=True)
class Profile:
    """One named way to chat. Frozen: overrides make a new profile with `dataclasses.replace`."""

    name: str = field(metadata=_NOT_A_KEY)
    provider: ProviderName
    model: str = field(metadata=_allowed('a model name, e.g. "qwen3:0.6b" or "qwen-plus"'))
    base_url: str | None = field(default=None, metadata=_allowed("an http(s) URL"))
    region: Region | None = None
    api_key_env: str | None = field(default=None, metadata=_allowed(
        "the NAME of an environment variable holding the key (never the key itself)"))
    system: str | None = field(default=None, metadata=_allowed("a string (the system prompt)"))
    think: bool | None = None
    thinking_budget: Annotated[int | None, LIMITS["thinking_budget"]] = None
    search: bool | None = None
    temperature: Annotated[float | None, LIMITS["temperature"]] = None
    top_p: Annotated[float | None, LIMITS["top_p"]] = None
    top_k: Annotated[int | None, LIMITS["top_k"]] = None
    max_tokens: Annotated[int | None, LIMITS["max_tokens"]] = None
    seed: Annotated[int | None, LIMITS["seed"]] = None
    stop: tuple[str, ...] | None = field(default=None, metadata=_allowed("a string or a list of strings"))
    #: None: the model's known window (tokens.KNOWN_WINDOWS), if any
    context_window: Annotated[int | None, LIMITS["context_window"]] = None
    history: HistoryStrategy = "summarize"  # what to do when the conversation outgrows the window
    summary_profile: str | None = field(default=None, metadata=_allowed(  # None: this profile writes them
        "the name of another profile, to write summaries with"))
    timeout: Annotated[float | None, LIMITS["timeout"]] = None
    retries: Annotated[int, LIMITS["retries"]] = 2
    thinking: ThinkingDisplay = "collapse"
    price: Price | None = field(default=None, metadata=_allowed(
        'a table { input = 0.0008, output = 0.002, cached_input = 0.0002, currency = "CNY" }'))
    options: Mapping[str, Any] = field(default_factory=dict, metadata=_allowed(
        "a table of provider options passed through as they are"))
    #: false: this profile's chats leave no trace in the history
    save: bool = field(default=True, metadata=_allowed("true or false (false: never saved to the history)"))
    #: the tools this profile offers the model: built-ins and [tools.*] names (config/tools.py)
    tools: tuple[str, ...] = field(default=(), metadata=_allowed(
        'a list of tool names, e.g. ["time", "weather"] (built-ins and [tools.NAME] tables)'))
    max_tool_rounds: Annotated[int, LIMITS["max_tool_rounds"]] = 10
    tool_output_limit: Annotated[int, LIMITS["tool_output_limit"]] = 20_000
    #: true: every tool call runs without asking (what --trust-tools sets for one run)
    trust_tools: bool = False
    origin: str = field(default="built-in", metadata=_NOT_A_KEY)  # where it came from, for `llmchat profiles`
    #: A key written in an owner-only config file; never shown (repr=False) and never written out.
    api_key: str | None = field(default=None, repr=False, compare=False, metadata=_NOT_A_KEY)

    @property
    def endpoint(self) -> str:
        """The base URL requests go to, with the process's OLLAMA_HOST (listings; a run uses `endpoint_in`)."""
        return self.endpoint_in(os.environ)

    def endpoint_in(self, variables: Mapping[str, str]) -> str:
        """The base URL requests go to, after defaults and the environment's OLLAMA_HOST are applied."""
        if self.base_url:
            return self.base_url
        if self.provider == "ollama":
            return ollama_host_url(variables.get("OLLAMA_HOST"))
        if self.provider == "bailian":
            return REGIONS[self.region or "beijing"]
        raise ConfigError(  # validated on load; reachable only through a bad override
            f"Profile '{self.name}' (provider \"openai\") has no base_url.",
            hint='Set base_url = "https://…/v1" in the profile.',
        )

    @property
    def shown_endpoint(self) -> str:
        """`endpoint` as it may be printed: a password in it (http://user:pass@host) masked."""
        return mask_url(self.endpoint)

    def shown_endpoint_in(self, variables: Mapping[str, str]) -> str:
        """`endpoint_in(variables)` as it may be printed: a password in it masked."""
        return mask_url(self.endpoint_in(variables))

    @property
    def key_variable(self) -> str | None:
        """The environment variable holding the API key, or None when the server needs no key."""
        if self.api_key:
            return None
        if self.api_key_env:
            return self.api_key_env
        return "DASHSCOPE_API_KEY" if self.provider == "bailian" else None

    def read_timeout(self, variables: Mapping[str, str] | None = None) -> float:
        """The read timeout: LLMCHAT_TIMEOUT in `variables` (default: the process's), else the profile's."""
        env = (os.environ if variables is None else variables).get("LLMCHAT_TIMEOUT")
        if env:
            try:
                seconds = float(env)
            except ValueError:
                raise ConfigError(
                    f"LLMCHAT_TIMEOUT={env!r} is not a number of seconds.", hint="Use e.g. LLMCHAT_TIMEOUT=120."
                ) from None
            if (allowed := out_of_range("timeout", seconds)) is not None:
                raise ConfigError(f"LLMCHAT_TIMEOUT={env!r} is out of range: expected seconds, {allowed}.",
                                  hint="Use e.g. LLMCHAT_TIMEOUT=120.")
            return seconds
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S


def mask_url(url: str) -> str:
    """The URL as it may be shown anywhere (messages, `config show`, `profiles`, exports): the password
    of `http://user:pass@host` becomes `***`, and a lone `http://token@host` is masked whole, since
    such a user part is often itself a token. Everything else is left exactly as written."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # "user:pass@host:11434", as OLLAMA_HOST may be written
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':***' if colon else '***'}@{hostport}{rest[end:]}"


def ollama_host_url(host: str | None) -> str:
    """Normalise OLLAMA_HOST the way users write it ("localhost", "0.0.0.0:11434", a full URL).

    Unlike ollama-python, an http host without a port gets Ollama's port 11434 (not 80), since that
    is what someone typing `OLLAMA_HOST=localhost` or `http://localhost` means.
    """
    if not host:
        return DEFAULT_OLLAMA_URL
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    hostport, _, path = rest.partition("/")
    if not re.search(r":\d+$", hostport) and scheme == "http":
        hostport += ":11434"  # https without a port is a reverse proxy on 443
    return f"{scheme}://{hostport}" + (f"/{path}" if path else "")


BUILTIN_PROFILES: dict[str, Profile] = {
    "local": Profile(name="local", provider="ollama", model="qwen3:0.6b"),
    "bailian": Profile(
        name="bailian", provider="bailian", model="qwen-plus", region="beijing", api_key_env="DASHSCOPE_API_KEY"
    ),
}
DEFAULT_PROFILE = "local"


#: The keys of a [profiles.NAME] table, in Profile's order (api_key is read too, see `_inline_key`).
PROFILE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Profile) if f.metadata.get("key", True))

# ---------------------------------------------------------------------------------------------- overrides


def apply_overrides(profile: Profile, **overrides: Any) -> Profile:
    """The profile with command-line flags applied; None means "flag not given"."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(Profile)}
    if unknown:  # a programming error, not a user one
        raise TypeError(f"unknown profile fields: {sorted(unknown)}")
    for key, value in given.items():
        if (allowed := out_of_range(key, value)) is not None:
            raise ConfigError(f"{key} = {value!r} is out of range: expected {allowed}.")
    return replace(profile, **given) if given else profile


def profile_as_table(profile: Profile, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The profile as TOML-ready data, for `config show`; the key itself is never included.
    `variables` (the run's; None: the process's) give OLLAMA_HOST."""
    table: dict[str, Any] = {"provider": profile.provider, "model": profile.model}
    with contextlib.suppress(ConfigError):  # an openai profile without base_url: nothing to show
        table["base_url"] = profile.shown_endpoint if variables is None else profile.shown_endpoint_in(variables)
    for f in fields(Profile):
        if f.name in ("name", "provider", "model", "base_url", "origin", "options", "price", "api_key"):
            continue
        value = getattr(profile, f.name)
        if value is not None and value != f.default:
            table[f.name] = list(value) if isinstance(value, tuple) else value
    if profile.key_variable:
        table["api_key_env"] = profile.key_variable
    if profile.api_key:
        table["api_key"] = "***"  # inline in the config file; never shown
    if profile.price:
        price = {"input": profile.price.input, "output": profile.price.output}
        if profile.price.cached_input is not None:
            price["cached_input"] = profile.price.cached_input
        if profile.price.currency:
            price["currency"] = profile.price.currency
        table["price"] = price
    if profile.options:
        table["options"] = dict(profile.options)
    return table
