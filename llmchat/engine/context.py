"""Keeping a long conversation inside the model's context window (the profile's `history` key).

The APIs are stateless, so every turn resends the history, and it eventually overflows: Bailian
answers 400 "Range of input length", Ollama silently drops the oldest messages at its `num_ctx`.
Three strategies (Bailian's docs, context management):

- `keep`: send everything; warn when it clearly will not fit.
- `truncate`: before a request, stop sending the oldest whole exchanges until the estimate fits,
  leaving room for the answer. Never the system prompt, never the question being asked.
- `summarize` (the default): once the next request would pass 70% of the window, summarise the older
  half with one extra call (same profile, or `summary_profile`) and send system + summary + recent
  turns. If the summary call fails, or the result still does not fit, fall back to dropping.

Nothing is deleted: the exchanges stay in the conversation, the transcript and the store; only what is
*sent* changes (`Conversation.summary` and `Conversation.start`). Decisions use the calibrated
estimate (`tokens.TokenLedger`), so they track the server's own counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llmchat.config.profile import HISTORY_STRATEGIES, HistoryStrategy
from llmchat.core.conversation import ContextSummary, Conversation, Exchange, tool_messages
from llmchat.core.errors import LlmchatError
from llmchat.core.events import TurnResult
from llmchat.core.tokens import MESSAGE_OVERHEAD, context_window, estimate_messages, estimate_tokens
from llmchat.engine.chat import Notify, Sleep, run_turn

if TYPE_CHECKING:
    from llmchat.config.load import Config
    from llmchat.config.profile import Profile
    from llmchat.providers import ChatOptions, Provider

STRATEGIES = HISTORY_STRATEGIES
SUMMARY_AT = 0.7  # fraction of the window at which `summarize` condenses the older half
ANSWER_SHARE = 4  # without max_tokens, keep 1/4 of the window free for the answer …
ANSWER_CAP = 8192  # … but never more than this many tokens
UNKNOWN_WINDOW_SUMMARY = 1000  # summary length (tokens) when the window is unknown
SUMMARY_TOOL_RESULT_CHARS = 1500  # of each tool result, at most this much goes into a summary request

SUMMARY_INSTRUCTIONS = (
    "You write the running summary of a conversation between a user and an assistant. The summary "
    "replaces the turns it covers, so the conversation can go on without them: keep names, numbers, "
    "code identifiers, decisions, the user's goals and preferences, and questions still open. Write "
    "in the language of the conversation, as plain prose or short bullet points, without a preamble."
)
PREVIOUS_SUMMARY = "The conversation began before these turns; this is the summary of that earlier part:"
SUMMARY_REQUEST = "Summarise the conversation so far in at most {words} words, as described in your instructions."


# ------------------------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class Budget:
    """How many tokens a request may use: the window, minus room for the answer."""

    window: int
    source: str  # where the window comes from, for notices and /context
    reserve: int  # kept free for the answer

    @classmethod
    def of(cls, options: ChatOptions, provider: str, server: Provider | None = None) -> Budget | None:
        """The budget for these options, or None when the model's window is unknown."""
        window, source = effective_window(options, provider, server)
        if not window:
            return None
        if options.max_tokens:
            reserve = min(options.max_tokens, window // 2)
        else:
            reserve = min(window // ANSWER_SHARE, ANSWER_CAP)
        return cls(window=window, source=source, reserve=reserve)

    @property
    def limit(self) -> int:
        """The most a request's prompt may be: more leaves the answer too little room."""
        return self.window - self.reserve

    @property
    def trigger(self) -> int:
        """Where `summarize` acts: 70% of the window (sooner if the answer needs more room)."""
        return min(int(self.window * SUMMARY_AT), self.limit)

    @property
    def summary_tokens(self) -> int:
        """How long a summary may be: a tenth of the window, within sane bounds."""
        return max(100, min(self.window // 10, 2000))


def effective_window(options: ChatOptions, provider: str, server: Provider | None = None) -> tuple[int | None, str]:
    """The window for these options and where it comes from (`tokens.context_window`'s precedence).

    The server (`server`, the connected provider) is asked only when the options set no window: a
    profile's context_window costs no request, and an OpenAI-compatible provider answers None without
    one. Ollama's answer is cached per provider and model, so this is one `/api/show` per process at most.
    """
    served = None
    if not options.context_window and server is not None:
        served = server.context_length(options.model)
    return context_window(options.model, options.context_window, provider, served)


def request_options(options: ChatOptions, provider: str, server: Provider | None = None) -> ChatOptions:
    """The options as sent: with the effective window filled in, so Ollama's `num_ctx` is the window
    the history is managed for, known defaults included (otherwise Ollama truncates at its own), and the
    same number on every request for a model (Ollama reloads a model whose num_ctx changes)."""
    if options.context_window is not None:
        return options
    window, _ = effective_window(options, provider, server)
    return replace(options, context_window=window) if window else options


# -------------------------------------------------------------------------------------- summarizer


class _Silent:
    """The summary call's view: it draws nothing (the notice after it says what happened)."""

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def tool_call(self, call: object) -> None: ...  # a summary offers no tools
    def tool_done(self, record: object) -> None: ...
    def close(self, result: TurnResult) -> None: ...


@dataclass
class Summarizer:
    """Writes a summary with one model call through `run_turn`, so it gets the same retries, errors
    and Ctrl-C handling as any turn. The provider is connected on first use: a `summary_profile`
    whose key is missing costs nothing until a summary is actually needed."""

    profile: Profile
    options: ChatOptions  # the profile's options (with /model, /set applied when it is the chat's own)
    connect: Callable[[Profile], Provider]
    provider: Provider | None = None  # already connected (the chat's own), else connected on first use
    sleep: Sleep = field(default=time.sleep, repr=False)

    def budget(self) -> Budget | None:
        """The summarising model's budget; connecting costs no request, and a profile that cannot connect
        (its key is missing) gets the table's window here and its error when a summary is asked for."""
        return Budget.of(self.options, self.profile.provider, self._connected())

    def _connected(self) -> Provider | None:
        if self.provider is None:
            try:
                self.provider = self.connect(self.profile)
            except LlmchatError:
                return None
        return self.provider

    def summarise(self, previous: str | None, exchanges: list[Exchange],
                  tokens: int) -> tuple[ContextSummary | None, str]:
        """The summary of `previous` + `exchanges` in about `tokens` tokens, or None and why not.

        Raises KeyboardInterrupt when the user stops the call: the turn that needed it stops too.
        """
        try:
            if self.provider is None:
                self.provider = self.connect(self.profile)
        except LlmchatError as exc:
            return None, f"profile {self.profile.name}: {exc.message}"
        conversation = summary_request(previous, exchanges)
        options = request_options(self.options, self.profile.provider, self.provider)
        # No reasoning (it would eat the length cap) and no web search; a cap so it cannot run away.
        options = replace(options, think=False, thinking_budget=None, search=None, max_tokens=4 * tokens)
        result, error = run_turn(conversation, summary_question(tokens), self.provider, options, _Silent(),
                                 retries=self.profile.retries, sleep=self.sleep)
        if result.interrupted and error is None:
            raise KeyboardInterrupt
        text = result.answer.strip()
        if error is not None or not text:
            return None, error.message if error is not None else "the model returned no text"
        price = self.profile.price
        cost = price.cost(result.usage) if price and result.usage else None
        summary = ContextSummary(text=clip(text, 2 * tokens), covers=0, profile=self.profile.name,
                                 model=result.model, usage=result.usage, cost=cost,
                                 currency=price.currency if price and cost is not None else None)
        return summary, ""


def summary_request(previous: str | None, exchanges: list[Exchange]) -> Conversation:
    """The conversation the summary call sends: the instructions, the earlier summary, the turns.

    Tool rounds are part of what a summary covers (a weather lookup's answer may be the very fact to
    keep), so each exchange's calls and results go in its answer as text (`tool_transcript`), not as
    tool messages: the summary call offers no tools, and servers refuse tool messages then.
    """
    system = SUMMARY_INSTRUCTIONS + (f"\n\n{PREVIOUS_SUMMARY}\n{previous}" if previous else "")
    turns = [Exchange(user=e.user, answer="\n\n".join(p for p in (tool_transcript(e), e.answer) if p))
             for e in exchanges]
    return Conversation(system=system, exchanges=turns)


def tool_transcript(exchange: Exchange) -> str:
    """An exchange's tool rounds as text for the summary call: what the model said, each call, and its
    result cut at SUMMARY_TOOL_RESULT_CHARS (a 100 KB file read must not crowd out the conversation)."""
    lines: list[str] = []
    for tool_round in exchange.rounds:
        if tool_round.content.strip():
            lines.append(tool_round.content.strip())
        for record in tool_round.calls:
            result, cut = record.result, SUMMARY_TOOL_RESULT_CHARS
            if len(result) > cut:
                result = result[:cut] + f"… [{len(result) - cut:,} more characters]"
            lines.append(f"[tool call] {record.call.signature(limit=SUMMARY_TOOL_RESULT_CHARS // 2)}\n"
                         f"[tool result, {record.status}] {result}")
    return "\n".join(lines)


def summary_question(tokens: int) -> str:
    return SUMMARY_REQUEST.format(words=max(50, tokens * 3 // 4))


def clip(text: str, tokens: int) -> str:
    """`text` cut to about `tokens` tokens: a model that ignores the length asked for must not undo the
    point of summarising."""
    estimate = estimate_tokens(text)
    if estimate <= tokens:
        return text
    return text[: max(1, len(text) * tokens // estimate)].rstrip() + "…"


# ----------------------------------------------------------------------------------------- manager


OnSummary = Callable[[Conversation, ContextSummary], None]


@dataclass
class ContextManager:
    """`chat.ContextPolicy` for one profile's strategy and window; cheap, so make one per turn.

    `on_summary` is told about every summary made (the REPL counts its cost, the store saves it so a
    resumed conversation keeps it).
    """

    strategy: HistoryStrategy
    budget: Budget | None
    summarizer: Summarizer | None = None
    on_summary: OnSummary | None = None

    # -- chat.ContextPolicy ------------------------------------------------------------------------

    def prepare(self, conversation: Conversation, notice: Notify) -> None:
        budget = self.budget
        if budget is None:
            return
        question = conversation.exchanges[-1].user
        used = self.estimate(conversation, question)
        if self.strategy == "summarize" and used > budget.trigger:
            self._summarise(conversation, notice, pending=True, before=used)
            used = self.estimate(conversation, question)
        if self.strategy != "keep" and used > budget.limit:
            self._drop(conversation, notice, pending=True, before=used)
            used = self.estimate(conversation, question)
        if used > budget.window:
            notice(f"Warning: the input is about {used:,} tokens, more than {budget.window:,} ({budget.source}); "
                   "the server may reject it or ignore its beginning.")

    def shrink(self, conversation: Conversation, notice: Notify) -> bool:
        if self.strategy == "keep" or not _sendable(conversation, pending=True):
            return False
        notice("The server says the request is too long for the model; compacting the history and trying again.")
        return self.compact(conversation, notice, pending=True)

    # -- on demand (/compact) ------------------------------------------------------------------------

    def compact(self, conversation: Conversation, notice: Notify, *, pending: bool = False) -> bool:
        """Condense the older half now: summarise it (`summarize`, `keep`) or drop it (`truncate`).

        False when there is nothing older to condense.
        """
        before = self.estimate(conversation, conversation.exchanges[-1].user if pending else None)
        if self.strategy != "truncate" and self._summarise(conversation, notice, pending=pending, before=before):
            return True
        return self._drop(conversation, notice, pending=pending, before=before, half=True) > 0

    # -- reading -------------------------------------------------------------------------------------

    def estimate(self, conversation: Conversation, question: str | None = None) -> int:
        """The server's likely prompt count for the next request (calibrated by the last one)."""
        return conversation.tokens.estimate(conversation.messages(question))

    # -- the two ways to make room -------------------------------------------------------------------

    def _summarise(self, conversation: Conversation, notice: Notify, *, pending: bool, before: int) -> bool:
        candidates = _sendable(conversation, pending)
        if not candidates or self.summarizer is None:
            return False
        count = _older_half(conversation, candidates)
        tokens = self.budget.summary_tokens if self.budget else UNKNOWN_WINDOW_SUMMARY
        previous = conversation.active_summary()
        count = self._fit_summary_request(previous.text if previous else None, conversation, candidates, count,
                                          tokens)
        chosen = [conversation.exchanges[i] for i in candidates[:count]]
        # the call takes as long as an answer: say what is happening before it, not only after
        notice(f"Context: summarising {_count(count, 'older exchange')} with {self.summarizer.profile.name}"
               f" ({self.summarizer.options.model})…")
        summary, why = self.summarizer.summarise(previous.text if previous else None, chosen, tokens)
        if summary is None:
            notice(f"Context: could not summarise the older turns ({why}).")
            return False
        summary.covers = candidates[count - 1] + 1
        conversation.summary = summary
        conversation.start = max(conversation.start, summary.covers)
        if self.on_summary is not None:
            self.on_summary(conversation, summary)
        after = self.estimate(conversation, conversation.exchanges[-1].user if pending else None)
        notice(f"Context: summarised {_count(count, 'older exchange')} to stay within the window "
               f"(~{before:,} → ~{after:,}{self._of()} tokens).")
        return True

    def _fit_summary_request(self, previous: str | None, conversation: Conversation, candidates: list[int],
                             count: int, tokens: int) -> int:
        """Fewer exchanges per summary when the summarising profile's own window is smaller."""
        budget = self.summarizer.budget() if self.summarizer else None
        if budget is None:
            return count
        limit = budget.window - 4 * tokens  # room for the summary (the call's max_tokens)
        while count > 1:
            request = summary_request(previous, [conversation.exchanges[i] for i in candidates[:count]])
            if conversation.tokens.scaled(request.messages(summary_question(tokens))) <= limit:
                break
            count -= 1
        return count

    def _drop(self, conversation: Conversation, notice: Notify, *, pending: bool, before: int,
              half: bool = False) -> int:
        """Stop sending the oldest exchanges: until the request fits, or (`half`) the older half."""
        question = conversation.exchanges[-1].user if pending else None
        candidates = _sendable(conversation, pending)
        target = max(len(candidates) // 2, 1) if half else len(candidates)
        dropped = 0
        for index in candidates[:target]:
            if not half and self.budget is not None and self.estimate(conversation, question) <= self.budget.limit:
                break
            conversation.start = index + 1
            dropped += 1
        if dropped:
            after = self.estimate(conversation, question)
            notice(f"Context: stopped sending {_count(dropped, 'older exchange')} to stay within the window "
                   f"(~{before:,} → ~{after:,}{self._of()} tokens).")
        return dropped

    def _of(self) -> str:
        return f" of {self.budget.window:,}" if self.budget else ""


def _sendable(conversation: Conversation, pending: bool) -> list[int]:
    """Indexes of the exchanges still sent verbatim that could make room (not the one being asked)."""
    end = len(conversation.exchanges) - (1 if pending else 0)
    return [i for i in range(conversation.first_sent(), end) if _sent(conversation.exchanges[i])]


def _sent(exchange: Exchange) -> bool:
    """Whether `Conversation.messages()` sends the exchange: it has an answer or tool rounds."""
    return bool(exchange.answer or exchange.rounds)


def _older_half(conversation: Conversation, candidates: list[int]) -> int:
    """How many of the oldest candidates hold half of their tokens; the newest one always stays verbatim
    (unless it is the only one)."""
    sizes = [_exchange_tokens(conversation.exchanges[i]) for i in candidates]
    half, total = sum(sizes) / 2, 0
    count = len(sizes)
    for n, size in enumerate(sizes, 1):
        total += size
        if total >= half:
            count = n
            break
    return min(count, len(candidates) - 1) if len(candidates) > 1 else 1


def _exchange_tokens(exchange: Exchange) -> int:
    """What the exchange costs in a request: question, answer, and its tool rounds (calls and results)."""
    rounds = sum(estimate_messages(tool_messages(tool_round)) for tool_round in exchange.rounds)
    return estimate_tokens(exchange.user) + estimate_tokens(exchange.answer) + 2 * MESSAGE_OVERHEAD + rounds


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


# ------------------------------------------------------------------------------------------ wiring


def manager_for(profile: Profile, options: ChatOptions, config: Config | None,
                connect: Callable[[Profile], Provider], *, provider: Provider | None = None,
                on_summary: OnSummary | None = None) -> ContextManager:
    """The manager for a turn with `profile` (as modified by /model, /set: `options`).

    Summaries go to `summary_profile` when the profile names one, else to the profile itself, reusing
    its connected `provider`.
    """
    from llmchat.providers import ChatOptions

    name = profile.summary_profile
    if name and name != profile.name and config is not None and name in config.profiles:
        other = config.profiles[name]
        summarizer = Summarizer(other, ChatOptions.from_profile(other), connect)
    else:
        summarizer = Summarizer(replace(profile, model=options.model), options, connect, provider)
    return ContextManager(strategy=profile.history, budget=Budget.of(options, profile.provider, provider),
                          summarizer=summarizer, on_summary=on_summary)


def describe(manager: ContextManager, conversation: Conversation) -> str:
    """What `/context` prints: tokens used of the window, the strategy, and what is sent."""
    used = manager.estimate(conversation)
    budget = manager.budget
    if budget is None:
        lines = [f"Context: ~{used:,} tokens; the model's window is unknown (set context_window in the profile)."]
    else:
        lines = [f"Context: ~{used:,} of {budget.window:,} tokens ({100 * used / budget.window:.0f}%) · "
                 f"window: {budget.source}"]
    strategy = manager.strategy
    if strategy == "summarize" and budget is not None:
        rule = (f"the older half is summarised past {budget.trigger:,} tokens (70%); "
                f"{budget.reserve:,} kept free for the answer")
    elif strategy == "truncate" and budget is not None:
        rule = (f"the oldest exchanges stop being sent past {budget.limit:,} tokens; "
                f"{budget.reserve:,} kept free for the answer")
    elif strategy == "keep":
        rule = "everything is sent; /compact summarises on demand"
    else:
        rule = "acts only if the server says the conversation is too long"
    lines.append(f"History: {strategy} ({rule})")
    exchanges = conversation.exchanges
    summary = conversation.active_summary()
    first = conversation.first_sent()
    sent = sum(1 for e in exchanges[first:] if _sent(e))
    parts = [f"{sent} recent exchange{'s' * (sent != 1)} verbatim"]
    if summary is not None:
        parts.insert(0, f"a summary of the first {summary.covers} (~{estimate_tokens(summary.text):,} tokens)")
    dropped = first - (summary.covers if summary else 0)
    if dropped > 0:
        parts.append(f"{dropped} not sent")
    lines.append("Sent: " + " · ".join(parts))
    ledger = conversation.tokens
    if ledger.reported is not None:
        lines.append(f"Last request: {ledger.reported:,} prompt tokens reported by the server "
                     f"(estimates calibrated ×{ledger.ratio:.2f})")
    return "\n".join(lines)

