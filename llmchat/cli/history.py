"""`llmchat history`: list, show, export, import and rm saved conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmchat.cli.options import ExportFormat, PlainOpt, ThinkingOpt, environment_of, history_app

LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=0, help="How many to list (0: all).")]
SearchTextOpt = Annotated[Optional[str], typer.Option(
    "--search", help="Only conversations with a message containing TEXT.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print a JSON array of {id, title, profile, model, turns, updated}.")]
RefArg = Annotated[str, typer.Argument(help="A conversation id (or its first characters), or `last`.")]


@history_app.callback()
def history(ctx: typer.Context, limit: LimitOpt = 20, search: SearchTextOpt = None, as_json: JsonOpt = False) -> None:
    """Saved conversations; with no subcommand, the same as `history list`."""
    if ctx.invoked_subcommand is None:
        from llmchat.engine.history import history_list

        history_list(limit, search, as_json, environment=environment_of(ctx))


@history_app.command("list")
def history_list_cmd(ctx: typer.Context, limit: LimitOpt = 20, search: SearchTextOpt = None,
                     as_json: JsonOpt = False) -> None:
    """Saved conversations, newest first: id, updated, profile/model, turns, title."""
    from llmchat.engine.history import history_list

    history_list(limit, search, as_json, environment=environment_of(ctx))


@history_app.command("show")
def history_show_cmd(ctx: typer.Context, ref: RefArg = "last", show_thinking: ThinkingOpt = None,
                     plain: PlainOpt = False) -> None:
    """Print a conversation as the chat showed it (Markdown text when piped)."""
    from llmchat.engine.history import history_show

    thinking = "collapse" if show_thinking is None else ("show" if show_thinking else "hide")
    history_show(ref, thinking=thinking, plain=plain or bool(ctx.meta.get("plain")),
                 environment=environment_of(ctx))


@history_app.command("export")
def history_export_cmd(
    ctx: typer.Context,
    ref: RefArg,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", case_sensitive=False,
                                              help="md or json (json imports back exactly).")] = "md",
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Export a conversation as Markdown or JSON."""
    from llmchat.engine.history import history_export

    history_export(ref, ExportFormat(fmt).value, out, environment=environment_of(ctx))


@history_app.command("import")
def history_import_cmd(ctx: typer.Context,
                       file: Annotated[Path, typer.Argument(help="A JSON export (`-` for stdin).")]) -> None:
    """Save a conversation exported with `history export ID --format json`."""
    from llmchat.engine.history import history_import

    history_import(file, environment=environment_of(ctx))


@history_app.command("rm")
def history_rm_cmd(ctx: typer.Context, ref: RefArg) -> None:
    """Delete a saved conversation."""
    from llmchat.engine.history import history_rm

    history_rm(ref, environment=environment_of(ctx))
