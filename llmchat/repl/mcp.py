"""`/mcp`: each MCP server's state; and the chat's side of the servers' lifecycle.

The servers the profile offers start when the chat opens (ReplState.start makes the toolbox, which
starts them in the background), so the prompt is usable at once. The first question waits only for
those not ready yet, under a spinner naming them (`servers_ready`); the chat stops them all on its way
out (`stop_servers`: /exit, Ctrl-D, SIGTERM, SIGHUP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmchat.repl.state import ReplState

if TYPE_CHECKING:
    from llmchat.tools.box import Toolbox


def servers_ready(state: ReplState) -> None:
    """Before a question: wait for the offered servers still starting, with a spinner naming them."""
    box = state.toolbox
    if box is None or box.mcp is None:
        return
    waiting = box.servers_starting()
    if not waiting:
        return
    with _spinner(state, waiting):
        box.wait_ready(waiting)


def _spinner(state: ReplState, names: list[str]) -> object:
    from rich.console import Console

    plural = "s" if len(names) > 1 else ""
    console = Console(file=state.out, highlight=False)
    return console.status(f"Waiting for MCP server{plural} {', '.join(names)} to start…")


def stop_servers(state: ReplState) -> None:
    """Stop every server the chat started, and their children (nothing happens without servers)."""
    if state.toolbox is not None:
        state.toolbox.close()
    else:
        import sys

        if "llmchat.tools.mcp_tools" in sys.modules:  # `/tools on SERVER` without a toolbox kept
            from llmchat.tools.mcp_tools import close_hub

            close_hub()


def cmd_mcp(state: ReplState, args: str) -> None:
    """Each configured server: how it is reached, its state (and why it failed), its tools."""
    servers = state.config.mcp_servers
    if not servers:
        where = state.config.path or "the config file (`llmchat config path`)"
        state.say(f"No MCP server is configured. Add an [mcp.servers.NAME] table to {where}, or import "
                  "Claude Desktop's with `llmchat mcp import FILE` (README: MCP servers).")
        return
    box = _box(state)
    lines = ["MCP servers (offer one with /tools on NAME):"]
    for name, config in servers.items():
        assert box.mcp is not None
        offered = "on " if name in box.enabled else "off"
        lines.append(f"  {name}  {offered}  {config.transport}: {config.target}  —  {box.mcp.state(name)}")
        server = box.mcp.server(name)
        if server is not None and server.status == "failed":
            lines += [f"      stderr: {line}" for line in box.server_stderr(name)]
        tools = [tool.spec.name for tool in box.mcp.of_server(name)]
        if tools:
            lines.append(f"      tools: {', '.join(tools)}")
    state.say("\n".join(lines))
    box.notices()  # the failures are shown here: not said again before the next question


def _box(state: ReplState) -> Toolbox:
    if state.toolbox is not None:
        return state.toolbox
    from llmchat.tools.box import Toolbox

    return Toolbox(state.config, state.profile, state.environment)
