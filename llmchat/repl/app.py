"""The interactive chat: a prompt-toolkit session around the same `run_turn()` that `ask` uses.

This module only reads input and routes it: text goes to the model through `run_turn` and the
renderer `ask` uses, slash commands go to the registry in `commands.py`. It draws nothing of its
own beyond the banner and the toolbar, so what an answer looks like is decided in one place.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from llmchat import __version__
from llmchat.config.session import Overrides, resolve
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError, ModelNotFound
from llmchat.core.files import with_files
from llmchat.core.safe_text import sanitize
from llmchat.core.stops import Terminated
from llmchat.engine.ask import forget_refused, make_turn_view, refused
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
    if config.path is None and profile.provider == "ollama":
        first_run(state)
    try:
        return chat_loop(state, session, plain=plain)
    finally:
        from llmchat.repl.mcp import stop_servers

        stop_servers(state)  # MCP children end with the chat, however it ends


def first_run(state: ReplState) -> None:
    """No config file yet, on the built-in Ollama profile: find out now whether the first question can
    work, instead of failing on it. Unreachable: say so under the banner, with the fix. Reachable but
    without the profile's model: offer its pull right here (as a failed turn would).

    One request (`/api/tags`), made only while no config file exists."""
    try:
        names = {model.name for model in state.provider.list_models()}
    except LlmchatError as exc:
        state.say(f"Ollama is not answering: {exc.message}")
        if exc.hint:
            state.say(exc.hint)
        state.say("Questions fail until it does; `llmchat config init` writes a config for another server.")
        return
    model = state.options.model
    if model in names or f"{model}:latest" in names:
        return
    if not offer_pull_here(state, model):
        state.say(f"{model} is not on this Ollama server yet: `/model NAME` picks one it has "
                  f"({', '.join(sorted(names)) or 'none yet'}), or `llmchat pull {model}`.")


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
            with typeahead_kept(state.environment.stdin if state.environment is not None else None):
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
            check_images(state.provider, options.model, images, in_chat=True)
        except LlmchatError as exc:  # e.g. a model that cannot see: the images stay attached, nothing is sent
            state.say(f"{exc.message} Nothing was sent; /image clear drops the images.")
            if exc.hint:
                state.say(exc.hint)
            return
        options = replace(options, images=state.pending_images.take())  # this turn only
    asked, files = question, state.pending_files.take()  # /file: the question carries them from here on
    question = with_files(asked, files)
    if state.toolbox is not None:
        from llmchat.repl.mcp import servers_ready

        servers_ready(state)  # the servers still starting, under a spinner naming them
    recorder = state.recorder()
    new = state.conversation.id is None
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
        state.pending_files.restore(files)
        if not offer_unsaved(state, exc):
            return
        ask(state, asked, plain=plain)
        return
    if isinstance(error, ModelNotFound) and offer_pull_here(state, options.model):
        state.conversation.pop()  # asked again: its question takes the failed turn's place in the store
        state.pending_images.restore(options.images)
        state.pending_files.restore(files)
        ask(state, asked, plain=plain)
        return
    if refused(state.conversation, error):  # nothing came back: no turn, nothing saved; /retry asks again
        forget_refused(state.conversation, state.store if recorder is not None else None, new=new)
        state.pending_images.restore(options.images)
        state.refused = question
    else:
        state.record(result)
        state.refused = None
    if error is not None:
        state.report(error)
    elif result.interrupted:
        state.say("Stopped. /retry asks again, /undo drops the exchange.")


def offer_pull_here(state: ReplState, model: str) -> bool:
    """An Ollama model the server lacks: offer to pull it, as `ask` does (True: pulled, ask again).

    A failed pull is reported (naming `/api/pull`, the call that failed) and the chat goes on.
    """
    from prompt_toolkit.shortcuts import confirm

    from llmchat.engine.pull import offer_pull

    host = getattr(state.provider, "host", "the Ollama server")
    try:
        return offer_pull(state.provider, model, environment=state.environment,
                          confirm=lambda _question: confirm(sanitize(f"{model} is not on the Ollama server at "
                                                                     f"{host}. Pull it now?")))
    except LlmchatError as exc:
        state.report(exc)
        return False


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


@contextlib.contextmanager
def typeahead_kept(stdin: TextIO | None) -> Iterator[None]:
    """While a turn (or command) runs, what the user types is neither echoed nor lost: it waits for the
    next prompt, which reads it as typed (type-ahead, as a shell keeps it).

    Between prompts the terminal is back in its cooked mode, which echoes each key into the answer
    being drawn (and knocks the live region's cursor arithmetic off, leaving a panel's top border in
    the scrollback) and holds an unfinished line that prompt-toolkit then never sees. Echo and line
    editing are turned off for that time; signals stay on, so Ctrl-C still stops the turn.
    """
    try:
        import termios

        fd = stdin.fileno() if stdin is not None else -1
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError, io.UnsupportedOperation):
        yield  # not a terminal (or not POSIX): nothing is echoed by anyone
        return
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflag: no echo, bytes readable as they come
    quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, quiet)  # TCSANOW: keep what was typed already
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


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


#: Commands whose argument is a file: Tab completes it as a path (prompt-toolkit's PathCompleter).
PATH_COMMANDS = re.compile(r"/(image|file|save)[ \t]+(?!.*\n)")


class SlashCompleter(Completer):
    """Adapts the registry's terminal-free completions to prompt-toolkit; file arguments get paths."""

    def __init__(self, state: ReplState) -> None:
        self.state = state
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        if (command := PATH_COMMANDS.match(before)) is not None:
            argument = before[command.end():]
            yield from self.paths.get_completions(Document(argument, len(argument)), complete_event)
            return
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
        placeholder=_placeholder,
    )


def _placeholder() -> str:
    """The hint in an empty input line, gone from the last drawing of the prompt (after Enter or
    Ctrl-D), so it never stays in the scrollback as if typed."""
    from prompt_toolkit.application import get_app

    return "" if get_app().is_done else "Send a message (/help for commands)"


def toolbar(state: ReplState) -> str:
    tokens, estimated = state.context_tokens()
    count = f"~{tokens:,}" if estimated else f"{tokens:,}"
    attached = ""
    for what, number in (("image", len(state.pending_images)), ("file", len(state.pending_files.files))):
        attached += f" · {number} {what}{'s' if number != 1 else ''} attached" if number else ""
    return sanitize(f" {state.profile.name} · {state.options.model} · thinking {state.thinking_label()} · "
                    f"{count} tokens in context{attached}")


def banner(state: ReplState) -> str:
    profile = state.profile
    resumed = state.conversation.exchanges
    where = (f"\nContinuing conversation {state.conversation.id} ({len(resumed)} turns); /history shows it."
             if resumed else "")
    return (f"llmchat {__version__} · profile {profile.name} · {profile.provider} · {state.options.model} · "
            f"{state.shown_endpoint(profile)}\n/help for commands, Ctrl-D to quit{where}")
