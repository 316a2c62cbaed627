"""The Toolbox: which tools a chat offers the model, which need the user's approval, and running a call.

The engine asks it what to offer (`offered`), whether a call may run unasked (`needs_approval`), what
to show in the approval (`describe`) and to run the call (`run`); the REPL's `/tools` turns tools on and
off for the session. Nothing heavy is imported here: `fetch` imports httpx when it runs.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmchat.config.tools import BUILTIN_TOOLS, DEFAULT_TOOL_TIMEOUT, TRUSTED_BY_DEFAULT, ToolConfig
from llmchat.core.errors import ConfigError
from llmchat.core.suggest import did_you_mean
from llmchat.core.tools import ToolCall, ToolSpec, ToolStatus
from llmchat.tools import builtins
from llmchat.tools.command import BadArguments, argv_for
from llmchat.tools.process import child_environment, run_process

if TYPE_CHECKING:
    from llmchat.config.load import Config
    from llmchat.config.profile import Profile
    from llmchat.core.environment import Environment


def toolbox_for(config: Config, profile: Profile, environment: Environment | None = None) -> Toolbox | None:
    """The toolbox of a run, or None when the profile (after --tool / --no-tools) offers no tools."""
    return Toolbox(config, profile, environment) if profile.tools else None


class Toolbox:
    """Every tool the config defines, the ones this session offers, and the ones trusted for it."""

    def __init__(self, config: Config, profile: Profile, environment: Environment | None = None) -> None:
        self.config, self.profile = config, profile
        self.variables: Mapping[str, str] = environment.variables if environment is not None else dict(os.environ)
        self.settings: dict[str, ToolConfig] = {name: config.tools.get(name) or ToolConfig(name=name)
                                                for name in config.tool_names()}
        self.specs: dict[str, ToolSpec] = {name: self._spec(self.settings[name]) for name in self.settings}
        self.enabled: list[str] = [name for name in profile.tools if name in self.specs]
        self.trusted_now: set[str] = set()  # answered "a" (always) in an approval
        self.unsupported: set[str] = set()  # models that cannot call tools (the engine fills it, says it once)

    def _spec(self, tool: ToolConfig) -> ToolSpec:
        trusted = tool.trust if tool.trust is not None else tool.name in TRUSTED_BY_DEFAULT
        if tool.name in BUILTIN_TOOLS:
            description, parameters = builtins.BUILTIN_SPECS[tool.name]
            return ToolSpec(tool.name, description, parameters, source="builtin", trusted=trusted)
        return ToolSpec(tool.name, tool.description, tool.schema(), source="command", trusted=trusted)

    # ------------------------------------------------------------------------------------------- state

    def offered(self) -> tuple[ToolSpec, ...]:
        """The enabled tools as the model is offered them: the profile's order, then those turned on later."""
        return tuple(self.specs[name] for name in self.enabled)

    def spec(self, name: str) -> ToolSpec | None:
        return self.specs.get(name)

    def names(self) -> tuple[str, ...]:
        """Every tool the config defines, enabled or not, in listing order."""
        return tuple(self.specs)

    def is_enabled(self, name: str) -> bool:
        return name in self.enabled

    def needs_approval(self, name: str) -> bool:
        """False when the call may run unasked: trusted by the config (or by default: `time`), by
        --trust-tools / `trust_tools = true`, or for this session after an "always" answer."""
        spec = self.specs.get(name)
        if spec is None:
            return True
        return not (spec.trusted or self.profile.trust_tools or name in self.trusted_now)

    def trust(self, name: str) -> None:
        self.trusted_now.add(name)

    def enable(self, name: str) -> None:
        if name not in self.enabled:
            self.enabled.append(self._known(name))

    def disable(self, name: str) -> None:
        self._known(name)
        if name in self.enabled:
            self.enabled.remove(name)

    def _known(self, name: str) -> str:
        if name not in self.specs:
            raise ConfigError(f"No tool '{name}'.{did_you_mean(name, self.specs)}",
                              hint=f"Known tools: {', '.join(self.specs)}.")
        return name

    # ------------------------------------------------------------------------------------------ a call

    def describe(self, call: ToolCall) -> str:
        """Exactly what running `call` will do, for the approval prompt (plain text, maybe several lines)."""
        arguments = call.arguments
        if call.name == "time":
            return "read the local date, time and time zone"
        if call.name == "read_file":
            path = arguments.get("path")
            return f"read {builtins.resolve_path(path)}" if isinstance(path, str) and path else \
                "read_file without a path (the call will fail)"
        if call.name == "fetch":
            return f"GET {arguments.get('url')}"
        if call.name == "shell":
            command = arguments.get("command")
            return command if isinstance(command, str) else \
                "shell without a command (the call will fail)"
        tool = self.settings.get(call.name)
        if tool is None:
            return f"{call.name}: no such tool (the call will fail)"
        try:
            return shlex.join(argv_for(tool, arguments))
        except BadArguments as exc:
            return f"{call.name}: {exc} (the call will fail)"

    def run(self, call: ToolCall) -> tuple[ToolStatus, str]:
        """Run `call`: ("ok", output) or ("error", what went wrong), output cut at the profile's limit.

        KeyboardInterrupt (Ctrl-C) kills what the call started, then propagates."""
        if call.error:
            return "error", call.error
        if call.name not in self.specs:
            return "error", f"no tool named {call.name!r}{did_you_mean(call.name, self.enabled)}"
        if call.name not in self.enabled:
            return "error", f"the tool {call.name!r} is not offered in this chat"
        limit = self.profile.tool_output_limit
        tool = self.settings[call.name]
        arguments = call.arguments
        if call.name == "time":
            return "ok", builtins.local_time(self.variables)
        if call.name in ("read_file", "fetch", "shell"):
            key = {"read_file": "path", "fetch": "url", "shell": "command"}[call.name]
            value = arguments.get(key)
            if not isinstance(value, str) or not value.strip():
                return "error", f"{call.name} needs a {key} (a non-empty string)"
            if call.name == "read_file":
                return builtins.read_file(builtins.resolve_path(value), limit)
            if call.name == "fetch":
                from llmchat import __version__

                return builtins.fetch(value, limit=limit, timeout=tool.timeout, user_agent=f"llmchat/{__version__}")
            return run_process(["/bin/sh", "-c", value], env=self.child_environment(tool), timeout=tool.timeout,
                               limit=limit)
        try:
            argv = argv_for(tool, arguments)
        except BadArguments as exc:
            return "error", str(exc)
        return run_process(argv, env=self.child_environment(tool), timeout=tool.timeout or DEFAULT_TOOL_TIMEOUT,
                           limit=limit)

    def child_environment(self, tool: ToolConfig) -> dict[str, str]:
        """The environment a command tool or `shell` gets: the user's, without secrets (tools.process)."""
        hidden = {p.key_variable for p in (self.profile, *self.config.profiles.values()) if p.key_variable}
        return child_environment(self.variables, hidden=hidden, passed=tool.pass_env)
