"""Reading the config file: TOML into a checked Config, each problem named with its file, line and fix."""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin, get_type_hints

from llmchat.config.profile import (
    BUILTIN_PROFILES,
    CONFIG_FILENAME,
    DEFAULT_PROFILE,
    LIMITS,
    PRICE_RANGE,
    PROFILE_KEYS,
    Profile,
    mask_url,
)
from llmchat.config.tools import ToolConfig, build_tools, tool_names
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError
from llmchat.core.pricing import Price
from llmchat.core.suggest import did_you_mean

if TYPE_CHECKING:
    from llmchat.config.mcp import McpServerConfig

# ---------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Config:
    """Every profile available, the default one, and the file they came from (None: built-ins only)."""

    profiles: dict[str, Profile]
    default: str
    path: Path | None
    default_origin: str = "built-in"
    warnings: tuple[str, ...] = ()  # things to tell the user that do not stop the run
    #: The [tools.NAME] tables: command tools, and settings of built-ins (config/tools.py)
    tools: Mapping[str, ToolConfig] = field(default_factory=dict)
    #: The [mcp.servers.NAME] tables (config/mcp.py): a server's name in a profile's tools offers its tools
    mcp_servers: Mapping[str, McpServerConfig] = field(default_factory=dict)

    def tool_names(self) -> tuple[str, ...]:
        """Every name a profile's tools may list: the built-ins, the command tools, then the MCP servers."""
        return tool_names(self.tools) + tuple(self.mcp_servers)

    def profile(self, name: str | None = None, variables: Mapping[str, str] | None = None) -> Profile:
        """The profile to use: the named one, else LLMCHAT_PROFILE (in `variables`, default the process's),
        else the config's default."""
        variables = os.environ if variables is None else variables
        chosen = name or variables.get("LLMCHAT_PROFILE") or self.default
        if chosen in self.profiles:
            return self.profiles[chosen]
        where = f" in {self.path}" if self.path else ""
        source = "" if name else (" (from LLMCHAT_PROFILE)" if variables.get("LLMCHAT_PROFILE") else
                                  f" (default_profile{where})")
        raise ConfigError(
            f"Unknown profile '{chosen}'{source}.{did_you_mean(chosen, self.profiles)}",
            hint=f"Known profiles: {', '.join(sorted(self.profiles))}. List them with `llmchat profiles`.",
        )


def default_config_path() -> Path:
    from platformdirs import user_config_path

    return user_config_path("llmchat", appauthor=False) / CONFIG_FILENAME


def config_path(explicit: str | Path | None = None,
                variables: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config file to read, and whether the user named it (a named file must exist):
    --config, else LLMCHAT_CONFIG in `variables` (default: the process's), else the default path."""
    if explicit:
        return Path(explicit).expanduser(), True
    env = (os.environ if variables is None else variables).get("LLMCHAT_CONFIG")
    if env:
        return Path(env).expanduser(), True
    return default_config_path(), False


def load_config(explicit: str | Path | None = None, environment: Environment | None = None) -> Config:
    """The config named by --config / LLMCHAT_CONFIG (from `environment`, default the process's), or the
    default file, or the built-in profiles when that does not exist."""
    path, named = config_path(explicit, environment.variables if environment else None)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise ConfigError(
                f"Config file {path} does not exist.",
                hint="Create one with `llmchat config init`, or fix --config / LLMCHAT_CONFIG.",
            ) from None
        return Config(profiles=dict(BUILTIN_PROFILES), default=DEFAULT_PROFILE, path=None)
    except IsADirectoryError:
        raise ConfigError(f"Config path {path} is a directory, not a TOML file.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from None
    return parse_config(raw, path)


def _quoted_line(text: str, error: tomllib.TOMLDecodeError) -> str:
    """The line the TOML error points at, with a caret under its column, so "Fix the line shown" can be done.

    tomllib (3.11) gives the position only in its message, "(at line 3, column 9)"; 3.14 adds attributes.
    """
    found = re.search(r"at line (\d+), column (\d+)", str(error))
    lines = text.splitlines()
    if found is None or not 1 <= int(found.group(1)) <= len(lines):
        return ""
    number, column = int(found.group(1)), int(found.group(2))
    line = lines[number - 1]
    shown = line if len(line) <= 120 else line[:119] + "…"
    caret = " " * (len(f"{number} | ") + max(0, min(column, len(shown) + 1) - 1)) + "^"
    return f"\n  {number} | {shown}\n  {caret}"


def parse_config(raw: bytes, path: Path) -> Config:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not UTF-8 text.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not valid TOML: {exc}.{_quoted_line(text, exc)}",
            hint="Fix the line shown, or start again from `llmchat config init --force`.",
        ) from None
    return _build_config(data, path, text)


def _owner_only(path: Path) -> bool:
    """True when no one but the file's owner may read it (mode 0600 or stricter)."""
    try:
        return path.stat().st_mode & 0o077 == 0
    except OSError:
        return False


_TOP_KEYS = ("default_profile", "profiles", "tools", "mcp")


def _build_config(data: dict[str, Any], path: Path, text: str) -> Config:
    locate = _Locator(path, text)
    for key in data:
        if key not in _TOP_KEYS:
            raise locate.error(None, key, f"Unknown top-level key '{key}'.{did_you_mean(key, _TOP_KEYS)}",
                               f"Allowed: {', '.join(_TOP_KEYS)}.")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise locate.error(None, "profiles", "'profiles' must be a table of [profiles.NAME] sections.")
    profiles = dict(BUILTIN_PROFILES)
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise locate.error(None, name, f"profiles.{name} must be a table ([profiles.{name}]).")
        profiles[name] = _build_profile(name, table, locate)
    tools = build_tools(data.get("tools", {}), locate)
    servers = {}
    if "mcp" in data:  # only a config with servers pays for their module
        from llmchat.config.mcp import build_servers

        servers = build_servers(data["mcp"], {n: t for n, t in tools.items() if t.is_command}, locate,
                                secret_looking)
    known_tools = tool_names(tools) + tuple(servers)
    for name, profile in profiles.items():
        for tool in profile.tools:
            if tool not in known_tools:
                raise locate.error(
                    name, "tools", f"profiles.{name}.tools names '{tool}', which is no tool."
                    f"{did_you_mean(tool, known_tools)}",
                    f"Known tools: {', '.join(known_tools)}; define your own as a [tools.NAME] table "
                    "or an MCP server as [mcp.servers.NAME].",
                )
    for name, profile in profiles.items():
        wanted = profile.summary_profile
        if wanted is not None and wanted not in profiles:
            raise locate.error(
                name, "summary_profile",
                f"profiles.{name}.summary_profile = '{wanted}' names no profile.{did_you_mean(wanted, profiles)}",
                f"Known profiles: {', '.join(sorted(profiles))}.",
            )
    default = data.get("default_profile", DEFAULT_PROFILE)
    if not isinstance(default, str):
        raise locate.error(None, "default_profile", "default_profile must be a string naming a profile.")
    if default not in profiles:
        raise locate.error(
            None, "default_profile",
            f"default_profile = '{default}' names no profile.{did_you_mean(default, profiles)}",
            f"Known profiles: {', '.join(sorted(profiles))}.",
        )
    return Config(profiles=profiles, default=default, path=path, default_origin=str(path),
                  warnings=tuple(locate.warnings), tools=tools, mcp_servers=servers)


def allowed_values(key: str) -> str:
    """How messages describe what `key` takes: from the field's metadata, its Literal or its LIMITS range."""
    spec = {f.name: f for f in fields(Profile)}[key]
    if "allowed" in spec.metadata:
        return spec.metadata["allowed"]
    hint = get_type_hints(Profile)[key]
    choices = [a for a in _flatten(hint) if isinstance(a, str)]
    if choices:
        return "one of " + ", ".join(f'"{c}"' for c in choices)
    if key in LIMITS:
        return LIMITS[key].describe()
    return "true or false" if bool in _flatten(hint) else "a string"


def _flatten(hint: Any) -> list[Any]:
    """The leaves of a type: `Literal["a", "b"] | None` -> ["a", "b", NoneType]."""
    args = get_args(hint)
    return [leaf for arg in args for leaf in _flatten(arg)] if args and get_origin(hint) is not Annotated \
        else ([hint] if not args else _flatten(args[0]))


@functools.cache
def _file_model() -> Any:
    """The pydantic model of one [profiles.NAME] table, derived from Profile's fields on first use.

    Every key is optional here (provider and model may come from the built-in profile of that name;
    the rules between keys are `_build_profile`'s), unknown keys are refused (extra="forbid") and types
    are strict (TOML has real types: "yes" is not a boolean, 1.5 not an integer). Imported lazily: only
    loading a config file pays for pydantic, which the provider SDKs import anyway.
    """
    from pydantic import ConfigDict, create_model

    hints = get_type_hints(Profile, include_extras=True)
    # shaped by _build_profile, as TOML writes them
    shaped_later = {"stop": str | list[str], "price": dict[str, Any], "tools": list[str]}
    wanted = {f.name: (shaped_later.get(f.name, hints[f.name]) | None, None)
              for f in fields(Profile) if f.name in PROFILE_KEYS}
    return create_model("ProfileTable", __config__=ConfigDict(extra="forbid", strict=True), **wanted)


def _checked(name: str, values: dict[str, Any], locate: _Locator) -> dict[str, Any]:
    """The keys of a profile table as the model reads them; else a ConfigError naming the first problem."""
    from pydantic import ValidationError

    try:
        return _file_model().model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise _problem(name, values, exc, locate) from None


def _problem(name: str, values: dict[str, Any], exc: Any, locate: _Locator) -> ConfigError:
    """The config-file message (file, line, key, what is allowed, did-you-mean) for pydantic's first error."""
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # an unknown key is said first
    key = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return locate.error(name, key, f"Unknown key '{key}' in profiles.{name}.{did_you_mean(key, PROFILE_KEYS)}",
                            f"Allowed keys: {', '.join(PROFILE_KEYS)}.")
    value, allowed = values[key], allowed_values(key)
    if error["type"] == "out_of_range":
        return locate.error(name, key, f"profiles.{name}.{key} = {value!r} is out of range: expected {allowed}.")
    choices = [a for a in _flatten(get_type_hints(Profile)[key]) if isinstance(a, str)]
    if error["type"] == "literal_error" and isinstance(value, str) and choices:
        more = "; or set base_url" if key == "region" else ""
        return locate.error(name, key, f"profiles.{name}.{key} = '{value}' is unknown.{did_you_mean(value, choices)}",
                            f"Allowed: {', '.join(choices)}{more}.")
    return locate.error(name, key, f"profiles.{name}.{key} = {value!r} is not valid: expected {allowed}.")


#: A key whose last word is one of these holds a secret (api_key, access_token, client_secret, X-Api-Key,
#: Authorization …); "max_tokens" or "stop_token_ids" do not end in one, so they pass.
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "authorization", "auth",
                           "bearer", "credential", "credentials", "cookie"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_looking(name: str) -> bool:
    """True for a key name that says it holds a secret, whatever its case or separators."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return bool(words) and words[-1] in _SECRET_WORDS


def _secret_in(table: Mapping[str, Any], prefix: str = "") -> str | None:
    """The dotted name of the first secret-looking key in a pass-through table (nested tables too)."""
    for key, value in table.items():
        if secret_looking(str(key)):
            return f"{prefix}{key}"
        if isinstance(value, Mapping) and (inner := _secret_in(value, f"{prefix}{key}.")) is not None:
            return inner
    return None


def _build_profile(name: str, table: dict[str, Any], locate: _Locator) -> Profile:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "api_key":
            values[key] = _inline_key(name, value, locate)
            continue
        if secret_looking(key):
            raise locate.error(
                name, key, f"profiles.{name}.{key}: API keys are not read from the config file.",
                'Put the key in an environment variable and name it: api_key_env = "DASHSCOPE_API_KEY".',
            )
        values[key] = value
    values = {**_checked(name, {k: v for k, v in values.items() if k != "api_key"}, locate),
              **({"api_key": values["api_key"]} if "api_key" in values else {})}

    base = BUILTIN_PROFILES.get(name)
    provider = values.get("provider") or (base.provider if base else None)
    if provider is None:
        raise locate.error(name, None, f"profiles.{name} has no provider.",
                           'Add provider = "ollama", "bailian" or "openai".')
    model = values.get("model") or (base.model if base and base.provider == provider else None)
    if not model:
        raise locate.error(name, None, f"profiles.{name} has no model.", 'Add e.g. model = "qwen3:0.6b".')
    region = values.get("region")
    if region is not None and provider != "bailian":
        raise locate.error(name, "region", f"profiles.{name}.region only applies to provider \"bailian\".")
    base_url = values.get("base_url")
    if base_url is not None and not re.match(r"^https?://", base_url):
        shown = mask_url(base_url)
        raise locate.error(name, "base_url", f"profiles.{name}.base_url = '{shown}' is not an http(s) URL.")
    if provider == "openai" and not base_url:
        raise locate.error(name, None, f"profiles.{name} (provider \"openai\") needs a base_url.",
                           'Add e.g. base_url = "http://localhost:8000/v1".')
    thinking = values.get("thinking", "collapse")
    history = values.get("history", "summarize")
    if (secret := _secret_in(values.get("options", {}))) is not None:
        raise locate.error(
            name, "options", f"profiles.{name}.options.{secret}: secrets are not read from options (they would be "
            "sent in every request body and shown by `config show`).",
            'Put an API key in an environment variable and name it: api_key_env = "DASHSCOPE_API_KEY".',
        )
    env_name = values.get("api_key_env")
    if env_name is not None and not _ENV_NAME.match(env_name):  # never echoed: it may be the key itself
        raise locate.error(
            name, "api_key_env", f"profiles.{name}.api_key_env must be the NAME of an environment variable "
            "(letters, digits and _), not the key itself.",
            f'e.g. api_key_env = "DASHSCOPE_API_KEY", then export DASHSCOPE_API_KEY=sk-…  If the key was written '
            f"here, consider it exposed ({locate.path}) and rotate it.",
        )
    if (where := _non_finite(values.get("options", {}))) is not None:
        raise locate.error(name, "options", f"profiles.{name}.options.{where} is not a finite number.",
                           "nan and inf mean nothing to a server; give a number.")
    stop = values.get("stop")
    if isinstance(stop, str):
        stop = (stop,)
    elif stop is not None:
        stop = tuple(stop)
    price = _build_price(name, values.get("price"), locate)
    if "tools" in values:
        values["tools"] = tuple(dict.fromkeys(values["tools"]))  # listed twice is offered once
    shaped = {"provider", "model", "base_url", "region", "stop", "price", "thinking", "history", "options"}
    copied = {k: v for k, v in values.items() if k not in shaped}  # the model has checked (and typed) them
    return Profile(
        name=name, provider=provider, model=model, base_url=base_url,
        region=region if provider == "bailian" else None, stop=stop, price=price, thinking=thinking, history=history,
        options=dict(values.get("options", {})), origin=str(locate.path), **copied,
    )


def _non_finite(table: Mapping[str, Any], prefix: str = "") -> str | None:
    """The dotted name of the first nan/inf in a pass-through table (nested tables and lists too)."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                return name
            if isinstance(item, Mapping) and (inner := _non_finite(item, f"{name}.")) is not None:
                return inner
    return None


def _inline_key(name: str, value: Any, locate: _Locator) -> str:
    """Accept a key written in the file only when the file is private, and say it is a risk anyway."""
    if not isinstance(value, str) or not value.strip():
        raise locate.error(name, "api_key", f"profiles.{name}.api_key must be a non-empty string.")
    if not locate.owner_only:
        raise locate.error(
            name, "api_key",
            f"profiles.{name}.api_key: the file can be read by other users, so it may not hold an API key.",
            f"Make it private (chmod 600 {locate.path}), or better: export the key in an environment variable "
            f'and name it with api_key_env = "DASHSCOPE_API_KEY".',
        )
    locate.warnings.append(f"profiles.{name} keeps its API key in {locate.path}; an environment variable "
                           "(api_key_env) keeps it out of files and backups.")
    return value.strip()


def _build_price(name: str, table: dict[str, Any] | None, locate: _Locator) -> Price | None:
    if table is None:
        return None
    allowed = ("input", "output", "cached_input", "currency")
    for key, value in table.items():
        if key not in allowed:
            raise locate.error(name, "price", f"Unknown key '{key}' in profiles.{name}.price.",
                               f"Allowed: {', '.join(allowed)}.")
        ok = isinstance(value, str) if key == "currency" else PRICE_RANGE.allows(value)
        if not ok:
            raise locate.error(name, "price", f"profiles.{name}.price.{key} = {value!r} is not valid.",
                               "Prices are finite non-negative numbers per 1,000 tokens; currency is a string.")
    if "input" not in table or "output" not in table:
        raise locate.error(name, "price", f"profiles.{name}.price needs both input and output prices.")
    return Price(
        input=float(table["input"]), output=float(table["output"]),
        cached_input=float(table["cached_input"]) if "cached_input" in table else None,
        currency=table.get("currency", ""),
    )


class _Locator:
    """Finds the line a key sits on, since tomllib reports lines only for syntax errors."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.owner_only = _owner_only(path)
        self.warnings: list[str] = []

    def line_of(self, profile: str | None, key: str | None, table: str = "profiles") -> int | None:
        """The line of `key` in [TABLE.PROFILE] (`profile` None: at the top level); None when not found."""
        start = 0
        if profile is not None:
            header = re.compile(rf"^\s*\[\s*{table}\s*\.\s*[\"']?{re.escape(profile)}[\"']?\s*\]")
            for number, line in enumerate(self.lines):
                if header.match(line):
                    start = number
                    break
            else:
                return None
            if key is None:
                return start + 1
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key or '')}[\"']?\s*=")
        for number in range(start, len(self.lines)):
            if number > start and profile is not None and self.lines[number].lstrip().startswith("["):
                break
            if pattern.match(self.lines[number]):
                return number + 1
        return None

    def error(self, profile: str | None, key: str | None, message: str, hint: str | None = None,
              table: str = "profiles") -> ConfigError:
        """The ConfigError for a key of [TABLE.PROFILE], located at its line when it can be found."""
        line = self.line_of(profile, key, table)
        where = f"{self.path}, line {line}" if line else str(self.path)
        return ConfigError(f"{where}: {message}", hint=hint)
