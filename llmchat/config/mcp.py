"""The `[mcp.servers.NAME]` tables of the config file: the MCP servers whose tools a profile may offer.

The fields are Claude Desktop's `mcpServers` entries (`command`/`args`/`env`/`cwd` for a stdio server,
`url`/`headers` for a remote one), plus llmchat's `include_tools`/`exclude_tools`, `trust` and `timeout`.
Values stay as written here, `${VAR}` included: they are expanded from the environment only when the
server starts (llmchat.tools.mcp_launch), so `config show` and error messages never hold a secret a
variable carries. Checked at load with the file and line of a problem, like every other table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmchat.config.profile import LIMITS
from llmchat.config.tools import BUILTIN_TOOLS, TOOL_NAME
from llmchat.core.suggest import did_you_mean

DEFAULT_MCP_TIMEOUT = 60.0  # seconds per call
SERVER_KEYS = ("command", "args", "env", "cwd", "url", "headers", "include_tools", "exclude_tools", "trust",
               "timeout")
#: `${VAR}` or `${VAR:-default}`; anything else starting with `${` is a mistake worth naming at load.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class McpServerConfig:
    """One `[mcp.servers.NAME]` table as checked (values unexpanded)."""

    name: str
    command: str | None = None  # a stdio server: the program…
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None  # …or a remote one: Streamable HTTP, or SSE for a URL ending in /sse
    headers: Mapping[str, str] = field(default_factory=dict)
    include_tools: tuple[str, ...] | None = None
    exclude_tools: tuple[str, ...] = ()
    trust: bool = False
    timeout: float = DEFAULT_MCP_TIMEOUT

    @property
    def transport(self) -> str:
        """"stdio", "http" (Streamable HTTP) or "sse" (the older transport, for a URL path ending in /sse)."""
        if self.command is not None:
            return "stdio"
        path = (self.url or "").split("?", 1)[0].rstrip("/")
        return "sse" if path.endswith("/sse") else "http"

    @property
    def target(self) -> str:
        """What listings show: the command line as written, or the URL without user info or query."""
        if self.command is not None:
            import shlex

            return shlex.join([self.command, *self.args])
        return re.sub(r"//[^/@]*@", "//", (self.url or "").split("?", 1)[0])

    def wanted(self, tool: str) -> bool:
        """Whether the server's tool `tool` is kept by include_tools / exclude_tools."""
        if self.include_tools is not None and tool not in self.include_tools:
            return False
        return tool not in self.exclude_tools


def build_servers(table: Any, command_tools: Mapping[str, Any], locate: Any,
                  secret_looking: Callable[[str], bool] = lambda _: False) -> dict[str, McpServerConfig]:
    """The checked `[mcp]` table (only `servers` in it); `locate` is config.load's _Locator, `secret_looking`
    its test of a key name (passed in: config.load imports this module, not the other way round)."""
    if not isinstance(table, dict):
        raise locate.error(None, "mcp", "'mcp' must be a table holding [mcp.servers.NAME] sections.")
    for key in table:
        if key != "servers":
            raise locate.error(None, key, f"Unknown key '{key}' in [mcp].", "Only [mcp.servers.NAME] tables go there.")
    servers = table.get("servers", {})
    if not isinstance(servers, dict):
        raise locate.error(None, "servers", "mcp.servers must be a table of [mcp.servers.NAME] sections.")
    return {name: _build_server(name, value, command_tools, locate, secret_looking) for name, value in servers.items()}


def _build_server(name: str, table: Any, command_tools: Mapping[str, Any], locate: Any,
                  secret_looking: Callable[[str], bool]) -> McpServerConfig:
    def error(key: str | None, message: str, hint: str | None = None) -> Exception:
        return locate.error(name, key, message, hint, table=r"mcp\s*\.\s*servers")

    where = f"mcp.servers.{name}"
    if not isinstance(table, dict):
        raise error(None, f"{where} must be a table ([{where}]).")
    if not TOOL_NAME.match(name):
        raise error(None, f"{where}: a server name may hold only letters, digits, _ and - (at most 64).",
                    "Profiles name servers in their tools list, next to tool names.")
    if name in BUILTIN_TOOLS or name in command_tools:
        what = "a built-in tool" if name in BUILTIN_TOOLS else "a command tool ([tools." + name + "])"
        raise error(None, f"[{where}] and {what} are both named '{name}'.",
                    "Names are unique across tools and servers (a profile's tools list names either): "
                    "rename one of them.")
    for key in table:
        if key not in SERVER_KEYS:
            raise error(key, f"Unknown key '{key}' in {where}.{did_you_mean(key, SERVER_KEYS)}",
                        f"Allowed keys: {', '.join(SERVER_KEYS)}.")
    command, url = table.get("command"), table.get("url")
    if (command is None) == (url is None):
        raise error(None, f"{where} needs either a command (a stdio server) or a url (a remote one), not "
                    f"{'both' if command is not None else 'neither'}.",
                    'e.g. command = "npx" with args = [...], or url = "https://example.com/mcp".')
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise error("command", f"{where}.command must be a non-empty string (the program; its arguments go in args).")
    if url is not None and (not isinstance(url, str) or not re.match(r"^(https?://|\$\{)", url)):
        raise error("url", f"{where}.url must be an http(s) URL.")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise error("args", f"{where}.args must be a list of strings.")
    if url is not None and ("args" in table or "env" in table or "cwd" in table):
        raise error(None, f"{where}: args, env and cwd are for a stdio server (command), not a url.")
    if command is not None and "headers" in table:
        raise error("headers", f"{where}.headers are for a remote server (url), not a command.")
    env, headers = (_strings(table, key, where, error) for key in ("env", "headers"))
    cwd = table.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise error("cwd", f"{where}.cwd must be a string (a directory).")
    include, exclude = table.get("include_tools"), table.get("exclude_tools", [])
    for key, value in (("include_tools", include), ("exclude_tools", exclude)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise error(key, f"{where}.{key} must be a list of tool names.")
    if include is not None and exclude:
        raise error("exclude_tools", f"{where} has both include_tools and exclude_tools.", "Keep one of them.")
    trust = table.get("trust", False)
    if not isinstance(trust, bool):
        raise error("trust", f"{where}.trust = {trust!r} is not valid: expected true or false.")
    timeout = table.get("timeout", DEFAULT_MCP_TIMEOUT)
    if not LIMITS["timeout"].allows(timeout):
        raise error("timeout", f"{where}.timeout = {timeout!r} is out of range: expected seconds, "
                    f"{LIMITS['timeout'].describe()}.")
    for key, values in (("command", [command or ""]), ("args", args), ("cwd", [cwd or ""]), ("url", [url or ""]),
                        ("env", list(env.values())), ("headers", list(headers.values()))):
        for value in values:
            if "${" in VARIABLE.sub("", value):
                raise error(key, f"{where}.{key}: '${{' starts no variable here.",
                            "Write ${NAME} or ${NAME:-default} (NAME: letters, digits and _).")
    _warn_literal_secrets(where, {"env": env, "headers": headers}, locate, secret_looking)
    return McpServerConfig(name=name, command=command, args=tuple(args), env=env, cwd=cwd, url=url, headers=headers,
                           include_tools=tuple(include) if include is not None else None,
                           exclude_tools=tuple(exclude), trust=trust, timeout=float(timeout))


def _warn_literal_secrets(where: str, tables: Mapping[str, Mapping[str, str]], locate: Any,
                          secret_looking: Callable[[str], bool]) -> None:
    """A token written into a file others may read is worth a word: `${VAR}` keeps it in the environment.
    (A warning, not an error as for a profile's api_key: it is the server's secret, and Claude Desktop
    files are written this way.)"""
    if locate.owner_only:
        return
    for table, values in tables.items():
        for key, value in values.items():
            if secret_looking(key) and value.strip() and not VARIABLE.search(value):
                locate.warnings.append(f"{where}.{table}.{key} holds a secret in {locate.path}, which other users "
                                       f"can read: write {key} = \"${{{key.upper().replace('-', '_')}}}\" and export "
                                       "it, or chmod 600 the file.")


def _strings(table: dict[str, Any], key: str, where: str, error: Any) -> dict[str, str]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise error(key, f"{where}.{key} must be a table of strings, e.g. {key} = {{ NAME = \"${{NAME}}\" }}.")
    return dict(value)
