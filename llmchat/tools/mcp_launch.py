"""How a configured MCP server is reached: its `${VAR}`s expanded from this run's environment.

Expansion happens here, when the server starts, not when the config is read: the values a variable
carries (a token) never sit in the Config, so nothing that prints a config can show them. A stdio child
gets only what its entry names in `env`, on top of the few variables the SDK passes itself (HOME,
LOGNAME, PATH, SHELL, TERM, USER): never the user's whole environment, so API keys stay home.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llmchat.config.mcp import VARIABLE, McpServerConfig


class Unset(ValueError):
    """A `${VAR}` without a default names a variable the environment does not have."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`${VAR}` -> its value, `${VAR:-default}` -> its value or `default` when unset or empty."""

    def value(match: object) -> str:
        name, default = match.group(1), match.group(2)  # type: ignore[attr-defined]
        found = variables.get(name)
        if found:
            return found
        if default is not None:
            return default
        if found is not None:
            return found
        raise Unset(name)

    return VARIABLE.sub(value, text)


@dataclass(frozen=True)
class Launch:
    """A server's expanded parameters: a stdio command (`command`, `args`, `env`, `cwd`) or a URL."""

    transport: str  # "stdio", "http", "sse"
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def launch_of(server: McpServerConfig, variables: Mapping[str, str]) -> Launch:
    """The server's parameters with every variable expanded; `Unset` names a missing one, as the fix."""
    def one(text: str | None) -> str | None:
        return None if text is None else expand(text, variables)

    try:
        return Launch(transport=server.transport, command=one(server.command),
                      args=tuple(expand(a, variables) for a in server.args),
                      env={k: expand(v, variables) for k, v in server.env.items()},
                      cwd=one(server.cwd), url=one(server.url),
                      headers={k: expand(v, variables) for k, v in server.headers.items()})
    except Unset as exc:
        raise Unset(f"${{{exc.args[0]}}} is not set (export {exc.args[0]}=…, or write ${{{exc.args[0]}:-default}} "
                    f"in [mcp.servers.{server.name}])") from None
