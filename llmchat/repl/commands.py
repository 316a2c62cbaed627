"""The REPL's slash commands: one table that feeds dispatch, `/help` and tab completion.

Everything here works on a `ReplState` and writes to `state.out`, never to a terminal of its own,
so the registry is tested with a `StringIO` and a fake provider; `repl/app.py` only wires it to
prompt-toolkit. Adding a command means adding one `Command` to `COMMANDS`: its help line, usage and
completion come with it, so the three can never drift apart. The handlers live by group: the session's
own here (/help /exit /clear /resume), its settings in `settings.py`, the conversation's in
`conversation.py`, attached files in `files.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from llmchat.core.conversation import Conversation
from llmchat.repl.conversation import (
    cmd_compact,
    cmd_context,
    cmd_history,
    cmd_image,
    cmd_retry,
    cmd_save,
    cmd_undo,
    cmd_usage,
)
from llmchat.repl.files import cmd_file
from llmchat.repl.mcp import cmd_mcp
from llmchat.repl.registry import Command, Registry
from llmchat.repl.settings import (
    cmd_model,
    cmd_profile,
    cmd_search,
    cmd_set,
    cmd_system,
    cmd_think,
    complete_models,
    complete_profiles,
    complete_search,
    complete_set,
    complete_think,
    no_args,
)
from llmchat.repl.state import Action, ReplState, UsageError
from llmchat.repl.tools import cmd_tools, complete_tools

KEYS_HELP = """Keys:
  Enter              send · Alt-Enter (Esc Enter) adds a line · a \"\"\" line opens and closes a block
  Ctrl-X Ctrl-E      edit the message in $EDITOR
  Up/Down, Ctrl-R    recall and search earlier input · Right arrow takes the grey suggestion
  Tab                complete commands, profiles, models, settings; paths after /image, /file and /save
  Ctrl-C             stop an answer (at the prompt: clear the line) · Ctrl-D quit
  //text             send text that starts with /"""


# ---------------------------------------------------------------------------------------------- handlers


def cmd_help(state: ReplState, args: str) -> None:
    if args:
        command = COMMANDS.find(args.lstrip("/"))
        if command is None:
            near = COMMANDS.nearest(args.lstrip("/"))
            raise UsageError(f"No command '/{args.lstrip('/')}'." + (f" Did you mean /{near}?" if near else ""))
        also = f"  (also {', '.join('/' + a for a in command.aliases)})" if command.aliases else ""
        state.say(f"{command.usage}{also}\n  {command.help}")
        return
    width = max(len(c.usage) for c in COMMANDS.commands) + 2
    lines = ["Commands:"]
    for command in COMMANDS.commands:
        also = f" (also {', '.join('/' + a for a in command.aliases)})" if command.aliases else ""
        lines.append(f"  {command.usage:<{width}}{command.help}{also}")
    state.say("\n".join(lines) + "\n" + KEYS_HELP)


def cmd_exit(state: ReplState, args: str) -> Action:
    return Action(exit=True)


def cmd_clear(state: ReplState, args: str) -> None:
    no_args(args)
    state.conversation = Conversation(system=state.conversation.system)
    state.refused = None  # /retry belongs to the conversation it was asked in
    state.say("Started a new conversation (same system prompt).")


#: How many saved conversations `/resume` alone offers.
RECENT = 10


def cmd_resume(state: ReplState, args: str) -> None:
    if state.store is None:
        raise UsageError("History is off in this chat (--no-save), so there is nothing to resume.")
    if not args:
        _list_recent(state)
        return
    state.conversation = state.store.load_conversation(args)
    state.refused = None
    turns = len(state.conversation.exchanges)
    state.say(f"Resumed conversation {state.conversation.id} ({turns} turn{'s' if turns != 1 else ''}); "
              "/history shows it.")


def _list_recent(state: ReplState) -> None:
    """The recent saved conversations, to pick one from inside the chat: id, age, turns, title."""
    assert state.store is not None
    rows = state.store.list_conversations(limit=RECENT)
    if not rows:
        state.say("No saved conversations yet.")
        return
    now = datetime.now(UTC)
    lines = ["Recent conversations:"]
    for row in rows:
        here = "  (this chat)" if row.id == state.conversation.id else ""
        turns = f"{row.turns} turn{'s' if row.turns != 1 else ''}"
        lines.append(f"  {row.id}  {age(row.updated, now):>11}  {turns:>9}  {row.title}{here}")
    lines.append("Pick one with /resume ID (Tab completes the ids), or /resume last.")
    state.say("\n".join(lines))


def age(iso: str, now: datetime) -> str:
    """How long ago an ISO 8601 time was, in the largest unit that is at least one ("3 h ago")."""
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


# ------------------------------------------------------------------------------------------- completers


def _complete_resume(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    """The recent conversations' ids, each with its title; nothing when history is off or unreadable."""
    if before or state.store is None:
        return []
    try:
        rows = state.store.list_conversations(limit=RECENT)
    except Exception:  # completion must never break typing, whatever the database does
        return []
    return [("last", "the latest conversation"), *((row.id, row.title) for row in rows)]


def _complete_help(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    return [] if before else [(c.name, c.help) for c in COMMANDS.commands]


COMMANDS = Registry([
    Command("help", cmd_help, "Show the commands, or one command's help", "[COMMAND]", ("?",), _complete_help),
    Command("exit", cmd_exit, "Leave the chat", aliases=("quit", "bye")),
    Command("clear", cmd_clear, "Start a new conversation with the same system prompt", aliases=("new",)),
    Command("resume", cmd_resume, "Continue a saved conversation (alone: list the recent ones to pick from)",
            "[ID|last]", complete=_complete_resume),
    Command("profile", cmd_profile, "Switch provider and model, keeping the conversation (alone: list them)", "[NAME]",
            complete=complete_profiles),
    Command("model", cmd_model, "Switch model (alone: list the server's models)", "[NAME]",
            complete=complete_models),
    Command("system", cmd_system, "Replace the system prompt (alone: show it; --clear removes it)", "[TEXT]"),
    Command("think", cmd_think, "Ask for reasoning: on, off, auto, or a token budget", "[on|off|auto|BUDGET]",
            complete=complete_think),
    Command("search", cmd_search, "Bailian web search: on, off or auto (alone: show it)", "[on|off|auto]",
            complete=complete_search),
    Command("set", cmd_set, "Set a sampling option (alone: show them all)", "[KEY VALUE|default]",
            complete=complete_set),
    Command("tools", cmd_tools, "Tools the model may call, on/off and trust (on|off NAME: for this chat)",
            "[on|off NAME]", complete=complete_tools),
    Command("mcp", cmd_mcp, "MCP servers: how each is reached, its state and its tools"),
    Command("retry", cmd_retry, "Ask the last question again, replacing its answer", aliases=("regenerate",)),
    Command("image", cmd_image, "Attach an image to the next question (alone: list them; clear drops them)",
            "[PATH|URL|clear]"),
    Command("file", cmd_file, "Add a text file to the next question (alone: list them; clear drops them)",
            "[PATH|clear]"),
    Command("undo", cmd_undo, "Drop the last question and its answer"),
    Command("history", cmd_history, "Show this conversation's turns, shortened"),
    Command("usage", cmd_usage, "Token totals (and cost) since the chat started"),
    Command("context", cmd_context, "Tokens used of the context window, and how the history is kept in it"),
    Command("compact", cmd_compact, "Summarise (or, with history = truncate, drop) the older half of the history now"),
    Command("save", cmd_save, "Write the conversation to FILE (.md or .json), as `history export` does", "FILE"),
])
