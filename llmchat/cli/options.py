"""The Typer apps and the options commands share, so each command module stays a thin wrapper."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmchat.cli.group import QuestionGroup
from llmchat.config.profile import LIMITS, out_of_range
from llmchat.config.session import Overrides
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError

app = typer.Typer(
    name="llmchat",
    help="Chat with local (Ollama) and cloud (Bailian, any OpenAI-compatible) LLMs from the terminal.\n\n"
    "Run without a command for an interactive chat; `llmchat \"QUESTION\"` asks one (as `ask` does); pipe "
    "text in to ask about it. Shell completion: `llmchat --install-completion`.",
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    # Click's own help and usage errors, not Rich's panels: Typer's Rich formatter imports Rich's Markdown,
    # tracebacks and Pygments (+100 ms), which would make `llmchat --help` slower than a question.
    rich_markup_mode=None,
    cls=QuestionGroup,  # `llmchat "question"` asks (cli/group.py)
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Where the config file lives; create it; show the effective config.",
                         rich_markup_mode=None)
app.add_typer(config_app, name="config")
history_app = typer.Typer(help="Browse, print, export, import and delete saved conversations.",
                          invoke_without_command=True, rich_markup_mode=None)
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
def _complete_tools(incomplete: str) -> list[str]:
    try:
        from llmchat.config.load import load_config

        names = load_config().tool_names()
    except LlmchatError:
        return []
    return [name for name in names if name.startswith(incomplete)]


ToolOpt = Annotated[Optional[list[str]], typer.Option(
    "--tool", metavar="NAME", help="Offer the model this tool too (repeatable; see `llmchat tools`).",
    autocompletion=_complete_tools, show_default=False)]
NoToolsOpt = Annotated[bool, typer.Option("--no-tools", help="Offer the model no tools in this run.")]
TrustToolsOpt = Annotated[bool, typer.Option(
    "--trust-tools", help="Run every tool call without asking, in this run.")]


def tool_flags(tool: Optional[list[str]], no_tools: bool, trust_tools: bool) -> dict[str, object]:
    """The Overrides fields of the tool flags; None where a flag was not given, so the profile's value stays."""
    return {"tool": tuple(tool) if tool else None, "no_tools": True if no_tools else None,
            "trust_tools": True if trust_tools else None}


SearchOpt = Annotated[Optional[bool], typer.Option(
    "--search/--no-search", help="Bailian web search (enable_search).")]


def command_flags(ctx: typer.Context, **given: object) -> Overrides:
    """This command's flags, falling back to any given before the command (`llmchat -p x ask …`)."""
    parent: Overrides = ctx.obj if isinstance(ctx.obj, Overrides) else Overrides()
    merged = {key: given[key] if given.get(key) is not None else getattr(parent, key) for key in given}
    return Overrides(**{k: (str(v) if k == "config" and v is not None else v) for k, v in merged.items()})


def environment_of(ctx: typer.Context) -> Environment:
    """The run's Environment: built once by `main()` and handed to click as the root `obj`, which the root
    callback moves into `ctx.meta` (shared by every nested context) before `obj` starts carrying flags.
    A context made without `main()` (a bare `app()` call) reads the process once, here."""
    found = ctx.meta.get("environment")
    if found is None:
        root = ctx.find_root()
        found = root.obj if isinstance(root.obj, Environment) else Environment.from_process()
        ctx.meta["environment"] = found
    return found
