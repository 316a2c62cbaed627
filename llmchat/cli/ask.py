"""`llmchat ask` and `llmchat chat` (and the bare `llmchat`): one question, or the REPL, until stopped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from llmchat.cli.options import (
    AnswerFormat,
    ConfigOpt,
    ModelOpt,
    NoSaveOpt,
    NoToolsOpt,
    PlainOpt,
    ProfileOpt,
    SearchOpt,
    SystemOpt,
    TemperatureOpt,
    ThinkingOpt,
    ThinkOpt,
    ToolOpt,
    TrustToolsOpt,
    app,
    command_flags,
    environment_of,
    tool_flags,
)
from llmchat.config.session import Overrides
from llmchat.core import stops
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError

if TYPE_CHECKING:
    from llmchat.engine.ask_extras import AskExtras


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
    tool: ToolOpt = None,
    no_tools: NoToolsOpt = False,
    trust_tools: TrustToolsOpt = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object with answer, usage and timing.")] = False,
    usage: Annotated[Optional[bool], typer.Option(
        "--usage/--no-usage", help="Print the reasoning and the usage line on stderr even when it is not a "
        "terminal (by default only a terminal gets them); --no-usage: no usage line.")] = None,
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
    flags = command_flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                          search=search, show_thinking=show_thinking, config=config,
                          **tool_flags(tool, no_tools, trust_tools))
    plain = plain or bool(ctx.meta.get("plain"))
    ask_words(flags, prompt or [], environment_of(ctx), plain=plain, as_json=as_json, usage=usage, stream=not no_stream,
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
    tool: ToolOpt = None,
    no_tools: NoToolsOpt = False,
    trust_tools: TrustToolsOpt = False,
    no_save: NoSaveOpt = False,
    continue_: Annotated[bool, typer.Option(
        "--continue", "-c", help="Continue the latest saved conversation.")] = False,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue the saved conversation ID (see `llmchat history`).")] = None,
) -> None:
    """Interactive chat that keeps the conversation (the same as running `llmchat` alone).

    With text piped in, it answers that text as `ask` does (as the bare `llmchat` does), instead of
    drawing a chat screen into a pipe.
    """
    flags = command_flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                          search=search, show_thinking=show_thinking, config=config,
                          **tool_flags(tool, no_tools, trust_tools))
    environment = environment_of(ctx)
    if not environment.stdin_is_terminal:
        ask_words(flags, [], environment, plain=plain or bool(ctx.meta.get("plain")), as_json=False, usage=None,
                  stream=True, save=not (no_save or ctx.meta.get("no_save")),
                  resume=resume or ("last" if continue_ else None))
        return
    chat_session(flags, environment_of(ctx), plain=plain or bool(ctx.meta.get("plain")),
                 save=not (no_save or ctx.meta.get("no_save")), resume=resume or ("last" if continue_ else None))


def _read_stdin(environment: Environment) -> str | None:
    if environment.stdin_is_terminal or environment.stdin is None:
        return None
    data = environment.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            "The text piped to stdin is not UTF-8 (is it a binary file?).",
            hint="Convert it first, e.g. `iconv -f GBK -t UTF-8 file | llmchat ask …`.",
        ) from None


def ask_words(flags: Overrides, words: list[str], environment: Environment, *, plain: bool, as_json: bool,
              usage: bool | None, stream: bool,
         save: bool = True, resume: str | None = None, extras: AskExtras | None = None) -> None:
    from llmchat.engine.ask import run_ask

    question = " ".join(words).strip()
    piped = _read_stdin(environment)
    if piped is not None and piped.strip():
        question = f"{question}\n\n{piped}" if question else piped
    if not question.strip():
        raise ConfigError(
            "Nothing to ask: the prompt is empty.",
            hint='Give a question (`llmchat ask "…"`) or pipe text in (`cat file | llmchat ask "summarise"`).',
        )
    more = {"extras": extras} if extras else {}  # images / --format / --schema: run_ask's `extras`
    code = until_stopped(lambda: run_ask(flags, question, environment, plain=plain, as_json=as_json, usage=usage,
                                          stream=stream,
                                          save=save, resume=resume, **more))
    if code:
        raise typer.Exit(code)


def chat_session(flags: Overrides, environment: Environment, *, plain: bool, save: bool = True,
                 resume: str | None = None) -> None:
    from llmchat.repl.app import run_repl

    raise typer.Exit(until_stopped(lambda: run_repl(flags, environment, plain=plain, save=save, resume=resume)))


def until_stopped(run: Callable[[], int]) -> int:
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
