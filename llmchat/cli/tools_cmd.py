"""`llmchat tools`: every tool the config defines, where it comes from, whether it asks, whether it is offered."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmchat.cli.options import ConfigOpt, NoToolsOpt, ProfileOpt, ToolOpt, app, command_flags, environment_of
from llmchat.config.session import Overrides, resolve
from llmchat.core.environment import Environment
from llmchat.core.safe_text import json_for, text_for


@app.command()
def tools(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    tool: ToolOpt = None,
    no_tools: NoToolsOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the tools: name, source (builtin, command, mcp:SERVER), trusted or asks first, offered or not.

    MCP servers are started to list their tools, then stopped; one that fails is a row saying why."""
    flags = command_flags(ctx, profile=profile, config=config, tool=tuple(tool) if tool else None,
                          no_tools=True if no_tools else None)
    print_tools(flags, environment_of(ctx), as_json=as_json)


def tool_rows(flags: Overrides, environment: Environment) -> list[dict[str, object]]:
    """One dict per defined tool: {"name", "source", "trusted", "offered", "description", "parameters"}; an MCP
    server that did not start is one row named after it, its description saying why."""
    from llmchat.tools.box import Toolbox

    config, profile = resolve(flags, environment)
    box = Toolbox(config, profile, environment)
    try:
        box.start_all()
        return [{"name": name, "source": spec.source, "trusted": spec.trusted, "offered": box.is_enabled(name),
                 "description": spec.description, "parameters": dict(spec.parameters)}
                for name, spec in box.listing()]
    finally:
        box.close()


def print_tools(flags: Overrides, environment: Environment, *, as_json: bool) -> None:
    """A table (sanitized on a terminal, exact in a pipe), or with `as_json` a JSON array."""
    out = environment.stdout
    rows = tool_rows(flags, environment)
    if as_json:
        print(json_for(out, json.dumps(rows, ensure_ascii=False, indent=2)), file=out)
        return
    table = [("name", "source", "trust", "offered", "description")]
    table += [(str(r["name"]), str(r["source"]), "trusted" if r["trusted"] else "asks",
               "yes" if r["offered"] else "no", " ".join(str(r["description"]).split())) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)), row[4]]).rstrip()
             for row in table]
    print(text_for(out, "\n".join(lines)), file=out)
    if not any(r["source"] != "builtin" for r in rows) and not any(r["offered"] for r in rows):
        print(text_for(out, "\nNo tool is offered. Add names to a profile's `tools` list (e.g. tools = [\"time\"]), "
                       "or pass --tool NAME; define your own as a [tools.NAME] table (README: Tools)."), file=out)


