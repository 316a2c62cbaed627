"""The root command group: `llmchat "why is the sky blue"` asks, as `llm "…"` does.

A first word that names no command is the start of a question, so the words go to `ask` whole.
A single word close to a command's name (`llmchat hsitory`) is more likely a typo than a question:
that stays Typer's usage error with its did-you-mean (exit 2), and nothing is sent to a model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from llmchat.core.suggest import closest


class QuestionGroup(TyperGroup):
    """A TyperGroup whose unknown first word begins a question for `ask` (see the module doc)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        word = args[0] if args else ""
        if word and not word.startswith("-") and self.get_command(ctx, word) is None:
            typo = len(args) == 1 and " " not in word and closest(word, self.commands) is not None
            if not typo:
                return "ask", self.get_command(ctx, "ask"), list(args)
        return super().resolve_command(ctx, args)


class LazyCommands(MutableMapping[str, Any]):
    """The root group's commands by name, each built (and `prepare`d) the first time it is looked up.

    Typer builds the click command of every function the app registered before parsing anything: its
    signature, its evaluated type hints, a click parameter per option. For 22 commands and 137 options
    that was about 12 ms of every start, though a run uses one command; `--help`, completion and the
    did-you-mean read the names (the keys), and listing them all builds them all, as before.
    """

    def __init__(self, builders: dict[str, Callable[[], Any]]) -> None:
        self._builders = builders  # in the order Typer would have added them: `--help` lists them so
        self.built: dict[str, Any] = {}  # the commands looked up so far
        self.prepare: Callable[[Any], Any] = lambda command: command

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = self.prepare(self._builders[name]())  # KeyError: no such command
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._builders.setdefault(name, lambda: command)
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


def root_command(app: typer.Typer) -> Any:
    """`typer.main.get_command(app)` with the commands and sub-apps built on first use (`LazyCommands`):
    the same group, parameters and callback, built by Typer's own functions, one command at a time."""
    registered = app.registered_commands, app.registered_groups
    app.registered_commands, app.registered_groups = [], []
    try:
        group = typer.main.get_command(app)  # the root callback's parameters and the completion options
    finally:
        app.registered_commands, app.registered_groups = registered
    shared = {"pretty_exceptions_short": app.pretty_exceptions_short, "rich_markup_mode": app.rich_markup_mode}
    builders: dict[str, Callable[[], Any]] = {}
    for info in app.registered_commands:
        name = info.name or typer.main.get_command_name(info.callback.__name__)  # as Typer names it
        builders[name] = functools.partial(typer.main.get_command_from_info, info, **shared)
    group_options = dict(shared)
    if "suggest_commands" in inspect.signature(typer.main.get_group_from_info).parameters:  # Typer >= 0.16
        group_options["suggest_commands"] = app.suggest_commands
    for info in app.registered_groups:
        builders[info.name] = functools.partial(typer.main.get_group_from_info, info, **group_options)
    group.commands = LazyCommands(builders)
    return group
