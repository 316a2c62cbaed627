"""Command tools (`[tools.NAME]`): the model's arguments put into an argv template, run without a shell.

`{param}` in an argv item is replaced by that argument (inside the item too: "wttr.in/{city}?format=3");
since no shell ever reads the result, `$(…)`, `;` or quotes in an argument are just characters. An item
whose placeholder names an optional parameter the model left out is dropped from the argv.

An argument stays one argv item, but a program may read an item starting with `-` as an option
(`--output=/etc/x` for `git log {ref}`). That is accepted, not refused (`-5` is a fine number, and only
the template's author knows what the program does): the approval points such an item out
(`option_warnings`), and the docs say to put `--` before placeholders when the program takes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmchat.config.tools import PLACEHOLDER, ToolConfig


class BadArguments(ValueError):
    """The model's arguments do not fit the tool: reported to the model as the call's error."""


def argv_for(tool: ToolConfig, arguments: Mapping[str, Any]) -> list[str]:
    """The argv `tool` runs for `arguments`; BadArguments names what is missing or unknown."""
    missing = [name for name in tool.required if name not in arguments]
    if missing:
        raise BadArguments(f"missing required argument{'s' * (len(missing) > 1)}: {', '.join(missing)}")
    unknown = [name for name in arguments if name not in tool.parameters]
    if unknown:
        takes = ", ".join(tool.parameters) or "no arguments"
        raise BadArguments(f"unknown argument{'s' * (len(unknown) > 1)}: {', '.join(unknown)} "
                           f"({tool.name} takes {takes})")
    argv = [item for _, item in _items(tool, arguments)]
    if any("\0" in item for item in argv):
        raise BadArguments("an argument contains a NUL character")
    return argv


def as_text(value: Any) -> str:
    """An argument as it goes into the argv: strings as they are, anything else as JSON (3, true, [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)



def _items(tool: ToolConfig, arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(template item, argv item) for each item kept: one naming an argument left out is dropped."""
    items = []
    for template in tool.command:
        names = PLACEHOLDER.findall(template)
        if any(name not in arguments or arguments[name] is None for name in names):
            continue
        items.append((template, PLACEHOLDER.sub(lambda m: as_text(arguments[m.group(1)]), template)))
    return items


def option_warnings(tool: ToolConfig, arguments: Mapping[str, Any]) -> list[str]:
    """A line for the approval about each item that starts with `-` because of the model's arguments (its
    template starts with a placeholder), before any `--` item."""
    said: list[str] = []
    for template, item in _items(tool, arguments):
        if template == "--":
            break
        if PLACEHOLDER.match(template) and item.startswith("-") and len(item) > 1:
            said.append(f"note: {item!r} comes from the model's arguments and starts with '-': "
                        f"{tool.command[0]} may read it as an option")
    return said
