"""The interactive chat: a prompt-toolkit session around the same `run_turn()` that `ask` uses.

This module only reads input and routes it: text goes to the model through `run_turn` and the
renderer `ask` uses, slash commands go to the registry in `commands.py`. It draws nothing of its
own beyond the banner and the toolbar, so what an answer looks like is decided in one place.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from llmchat import __version__
from llmchat.config.session import Overrides, resolve
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError
from llmchat.core.safe_text import sanitize
from llmchat.core.stops import Terminated
from llmchat.engine.ask import make_turn_view
from llmchat.engine.chat import run_turn
from llmchat.providers import check_images
from llmchat.repl.commands import COMMANDS
from llmchat.repl.preload import early_connector
from llmchat.repl.registry import is_command
from llmchat.repl.state import QUIT_HINT, Action, ReplState

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
# A block opens with """ at the start of the input, or right after a command (`/system """`).
_BLOCK_START = re.compile(r'(/\S+[ \t]+)?"""')


def run_repl(flags: Overrides, environment: Environment | None = None, *, plain: bool, save: bool = True,
             resume: str | None = None) -> int:
    """Chat until Ctrl-D or /exit; returns the exit status. Config and connection errors propagate.

    Nothing after start-up ends the session except the user: a failed turn is reported and the
    prompt comes back, with the conversation as it was. Every turn is saved as it happens unless
    `save` is off; `resume` ("last" or an id) continues a saved conversation.
    """
    config, profile = resolve(flags, environment)
    # every (re)connect — /profile, a summary profile — reads OLLAMA_HOST, the timeout and keys from it
    state = ReplState.start(config, profile, flags=flags, environment=environment,
                            connector=early_connector(environment))  # repl/preload: connects while they type
    if save or resume:
        from llmchat.store.db import open_store

        state.store = open_store(reading=True)  # read-only: it resumes, and the first save offers to go on
    if resume:
        state.conversation = state.store.load_conversation(resume)
    if not save:
        state.store = None
    session = make_session(state, remember=save and profile.save)
    state.say(banner(state))
    return chat_loop(state, session, plain=plain)


def chat_loop(state: ReplState, session: PromptSession[str], *, plain: bool) -> int:
    """Read, route, repeat. Ctrl-C never leaves: at the prompt it drops the line, in a turn it stops it."""
    while True:
        try:
            text = session.prompt()
        except Terminated:  # SIGTERM/SIGHUP: every turn is already saved; the process ends
            raise
        except KeyboardInterrupt:  # at the prompt: the line is dropped, the chat goes on
            state.say(QUIT_HINT)
            continue
        except EOFError:
            return 0
        try:
            action = respond(state, text, plain=plain)
        except Terminated:  # the turn saved what arrived, marked interrupted
            raise
        except KeyboardInterrupt:  # a Ctrl-C that missed the turn (e.g. while it was closing)
            state.say("Interrupted.")
            continue
        except LlmchatError as exc:  # /resume of an unknown id, a history that cannot be written…
            state.report(exc)
            continue
        if action.exit:
            return 0


def respond(state: ReplState, text: str, *, plain: bool) -> Action:
    """Route one submitted input: a command, or a question for the model."""
    text = unwrap_block(text).rstrip().lstrip("\n")  # keeps the indent of pasted code's first line
    if not text:
        return Action()
    if not is_utf8(text):
        state.say(NOT_UTF8)
        return Action()
    if is_command(text):
        action = COMMANDS.dispatch(state, text)
        if action.ask is not None:
            ask(state, action.ask, plain=plain)
        return action
    if text.startswith("//"):
        text = text[1:]
    ask(state, text, plain=plain)
    return Action()


def ask(state: ReplState, question: str, *, plain: bool) -> None:
    """One turn; a provider error is printed and the REPL carries on (run_turn never raises for it).

    The history is fitted to the window first (the profile's `history` strategy), with a one-line
    notice when older turns are summarised or no longer sent.
    """
    options = state.request_options()
    if state.pending_images:
        images = state.pending_images.images()
        try:
            check_images(state.provider, options.model, images)
        except LlmchatError as exc:  # e.g. a model that cannot see: the images stay attached, nothing is sent
            state.say(f"{exc.message} Nothing was sent; /image clear drops the images.")
            if exc.hint:
                state.say(exc.hint)
            return
        options = replace(options, images=state.pending_images.take())  # this turn only
    recorder = state.recorder()
    try:
        view = make_turn_view(state.profile, plain=plain, as_json=False, usage=None, stream=True,
                              environment=state.environment)
        result, error = run_turn(
            state.conversation, question, state.provider, options, view,
            retries=state.profile.retries, recorder=recorder, context=state.context(),
            tools=state.toolbox, approval=state.approval(), max_tool_rounds=state.profile.max_tool_rounds,
        )
    except LlmchatError as exc:  # the question could not be saved (disk full, read-only): nothing was sent
        if recorder is None or not _question_unsaved(state, exc):
            raise
        state.conversation.exchanges.pop()
        state.pending_images.restore(options.images)
        if not offer_unsaved(state, exc):
            return
        ask(state, question, plain=plain)
        return
    state.record(result)
    if error is not None:
        state.report(error)
    elif result.interrupted:
        state.say("Stopped. /retry asks again, /undo drops the exchange.")


NOT_UTF8 = ("That input is not valid UTF-8 (is the terminal set to another encoding, such as GBK?); "
            "nothing was sent. Switch the terminal to UTF-8 and type it again.")


def is_utf8(text: str) -> bool:
    """prompt-toolkit decodes input with surrogateescape: bytes that were not UTF-8 come back as lone
    surrogates, which no server, file or database can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _question_unsaved(state: ReplState, error: LlmchatError) -> bool:
    from llmchat.store.records import StoreError  # already loaded: there is a recorder

    exchanges = state.conversation.exchanges
    return isinstance(error, StoreError) and bool(exchanges) and exchanges[-1].slot is None


def offer_unsaved(state: ReplState, error: LlmchatError) -> bool:
    """Saving the question failed: say why, and let the user go on without saving (True) or not."""
    state.report(error)
    from prompt_toolkit.shortcuts import confirm

    if not confirm("Go on without saving this chat?"):
        state.say("Nothing was sent; the chat goes on, still trying to save.")
        return False
    state.saving = False
    state.say("History is off for the rest of this chat; nothing more is saved.")
    return True


# ------------------------------------------------------------------------------------------ multi-line


def block_is_open(text: str) -> bool:
    """True while a \"\"\" block has been opened and no later line has closed it (ollama run's rule)."""
    start = _BLOCK_START.match(text)
    if start is None:
        return False
    body = text[start.end():]
    return not body.rstrip(" \t").endswith(FENCE)


def unwrap_block(text: str) -> str:
    """The message inside a closed \"\"\" block (prefix kept, so `/system \"\"\"…\"\"\"` works)."""
    start = _BLOCK_START.match(text)
    if start is None or block_is_open(text):
        return text
    body = text[start.end():].rstrip(" \t")[: -len(FENCE)]
    prefix = start.group(1) or ""
    return prefix + body.strip("\n")


# ------------------------------------------------------------------------------------- prompt-toolkit


class SlashCompleter(Completer):
    """Adapts the registry's terminal-free completions to prompt-toolkit."""

    def __init__(self, state: ReplState) -> None:
        self.state = state

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        # prompt-toolkit shows C0/C1 controls visibly but not bidi overrides; model names come from servers.
        for suggestion in COMMANDS.complete(self.state, document.text_before_cursor):
            yield Completion(suggestion.text, start_position=suggestion.start, display=sanitize(suggestion.text),
                             display_meta=sanitize(suggestion.meta) if suggestion.meta else suggestion.meta)


def key_bindings() -> KeyBindings:
    """Enter sends unless a \"\"\" block is open; Alt-Enter (Esc Enter) always adds a line; Ctrl-X Ctrl-E edits.

    Bound only while the input line has focus, so Enter still ends a Ctrl-R search. A bracketed
    paste is inserted whole by prompt-toolkit, so its newlines never reach these bindings.
    """
    bindings = KeyBindings()
    on_input = has_focus(DEFAULT_BUFFER)

    @bindings.add("enter", filter=on_input)
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if block_is_open(buffer.text):
            buffer.newline(copy_margin=False)
        else:
            buffer.validate_and_handle()

    @bindings.add("escape", "enter", filter=on_input)
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.newline(copy_margin=False)

    @bindings.add("c-x", "c-e", filter=on_input)
    def _edit(event: KeyPressEvent) -> None:
        # prompt-toolkit's own Ctrl-X Ctrl-E sends the text as soon as the editor closes (bash's
        # edit-and-execute); a message deserves a last look, so the text comes back to the prompt.
        event.current_buffer.open_in_editor(validate_and_handle=False)

    return bindings


def history_path() -> Path:
    from platformdirs import user_data_path

    return user_data_path("llmchat", appauthor=False) / "input_history"


class SafeFileHistory(FileHistory):
    """The input history file, whose write failures (a full disk, input that is not UTF-8) cost that
    line of history, never the chat."""

    def store_string(self, string: str) -> None:
        with contextlib.suppress(OSError, UnicodeEncodeError):
            super().store_string(string)


class RecallOnlyHistory(FileHistory):
    """Earlier runs' input can be recalled, but nothing typed now is written (--no-save)."""

    def store_string(self, string: str) -> None:
        pass


def input_history(remember: bool = True) -> History:
    """Input lines persist across runs, in an owner-only file (it holds what you asked).

    A data dir we cannot create costs the history, not the chat.
    """
    path = history_path()
    if not remember:
        return RecallOnlyHistory(str(path)) if path.exists() else InMemoryHistory()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    except OSError:
        return InMemoryHistory()
    return SafeFileHistory(str(path))


def make_session(state: ReplState, *, remember: bool = True) -> PromptSession[str]:
    return PromptSession(
        PROMPT,
        multiline=True,  # Enter is ours (key_bindings): it sends, except inside a """ block
        prompt_continuation=CONTINUATION,
        key_bindings=key_bindings(),
        history=input_history(remember),
        auto_suggest=AutoSuggestFromHistory(),
        completer=SlashCompleter(state),
        complete_while_typing=True,
        complete_in_thread=True,  # /model asks the server once; typing must not wait for it
        tempfile_suffix=".md",  # so $EDITOR highlights the message as Markdown
        bottom_toolbar=lambda: toolbar(state),
        placeholder="Send a message (/help for commands)",
    )


def toolbar(state: ReplState) -> str:
    tokens, estimated = state.context_tokens()
    count = f"~{tokens:,}" if estimated else f"{tokens:,}"
    attached = len(state.pending_images)
    images = f" · {attached} image{'s' if attached != 1 else ''} attached" if attached else ""
    return sanitize(f" {state.profile.name} · {state.options.model} · thinking {state.thinking_label()} · "
                    f"{count} tokens in context{images}")


def banner(state: ReplState) -> str:
    profile = state.profile
    resumed = state.conversation.exchanges
    where = (f"\nContinuing conversation {state.conversation.id} ({len(resumed)} turns); /history shows it."
             if resumed else "")
    return (f"llmchat {__version__} · profile {profile.name} · {profile.provider} · {state.options.model} · "
            f"{state.shown_endpoint(profile)}\n/help for commands, Ctrl-D to quit{where}")
