"""`/tools`: the chat's tools with on/off and trust; `/tools on NAME`, `/tools off NAME` for this session."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from llmchat.core.errors import ConfigError
from llmchat.repl.state import ReplState, UsageError

if TYPE_CHECKING:
    from llmchat.tools.box import Toolbox


def _box(state: ReplState) -> Toolbox:
    """The chat's toolbox, made (with nothing on) when the profile offered none: `/tools on` starts one."""
    if state.toolbox is not None:
        return state.toolbox
    from llmchat.tools.box import Toolbox

    return Toolbox(state.config, state.profile, state.environment)


def cmd_tools(state: ReplState, args: str) -> None:
    words = args.split()
    if not words:
        _list(state)
        return
    action, names = words[0].lower(), words[1:]
    if action not in ("on", "off") or not names:
        raise UsageError("Give on or off and a tool's name, or nothing to list them.")
    box = _box(state)

    def starting(servers: list[str]) -> None:
        state.say(f"Starting MCP server{'s' if len(servers) > 1 else ''} {', '.join(servers)}…")

    try:
        for name in names:
            box.enable(name, on_wait=starting) if action == "on" else box.disable(name)
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    state.toolbox = box
    for notice in box.notices():  # a server that would not start
        state.say(notice)
    offered = ", ".join(spec.name for spec in box.offered()) or "none"
    state.say(f"Tools {action}: {', '.join(names)}. Offered now: {offered}.")


def _trust_label(box: Toolbox, name: str) -> str:
    spec = box.spec(name)
    if spec is not None and spec.trusted:
        return "trusted"
    if box.profile.trust_tools:
        return "trusted (--trust-tools)"
    return "trusted this session" if box.trusted_this_session(name) else "asks first"


def _list(state: ReplState) -> None:
    box = _box(state)
    rows = box.listing()
    width = max(len(name) for name, _ in rows) + 2
    source_width = max(8, *(len(spec.source) for _, spec in rows))
    lines = []
    for name, spec in rows:
        state_word = "on " if box.is_enabled(name) else "off"
        description = " ".join(spec.description.split())
        description = description if len(description) <= 40 else description[:39] + "…"
        lines.append(f"  {name:<{width}}{state_word}  {spec.source:<{source_width}} {_trust_label(box, name):<21} "
                     f"{description}")
    state.say("Tools (/tools on|off NAME for this chat):\n" + "\n".join(lines))
    if not box.offered() and not any(spec.source != "builtin" for _, spec in rows):
        where = state.config.path or "the config file (`llmchat config path`)"
        state.say(f"No tool is on. Turn a built-in on with /tools on time; for good, list tools in a profile "
                  f'(tools = ["time"]) or define your own as a [tools.NAME] table in {where} (README: Tools).')


def complete_tools(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if not before:
        return [("on", "offer a tool in this chat"), ("off", "stop offering a tool")]
    if before[0].lower() not in ("on", "off"):
        return []
    box = _box(state)
    wanted = before[0].lower() == "off"
    return [(name, spec.source) for name, spec in box.listing()
            if box.is_enabled(name) == wanted and name not in before[1:]]
