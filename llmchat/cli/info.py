"""The informational commands: `profiles`, `models`, `config init | show`."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING

from llmchat.config.load import Config, config_path, load_config
from llmchat.config.profile import mask_url, profile_as_table
from llmchat.config.session import Overrides, resolve
from llmchat.config.tools import ToolConfig
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError, LlmchatError
from llmchat.core.safe_text import json_for, text_for

if TYPE_CHECKING:
    from llmchat.providers import ModelInfo, Provider


def table_console(environment: Environment | None = None):
    """A console for tables: in a pipe, wide enough that no row is wrapped, so scripts can parse it.

    It is the safe console (no markup in cells, untrusted text sanitized): model names, families and
    endpoints come from servers and config files.
    """
    from llmchat.render.terminal import terminal_console

    environment = environment or Environment.from_process()  # doctor does not pass one yet
    return terminal_console(environment.stdout, width=None if environment.stdout_is_terminal else 1000)


def print_profiles(config_file: str | None, environment: Environment) -> None:
    from rich.table import Table

    config = load_config(config_file, environment)
    active = environment.get("LLMCHAT_PROFILE") or config.default
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("", "name", "provider", "model", "endpoint", "key", "from"):
        table.add_column(column, overflow="fold")  # never "…": scripts read this too
    for name, profile in config.profiles.items():
        try:
            endpoint = mask_url(profile.endpoint_in(environment.variables))
        except ConfigError:
            endpoint = "?"
        key = profile.key_variable or "-"
        if profile.key_variable:
            key += " ✓" if environment.get(profile.key_variable) else " (unset)"
        origin = "built-in" if profile.origin == "built-in" else "config"
        table.add_row("*" if name == active else "", name, profile.provider, profile.model, endpoint, key, origin)
    table_console(environment).print(table)


def print_models(flags: Overrides, environment: Environment, *, as_json: bool) -> None:
    """The server's models with size, family and what each can do (thinking, vision, …) where it says."""
    from llmchat.providers import connect

    _, profile = resolve(flags, environment)
    provider = connect(profile, environment=environment)
    listing = with_capabilities(provider, provider.list_models())
    if as_json:
        out = environment.stdout
        print(json_for(out, json.dumps([_as_dict(m) for m in listing], ensure_ascii=False, indent=2)), file=out)
        return
    from rich.table import Table

    from llmchat.engine.pull import format_bytes

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["name", "size", "family", "parameters", "quantization", "capabilities", "modified", "owner"]
    shown = [c for c in columns if c == "name" or any(getattr(m, c) for m in listing)]
    for column in shown:
        table.add_column(column, justify="right" if column == "size" else "left")
    for model in listing:
        cells = []
        for column in shown:
            value = getattr(model, column)
            if column == "size" and value:
                cells.append(format_bytes(value))
            elif column == "capabilities":
                cells.append(", ".join(c for c in value or () if c != "completion"))  # every chat model has it
            else:
                cells.append(str(value or ""))
        table.add_row(*cells)
    console = table_console(environment)
    console.print(table)
    if not listing:
        console.print(f"{profile.shown_endpoint_in(environment.variables)} offers no models.", style="dim")


def with_capabilities(provider: Provider, listing: list[ModelInfo]) -> list[ModelInfo]:
    """Fill in capabilities the listing lacks by asking per model (Ollama before 0.30: `/api/show`).

    Servers that never say (OpenAI-compatible: `capabilities()` is None) cost no extra request; Ollama's
    are asked a few at a time, since each `/api/show` also reads the model's tensor list.
    """
    missing = [m for m in listing if m.capabilities is None]
    if not missing:
        return listing

    def ask(model: ModelInfo) -> ModelInfo:
        if model.capabilities is not None:
            return model
        try:
            capabilities = provider.capabilities(model.name)
        except LlmchatError:
            return model  # removed meanwhile, or a broken manifest: the listing still shows it
        return model if capabilities is None else replace(model, capabilities=_ordered(capabilities))

    first = ask(missing[0])
    if first.capabilities is None:  # this server does not say: no request per model
        return listing
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(ask, listing))


_ORDER = ("completion", "tools", "insert", "vision", "embedding", "thinking")  # Ollama's own order


def _ordered(capabilities: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(capabilities, key=lambda c: (_ORDER.index(c) if c in _ORDER else len(_ORDER), c)))


def _as_dict(model: ModelInfo) -> dict[str, object]:
    data = dict(model.__dict__)
    if model.capabilities is not None:
        data["capabilities"] = list(model.capabilities)
    return data


def config_template() -> str:
    return resources.files("llmchat.config").joinpath("template.toml").read_text(encoding="utf-8")


def init_config(config_file: str | None, environment: Environment, *, force: bool) -> None:
    path, _ = config_path(config_file, environment.variables)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; not overwriting it.",
                          hint="Use `llmchat config init --force` to replace it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_template(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror}.") from None
    print(text_for(environment.stdout, f"Wrote {path}"), file=environment.stdout)  # a file name: sanitized


def show_config(config_file: str | None, environment: Environment) -> None:
    import tomli_w

    config: Config = load_config(config_file, environment)
    source = config.path if config.path else "built-in defaults (no config file)"
    lines = [f"# effective config from {source}", ""]
    lines.append(tomli_w.dumps({"default_profile": environment.get("LLMCHAT_PROFILE") or config.default}))
    for name, profile in config.profiles.items():
        table = profile_as_table(profile, environment.variables)
        lines.append(f"# from {profile.origin}")
        if profile.key_variable:
            state = "is set (value hidden)" if environment.get(profile.key_variable) else "is NOT set"
            lines.append(f"# {profile.key_variable} {state}")
        lines.append(tomli_w.dumps({"profiles": {name: table}}))
    if config.tools:
        lines.append(tomli_w.dumps({"tools": {name: tool_as_table(tool) for name, tool in config.tools.items()}}))
    print(text_for(environment.stdout, "\n".join(lines).rstrip()), file=environment.stdout)


def tool_as_table(tool: ToolConfig) -> dict[str, object]:
    """A [tools.NAME] table as `config show` prints it: what is in effect, defaults included."""
    table: dict[str, object] = {}
    if tool.is_command:
        table = {"description": tool.description, "command": list(tool.command),
                 "parameters": {k: dict(v) for k, v in tool.parameters.items()}, "required": list(tool.required)}
    if tool.trust is not None:
        table["trust"] = tool.trust
    table["timeout"] = tool.timeout
    if tool.pass_env:
        table["pass_env"] = list(tool.pass_env)
    return table


