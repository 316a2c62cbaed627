"""The command line: parse, resolve the profile, delegate, and map errors to exit codes.

Nothing here talks HTTP or draws a turn; `main()` is the only place that turns exceptions into
messages and exit codes (DESIGN §5), so no command prints a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from llmchat.config.profile import LIMITS, out_of_range
from llmchat.config.session import Overrides
from llmchat.core import stops
from llmchat.core.errors import ConfigError, LlmchatError
from llmchat.render.errors import print_error

if TYPE_CHECKING:
    from llmchat.engine.ask_extras import AskExtras

app = typer.Typer(
    name="llmchat",
    help="Chat with local (Ollama) and cloud (Bailian, any OpenAI-compatible) LLMs from the terminal.\n\n"
    "Run without a command for an interactive chat; pipe text in to ask about it.",
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Where the config file lives; create it; show the effective config.")
app.add_typer(config_app, name="config")
history_app = typer.Typer(help="Browse, print, export, import and delete saved conversations.",
                          invoke_without_command=True)
app.add_typer(history_app, name="history")


#: The values of the choice flags. The modules behind them keep their own check for callers that do
#: not come through the command line (tests/test_cli_info.py holds the two in step).
ANSWER_FORMATS = ("json",)  # structured.FORMATS
EXPORT_FORMATS = ("md", "markdown", "json")  # history_cli.EXPORT_FORMATS and its "markdown" alias
GROUPINGS = ("profile", "model", "day")  # usage_report.GROUPINGS


def _choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of `values`: Typer lists them in --help and refuses others with its own exit-2 error."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


AnswerFormat = _choice("AnswerFormat", ANSWER_FORMATS)
ExportFormat = _choice("ExportFormat", EXPORT_FORMATS)
Grouping = _choice("Grouping", GROUPINGS)


def _complete_profiles(incomplete: str) -> list[str]:
    try:
        from llmchat.config.load import load_config

        names = load_config().profiles
    except LlmchatError:
        return []
    return [name for name in names if name.startswith(incomplete)]


ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", "-p", help="Profile to use (see `llmchat profiles`).", autocompletion=_complete_profiles)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model name, overriding the profile's.")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt (persona) for this run.")]
ThinkOpt = Annotated[Optional[bool], typer.Option(
    "--think/--no-think", help="Ask the model to reason first, or not. Default: the profile's, else the model's.")]
def _in_limits(key: str) -> Callable[[Optional[float]], Optional[float]]:
    """A Typer callback checking a numeric flag against config.LIMITS, the table the config file uses.

    Typer's min/max alone let `nan` through (every comparison with it is false)."""

    def check(value: Optional[float]) -> Optional[float]:
        if value is not None and (allowed := out_of_range(key, value)) is not None:
            raise typer.BadParameter(f"{value} is out of range: expected {allowed}.")
        return value

    return check


TemperatureOpt = Annotated[Optional[float], typer.Option(
    "--temperature", "-t", min=LIMITS["temperature"].low, max=LIMITS["temperature"].high,
    callback=_in_limits("temperature"), help="Sampling temperature.")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="Config file (default: LLMCHAT_CONFIG, else the user config dir).", dir_okay=False)]
ThinkingOpt = Annotated[Optional[bool], typer.Option(
    "--show-thinking/--hide-thinking", help="Keep the reasoning in full, or show none of it.")]
PlainOpt = Annotated[bool, typer.Option("--plain", help="Plain text: no colours, panels or Markdown rendering.")]
NoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Leave no trace: do not save this chat to the history.")]
SearchOpt = Annotated[Optional[bool], typer.Option(
    "--search/--no-search", help="Bailian web search (enable_search).")]


def _flags(ctx: typer.Context, **given: object) -> Overrides:
    """This command's flags, falling back to any given before the command (`llmchat -p x ask …`)."""
    parent: Overrides = ctx.obj if isinstance(ctx.obj, Overrides) else Overrides()
    merged = {key: given[key] if given.get(key) is not None else getattr(parent, key) for key in given}
    return Overrides(**{k: (str(v) if k == "config" and v is not None else v) for k, v in merged.items()})


@app.callback()
def root(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    think: ThinkOpt = None,
    temperature: TemperatureOpt = None,
    config: ConfigOpt = None,
    show_thinking: ThinkingOpt = None,
    plain: PlainOpt = False,
    search: SearchOpt = None,
    no_save: NoSaveOpt = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from llmchat import __version__

        typer.echo(f"llmchat {__version__}")
        raise typer.Exit()
    flags = _flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                   search=search, show_thinking=show_thinking, config=config)
    ctx.obj = flags
    if ctx.invoked_subcommand is not None:
        ctx.meta["plain"] = plain
        ctx.meta["no_save"] = no_save
        return
    if not _stdin_is_terminal():
        _ask(flags, [], plain=plain, as_json=False, usage=None, stream=True, save=not no_save)
        return
    _chat(flags, plain=plain, save=not no_save)


@app.command()
def ask(
    ctx: typer.Context,
    prompt: Annotated[Optional[list[str]], typer.Argument(
        help="The question. Piped stdin is appended after a blank line.", show_default=False)] = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    think: ThinkOpt = None,
    temperature: TemperatureOpt = None,
    config: ConfigOpt = None,
    show_thinking: ThinkingOpt = None,
    plain: PlainOpt = False,
    search: SearchOpt = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object with answer, usage and timing.")] = False,
    usage: Annotated[Optional[bool], typer.Option(
        "--usage/--no-usage", help="Print the usage line (to stderr when stdout is piped).")] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print the answer once, when it is complete.")] = False,
    no_save: NoSaveOpt = False,
    continue_: Annotated[bool, typer.Option(
        "--continue", "-c", help="Add this turn to the latest saved conversation (its history is sent).")] = False,
    image: Annotated[Optional[list[str]], typer.Option(
        "--image", "-i", metavar="PATH|URL", help="Attach an image (PNG, JPEG, WebP, GIF); repeatable. "
        "URLs only for OpenAI-compatible servers (Ollama needs a file).", show_default=False)] = None,
    fmt: Annotated[Optional[AnswerFormat], typer.Option(
        "--format", case_sensitive=False,
        help="Ask for a JSON answer; it is checked and printed as JSON.")] = None,
    schema: Annotated[Optional[Path], typer.Option(
        "--schema", metavar="FILE", help="Ask for JSON following this JSON Schema; the answer is checked "
        "against it (exit 1 if it does not match).", dir_okay=False)] = None,
) -> None:
    """Ask one question and print the answer.

    `cat notes.md | llmchat ask "summarise"` sends the prompt, a blank line, then the piped text.
    When stdout is not a terminal, it receives the answer text only, exactly as streamed.
    """
    extras = None
    if image or fmt or schema:  # imported only when used: startup stays lean for plain questions
        from llmchat.engine.ask_extras import AskExtras

        # bad images or schema: exit 2 before anything
        extras = AskExtras.from_flags(image or [], fmt.value if fmt else None, schema)
    flags = _flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                   search=search, show_thinking=show_thinking, config=config)
    plain = plain or bool(ctx.meta.get("plain"))
    _ask(flags, prompt or [], plain=plain, as_json=as_json, usage=usage, stream=not no_stream,
         save=not (no_save or ctx.meta.get("no_save")), resume="last" if continue_ else None, extras=extras)


@app.command()
def chat(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    think: ThinkOpt = None,
    temperature: TemperatureOpt = None,
    config: ConfigOpt = None,
    show_thinking: ThinkingOpt = None,
    plain: PlainOpt = False,
    search: SearchOpt = None,
    no_save: NoSaveOpt = False,
    continue_: Annotated[bool, typer.Option(
        "--continue", "-c", help="Continue the latest saved conversation.")] = False,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue the saved conversation ID (see `llmchat history`).")] = None,
) -> None:
    """Interactive chat that keeps the conversation (the same as running `llmchat` alone)."""
    flags = _flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                   search=search, show_thinking=show_thinking, config=config)
    _chat(flags, plain=plain or bool(ctx.meta.get("plain")), save=not (no_save or ctx.meta.get("no_save")),
          resume=resume or ("last" if continue_ else None))


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

        history_list(limit, search, as_json)


@history_app.command("list")
def history_list_cmd(limit: LimitOpt = 20, search: SearchTextOpt = None, as_json: JsonOpt = False) -> None:
    """Saved conversations, newest first: id, updated, profile/model, turns, title."""
    from llmchat.engine.history import history_list

    history_list(limit, search, as_json)


@history_app.command("show")
def history_show_cmd(ctx: typer.Context, ref: RefArg = "last", show_thinking: ThinkingOpt = None,
                     plain: PlainOpt = False) -> None:
    """Print a conversation as the chat showed it (Markdown text when piped)."""
    from llmchat.engine.history import history_show

    thinking = "collapse" if show_thinking is None else ("show" if show_thinking else "hide")
    history_show(ref, thinking=thinking, plain=plain or bool(ctx.meta.get("plain")))


@history_app.command("export")
def history_export_cmd(
    ref: RefArg,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", case_sensitive=False,
                                              help="md or json (json imports back exactly).")] = "md",
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Export a conversation as Markdown or JSON."""
    from llmchat.engine.history import history_export

    history_export(ref, ExportFormat(fmt).value, out)


@history_app.command("import")
def history_import_cmd(file: Annotated[Path, typer.Argument(help="A JSON export (`-` for stdin).")]) -> None:
    """Save a conversation exported with `history export ID --format json`."""
    from llmchat.engine.history import history_import

    history_import(file)


@history_app.command("rm")
def history_rm_cmd(ref: RefArg) -> None:
    """Delete a saved conversation."""
    from llmchat.engine.history import history_rm

    history_rm(ref)


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

    print_usage(since, Grouping(by).value, as_json=as_json, plain=plain or bool(ctx.meta.get("plain")))


@app.command()
def profiles(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """List the profiles: name, provider, model and where it points; the default is marked."""
    from llmchat.cli.info import print_profiles

    print_profiles(_flags(ctx, config=config).config)


@app.command()
def models(ctx: typer.Context, profile: ProfileOpt = None, config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """List the models the profile's server offers."""
    from llmchat.cli.info import print_models

    print_models(_flags(ctx, profile=profile, config=config), as_json=as_json)


@app.command()
def pull(
    ctx: typer.Context,
    model_name: Annotated[Optional[str], typer.Argument(
        metavar="MODEL", help="The model to download, e.g. qwen3:8b (default: the profile's model).",
        show_default=False)] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download a model into the profile's Ollama server, with progress."""
    from llmchat.engine.pull import run_pull

    raise typer.Exit(run_pull(_flags(ctx, profile=profile, config=config), model_name))


@app.command()
def doctor(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Also time a one-token request (a real, tiny, model call).")] = False,
) -> None:
    """Check each profile (or -p NAME): config, key, server, model, thinking and vision; ✓/✗ with the fix.

    Exit 0 when every check passed, 1 otherwise.
    """
    from llmchat.cli.doctor import run_doctor

    raise typer.Exit(run_doctor(_flags(ctx, profile=profile, config=config, model=model), probe=probe))


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

    flags = _flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                   search=search, config=config)
    code = run_batch(flags, input_path, output=str(output) if output else None, concurrency=concurrency,
                     resume=resume, fmt=fmt.value if fmt else None)
    if code:
        raise typer.Exit(code)


@config_app.command("path")
def config_path_cmd(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Print where the config file is read from."""
    from llmchat.config.load import config_path

    path, _ = config_path(_flags(ctx, config=config).config)
    typer.echo(str(path))


@config_app.command("init")
def config_init(
    ctx: typer.Context,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (never overwrites without --force)."""
    from llmchat.cli.info import init_config

    init_config(_flags(ctx, config=config).config, force=force)


@config_app.command("show")
def config_show(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Print the effective config as TOML; keys are never shown, only whether they are set."""
    from llmchat.cli.info import show_config

    show_config(_flags(ctx, config=config).config)


# --------------------------------------------------------------------------------------------- actions


def _stdin_is_terminal() -> bool:
    return sys.stdin is None or sys.stdin.isatty()


def _read_stdin() -> str | None:
    if _stdin_is_terminal():
        return None
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            "The text piped to stdin is not UTF-8 (is it a binary file?).",
            hint="Convert it first, e.g. `iconv -f GBK -t UTF-8 file | llmchat ask …`.",
        ) from None


def _ask(flags: Overrides, words: list[str], *, plain: bool, as_json: bool, usage: bool | None, stream: bool,
         save: bool = True, resume: str | None = None, extras: AskExtras | None = None) -> None:
    from llmchat.engine.ask import run_ask

    question = " ".join(words).strip()
    piped = _read_stdin()
    if piped is not None and piped.strip():
        question = f"{question}\n\n{piped}" if question else piped
    if not question.strip():
        raise ConfigError(
            "Nothing to ask: the prompt is empty.",
            hint='Give a question (`llmchat ask "…"`) or pipe text in (`cat file | llmchat ask "summarise"`).',
        )
    more = {"extras": extras} if extras else {}  # images / --format / --schema: run_ask's `extras`
    code = _until_stopped(lambda: run_ask(flags, question, plain=plain, as_json=as_json, usage=usage, stream=stream,
                                          save=save, resume=resume, **more))
    if code:
        raise typer.Exit(code)


def _chat(flags: Overrides, *, plain: bool, save: bool = True, resume: str | None = None) -> None:
    from llmchat.repl.app import run_repl

    raise typer.Exit(_until_stopped(lambda: run_repl(flags, plain=plain, save=save, resume=resume)))


def _until_stopped(run: Callable[[], int]) -> int:
    """`run`'s exit code, or the code of what stopped it: SIGTERM/SIGHUP (143/129, after the turn saved
    what arrived) or a closed stdout pipe (141, silently). Handled here, before Typer, which would
    report the first as 130 and the second as exit 1. Before this, TERM and HUP kill as usual: there
    is nothing to save yet."""
    stops.install()
    try:
        return run()
    except stops.Terminated as exc:
        stops.silence(sys.stdout)  # a hung-up terminal: later writes must not fail
        stops.say(f"Interrupted by {exc.name}.")
        return exc.exit_code
    except BrokenPipeError:
        stops.silence(sys.stdout)
        return stops.BROKEN_PIPE_EXIT


# ------------------------------------------------------------------------------------------- entry point


def refuse_undecodable_argv(args: list[str]) -> None:
    """Arguments must be UTF-8 text, as piped stdin must (DESIGN §5): exit 2 before anything runs.

    Python decodes argv with surrogateescape, so bytes that are not UTF-8 (a GBK or Latin-1
    terminal, a script in another encoding) arrive as lone surrogates; left in, they fail much
    later and far away (encoding the request, saving the history) with a misleading error.
    """
    for number, arg in enumerate(args, 1):
        if any("\ud800" <= ch <= "\udfff" for ch in arg):
            try:
                shown = repr(os.fsencode(arg))[2:-1]
            except UnicodeError:
                shown = arg.encode("utf-8", "backslashreplace").decode("ascii")
            shown = shown if len(shown) <= 40 else shown[:40] + "…"
            raise ConfigError(
                f"Argument {number} of the command line is not UTF-8 text ('{shown}').",
                hint="Give text in UTF-8 (check the terminal's or the script's encoding; convert with "
                "`iconv -f GBK -t UTF-8`), or pipe the text in on stdin.",
            )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with DESIGN §5's codes: 0 ok, 1 model call failed, 2 usage/config, 130 Ctrl-C.

    Typer reports its own usage errors (exit 2) and turns Ctrl-C into exit 130; everything of ours
    arrives here as an LlmchatError and becomes one paragraph on stderr instead of a traceback.
    """
    command = typer.main.get_command(app)
    debug = os.environ.get("LLMCHAT_DEBUG") == "1"
    try:
        refuse_undecodable_argv(sys.argv[1:] if argv is None else argv)
        command.main(args=argv, prog_name="llmchat", standalone_mode=True)
    except SystemExit as exc:
        if exc.code == 130:
            print_error("Interrupted.")
        raise
    except LlmchatError as exc:
        if debug:
            raise
        print_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one paragraph, and the traceback only with LLMCHAT_DEBUG=1
        if debug:
            raise
        print_error(f"Unexpected internal error: {type(exc).__name__}: {exc}",
                    "This is a bug in llmchat. Rerun with LLMCHAT_DEBUG=1 to see the traceback, and report it.")
        sys.exit(1)
