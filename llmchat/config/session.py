"""Resolving what a command runs against: the config file, the profile, and the flags on top.

Shared by `ask`, `chat` and the bare `llmchat`, so that every entry point applies the same
precedence (flags > environment > file > built-ins) in one place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

from llmchat.config.load import Config, load_config
from llmchat.config.profile import Profile, apply_overrides
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError
from llmchat.core.safe_text import sanitize
from llmchat.core.suggest import did_you_mean


@dataclass(frozen=True)
class Overrides:
    """Flags that change a profile for one run; None means the flag was not given."""

    profile: str | None = None
    model: str | None = None
    system: str | None = None
    think: bool | None = None
    temperature: float | None = None
    search: bool | None = None
    show_thinking: bool | None = None  # True: --show-thinking, False: --hide-thinking
    config: str | None = None
    tool: tuple[str, ...] | None = None  # --tool NAME (repeatable): added to the profile's tools
    no_tools: bool | None = None  # --no-tools: offer none
    trust_tools: bool | None = None  # --trust-tools: run every call without asking


def resolve(flags: Overrides, environment: Environment | None = None) -> tuple[Config, Profile]:
    """The config and the profile to use; warnings about that profile go to stderr, once.

    LLMCHAT_CONFIG and LLMCHAT_PROFILE come from `environment` (None: the process's, for callers not yet
    given one)."""
    config = load_config(flags.config, environment)
    profile = config.profile(flags.profile, environment.variables if environment else None)
    check_tool_flags(config, flags)
    for warning in config.warnings:
        if warning.startswith(f"profiles.{profile.name} "):
            print(sanitize(f"Warning: {warning}"), file=environment.stderr if environment else sys.stderr)
    return config, with_flags(profile, flags)


def with_flags(profile: Profile, flags: Overrides) -> Profile:
    """The profile with the flags applied. A flag named like a Profile field sets that field, so adding a
    flag for a setting needs no list kept here; --show/--hide-thinking set the `thinking` display."""
    thinking = None if flags.show_thinking is None else ("show" if flags.show_thinking else "hide")
    same = {f.name: getattr(flags, f.name) for f in fields(flags) if f.name in _PROFILE_FIELDS}
    tools = None
    if flags.no_tools:
        tools = ()
    elif flags.tool:
        tools = tuple(dict.fromkeys((*profile.tools, *flags.tool)))
    return apply_overrides(profile, **same, thinking=thinking, tools=tools)


def check_tool_flags(config: Config, flags: Overrides) -> None:
    """Each --tool must name a tool the config defines (exit 2 with a did-you-mean, before anything runs)."""
    known = config.tool_names()
    for name in flags.tool or ():
        if name not in known:
            where = f" in {config.path}" if config.path else ""
            raise ConfigError(f"--tool {name}: no such tool.{did_you_mean(name, known)}",
                              hint=f"Known tools: {', '.join(known)} (`llmchat tools` lists them); define your "
                              f"own as a [tools.NAME] table{where or ' in the config file'}.")


_PROFILE_FIELDS = frozenset(f.name for f in fields(Profile)) - {"name", "tools"}  # --profile chooses, --tool adds
