"""Slash commands that change the session's settings: /profile /model /system /think /search /set."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmchat.config.profile import LIMITS, Profile, out_of_range
from llmchat.config.session import Overrides, with_flags
from llmchat.core.errors import LlmchatError
from llmchat.core.suggest import closest, did_you_mean
from llmchat.providers import ChatOptions
from llmchat.repl.state import ReplState, UsageError


def no_args(args: str) -> None:
    if args:
        raise UsageError("This command takes no arguments.")


def cmd_profile(state: ReplState, args: str) -> None:
    if not args:
        _list_profiles(state)
        return
    if args not in state.config.profiles:
        raise UsageError(f"No profile '{args}'.{did_you_mean(args, state.config.profiles)}"
                         f" Known: {', '.join(sorted(state.config.profiles))}.")
    # The display flag follows the user across profiles; so do /think, /set and /search where they still apply.
    # what the command line said for the whole chat holds for the new profile too: the thinking display and
    # the tool flags (--tool, --no-tools, --trust-tools); the profile's own model and settings replace the old
    carried = Overrides(show_thinking=state.flags.show_thinking, tool=state.flags.tool, no_tools=state.flags.no_tools,
                        trust_tools=state.flags.trust_tools)
    profile = with_flags(state.config.profiles[args], carried)
    changed = _changed_here(state)
    try:
        state.switch_profile(profile)
    except LlmchatError as exc:
        state.report(exc)
        state.say(f"Still using profile {state.profile.name}.")
        return
    carried = _carry(state, changed)
    turns = len(state.conversation.exchanges)
    kept = f"; the conversation ({turns} turn{'s' * (turns != 1)}) continues" if turns else ""
    persona = ("\nThe conversation keeps its system prompt; /system shows or replaces it."
               if profile.system != state.conversation.system else "")
    where = _endpoint(state, profile)
    state.say(f"Profile {profile.name}: {profile.provider} · {profile.model} · {where}{kept}.{persona}{carried}")


#: The settings /think, /search and /set change, and why one would not carry over to another profile
#: (None: it applies to any profile).
CARRIED: dict[str, Callable[[Profile], str | None]] = {
    "think": lambda p: None,
    "thinking_budget": lambda p: None if p.provider == "bailian" else "Bailian only",
    "search": lambda p: None if p.provider == "bailian" else "Bailian only",
    "temperature": lambda p: None,
    "top_p": lambda p: None,
    "top_k": lambda p: None,
    "max_tokens": lambda p: None,
    "seed": lambda p: None,
    "stop": lambda p: None,
    "context_window": lambda p: "it belongs to the model",
}


def _changed_here(state: ReplState) -> dict[str, Any]:
    """The settings the user changed in this chat: where the options differ from the profile's own."""
    own = ChatOptions.from_profile(state.profile)
    return {key: getattr(state.options, key) for key in CARRIED if getattr(state.options, key) != getattr(own, key)}


def _carry(state: ReplState, changed: dict[str, Any]) -> str:
    """Apply the changed settings that still apply to the new profile; say what was kept and what reset."""
    kept, reset = [], []
    for key, value in changed.items():
        why = CARRIED[key](state.profile)
        if why is None:
            state.options = replace(state.options, **{key: value})
            kept.append(f"thinking {state.thinking_label()}" if key == "think" else f"{key} = {_shown(value)}")
        else:
            reset.append(f"{key} ({why})")
    lines = ""
    if kept:
        lines += f"\nKept from this chat: {', '.join(kept)}."
    if reset:
        lines += f"\nBack to the profile's: {', '.join(reset)}."
    return lines


def _list_profiles(state: ReplState) -> None:
    lines = []
    for name, profile in state.config.profiles.items():
        mark = "*" if name == state.profile.name else " "
        lines.append(f" {mark} {name:<14} {profile.provider:<8} {profile.model:<20} {_endpoint(state, profile)}")
    state.say("\n".join(lines))


def _endpoint(state: ReplState, profile: Profile) -> str:
    try:
        return state.shown_endpoint(profile)
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


def complete_profiles(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [(n, f"{p.provider} · {p.model}") for n, p in state.config.profiles.items()]


def complete_models(state: ReplState, before: Sequence[str]) -> Iterable[str]:
    return [] if before else state.model_names()


def complete_search(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [("on", "let Bailian search the web"), ("off", "no web search"), ("auto", "the profile's setting")]


def complete_think(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if before:
        return []
    return [("on", "ask the model to reason"), ("off", "answer directly"), ("auto", "the model's default")]


def complete_set(state: ReplState, before: Sequence[str]) -> Iterable[tuple[str, str]]:
    if not before:
        return [(key, setting.help) for key, setting in SETTINGS.items()]
    if len(before) == 1 and before[0] in SETTINGS:
        return [("default", "back to the profile's value")]
    return []
