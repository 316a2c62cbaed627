"""The Toolbox: which tools a chat offers the model, which need the user's approval, and running a call.

The engine asks it what to offer (`offered`), whether a call may run unasked (`needs_approval`), what
to show in the approval (`describe`) and to run the call (`run`); the REPL's `/tools` turns tools on and
off for the session. Nothing heavy is imported here: `fetch` imports httpx when it runs, and the MCP
side (tools.mcp_tools) is loaded only for a config with `[mcp.servers.*]`, `mcp` itself only when a
server starts. A server's name in the profile's tools offers all its tools (after include/exclude):
the toolbox starts it when it is made, and `offered()` waits for the ones still starting.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmchat.config.tools import BUILTIN_TOOLS, DEFAULT_TOOL_TIMEOUT, TRUSTED_BY_DEFAULT, ToolConfig, tool_names
from llmchat.core.errors import ConfigError
from llmchat.core.suggest import did_you_mean
from llmchat.core.tools import ToolCall, ToolSpec, ToolStatus
from llmchat.tools import builtins
from llmchat.tools.command import BadArguments, argv_for, option_warnings
from llmchat.tools.process import child_environment, run_process
from llmchat.tools.redact import redact, secret_values

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmchat.config.load import Config
    from llmchat.config.profile import Profile
    from llmchat.core.environment import Environment
    from llmchat.tools.mcp_tools import McpTool, McpTools


def toolbox_for(config: Config, profile: Profile, environment: Environment | None = None) -> Toolbox | None:
    """The toolbox of a run, or None when the profile (after --tool / --no-tools) offers no tools."""
    return Toolbox(config, profile, environment) if profile.tools else None


class Toolbox:
    """Every tool the config defines, the ones this session offers, and the ones trusted for it."""

    def __init__(self, config: Config, profile: Profile, environment: Environment | None = None) -> None:
        self.config, self.profile = config, profile
        self.variables: Mapping[str, str] = environment.variables if environment is not None else dict(os.environ)
        self.settings: dict[str, ToolConfig] = {name: config.tools.get(name) or ToolConfig(name=name)
                                                for name in tool_names(config.tools)}
        self.specs: dict[str, ToolSpec] = {name: self._spec(self.settings[name]) for name in self.settings}
        self.mcp: McpTools | None = None
        if config.mcp_servers:
            from llmchat.tools.mcp_tools import McpTools

            self.mcp = McpTools(config.mcp_servers, self.variables, taken=tuple(self.specs), warnings=config.warnings)
        #: Tool and server names on, in the profile's order; a server's tools come with its name
        self.enabled: list[str] = [name for name in profile.tools if name in self.specs or self._is_server(name)]
        self.disabled: set[str] = set()  # MCP tools turned off one by one (/tools off NAME)
        self.trusted_now: set[str] = set()  # answered "a" (always): tools by `_identity`, not offered name
        self.unsupported: set[str] = set()  # models that cannot call tools (the engine fills it, says it once)
        if self.mcp is not None:
            self.mcp.start([name for name in self.enabled if self._is_server(name)])

    def _is_server(self, name: str) -> bool:
        return self.mcp is not None and name in self.mcp.configs

    def _spec(self, tool: ToolConfig) -> ToolSpec:
        trusted = tool.trust if tool.trust is not None else tool.name in TRUSTED_BY_DEFAULT
        if tool.name in BUILTIN_TOOLS:
            description, parameters = builtins.BUILTIN_SPECS[tool.name]
            return ToolSpec(tool.name, description, parameters, source="builtin", trusted=trusted)
        return ToolSpec(tool.name, tool.description, tool.schema(), source="command", trusted=trusted)

    # ------------------------------------------------------------------------------------------- state

    def offered(self) -> tuple[ToolSpec, ...]:
        """The enabled tools as the model is offered them: the profile's order, then those turned on later.
        An enabled server's tools take its place, once it is ready (this waits for one still starting)."""
        if self.mcp is None:
            return tuple(self.specs[name] for name in self.enabled)
        self.wait_ready()
        self.mcp.check()  # a server that died while idle is not offered (and is said, once)
        mcp_tools = self.mcp.tools()
        offered: list[ToolSpec] = []
        for name in self.enabled:
            if name in self.specs:
                offered.append(self.specs[name])
            else:
                offered += [t.spec for n, t in mcp_tools.items() if t.server == name and n not in self.disabled]
        return tuple(offered)

    def spec(self, name: str) -> ToolSpec | None:
        if name in self.specs:
            return self.specs[name]
        tool = self._mcp_tool(name)
        return tool.spec if tool is not None else None

    def _mcp_tool(self, name: str) -> McpTool | None:
        return self.mcp.tools().get(name) if self.mcp is not None else None

    def names(self) -> tuple[str, ...]:
        """Every tool the config defines, enabled or not, in listing order: a server not running (yet)
        is listed by its own name, a running one by its tools' names."""
        return tuple(name for name, _ in self.listing())

    def listing(self) -> list[tuple[str, ToolSpec]]:
        """(name, spec) of each tool in listing order; a server whose tools are not known is one row, with a
        stand-in spec whose description says its state."""
        rows = [(name, spec) for name, spec in self.specs.items()]
        if self.mcp is None:
            return rows
        mcp_tools = self.mcp.tools()
        for server in self.mcp.configs:
            tools = [(n, t.spec) for n, t in mcp_tools.items() if t.server == server]
            config = self.mcp.configs[server]
            rows += tools or [(server, ToolSpec(server, f"MCP server, {self.mcp.state(server)}", {},
                                                source=f"mcp:{server}", trusted=config.trust))]
        return rows

    def is_enabled(self, name: str) -> bool:
        tool = self._mcp_tool(name) if name not in self.specs else None
        if tool is not None:
            return tool.server in self.enabled and name not in self.disabled
        return name in self.enabled

    # ---------------------------------------------------------------------------------- MCP servers

    def servers_starting(self) -> list[str]:
        """The enabled servers not ready yet: what the first question waits for (the REPL names them)."""
        if self.mcp is None:
            return []
        return self.mcp.starting([name for name in self.enabled if self._is_server(name)])

    def wait_ready(self, names: Sequence[str] | None = None) -> None:
        """Wait for the enabled servers still starting (each ready or failed when this returns)."""
        if self.mcp is not None:
            self.mcp.wait(self.servers_starting() if names is None else list(names))

    def start_all(self) -> None:
        """Start every configured server, offered or not (`llmchat tools`, `mcp list`, doctor list them all)."""
        if self.mcp is not None:
            self.mcp.start(list(self.mcp.configs))
            self.mcp.wait(list(self.mcp.configs))

    def notices(self) -> list[str]:
        """What went wrong with servers since last asked, each failure once (the engine shows them)."""
        if self.mcp is None:
            return []
        secrets = self.secrets()  # a server's stderr lines may say its token
        return [redact(notice, secrets) for notice in self.mcp.notices()]

    def server_stderr(self, name: str) -> list[str]:
        """The last stderr lines of server `name` (for /mcp and `mcp list`), its secrets redacted."""
        server = self.mcp.server(name) if self.mcp is not None else None
        if server is None:
            return []
        secrets = self.secrets()
        return [redact(line, secrets) for line in server.stderr_tail()]

    def close(self) -> None:
        """Stop every MCP server of the process (their children with them); nothing without servers."""
        if self.mcp is not None:
            from llmchat.tools.mcp_tools import close_hub

            close_hub()

    def needs_approval(self, name: str) -> bool:
        """False when the call may run unasked: trusted by the config (or by default: `time`), by
        --trust-tools / `trust_tools = true`, or for this session after an "always" answer."""
        spec = self.spec(name)
        if spec is None:
            return True
        return not (spec.trusted or self.profile.trust_tools or self.trusted_this_session(name))

    def trust(self, name: str) -> None:
        self.trusted_now.add(self._identity(name))

    def trusted_this_session(self, name: str) -> bool:
        """Whether an "always" answer covers the tool now offered as `name`."""
        return self._identity(name) in self.trusted_now

    def _identity(self, name: str) -> str:
        """What an "always" answer trusts: the tool itself, not its offered name. An MCP tool's name can
        change hands (offered as `add` while only one server lists `add`, then another server's `add`
        when the first one fails), so it is held as `mcp:SERVER/TOOL`, its server and its own name."""
        tool = self._mcp_tool(name) if name not in self.specs else None
        return f"mcp:{tool.server}/{tool.remote}" if tool is not None else name

    def enable(self, name: str, on_wait: Callable[[list[str]], None] | None = None) -> None:
        """Offer `name` (a tool or a server: a server is started, and waited for, `on_wait` told first)."""
        tool = self._mcp_tool(self._known(name)) if name not in self.specs else None
        if tool is not None:
            self.disabled.discard(name)
            name = tool.server
        if name not in self.enabled:
            self.enabled.append(name)
        if self._is_server(name) and self.mcp is not None:
            self.mcp.start([name])
            waiting = self.mcp.starting([name])
            if waiting and on_wait is not None:
                on_wait(waiting)
            self.mcp.wait(waiting)

    def disable(self, name: str) -> None:
        tool = self._mcp_tool(self._known(name)) if name not in self.specs else None
        if tool is not None:
            self.disabled.add(name)
        elif name in self.enabled:
            self.enabled.remove(name)

    def _known(self, name: str) -> str:
        known = self.names()
        if name not in known and not self._is_server(name):
            raise ConfigError(f"No tool '{name}'.{did_you_mean(name, known)}",
                              hint=f"Known tools: {', '.join(known)}.")
        return name

    # ------------------------------------------------------------------------------------------ a call

    def describe(self, call: ToolCall) -> str:
        """Exactly what running `call` will do, for the approval prompt (plain text, maybe several lines)."""
        arguments = call.arguments
        if call.name == "time":
            return "read the local date, time and time zone"
        if call.name == "read_file":
            path = arguments.get("path")
            return builtins.describe_read(builtins.resolve_path(path)) if isinstance(path, str) and path else \
                "read_file without a path (the call will fail)"
        if call.name == "fetch":
            return f"GET {arguments.get('url')}"
        if call.name == "shell":
            command = arguments.get("command")
            return command if isinstance(command, str) else \
                "shell without a command (the call will fail)"
        mcp_tool = self._mcp_tool(call.name) if call.name not in self.settings else None
        if mcp_tool is not None and self.mcp is not None:
            return self.mcp.describe(mcp_tool, arguments)
        tool = self.settings.get(call.name)
        if tool is None:
            return f"{call.name}: no such tool (the call will fail)"
        try:
            argv = argv_for(tool, arguments)
        except BadArguments as exc:
            return f"{call.name}: {exc} (the call will fail)"
        return "\n".join([shlex.join(argv), *option_warnings(tool, arguments)])

    def run(self, call: ToolCall) -> tuple[ToolStatus, str]:
        """Run `call`: ("ok", output) or ("error", what went wrong), output cut at the profile's limit, the
        run's secrets redacted from it (tools.redact: a child can read llmchat's own environment).

        KeyboardInterrupt (Ctrl-C) kills what the call started, then propagates."""
        status, output = self._run(call)
        return status, redact(output, self.secrets())

    def secrets(self) -> tuple[str, ...]:
        """The values no tool result may carry: secret-looking variables, the profiles' key variables, and
        keys written inline in the config."""
        profiles = (self.profile, *self.config.profiles.values())
        inline: list[str | None] = [p.api_key for p in profiles]
        if self.mcp is not None:
            inline += self.mcp.secrets()
        return secret_values(self.variables, hidden={p.key_variable for p in profiles if p.key_variable},
                             inline=inline)

    def _run(self, call: ToolCall) -> tuple[ToolStatus, str]:
        if call.error:
            return "error", call.error
        limit = self.profile.tool_output_limit
        mcp_tool = self._mcp_tool(call.name) if call.name not in self.specs else None
        if mcp_tool is not None and self.mcp is not None:
            if not self.is_enabled(call.name):
                return "error", f"the tool {call.name!r} is not offered in this chat"
            return self.mcp.run(mcp_tool, call.arguments, limit)
        if call.name not in self.specs:
            return "error", f"no tool named {call.name!r}{did_you_mean(call.name, self.enabled)}"
        if call.name not in self.enabled:
            return "error", f"the tool {call.name!r} is not offered in this chat"
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
