"""Help text as people read it: flag names and value words, not Typer's Python types.

Typer labels every parameter with its annotation (`<bool>` on an on/off flag, `<list[str]>` on the
question, `<str>` on a name) and writes a required argument as `{INPUT}` in the usage line. Those
are the program's types, not the user's words, and the extra column pushes long option names past
80 columns. One pass over the finished click command gives every parameter the metavar click itself
would print (`--think / --no-think` alone, `--profile NAME`, `[PROMPT]...`, `INPUT`); Typer shows a
metavar as it is, in both the Rich and the plain help.
"""

from __future__ import annotations

import types
from types import SimpleNamespace
from typing import Any

from typer.core import TyperArgument, TyperOption

from llmchat.cli.group import LazyCommands

#: The value word per annotated type; a text option is named after itself (`--model MODEL`).
_WORDS = {"int": "N", "float": "NUMBER"}


#: Typer's shell-completion flags: named in the app's help text instead of the options table, where the
#: longest name (`--install-completion`) would be cut to `--install-comple…` at 80 columns.
_LISTED_IN_TEXT = ("install_completion", "show_completion")
#: Stands in for a click context: the help option is built from the names alone (cached by click after).
_HELP_NAMES = SimpleNamespace(help_option_names=["-h", "--help"])


def tidy(command: Any) -> Any:
    """Give each parameter of `command` and its subcommands a user's metavar (see the module doc)."""
    help_option = command.get_help_option(_HELP_NAMES)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.name in _LISTED_IN_TEXT:
            param.hidden = True
        if isinstance(param, TyperOption):
            _tidy_option(param)
        elif isinstance(param, TyperArgument):
            _tidy_argument(param)
    commands = getattr(command, "commands", {})
    if isinstance(commands, LazyCommands):
        commands.prepare = tidy  # each command as it is built
    else:
        for sub in commands.values():
            tidy(sub)
    return command


def _tidy_option(option: TyperOption) -> None:
    if option.metavar is not None:
        return
    kind = option.type_descriptor
    if option.is_flag:
        option.metavar = ""  # an on/off flag takes no value: nothing to show after its name
    elif kind.is_choice:
        return  # Typer lists the values (`<md|markdown|json>`): that is what the user types
    elif kind.is_path:
        option.metavar = "DIR" if kind.path_type == "directory" else "FILE"
    else:
        word = _WORDS.get(getattr(kind.annotation, "__name__", ""))
        option.metavar = word or (option.name or "value").upper()


def _tidy_argument(argument: TyperArgument) -> None:
    name = (argument.metavar or argument.name or "value").upper()
    argument.metavar = name + ("..." if argument.nargs != 1 else "")
    shown = argument.metavar if argument.required else f"[{name}]" + ("..." if argument.nargs != 1 else "")

    def usage_pieces(self: TyperArgument, ctx: object) -> list[str]:
        return [shown]

    def no_type(self: TyperArgument, ctx: object) -> None:
        return None  # the name already says what to give; `<list[str]>` says only how Python holds it

    # Typer has no setting for either: the two methods are replaced on this one parameter object
    argument.get_usage_pieces = types.MethodType(usage_pieces, argument)  # type: ignore[method-assign]
    argument.display_type_rich = types.MethodType(no_type, argument)  # type: ignore[method-assign]
