"""`llmchat doctor`: is each profile ready to chat, and if not, what exactly to do about it.

Why it is shaped this way:
- One row per check, each with ✓/✗ and the fix, in the order a user would debug: the config, the key,
  the server, the model, what the model can do, and (opt-in) a real request. A failure early on
  marks the checks that depend on it "–" (skipped) instead of piling up consequences of one cause.
- It reuses the providers and their error mapping, so the fix shown here is the hint `ask` would
  give for the same failure, not a second wording of it.
- Capabilities come from where the server says them (Ollama's `/api/show`); OpenAI-compatible servers
  do not say, so those rows read "?" (unknown), never a guess. Missing thinking only fails when the
  profile asks for it (`think = true`); missing vision is information, not a failure.
- `--probe` sends one request of one token and times the round trip: it costs a (tiny) call, so it
  is opt-in. Exit 0 when nothing failed, 1 otherwise (a broken config is a finding here, not exit 2).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llmchat.core.environment import Environment
from llmchat.core.errors import AuthFailed, BadRequest, ConfigError, LlmchatError, ModelNotFound, ProviderError

if TYPE_CHECKING:
    from rich.console import Console

    from llmchat.config.load import Config
    from llmchat.config.profile import Profile
    from llmchat.config.session import Overrides
    from llmchat.providers import ModelInfo, Provider

MARKS = {"ok": "✓", "fail": "✗", "skip": "–", "unknown": "?", "warn": "!"}
STYLES = {"ok": "green", "fail": "bold red", "skip": "dim", "unknown": "yellow", "warn": "yellow"}
PROBE_QUESTION = "Reply with the single word OK."


@dataclass
class Check:
    name: str
    state: str  # a key of MARKS
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "fail"


@dataclass
class _Context:
    """What the checks of one profile learned so far (later checks depend on earlier ones)."""

    profile: Profile
    provider: Provider | None = None
    key_ok: bool = True
    reachable: bool = False
    listing: list[ModelInfo] | None = None
    model_ok: bool = False
    capabilities: frozenset[str] | None = None
    #: where the key variable is looked up: the run's Environment (`run_doctor`), else the process
    variables: Mapping[str, str] = field(default_factory=lambda: os.environ)


def diagnose(profile: Profile, warnings: tuple[str, ...] = (), *, probe: bool = False,
             connect: Callable[..., Provider] | None = None, environment: Environment | None = None) -> list[Check]:
    """Every check for one profile, in order; never raises for what it finds."""
    if connect is None:
        from llmchat.providers import connect as connect_to

        connect = functools.partial(connect_to, environment=environment)
    ctx = _Context(profile, variables=environment.variables) if environment else _Context(profile)
    checks = [_config(profile, warnings, ctx.variables), _key(ctx)]
    checks.append(_server(ctx, connect))
    if checks[1].state == "ok" and not ctx.key_ok:  # the server refused the key the profile supplies
        checks[1] = _rejected(profile, ctx.variables)
    checks.append(_model(ctx))
    checks += _capabilities(ctx)
    checks.append(_probe(ctx) if probe else Check("latency", "skip", "not measured", "add --probe to time "
                                                  "a one-token request"))
    return checks


def _config(profile: Profile, warnings: tuple[str, ...], variables: Mapping[str, str]) -> Check:
    try:
        endpoint = profile.shown_endpoint_in(variables)
    except ConfigError as exc:
        return Check("config", "fail", exc.message, exc.hint or "")
    own = [w for w in warnings if w.startswith(f"profiles.{profile.name} ")]
    origin = "built-in" if profile.origin == "built-in" else f"from {profile.origin}"
    detail = f"{profile.provider} · {profile.model} · {endpoint} ({origin})"
    if own:
        return Check("config", "warn", f"{detail}; " + "; ".join(own))
    return Check("config", "ok", detail)


def _key(ctx: _Context) -> Check:
    profile = ctx.profile
    if profile.api_key:
        return Check("API key", "ok", "written in the (owner-only) config file")
    variable = profile.key_variable
    if variable is None:
        return Check("API key", "ok", "none needed")
    if ctx.variables.get(variable, "").strip():
        return Check("API key", "ok", f"{variable} is set")
    ctx.key_ok = False
    state = "is not set" if ctx.variables.get(variable) is None else "is set but empty"
    return Check("API key", "fail", f"{variable} {state}", _key_fix(profile, ctx.variables))


def _rejected(profile: Profile, variables: Mapping[str, str]) -> Check:
    if profile.key_variable is None and not profile.api_key:
        return Check("API key", "fail", "the server wants a key, but the profile names none",
                     'Add api_key_env = "NAME" to the profile, then export NAME=…')
    source = profile.key_variable or "the key in the config file"
    return Check("API key", "fail", f"the server rejected {source}", _key_fix(profile, variables))


def _key_fix(profile: Profile, variables: Mapping[str, str]) -> str:
    variable = profile.key_variable or "the profile's api_key_env"
    regional = profile.provider == "bailian" and not profile.base_url  # its own base_url: no region applies
    where = f" for the {profile.region or 'beijing'} region" if regional else ""
    return f"export {variable}=sk-…  (a key{where} of {_endpoint(profile, variables)})"


def _endpoint(profile: Profile, variables: Mapping[str, str] | None = None) -> str:
    try:
        return profile.shown_endpoint if variables is None else profile.shown_endpoint_in(variables)
    except ConfigError:
        return "?"


def _server(ctx: _Context, connect: Callable[..., Provider]) -> Check:
    profile = ctx.profile
    try:
        provider = ctx.provider = connect(profile, require_key=False)
        if profile.provider == "ollama":
            version = provider.version()  # type: ignore[attr-defined]
            ctx.reachable = True
            return Check("server", "ok", f"Ollama {version} at {profile.shown_endpoint_in(ctx.variables)}")
        ctx.listing = provider.list_models()
        ctx.reachable = True
        shown = profile.shown_endpoint_in(ctx.variables)
        return Check("server", "ok", f"answers at {shown} ({len(ctx.listing)} models listed)")
    except AuthFailed as exc:
        ctx.reachable = True  # it answered: only the key is wrong (or missing)
        ctx.key_ok = False
        return Check("server", "ok", f"answers at {_endpoint(profile, ctx.variables)} (and refuses: {exc.message})")
    except ProviderError as exc:
        if profile.provider != "ollama" and isinstance(exc, (BadRequest, ModelNotFound)) and not exc.not_the_api:
            ctx.reachable = True  # a server without GET /models (some proxies): reachable, list unknown
            shown = profile.shown_endpoint_in(ctx.variables)
            return Check("server", "ok", f"answers at {shown} (it lists no models: {exc.message})")
        return Check("server", "fail", exc.message, exc.hint or "")
    except LlmchatError as exc:
        return Check("server", "fail", exc.message, exc.hint or "")


def _model(ctx: _Context) -> Check:
    profile, model = ctx.profile, ctx.profile.model
    if not ctx.reachable:
        return Check("model", "skip", f"{model}: the server did not answer")
    if profile.provider == "ollama":
        try:
            info = ctx.provider.show(model)  # type: ignore[union-attr]
        except ModelNotFound:
            return Check("model", "fail", f"{model} is not on this server",
                         f"llmchat pull {model}   (or pick one from `llmchat models -p {profile.name}`)")
        except LlmchatError as exc:
            return Check("model", "fail", exc.message, exc.hint or "")
        ctx.model_ok = True
        ctx.capabilities = frozenset(info.capabilities) if info.capabilities is not None else None
        facts = ", ".join(f for f in (info.family, info.parameters, info.quantization) if f)
        return Check("model", "ok", f"{model}" + (f" ({facts})" if facts else ""))
    if not ctx.key_ok:
        return Check("model", "skip", f"{model}: needs a working key to check")
    if ctx.listing is None:
        ctx.model_ok = True  # cannot tell; let the probe (if any) decide
        return Check("model", "unknown", f"{model}: the server does not list its models")
    names = {m.name for m in ctx.listing}
    if model in names:
        ctx.model_ok = True
        return Check("model", "ok", f"{model} is offered")
    return Check("model", "fail", f"{model} is not among the {len(names)} models the server offers",
                 f"Check the name: `llmchat models -p {profile.name}` lists them.")


def _capabilities(ctx: _Context) -> list[Check]:
    profile, model = ctx.profile, ctx.profile.model
    if not ctx.model_ok:
        return [Check("thinking", "skip", "model not checked"), Check("vision", "skip", "model not checked")]
    caps = ctx.capabilities
    if caps is None:
        said = "the server does not say" if profile.provider != "ollama" else "this Ollama is too old to say"
        return [Check("thinking", "unknown", said), Check("vision", "unknown", said)]
    if "thinking" in caps:
        thinking = Check("thinking", "ok", f"{model} can think")
    elif profile.think:
        thinking = Check("thinking", "fail", f"the profile asks for thinking (think = true); {model} cannot think",
                         "Set think = false in the profile, or use a thinking model (e.g. qwen3).")
    else:
        thinking = Check("thinking", "skip", f"{model} cannot think")
    if "vision" in caps:
        vision = Check("vision", "ok", f"{model} can see images")
    else:
        vision = Check("vision", "skip", f"{model} cannot see images", "for --image, use a vision model "
                       "(e.g. qwen2.5vl, gemma3)")
    return [thinking, vision]


def _probe(ctx: _Context) -> Check:
    if not (ctx.reachable and ctx.key_ok and ctx.model_ok) or ctx.provider is None:
        return Check("latency", "skip", "not measured: an earlier check failed")
    from llmchat.providers import ChatOptions

    options = replace(ChatOptions.from_profile(ctx.profile), max_tokens=1)
    started = time.monotonic()
    try:
        for _ in ctx.provider.stream([{"role": "user", "content": PROBE_QUESTION}], options):
            pass
    except LlmchatError as exc:
        return Check("latency", "fail", exc.message, exc.hint or "")
    return Check("latency", "ok", f"{time.monotonic() - started:.2f} s for a one-token request")


# -------------------------------------------------------------------------------------------- command


def profiles_to_check(config: Config, name: str | None,
                      variables: Mapping[str, str] | None = None) -> list[Profile]:
    """`-p NAME`: that one. Otherwise every profile, the default first: the config file's and the
    built-in ones (a built-in cloud profile whose key is not set is shown as not set up, not failed:
    `unconfigured`)."""
    if name:
        return [config.profile(name, variables)]
    default = config.profile(None, variables)
    rest = [p for p in config.profiles.values() if p.name != default.name]
    return [default, *rest]


def unconfigured(profile: Profile, variables: Mapping[str, str], default: str) -> list[Check] | None:
    """A built-in profile nobody set up (not the default, its key variable unset): one row saying how to
    set it up, and no request to its cloud server, instead of failures for a profile never meant to be used."""
    variable = profile.key_variable
    if profile.origin != "built-in" or profile.name == default or variable is None or profile.api_key:
        return None
    if (variables.get(variable) or "").strip():
        return None
    return [Check("config", "ok", f"{profile.provider} · {profile.model} · {_endpoint(profile, variables)} (built-in)"),
            Check("API key", "skip", f"not set up: {variable} "
                  + ("is not set" if variables.get(variable) is None else "is set but empty"),
                  f"to use it: {_key_fix(profile, variables)}")]


def optional(check: Check) -> Check:
    """A failure of a built-in profile the user does not use (not the default, not named with -p): shown,
    with its fix, as not set up here rather than failed, as `unconfigured` does for a cloud key; so a
    Bailian-only user without a local Ollama still gets "All checks passed"."""
    if check.state != "fail":
        return check
    return Check(check.name, "skip", f"not set up here: {check.detail}", check.fix)


def run_doctor(flags: Overrides, environment: Environment | None = None, *, probe: bool = False) -> int:
    from llmchat.cli.info import table_console
    from llmchat.config.load import load_config
    from llmchat.config.session import with_flags

    console = table_console(environment)
    try:
        config = load_config(flags.config, environment)
    except ConfigError as exc:
        _print_table(console, "config", [Check("config", "fail", exc.message, exc.hint or "")])
        return 1
    failed = 0
    variables = environment.variables if environment else os.environ
    default = config.profile(None, variables).name
    for profile in profiles_to_check(config, flags.profile, variables):
        profile = with_flags(profile, flags)
        checks = (None if flags.profile else unconfigured(profile, variables, default)) or diagnose(
            profile, config.warnings, probe=probe, environment=environment)
        if not flags.profile and profile.origin == "built-in" and profile.name != default:
            checks = [optional(check) for check in checks]
        failed += sum(c.failed for c in checks)
        _print_table(console, f"{profile.name} ({profile.provider} · {profile.model})", checks)
    if config.mcp_servers:
        checks = mcp_checks(flags, environment or Environment.from_process(), config.warnings)
        failed += sum(c.failed for c in checks)
        _print_table(console, "MCP servers", checks)
    console.print("All checks passed." if not failed else f"{failed} check{'s' if failed != 1 else ''} failed.",
                  style="green" if not failed else "bold red", highlight=False)
    return 1 if failed else 0


def mcp_checks(flags: Overrides, environment: Environment, warnings: tuple[str, ...] = ()) -> list[Check]:
    """One check per configured MCP server: it starts, lists its tools, and is stopped (cli.mcp's rows);
    a config warning about the server (a literal secret in a readable file) makes a started one "warn"."""
    from llmchat.cli.mcp import server_rows

    checks = []
    for row in server_rows(flags, environment):
        name = f"mcp:{row['name']}"
        if row["status"] == "ready":
            tools = [t["name"] for t in row["tools"]]
            listed = ", ".join(tools[:6]) + (", …" if len(tools) > 6 else "")
            detail = f"started, {len(tools)} tool{'s' if len(tools) != 1 else ''}{': ' + listed if tools else ''}"
            own = [w for w in warnings if w.startswith(f"mcp.servers.{row['name']}.")]
            checks.append(Check(name, "warn", "; ".join([detail, *own])) if own else Check(name, "ok", detail))
            continue
        error = str(row["error"])
        detail = "\n".join([error, *(f"stderr: {line}" for line in row["stderr"])])
        checks.append(Check(name, "fail", detail, _mcp_fix(row["name"], error)))
    return checks


def _mcp_fix(name: str, error: str) -> str:
    where = f"[mcp.servers.{name}]"
    if error.startswith("command not found"):
        return f"Install the program, or fix command in {where} (a full path works too)."
    if "is not set" in error:
        return "Export the variable named, or give it a default: ${NAME:-value}."
    if error.startswith("cannot connect"):
        return f"Check that the server is running and the url in {where} is right."
    return f"Run its command yourself to see it start; `llmchat mcp list` shows its stderr ({where})."


def _print_table(console: Console, title: str, checks: list[Check]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", title_style="bold", box=None, header_style="bold",
                  pad_edge=False)
    for column in ("", "check", "result", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(Text(MARKS[check.state], style=STYLES[check.state]), check.name,
                      Text(check.detail), Text(check.fix, style="dim"))
    console.print(table)
    console.print()
