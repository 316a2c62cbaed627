"""The command line: parse, resolve the profile, delegate, and map errors to exit codes.

Nothing here talks HTTP or draws a turn; `main()` is the only place that turns exceptions into
messages and exit codes (DESIGN §5), so no command prints a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

# The command modules register themselves on the apps in cli.options when imported, in this order, which is
# the order `llmchat --help` lists them in.
from llmchat.cli import ask, usage, models, tools_cmd, mcp, batch, history, config_cmd  # noqa: F401  # isort: skip
from llmchat.cli.ask import ask_words, chat_session
from llmchat.cli.group import root_command
from llmchat.cli.help import tidy
from llmchat.cli.options import (
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
from llmchat.core import collector, stops
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError, LlmchatError
from llmchat.render.errors import print_error


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
    tool: ToolOpt = None,
    no_tools: NoToolsOpt = False,
    trust_tools: TrustToolsOpt = False,
    no_save: NoSaveOpt = False,
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from llmchat import __version__

        typer.echo(f"llmchat {__version__}")
        raise typer.Exit()
    environment = environment_of(ctx)  # main() passed it in as ctx.obj; kept in meta, shared by every command
    ctx.meta["environment"] = environment
    flags = command_flags(ctx, profile=profile, model=model, system=system, think=think, temperature=temperature,
                          search=search, show_thinking=show_thinking, config=config,
                          **tool_flags(tool, no_tools, trust_tools))
    ctx.obj = flags
    if ctx.invoked_subcommand not in ("ask", "batch") and (ctx.invoked_subcommand is not None
                                                           or environment.stdin_is_terminal):
        collector.release()  # a question or a batch keeps it held until its client is made (providers.connect)
    if ctx.invoked_subcommand is not None:
        ctx.meta["plain"] = plain
        ctx.meta["no_save"] = no_save
        return
    if not environment.stdin_is_terminal:
        ask_words(flags, [], environment, plain=plain, as_json=False, usage=None, stream=True, save=not no_save)
        return
    chat_session(flags, environment, plain=plain, save=not no_save)


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


def main(argv: list[str] | None = None, environment: Environment | None = None) -> None:
    """Run the CLI and exit with DESIGN §5's codes: 0 ok, 1 model call failed, 2 usage/config, 130 Ctrl-C,
    141 stdout closed.

    Typer reports its own usage errors (exit 2) and turns Ctrl-C into exit 130; everything of ours
    arrives here as an LlmchatError and becomes one paragraph on stderr instead of a traceback.
    `environment` (streams, variables) is read from the process here, once, unless a test gives one;
    it reaches the commands as the root context's `obj` (DESIGN §1).
    """
    environment = environment or Environment.from_process()
    try:
        _run(argv, environment)
    except SystemExit as exc:
        if exc.code != stops.BROKEN_PIPE_EXIT and _stdout_went_away(exc, environment):
            stops.silence(sys.stdout, environment.stdout)
            raise SystemExit(stops.BROKEN_PIPE_EXIT) from None
        raise


def _run(argv: list[str] | None, environment: Environment) -> None:
    command = tidy(root_command(app))
    try:
        refuse_undecodable_argv(sys.argv[1:] if argv is None else argv)
        command.main(args=argv, prog_name="llmchat", standalone_mode=True, obj=environment)
    except SystemExit as exc:
        if exc.code == 130:
            print_error("Interrupted.", environment=environment)
        raise
    except LlmchatError as exc:
        if environment.debug:
            raise
        print_error(exc, environment=environment)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: one paragraph, and the traceback only with LLMCHAT_DEBUG=1
        if environment.debug:
            raise
        print_error(f"Unexpected internal error: {type(exc).__name__}: {exc}",
                    "This is a bug in llmchat. Rerun with LLMCHAT_DEBUG=1 to see the traceback, and report it.",
                    environment=environment)
        sys.exit(1)


def _stdout_went_away(exc: SystemExit, environment: Environment) -> bool:
    """Whether writing to stdout failed because its reader is gone (`llmchat --help | head -0`).

    Click and Typer catch that EPIPE themselves and exit 1, as for a failure; their `sys.exit` runs in
    the `except` that caught it, so the error is the exit's context. Output still buffered (a `print`)
    would fail only at the interpreter's last flush, so it is flushed here, where it can be answered.
    A shell says 141 for a writer killed by SIGPIPE; llmchat ends the same way, whatever else happened.
    An error of ours was reported with its own code: an EPIPE behind it (`-o` naming a pipe whose reader
    left) is about that file, not stdout.
    """
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, LlmchatError):
        if isinstance(cause, OSError) and cause.errno == errno.EPIPE:
            return True
        cause = cause.__context__
    for stream in dict.fromkeys((environment.stdout, sys.stdout)):  # the same stream outside tests
        try:
            stream.flush()
        except BrokenPipeError:
            return True
        except (AttributeError, OSError, ValueError):  # not a stream, or already closed
            continue
    return False
