"""`llmchat batch`: the options; the work is `llmchat.batch`.

`batch` is a group whose callback is the batch itself (`llmchat batch INPUT …`, exactly as before) and
whose commands manage remote jobs (`status ID`, `fetch [ID]`, `cancel ID`, `list`). `BatchGroup` keeps
the two apart: a first argument that names a command is that command, anything else is the run's INPUT
(a file called `list` is `./list`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

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
from llmchat.core import collector
from llmchat.core.errors import ConfigError


class BatchGroup(TyperGroup):
    """A group with a default action: `batch INPUT [OPTIONS]` runs the callback, `batch CMD …` a command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        command = super(TyperGroup, self)  # the plain command's parsing: options and INPUT, no subcommand
        if args and args[0] in self.commands:
            command.parse_args(ctx, [])  # the run's options keep their defaults
            ctx._protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        ctx.allow_interspersed_args, ctx.allow_extra_args = True, False  # `batch IN -o OUT` as before
        return command.parse_args(ctx, args)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, "INPUT [OPTIONS]  |  status ID | fetch [ID] | cancel ID | list")


batch_app = typer.Typer(cls=BatchGroup, invoke_without_command=True, no_args_is_help=False,
                        context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(batch_app, name="batch")

JobId = Annotated[str, typer.Argument(metavar="ID", help="A job id (or a unique prefix) from `llmchat batch list`.",
                                      show_default=False)]


@batch_app.callback()
def batch(
    ctx: typer.Context,
    input_path: Annotated[Optional[str], typer.Argument(
        metavar="INPUT", help="Prompts: a text file (one per line) or JSONL rows ({\"id\", \"prompt\"} or "
        "{\"id\", \"messages\"}, optional \"system\"/\"model\"); - reads stdin.", show_default=False)] = None,
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
    remote: Annotated[bool, typer.Option(
        "--remote", help="Run the rows on the provider's Batch API (bailian/openai profiles): within 24 h, "
        "at half price; the job id is printed at once and followed until it ends.")] = False,
    test: Annotated[bool, typer.Option(
        "--test", help="With --remote: use Bailian's batch-test-model (no inference, free) to check the "
        "chain.")] = False,
    split: Annotated[Optional[int], typer.Option(
        "--split", metavar="N", help="With --remote: submit the rows as N jobs (one model each, within the "
        "50,000-request and 100 MB limits), followed together.")] = None,
) -> None:
    """Run many prompts concurrently (or on the provider's Batch API with --remote); answers are written
    as JSONL in input order.

    Exit 0 when every row answered, 1 when any row failed (its `error` says why), 130 on Ctrl-C.
    `--resume -o OUT.jsonl` continues a killed or interrupted batch. Remote jobs: `batch status ID`,
    `batch fetch [ID] -o OUT`, `batch cancel ID`, `batch list`.
    """
    flags = command_flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                          search=search, config=config,
                          **tool_flags(tool, no_tools, trust_tools))
    if ctx.invoked_subcommand is not None or remote:
        collector.release()  # only a batch run from here makes a provider's client (which releases it)
    if ctx.invoked_subcommand is not None:
        ctx.obj = flags
        return
    if input_path is None:
        raise ConfigError("Missing argument 'INPUT': the prompts to run.",
                          hint="Run `llmchat batch prompts.txt -o answers.jsonl`, or see `llmchat batch --help`.")
    if not remote and (test or split is not None):
        raise ConfigError(f"{'--test' if test else '--split'} goes with --remote: it is about Batch API jobs.",
                          hint="Add --remote, or drop the flag to run the rows from here.")
    if remote:
        from llmchat.batch.remote import run_remote

        code = run_remote(flags, input_path, output=str(output) if output else None, resume=resume,
                          fmt=fmt.value if fmt else None, test=test, split=split, environment=environment_of(ctx))
    else:
        from llmchat.batch.runner import run_batch

        code = run_batch(flags, input_path, output=str(output) if output else None, concurrency=concurrency,
                         resume=resume, fmt=fmt.value if fmt else None, environment=environment_of(ctx))
    if code:
        raise typer.Exit(code)


def _flags(ctx: typer.Context, config: Optional[Path]) -> Any:
    return command_flags(ctx, config=config)


@batch_app.command("status")
def status_cmd(ctx: typer.Context, job_id: JobId, config: ConfigOpt = None) -> None:
    """Ask the server how a remote job is doing (status, rows done and failed, its files)."""
    from llmchat.batch.remote import status

    status(_flags(ctx, config), job_id, environment_of(ctx))


@batch_app.command("fetch")
def fetch_cmd(
    ctx: typer.Context,
    job_id: Annotated[Optional[str], typer.Argument(
        metavar="[ID]", help="The job (default: the latest one not fetched yet, with the other parts of its "
        "--split).", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the rows here (default: the OUTPUT the job was submitted with, else stdout).",
        dir_okay=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Wait for a remote job to end, then write its rows as a local batch would (merged into OUTPUT)."""
    from llmchat.batch.remote import fetch

    code = fetch(_flags(ctx, config), job_id, str(output) if output else None, environment_of(ctx))
    if code:
        raise typer.Exit(code)


@batch_app.command("cancel")
def cancel_cmd(ctx: typer.Context, job_id: JobId, config: ConfigOpt = None) -> None:
    """Cancel a remote job; the rows it answered before stopping can still be fetched."""
    from llmchat.batch.remote import cancel

    cancel(_flags(ctx, config), job_id, environment_of(ctx))


@batch_app.command("list")
def list_cmd(ctx: typer.Context, limit: Annotated[int, typer.Option(
        "--limit", min=1, help="How many jobs to show, newest first.")] = 20) -> None:
    """The remote jobs submitted from here, newest first, with their local input and output files."""
    from llmchat.batch.remote import list_recent

    list_recent(limit, environment_of(ctx))
