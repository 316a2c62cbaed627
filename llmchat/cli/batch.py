"""`llmchat batch`: the options; the work is `llmchat.batch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmchat.cli.options import (
    AnswerFormat,
    ConfigOpt,
    ModelOpt,
    NoToolsOpt,
    ProfileOpt,
    SearchOpt,
    SystemOpt,
    TemperatureOpt,
    ThinkOpt,
    ToolOpt,
    TrustToolsOpt,
    app,
    command_flags,
    environment_of,
    tool_flags,
)


@app.command()
def batch(
    ctx: typer.Context,
    input_path: Annotated[str, typer.Argument(
        metavar="INPUT", help="Prompts: a text file (one per line) or JSONL rows ({\"id\", \"prompt\"} or "
        "{\"id\", \"messages\"}, optional \"system\"/\"model\"); - reads stdin.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the JSONL rows here (default: stdout).", dir_okay=False)] = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    think: ThinkOpt = None,
    temperature: TemperatureOpt = None,
    config: ConfigOpt = None,
    search: SearchOpt = None,
    tool: ToolOpt = None,
    no_tools: NoToolsOpt = False,
    trust_tools: TrustToolsOpt = False,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", min=1, help="Requests in flight at once.")] = 4,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip ids already answered in OUTPUT; run the rest (failed rows included).")] = False,
    fmt: Annotated[Optional[AnswerFormat], typer.Option(
        "--format", case_sensitive=False,
        help="`json`: ask for a JSON answer (Ollama format, OpenAI response_format).")] = None,
) -> None:
    """Run many prompts concurrently; answers are written as JSONL in input order.

    Exit 0 when every row answered, 1 when any row failed (its `error` says why), 130 on Ctrl-C.
    `--resume -o OUT.jsonl` continues a killed or interrupted batch.
    """
    from llmchat.batch.runner import run_batch

    flags = command_flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                          search=search, config=config,
                          **tool_flags(tool, no_tools, trust_tools))
    code = run_batch(flags, input_path, output=str(output) if output else None, concurrency=concurrency,
                     resume=resume, fmt=fmt.value if fmt else None, environment=environment_of(ctx))
    if code:
        raise typer.Exit(code)
