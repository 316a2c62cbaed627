"""The slash-command table: parsing `/name args`, dispatch, did-you-mean, and completion."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from llmchat.core.suggest import closest
from llmchat.repl.state import Action, ReplState, Suggestion, UsageError

# ------------------------------------------------------------------------------------------------ registry

Handler = Callable[[ReplState, str], Action | None]
ArgCompleter = Callable[[ReplState, Sequence[str]], Iterable[str | tuple[str, str]]]


@dataclass(frozen=True)
class Command:
    """One slash command: what it is called, what it takes, what it says about itself, what it does."""

    name: str
    handler: Handler
    help: str
    args: str = ""  # the argument part of the usage line, e.g. "on|off|auto|BUDGET"
    aliases: tuple[str, ...] = ()
    complete: ArgCompleter | None = None  # candidates for the next argument, given the ones before it

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


_COMMAND_LINE = re.compile(r"/([^\s/]*)(?:\s+(.*))?\Z", re.DOTALL)


def is_command(text: str) -> bool:
    """A line is a command when it starts with one slash and a word without another slash.

    So `/usr/bin/env is slow, why?` still goes to the model, and `//x` sends `/x`.
    """
    return _COMMAND_LINE.match(text) is not None


class Registry:
    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands = list(commands)
        self._by_name: dict[str, Command] = {}
        for command in self.commands:
            for name in (command.name, *command.aliases):
                if name in self._by_name:
                    raise ValueError(f"duplicate command name /{name}")
                self._by_name[name] = command

    def find(self, name: str) -> Command | None:
        return self._by_name.get(name.lower())

    def nearest(self, name: str) -> str | None:
        return closest(name.lower(), self._by_name, cutoff=0.5)

    def dispatch(self, state: ReplState, text: str) -> Action:
        """Run the command `text`; unknown names and bad arguments are reported, never raised."""
        match = _COMMAND_LINE.match(text.strip())
        if match is None:
            raise ValueError(f"not a command: {text!r}")
        name, args = match.group(1), (match.group(2) or "").strip()
        command = self.find(name)
        if command is None:
            near = self.nearest(name) if name else None
            guess = f" Did you mean /{near}?" if near else ""
            state.say(f"Unknown command '/{name}'.{guess} Type /help for the list; nothing was sent.")
            return Action()
        try:
            return command.handler(state, args) or Action()
        except UsageError as exc:
            state.say(f"{exc} Usage: {command.usage}")
            return Action()

    def complete(self, state: ReplState, text: str) -> list[Suggestion]:
        """Completions for the text before the cursor: command names, then each command's arguments."""
        if not text.startswith("/") or "\n" in text:
            return []
        head, space, rest = text.partition(" ")
        if not space:
            return self._complete_name(head[1:])
        command = self.find(head[1:])
        if command is None or command.complete is None:
            return []
        words = rest.split(" ")
        current, before = words[-1], [w for w in words[:-1] if w]
        found = []
        for candidate in command.complete(state, before):
            value, meta = candidate if isinstance(candidate, tuple) else (candidate, "")
            if value.lower().startswith(current.lower()):
                found.append(Suggestion(value, -len(current), meta))
        return found

    def _complete_name(self, typed: str) -> list[Suggestion]:
        found = []
        for command in self.commands:
            names = [command.name] if command.name.startswith(typed) else []
            names += [a for a in command.aliases if a.startswith(typed) and not names]
            found += [Suggestion("/" + n, -len(typed) - 1, command.help) for n in names[:1]]
        return found
