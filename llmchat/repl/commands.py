"""The REPL's slash commands: one table that feeds dispatch, `/help` and tab completion.

Everything here works on a `ReplState` and writes to `state.out`, never to a terminal of its own,
so the registry is tested with a `StringIO` and a fake provider; `repl.py` only wires it to
prompt-toolkit. Adding a command means adding one `Command` to `COMMANDS`: its help line, usage and
completion come with it, so the three can never drift apart.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmchat.config.profile import LIMITS, Profile, out_of_range
from llmchat.config.session import Overrides, with_flags
from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.errors import LlmchatError
from llmchat.core.images import ImageError
from llmchat.core.suggest import closest, did_you_mean
from llmchat.engine.context import describe
from llmchat.repl.registry import Command, Registry
from llmchat.repl.state import Action, ReplState, UsageError

KEYS_HELP = """Keys:
  Enter              send · Alt-Enter (Esc Enter) adds a line · a \"\"\" line opens and closes a block
  Ctrl-X Ctrl-E      edit the message in $EDITOR
  Up/Down, Ctrl-R    recall and search earlier input · Right arrow takes the grey suggestion
  Tab                complete commands, profiles, models, settings
  Ctrl-C             stop an answer (at the prompt: clear the line) · Ctrl-D quit
  //text             send text that starts with /"""


# ---------------------------------------------------------------------------------------------- handlers


def _no_args(args: str) -> None:
    if args:
        raise UsageError("This command takes no arguments.")


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
    _no_args(args)
    state.conversation = Conversation(system=state.conversation.system)
    state.say("Started a new conversation (same system prompt).")


def cmd_resume(state: ReplState, args: str) -> None:
    if not args:
        raise UsageError("Give a conversation id (see `llmchat history`), or `last`.")
    if state.store is None:
        raise UsageError("History is off in this chat (--no-save), so there is nothing to resume.")
    state.conversation = state.store.load_conversation(args)
    turns = len(state.conversation.exchanges)
    state.say(f"Resumed conversation {state.conversation.id} ({turns} turn{'s' if turns != 1 else ''}); "
              "/history shows it.")


def cmd_profile(state: ReplState, args: str) -> None:
    if not args:
        _list_profiles(state)
        return
    if args not in state.config.profiles:
        raise UsageError(f"No profile '{args}'.{did_you_mean(args, state.config.profiles)}"
                         f" Known: {', '.join(sorted(state.config.profiles))}.")
    # Only the display flag follows the user across profiles; the others were about the first profile.
    profile = with_flags(state.config.profiles[args], Overrides(show_thinking=state.flags.show_thinking))
    try:
        state.switch_profile(profile)
    except LlmchatError as exc:
        state.report(exc)
        state.say(f"Still using profile {state.profile.name}.")
        return
    turns = len(state.conversation.exchanges)
    kept = f"; the conversation ({turns} turn{'s' * (turns != 1)}) continues" if turns else ""
    persona = ("\nThe conversation keeps its system prompt; /system shows or replaces it."
               if profile.system != state.conversation.system else "")
    state.say(f"Profile {profile.name}: {profile.provider} · {profile.model} · {_endpoint(profile)}{kept}.{persona}")


def _list_profiles(state: ReplState) -> None:
    lines = []
    for name, profile in state.config.profiles.items():
        mark = "*" if name == state.profile.name else " "
        lines.append(f" {mark} {name:<14} {profile.provider:<8} {profile.model:<20} {_endpoint(profile)}")
    state.say("\n".join(lines))


def _endpoint(profile: Profile) -> str:
    try:
        return profile.shown_endpoint
    except LlmchatError:
        return "?"


def cmd_model(state: ReplState, args: str) -> None:
    if not args:
        names = state.model_names()
        listing = "".join(f"\n {'*' if n == state.options.model else ' '} {n}" for n in names)
        state.say(f"Model: {state.options.model}{listing}")
        return
    if " " in args:
        raise UsageError("A model name has no spaces.")
    state.options = replace(state.options, model=args)
    state.profile = replace(state.profile, model=args)
    known = state.model_names()
    note = ""
    if known and args not in known and f"{args}:latest" not in known:
        near = closest(args, known)
        note = f" (the server does not list it{f'; did you mean {near}?' if near else ''})"
    state.say(f"Model: {args}{note}")


def cmd_system(state: ReplState, args: str) -> None:
    if not args:
        current = state.conversation.system
        state.say(f"System prompt: {current}" if current else "No system prompt. Set one with /system TEXT.")
        return
    if args == "--clear":
        state.conversation.system = None
        state.say("System prompt removed.")
        return
    state.conversation.system = args
    state.say("System prompt set; it applies from the next question.")


def cmd_think(state: ReplState, args: str) -> None:
    word = args.lower()
    if not word:
        state.say(f"Thinking: {state.thinking_label()}")
        return
    if word in ("on", "off", "auto"):
        state.options = replace(state.options, think={"on": True, "off": False, "auto": None}[word])
    elif word.isdigit() and int(word) > 0:
        state.options = replace(state.options, think=True, thinking_budget=int(word))
    else:
        raise UsageError(f"'{args}' is not on, off, auto or a token budget.")
    budget = " (budgets apply to Bailian only)" if word.isdigit() and state.profile.provider != "bailian" else ""
    state.say(f"Thinking: {state.thinking_label()}{budget}")


def cmd_search(state: ReplState, args: str) -> None:
    word = args.lower()
    labels = {True: "on", False: "off", None: "auto (the profile's, else the server's default)"}
    if word:
        if word not in ("on", "off", "auto"):
            raise UsageError(f"'{args}' is not on, off or auto.")
        state.options = replace(state.options, search={"on": True, "off": False, "auto": None}[word])
    note = "" if state.profile.provider == "bailian" else " (web search applies to Bailian profiles only)"
    state.say(f"Web search: {labels[state.options.search]}{note}")


# /set: each key's parser turns the typed text into the ChatOptions value or raises UsageError.


def _limited(key: str) -> Callable[[str], float]:
    """A number within config.LIMITS[key]: the same table the config file and the flags use."""
    limit = LIMITS[key]

    def parse(text: str) -> float:
        try:
            value: float = int(text) if limit.integer else float(text)
        except ValueError:
            value = float("nan")  # refused just below, with the allowed range
        if (allowed := out_of_range(key, value)) is not None:
            raise UsageError(f"expected {allowed}, got '{text}'.")
        return value

    return parse


def _stops(text: str) -> tuple[str, ...]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the stop sequences: {exc}.") from None
    if not words:
        raise UsageError("expected one or more stop sequences.")
    return tuple(words)


def _switch(text: str) -> bool:
    if text.lower() in ("on", "true", "yes", "1"):
        return True
    if text.lower() in ("off", "false", "no", "0"):
        return False
    raise UsageError(f"expected on or off, got '{text}'.")


@dataclass(frozen=True)
class Setting:
    parse: Callable[[str], Any]
    help: str


SETTINGS: dict[str, Setting] = {
    "temperature": Setting(_limited("temperature"), "sampling temperature, 0-2"),
    "top_p": Setting(_limited("top_p"), "nucleus sampling, (0, 1]"),
    "top_k": Setting(_limited("top_k"), "sample from the k likeliest tokens"),
    "max_tokens": Setting(_limited("max_tokens"), "longest answer, in tokens"),
    "seed": Setting(_limited("seed"), "random seed, for repeatable answers"),
    "stop": Setting(_stops, "stop sequences (quote ones with spaces)"),
    "context_window": Setting(_limited("context_window"), "context size in tokens (Ollama num_ctx)"),
    "search": Setting(_switch, "web search, on|off (Bailian)"),
}
DEFAULT_WORDS = ("default", "unset")


def cmd_set(state: ReplState, args: str) -> None:
    if not args:
        _show_settings(state)
        return
    key, _, text = args.partition(" ")
    key, text = key.lower().replace("-", "_"), text.strip()
    setting = SETTINGS.get(key)
    if setting is None:
        raise UsageError(f"Unknown setting '{key}'.{did_you_mean(key, SETTINGS)}"
                         f" Settings: {', '.join(SETTINGS)}.")
    if not text:
        raise UsageError(f"/set {key} needs a value ({setting.help}), or 'default'.")
    if text.lower() in DEFAULT_WORDS:
        value = getattr(state.profile, key)
    else:
        try:
            value = setting.parse(text)
        except UsageError as exc:
            raise UsageError(f"{key}: {exc}") from None
    state.options = replace(state.options, **{key: value})
    state.say(f"{key} = {_shown(value)}")


def _show_settings(state: ReplState) -> None:
    lines = []
    for key, setting in SETTINGS.items():
        value = getattr(state.options, key)
        source = "" if value is None else (" (profile)" if value == getattr(state.profile, key) else " (set here)")
        lines.append(f"  {key:<15} {_shown(value):<12}{source:<12} {setting.help}")
    state.say("\n".join(lines))


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return " ".join(shlex.quote(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cmd_retry(state: ReplState, args: str) -> Action | None:
    _no_args(args)
    if not state.conversation.exchanges:
        state.say("Nothing to retry yet.")
        return None
    exchange = state.conversation.pop()
    state.pending_images.restore(exchange.images)  # asked again with the same images
    return Action(ask=exchange.user)


def cmd_image(state: ReplState, args: str) -> None:
    pending = state.pending_images
    if args.lower() == "clear":
        count = len(pending)
        pending.clear()
        state.say(f"Dropped {_count_images(count)}." if count else "No images were attached.")
        return
    if not args:
        if not pending:
            state.say("No images attached; /image PATH|URL attaches one to the next question.")
            return
        lines = [f"Attached to the next question ({_count_images(len(pending))}):"]
        lines += [f"  {image.source} ({image.mime or 'URL'}, {_size(image.data)})" for image in pending.images()]
        state.say("\n".join(lines))
        return
    try:
        image = pending.add(args)
    except ImageError as exc:
        raise UsageError(exc.message) from None
    state.say(f"Attached {image.source} to the next question ({_count_images(len(pending))} in all).")


def _count_images(count: int) -> str:
    return f"{count} image{'s' if count != 1 else ''}"


def _size(data: bytes | None) -> str:
    if data is None:
        return "fetched by the server"
    return f"{len(data):,} bytes" if len(data) < 10_000 else f"{len(data) / 1024:,.0f} KB"


def cmd_undo(state: ReplState, args: str) -> None:
    _no_args(args)
    if not state.conversation.exchanges:
        state.say("Nothing to undo.")
        return
    exchange = state.conversation.pop()
    if state.store is not None:
        state.store.truncate(state.conversation)  # the saved copy forgets it too
    state.say(f"Removed the last exchange: {_short(exchange.user, 60)}")


def cmd_history(state: ReplState, args: str) -> None:
    _no_args(args)
    exchanges = state.conversation.exchanges
    if not exchanges:
        state.say("No turns yet in this conversation.")
        return
    lines = [f"System: {_short(state.conversation.system, 70)}"] if state.conversation.system else []
    first = state.conversation.first_sent()
    if first:
        summary = state.conversation.active_summary()
        how = "no longer sent" if summary is None else (
            "summarised" if summary.covers >= first else "summarised or no longer sent")
        lines.append(f"(turns 1-{first} are {how} to fit the context window; /context shows what is sent)")
    for number, exchange in enumerate(exchanges, 1):
        lines.append(f"{number:>3}. you: {_short(exchange.user, 70)}")
        lines.append(f"     {exchange.model or 'model'}: {_short(exchange.answer, 70)}{_status(exchange)}")
    state.say("\n".join(lines))


def _status(exchange: Exchange) -> str:
    if exchange.interrupted:
        return " [interrupted]"
    return "" if exchange.answer else " [failed: not sent again]"


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cmd_usage(state: ReplState, args: str) -> None:
    _no_args(args)
    t = state.totals
    if not t.turns:
        state.say("No turns yet.")
        return
    calls = f"{t.turns} turn{'s' * (t.turns != 1)}"
    if t.summaries:
        calls += f" + {t.summaries} summary call{'s' * (t.summaries != 1)}"
    parts = [calls, f"prompt {t.prompt:,}", f"completion {t.completion:,}"]
    if t.reasoning:
        parts[-1] += f" (reasoning {t.reasoning:,})"
    parts.append(f"total {t.prompt + t.completion:,} tokens")
    if t.costs:
        parts.append("cost " + t.cost_text())
    line = "Since start: " + " · ".join(parts)
    if t.unreported:
        line += f"\n({t.unreported} turn{'s' * (t.unreported != 1)} without a usage report not counted)"
    state.say(line)


def cmd_context(state: ReplState, args: str) -> None:
    _no_args(args)
    state.say(describe(state.context(), state.conversation))


def cmd_compact(state: ReplState, args: str) -> None:
    _no_args(args)
    conversation = state.conversation
    if not any(e.answer for e in conversation.exchanges[conversation.first_sent():]):
        state.say("Nothing to compact: no earlier exchange is sent verbatim.")
        return
    if state.context().compact(conversation, state.say):
        state.compacted = True
    else:
        state.say("The conversation was not compacted; it is sent as before.")


def cmd_save(state: ReplState, args: str) -> None:
    """Write the conversation in the one export format: `.json` is what `history export --format json`
    writes (and `history import` reads), `.md` what `history export --format md` writes."""
    if not args:
        raise UsageError("Give a file name ending in .md or .json.")
    path = Path(args.strip("'\"")).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".md", ".markdown", ".json"):
        raise UsageError(f"'{path.name}' must end in .md or .json, which picks the format.")
    from llmchat.engine.history import transcript_text

    record = transcript_record(state)
    text = transcript_text(record, "json" if suffix == ".json" else "md")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        state.say(f"Cannot write {path}: {exc.strerror}.")
        return
    turns = sum(message["role"] == "user" for message in record["messages"])
    state.say(f"Saved {turns} turn{'s' * (turns != 1)} to {path}")


def transcript_record(state: ReplState) -> dict[str, Any]:
    """The conversation's export record: the store's, when this chat is saved there (so the file equals
    `history export`), else built from memory (--no-save, save = false, or the saved copy is gone)."""
    from llmchat.store.export import conversation_record
    from llmchat.store.records import now

    conversation = state.conversation
    if state.recorder() is not None and conversation.id is not None and state.store is not None:
        try:
            return state.store.export_record(conversation.id)
        except LlmchatError:
            pass  # removed by `history rm` meanwhile, or the store is unusable: what is on screen still counts
    if state.unsaved is None or state.unsaved[0] is not conversation:
        state.unsaved = (conversation, conversation.id or secrets.token_hex(4), now())
    _, cid, created = state.unsaved
    return conversation_record(conversation, state.profile, cid=cid, created=created, model=state.options.model)


# ------------------------------------------------------------------------------------------- completers


def _complete_profiles(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [(n, f"{p.provider} · {p.model}") for n, p in state.config.profiles.items()]


def _complete_models(state: ReplState, before: Sequence[str]) -> Iterable[str]:
    return [] if before else state.model_names()


def _complete_search(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [("on", "let Bailian search the web"), ("off", "no web search"), ("auto", "the profile's setting")]


def _complete_think(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [("on", "ask the model to reason"), ("off", "answer directly"), ("auto", "the model's default")]


def _complete_set(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if not before:
        return [(key, setting.help) for key, setting in SETTINGS.items()]
    if len(before) == 1 and before[0] in SETTINGS:
        return [("default", "back to the profile's value")]
    return []


def _complete_help(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    return [] if before else [(c.name, c.help) for c in COMMANDS.commands]


COMMANDS = Registry([
    Command("help", cmd_help, "Show the commands, or one command's help", "[COMMAND]", ("?",), _complete_help),
    Command("exit", cmd_exit, "Leave the chat", aliases=("quit", "bye")),
    Command("clear", cmd_clear, "Start a new conversation with the same system prompt", aliases=("new",)),
    Command("resume", cmd_resume, "Continue a saved conversation (see `llmchat history`)", "ID|last"),
    Command("profile", cmd_profile, "Switch provider and model, keeping the conversation (alone: list them)", "[NAME]",
            complete=_complete_profiles),
    Command("model", cmd_model, "Switch model (alone: list the server's models)", "[NAME]",
            complete=_complete_models),
    Command("system", cmd_system, "Replace the system prompt (alone: show it; --clear removes it)", "[TEXT]"),
    Command("think", cmd_think, "Ask for reasoning: on, off, auto, or a token budget", "[on|off|auto|BUDGET]",
            complete=_complete_think),
    Command("search", cmd_search, "Bailian web search: on, off or auto (alone: show it)", "[on|off|auto]",
            complete=_complete_search),
    Command("set", cmd_set, "Set a sampling option (alone: show them all)", "[KEY VALUE|default]",
            complete=_complete_set),
    Command("retry", cmd_retry, "Ask the last question again, replacing its answer", aliases=("regenerate",)),
    Command("image", cmd_image, "Attach an image to the next question (alone: list them; clear drops them)",
            "[PATH|URL|clear]"),
    Command("undo", cmd_undo, "Drop the last question and its answer"),
    Command("history", cmd_history, "Show this conversation's turns, shortened"),
    Command("usage", cmd_usage, "Token totals (and cost) since the chat started"),
    Command("context", cmd_context, "Tokens used of the context window, and how the history is kept in it"),
    Command("compact", cmd_compact, "Summarise (or, with history = truncate, drop) the older half of the history now"),
    Command("save", cmd_save, "Write the conversation to FILE (.md or .json), as `history export` does", "FILE"),
])
