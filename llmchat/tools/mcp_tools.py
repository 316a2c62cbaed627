"""The MCP servers of one toolbox: which are on, the names their tools are offered under, running a call.

A tool keeps its own name; when two running servers list the same name, or a server's tool is named
like a built-in or command tool, it is offered as `SERVER__TOOL` (both servers' copies, so neither
wins by starting first). A name the APIs would refuse (they take `[A-Za-z0-9_-]{1,64}`) is mended the
same way. The schema goes to the model exactly as the server listed it. Servers live in the process's
hub (mcp_hub), shared by every toolbox, so `/profile` keeps them running.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmchat.config.mcp import McpServerConfig
from llmchat.config.tools import TOOL_NAME
from llmchat.core.tools import ToolSpec, ToolStatus
from llmchat.tools.mcp_hub import START_TIMEOUT, Hub, Server

_HUB: Hub | None = None


def hub() -> Hub:
    """The process's hub, made on first use (its thread and `import mcp` only when a server starts)."""
    global _HUB
    if _HUB is None:
        _HUB = Hub()
    return _HUB


def close_hub() -> None:
    """Stop every server this process started (the front ends call it on their way out); a later toolbox
    in the same process (tests run the CLI in-process) gets a new hub."""
    global _HUB
    if _HUB is not None:
        _HUB.close()
        _HUB = None


@dataclass(frozen=True)
class McpTool:
    """A server's tool as offered: the name the model sees, and where it really goes."""

    spec: ToolSpec
    server: str
    remote: str  # the tool's own name on its server


class McpTools:
    """The configured servers as one toolbox sees them."""

    def __init__(self, servers: Mapping[str, McpServerConfig], variables: Mapping[str, str],
                 taken: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.configs = dict(servers)
        self.variables = variables
        self.taken = frozenset(taken)  # built-in and command tool names
        self.warnings = [w for w in warnings if w.startswith("mcp.servers.")]  # the config's, about servers
        self.pending: list[str] = []  # warnings about servers started here, said with the next notices
        self.hub = hub()

    # ---------------------------------------------------------------------------------- servers

    def start(self, names: Sequence[str]) -> None:
        """Start these servers in the background (all at once: they come up concurrently)."""
        for name in names:
            if name not in self.hub.servers:
                self.pending += [f"Warning: {w}" for w in self.warnings if w.startswith(f"mcp.servers.{name}.")]
            self.hub.start(self.configs[name], self.variables)

    def server(self, name: str) -> Server | None:
        return self.hub.servers.get(name)

    def starting(self, names: Sequence[str]) -> list[str]:
        """Those of `names` started and not ready (nor failed) yet."""
        return [n for n in names if (s := self.server(n)) is not None and s.status == "starting"]

    def wait(self, names: Sequence[str], timeout: float = START_TIMEOUT) -> None:
        self.hub.wait(list(names), timeout)

    def notices(self) -> list[str]:
        """A notice for each server that failed since the last call (each said once per run)."""
        said, self.pending = self.pending, []
        for server in self.hub.servers.values():
            if server.status == "failed" and not server.reported and server.name in self.configs:
                server.reported = True
                said.append(server.failure())
        return said

    def state(self, name: str) -> str:
        """One word or phrase for listings: not started, starting, ready (N tools), failed: REASON."""
        server = self.server(name)
        if server is None or server.status == "stopped":
            return "not started"
        if server.status == "failed":
            return f"failed: {server.error}"
        if server.status == "starting":
            return "starting"
        return f"ready ({len(server.tools)} tool{'s' if len(server.tools) != 1 else ''})"

    # ------------------------------------------------------------------------------------ tools

    def check(self) -> None:
        """Notice servers that went away while idle (before a request is built from the tools)."""
        self.hub.check()

    def tools(self) -> dict[str, McpTool]:
        """Every tool of the running servers, by offered name, in config order then the server's order."""
        listed = [(name, tool) for name in self.configs
                  if (server := self.server(name)) is not None and server.status == "ready"
                  for tool in server.tools]
        counts: dict[str, int] = {}
        for _, tool in listed:
            counts[tool.name] = counts.get(tool.name, 0) + 1
        table: dict[str, McpTool] = {}
        for server_name, tool in listed:
            name = tool.name
            if counts[name] > 1 or name in self.taken or name in self.configs or not TOOL_NAME.match(name):
                name = _mended(f"{server_name}__{tool.name}")
            while name in table or name in self.taken:  # a mended name may still meet another
                name = _mended(name + "_")
            config = self.configs[server_name]
            table[name] = McpTool(ToolSpec(name, tool.description, tool.schema, source=f"mcp:{server_name}",
                                           trusted=config.trust), server_name, tool.name)
        return table

    def of_server(self, server: str) -> list[McpTool]:
        return [tool for tool in self.tools().values() if tool.server == server]

    def describe(self, tool: McpTool, arguments: Mapping[str, Any]) -> str:
        """The approval's line: which tool on which server, reached how."""
        config = self.configs[tool.server]
        where = f"stdio: {config.target}" if config.command is not None else f"{config.transport}: {config.target}"
        renamed = f" (its own name: {tool.remote})" if tool.remote != tool.spec.name else ""
        return f"call {tool.remote} on MCP server {tool.server}{renamed}, {where}"

    def secrets(self) -> list[str]:
        """What the servers are handed under secret-looking `env` / `headers` names, expanded (a literal
        token in the config too): a server echoing its own token must not pass it to the model. For a
        header like `Bearer TOKEN` the token alone is listed as well."""
        from llmchat.config.load import secret_looking
        from llmchat.tools.mcp_launch import Unset, expand

        found: list[str] = []
        for config in self.configs.values():
            for name, value in (*config.env.items(), *config.headers.items()):
                if not secret_looking(name):
                    continue
                try:
                    text = expand(value, self.variables)
                except Unset:
                    continue
                found += [text, text.split()[-1]] if text.split() else [text]
        return found

    def run(self, tool: McpTool, arguments: Mapping[str, Any], limit: int) -> tuple[ToolStatus, str]:
        config = self.configs[tool.server]
        result = self.hub.call(tool.server, tool.remote, arguments, config.timeout, limit)
        return ("error" if result.is_error else "ok"), result.text


def _mended(name: str) -> str:
    """A name both APIs take: other characters become _, cut to 64."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]

