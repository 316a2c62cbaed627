"""`llmchat ask`: one question, one streamed answer, then exit with DESIGN §5's code."""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

from llmchat.config.profile import Profile
from llmchat.config.session import Overrides, resolve
from llmchat.core.conversation import ContextSummary, Conversation, Exchange
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError, ModelNotFound
from llmchat.engine.chat import TurnView, run_turn
from llmchat.engine.context import manager_for, request_options
from llmchat.engine.pull import offer_pull
from llmchat.providers import ChatOptions, connect

if TYPE_CHECKING:
    from llmchat.config.load import Config
    from llmchat.core.errors import ProviderError
    from llmchat.core.events import TurnResult
    from llmchat.engine.ask_extras import AskExtras
    from llmchat.engine.tooling import Approval, Tools
    from llmchat.store.db import Store
    from llmchat.tools.box import Toolbox


def make_turn_view(profile: Profile, *, plain: bool, as_json: bool, usage: bool | None, stream: bool,
                   environment: Environment | None = None) -> TurnView:
    """The view for one `ask`: JSON, buffered, or the live/plain renderer chosen by the terminal."""
    out = environment.stdout if environment else sys.stdout
    err = environment.stderr if environment else sys.stderr
    if as_json:
        from llmchat.engine.outputs import JsonView

        return JsonView(profile, out, err)
    from llmchat.render import make_view

    view = make_view(plain=plain, thinking=profile.thinking, show_usage=usage, price=profile.price,
                     stdout=out, stderr=err, environment=environment)
    if not stream:
        from llmchat.engine.outputs import BufferedView

        return BufferedView(view)
    return view


def open_tools(config: Config, profile: Profile, environment: Environment | None) -> Toolbox | None:
    """The run's toolbox (`ask`, batch, the chat and its /profile); `llmchat.tools` is not imported at all
    when the profile offers no tools."""
    if not profile.tools:
        return None
    from llmchat.tools.box import toolbox_for

    return toolbox_for(config, profile, environment)


def tool_approval(tools: Tools | None, environment: Environment | None) -> Approval | None:
    """Who approves a call: the person at the terminal (on /dev/tty when stdin is a pipe), or None when
    there is no terminal (the engine's `Nobody` then declines untrusted calls, with a notice)."""
    if tools is None:
        return None
    from llmchat.render.approve import terminal_approval

    return terminal_approval(environment or Environment.from_process())


def open_saved_store(*, reading: bool = False) -> Store:
    """The history store, imported only when a turn is saved or resumed (sqlite3 is not free at startup)."""
    from llmchat.store.db import open_store

    return open_store(reading=reading)


def refused(conversation: Conversation, error: ProviderError | None) -> bool:
    """Whether the last turn failed before anything came back (server down, key refused, unknown model):
    nothing was said, so it is no turn of the conversation."""
    if error is None or not conversation.exchanges:
        return False
    last = conversation.exchanges[-1]
    return not (last.answer or last.reasoning or last.rounds or last.interrupted)


def forget_refused(conversation: Conversation, store: Store | None, *, new: bool) -> Exchange:
    """Take a refused turn (`refused`) back out: from the conversation and from the history, where its
    question was committed before the request went out; a conversation this turn created goes with it
    (`new`: it had no id before), so a request the server refused leaves no saved conversation and no
    turn in `llmchat usage`. Returns the exchange, whose question the caller may offer to ask again."""
    exchange = conversation.pop()
    if store is not None and conversation.id is not None:
        try:
            if new and not conversation.exchanges:
                store.remove(conversation.id)
                conversation.id = None
                conversation.freed.clear()
            else:
                store.truncate(conversation)
        except LlmchatError:
            pass  # the history keeps the question; the error that matters is the turn's
    return exchange


def run_ask(flags: Overrides, question: str, environment: Environment | None = None,
            *, plain: bool, as_json: bool, usage: bool | None, stream: bool,
            save: bool = True, resume: str | None = None, extras: AskExtras | None = None) -> int:
    """Run the turn; returns the exit code (errors are raised for `main` to report).

    With `-c` the saved history is sent, fitted to the window by the profile's `history` strategy
    exactly as in the REPL (a summary made here is saved with the conversation).
    """
    config, profile = resolve(flags, environment)
    provider = connect(profile, environment=environment)
    options = ChatOptions.from_profile(profile)
    sent = extras.options(options, provider) if extras else options  # images, --format: checked before the turn

    def new_view() -> TurnView:
        view = make_turn_view(profile, plain=plain, as_json=as_json, usage=usage, stream=stream,
                              environment=environment)
        return extras.view(view, as_json=as_json, plain=plain, environment=environment) if extras else view

    view = new_view()
    saving = save and profile.save
    store = open_saved_store(reading=not saving) if saving or resume else None
    conversation = store.load_conversation(resume) if store and resume else Conversation(system=profile.system)
    recorder = None
    if store and save and profile.save:  # under --no-save, nothing of the store is imported
        from llmchat.store.recorder import warn_on

        warn = warn_on(environment.stderr if environment else None)  # a turn that cannot be saved says so there
        recorder = store.recorder(profile, warn=warn)

    def keep_summary(conversation: Conversation, summary: ContextSummary) -> None:
        if store is not None and recorder is not None:
            try:
                store.save_summary(conversation, summary)
            except LlmchatError as exc:
                view.notice(f"The summary could not be saved to history: {exc.message}")

    reconnect = functools.partial(connect, environment=environment)  # a summary profile reads the same variables
    context = manager_for(profile, options, config, reconnect, provider=provider, on_summary=keep_summary)

    tools = open_tools(config, profile, environment)
    approval = tool_approval(tools, environment)

    def turn(view: TurnView) -> tuple[TurnResult, ProviderError | None]:
        return run_turn(conversation, question, provider, request_options(sent, profile.provider, provider), view,
                        retries=profile.retries, recorder=recorder, context=context, tools=tools,
                        approval=approval, max_tool_rounds=profile.max_tool_rounds)

    new = conversation.id is None
    try:
        wait_for_servers = getattr(tools, "wait_ready", None)
        if wait_for_servers is not None:  # MCP servers, started concurrently above: ready before the request
            wait_for_servers()
        result, error = turn(view)
        if isinstance(error, ModelNotFound) and not as_json and offer_pull(provider, sent.model,
                                                                              environment=environment):
            conversation.pop()  # asked again: its question takes the failed turn's place in the store
            view = new_view()
            result, error = turn(view)
    finally:
        close = getattr(approval, "close", None)  # the /dev/tty this run opened to ask on
        if close is not None:
            close()
        stop_servers = getattr(tools, "close", None)  # MCP servers' children: stopped on every way out
        if stop_servers is not None:
            stop_servers()
    if refused(conversation, error):
        forget_refused(conversation, store if recorder is not None else None, new=new)
    if error is not None:
        raise error
    if result.interrupted:
        return 130
    return extras.finish(result) if extras else 0
