"""Command tools (`[tools.NAME]`): the model's arguments put into an argv template, run without a shell.

`{param}` in an argv item is replaced by that argument (inside the item too: "wttr.in/{city}?format=3");
since no shell ever reads the result, `$(…)`, `;` or quotes in an argument are just characters. An item
whose placeholder names an optional parameter the model left out is dropped from the argv.
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
    argv = []
    for item in tool.command:
        names = PLACEHOLDER.findall(item)
        if any(name not in arguments or arguments[name] is None for name in names):
            continue
        argv.append(PLACEHOLDER.sub(lambda m: as_text(arguments[m.group(1)]), item))
    if any("\0" in item for item in argv):
        raise BadArguments("an argument contains a NUL character")
    return argv


def as_text(value: Any) -> str:
    """An argument as it goes into the argv: strings as they are, anything else as JSON (3, true, [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
