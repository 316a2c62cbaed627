"""`llmchat usage`: tokens and cost from the history, grouped."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmchat.cli.options import Grouping, PlainOpt, app, environment_of


@app.command("usage")
def usage_cmd(
    ctx: typer.Context,
    since: Annotated[Optional[str], typer.Option(
        "--since", metavar="DATE", help="Only calls on or after DATE (YYYY-MM-DD, local; or ISO 8601).")] = None,
    by: Annotated[Grouping, typer.Option("--by", case_sensitive=False, help="How to group the totals.")] = "profile",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    plain: PlainOpt = False,
) -> None:
    """Token and cost totals from saved conversations (each turn priced when it was made)."""
    from llmchat.engine.usage import print_usage

    print_usage(since, Grouping(by).value, as_json=as_json, plain=plain or bool(ctx.meta.get("plain")),
                environment=environment_of(ctx))
