"""`llmchat mcp list|import`: the configured MCP servers and what they offer; importing `mcpServers` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from llmchat.cli.options import ConfigOpt, app, command_flags, environment_of
from llmchat.config.session import Overrides
from llmchat.core.environment import Environment
from llmchat.core.safe_text import json_for, text_for

mcp_app = typer.Typer(help="MCP servers: list them (started, then stopped) and import Claude Desktop / "
                      "Cursor / VS Code server files.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("list")
def mcp_list(
    ctx: typer.Context,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Start each configured server, show whether it started (the error and its stderr if not) and its tools."""
    environment = environment_of(ctx)
    rows = server_rows(command_flags(ctx, config=config), environment)
    out = environment.stdout
    if as_json:
        print(json_for(out, json.dumps(rows, ensure_ascii=False, indent=2)), file=out)
        return
    if not rows:
        print(text_for(out, "No MCP server is configured. Add an [mcp.servers.NAME] table to the config "
                       "(`llmchat config path`), or import one with `llmchat mcp import FILE` (README: MCP servers)."),
              file=out)
        return
    lines: list[str] = []
    for row in rows:
        lines.append(f"{row['name']}  {row['transport']}: {row['target']}" + ("  (trusted)" if row["trust"] else ""))
        if row["status"] == "ready":
            tools = row["tools"]
            lines.append(f"  started: {len(tools)} tool{'s' if len(tools) != 1 else ''}")
            lines += [f"    {t['name']}" + (f" (its own name: {t['remote']})" if t["remote"] != t["name"] else "")
                      + (f" — {' '.join(t['description'].split())[:80]}" if t["description"] else "") for t in tools]
        else:
            lines.append(f"  failed: {row['error']}")
            lines += [f"    stderr: {line}" for line in row["stderr"]]
    print(text_for(out, "\n".join(lines)), file=out)


def server_rows(flags: Overrides, environment: Environment) -> list[dict[str, Any]]:
    """One dict per configured server: name, transport, target, trust, status, error, stderr, tools."""
    from llmchat.config.session import resolve

    config, profile = resolve(flags, environment)
    if not config.mcp_servers:
        return []
    from llmchat.tools.box import Toolbox

    box = Toolbox(config, profile, environment)
    try:
        box.start_all()
        assert box.mcp is not None
        rows = []
        for name, server_config in config.mcp_servers.items():
            server = box.mcp.server(name)
            ready = server is not None and server.status == "ready"
            rows.append({
                "name": name, "transport": server_config.transport, "target": server_config.target,
                "trust": server_config.trust, "status": "ready" if ready else "failed",
                "error": None if ready else (server.error if server is not None else "not started"),
                "stderr": [] if ready or server is None else box.server_stderr(name),
                "tools": [{"name": tool.spec.name, "remote": tool.remote, "description": tool.spec.description,
                           "input_schema": dict(tool.spec.parameters)} for tool in box.mcp.of_server(name)],
            })
        return rows
    finally:
        box.close()


@mcp_app.command("import")
def mcp_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A Claude Desktop / Cursor (mcpServers) or VS Code (servers) JSON "
                                         "file.", dir_okay=False)],
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace servers the config already has.")] = False,
) -> None:
    """Append the file's servers to the config as [mcp.servers.NAME] tables; existing names are kept."""
    from llmchat.config.load import config_path
    from llmchat.config.mcp_import import import_servers

    environment = environment_of(ctx)
    target, _ = config_path(command_flags(ctx, config=config).config, environment.variables)
    result = import_servers(file.expanduser(), target, force=force)
    lines: list[str] = []
    if result.added:
        lines.append(f"Added to {result.path}:")
        lines += [f"  {name}  {where}" + (" (replaced)" if name in result.replaced else "")
                  for name, where in result.added]
    for name in result.kept:
        lines.append(f"Kept {name}: the config already has it (--force replaces it).")
    for name, why in result.skipped:
        lines.append(f"Skipped {name}: {why}.")
    for server, variable in result.variables:
        lines.append(f"{server}: the value of {variable} was not copied (keys stay out of the config); "
                     f"export {variable}=… before using it.")
    if result.added:
        first = result.added[0][0]
        lines.append(f'Offer a server\'s tools in a profile (tools = ["{first}"]) or for one run (--tool {first}); '
                     "`llmchat mcp list` starts them and shows their tools.")
    else:
        lines.append("Nothing added.")
    out = environment.stdout
    print(text_for(out, "\n".join(lines)), file=out)
