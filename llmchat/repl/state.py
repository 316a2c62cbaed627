"""What a REPL session holds (profile, conversation, store, pending images and files) and what commands return."""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from llmchat.config.load import Config
from llmchat.config.profile import Profile
from llmchat.config.session import Overrides
from llmchat.core.conversation import ContextSummary, Conversation
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError
from llmchat.core.events import TurnResult
from llmchat.core.files import PendingFiles
from llmchat.core.images import PendingImages
from llmchat.core.safe_text import is_terminal, sanitize
from llmchat.engine.ask import open_tools, tool_approval
from llmchat.engine.context import ContextManager, manager_for, request_options
from llmchat.engine.usage import Tally
from llmchat.providers import ChatOptions, Provider, connect

if TYPE_CHECKING:
    from llmchat.engine.chat import TurnRecorder
    from llmchat.engine.tooling import Approval
    from llmchat.store.db import Store
    from llmchat.tools.box import Toolbox


QUIT_HINT = "(Ctrl-D or /exit to quit)"


class UsageError(Exception):
    """A command was given arguments it cannot use; dispatch prints this with the command's usage."""


@dataclass(frozen=True)
class Action:
    """What the loop does after a command: nothing more, leave, or ask the model a question."""

    exit: bool = False
    ask: str | None = None


class Suggestion(NamedTuple):
    """One completion, independent of prompt-toolkit: replace `-start` characters with `text`."""

    text: str
    start: int
    meta: str = ""


def wrapped(text: str, out: TextIO | None) -> str:
    """`text` with its long lines broken at spaces to fit the terminal `out` (the last column left
    free), so a message never reads "continu / es."; a line's indent is kept on its continuations."""
    from llmchat.render.plain import terminal_width

    width = terminal_width(out) - 1 if out is not None else 79
    lines = []
    for line in text.split("\n"):
        if len(line) <= width:
            lines.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        lines.append(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False,
                                   break_on_hyphens=False, drop_whitespace=True) or line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- session state


Report = Callable[[LlmchatError], None]


def _print_error(error: LlmchatError, environment: Environment | None = None) -> None:
    from llmchat.render.errors import print_error

    print_error(error, environment=environment)


@dataclass
class ReplState:
    """Everything a command may read or change; the REPL loop owns one of these per session."""

    config: Config
    profile: Profile
    provider: Provider
    options: ChatOptions
    conversation: Conversation
    flags: Overrides = field(default_factory=Overrides)
    totals: Tally = field(default_factory=Tally)  # since the REPL started, whatever profile each turn used
    #: Where the REPL's messages go; None: the Environment's stdout (the process's for a state made without one)
    out: TextIO | None = None
    #: How a failed command or turn is shown; None: `print_error` on the Environment's stderr
    report: Report | None = None
    connector: Callable[[Profile], Provider] = connect
    store: Store | None = None  # None: this chat is not saved (--no-save)
    saving: bool = True  # False once the user chose to go on unsaved after a save failed (disk full)
    compacted: bool = False  # /compact ran since the last turn: the last reported count is stale
    pending_images: PendingImages = field(default_factory=PendingImages)  # /image: for the next question
    pending_files: PendingFiles = field(default_factory=PendingFiles)  # /file: for the next question
    #: The conversation /save last wrote from memory, with the id and creation time it was given, so
    #: saving it again (a growing file) keeps them and `history import` sees the same conversation.
    unsaved: tuple[Conversation, str, str] | None = None
    #: The run's streams and variables (cli.main built it); None only for states made without one (tests)
    environment: Environment | None = None
    #: The tools offered in this chat (None: none; /tools on NAME makes one), built with the profile
    toolbox: Toolbox | None = None
    _approval: Approval | None = None
    #: The last question when the server refused it (nothing came back): not a turn, but /retry asks it again
    refused: str | None = None
    _models: list[str] | None = None

    def __post_init__(self) -> None:
        """The chat's streams come from the run's Environment, so nothing in the REPL reads `sys.*` itself."""
        if self.out is None:
            self.out = self.environment.stdout if self.environment is not None else sys.stdout
        if self.report is None:
            self.report = functools.partial(_print_error, environment=self.environment)

    @classmethod
    def start(cls, config: Config, profile: Profile, *, flags: Overrides | None = None,
              connector: Callable[[Profile], Provider] = connect, **kwargs: Any) -> ReplState:
        """Connect to the profile's provider (errors propagate: the REPL cannot start without one)."""
        state = cls(config=config, profile=profile, provider=connector(profile),
                    options=ChatOptions.from_profile(profile), conversation=Conversation(system=profile.system),
                    flags=flags or Overrides(), connector=connector, **kwargs)
        state.toolbox = open_tools(config, profile, state.environment)
        return state

    def shown_endpoint(self, profile: Profile) -> str:
        """Where `profile` sends requests, as it may be printed, with this run's OLLAMA_HOST."""
        if self.environment is None:
            return profile.shown_endpoint
        return profile.shown_endpoint_in(self.environment.variables)

    def say(self, text: str) -> None:
        text = sanitize(text)  # quotes models, servers, titles: DESIGN §4
        print(wrapped(text, self.out) if is_terminal(self.out) else text, file=self.out, flush=True)

    def recorder(self) -> TurnRecorder | None:
        """Where this turn is saved: nowhere under --no-save or for a profile with save = false."""
        if self.store is None or not self.profile.save or not self.saving:
            return None
        return self.store.recorder(self.profile, warn=self.say)

    def record(self, result: TurnResult) -> None:
        self.totals.add(result.usage, self.profile.price)
        self.compacted = False

    def request_options(self) -> ChatOptions:
        """The options as sent: the effective context window filled in (Ollama's num_ctx)."""
        return request_options(self.options, self.profile.provider, self.provider)

    def context(self) -> ContextManager:
        """The history strategy for the next request, as the profile, /model and /set now say."""
        return manager_for(self.profile, self.options, self.config, self.connector, provider=self.provider,
                           on_summary=self.summarised)

    def summarised(self, conversation: Conversation, summary: ContextSummary) -> None:
        """A summary was made: count what it cost, and save it so a resumed conversation keeps it."""
        self.totals.count(summary.usage, summary.cost, summary.currency, summary=True)  # billed, counted apart
        if self.store is not None and self.profile.save and self.saving:
            try:
                self.store.save_summary(conversation, summary)
            except LlmchatError as exc:
                self.say(f"The summary could not be saved to history: {exc.message}")

    def model_names(self) -> list[str]:
        """The server's models, fetched once per provider; a failure means "no suggestions", not an error."""
        if self._models is None:
            try:
                self._models = sorted(m.name for m in self.provider.list_models())
            except Exception:  # completion must never break typing, whatever the server does
                self._models = []
        return self._models

    def switch_profile(self, profile: Profile) -> None:
        """Use another profile's provider, model and options; the conversation stays as it is."""
        provider = self.connector(profile)  # raises before anything changes: the old profile stays usable
        self.profile, self.provider, self._models = profile, provider, None
        self.options = ChatOptions.from_profile(profile)
        trusted = self.toolbox.trusted_now if self.toolbox is not None else set()
        self.toolbox = open_tools(self.config, profile, self.environment)
        if self.toolbox is not None:
            self.toolbox.trusted_now |= trusted  # "always" answers hold for the rest of the session

    def approval(self) -> Approval | None:
        """Who approves a tool call: the person at this terminal (asked once per chat, kept open), or
        None when there is no terminal to ask on (the engine then declines untrusted calls)."""
        if self._approval is None:
            self._approval = tool_approval(self.toolbox, self.environment)
        return self._approval

    def thinking_label(self) -> str:
        think = self.options.think
        if think is None:
            return "auto"
        if think and self.options.thinking_budget:
            return f"on ({self.options.thinking_budget:,})"
        return "on" if think else "off"

    def context_tokens(self) -> tuple[int, bool]:
        """Tokens the next request starts from: the last reported count, or an estimate (True) without one
        (or once the history was compacted after that report)."""
        conversation = self.conversation
        exchanges = conversation.exchanges
        usage = exchanges[-1].usage if exchanges else None
        if usage is not None and usage.prompt is not None and usage.completion is not None and not self.compacted:
            return usage.prompt + usage.completion, False
        return conversation.tokens.estimate(conversation.messages()), True
