"""`llmchat batch`: many prompts, concurrently, answers written in input order, resumable.

Why it is shaped this way:
- Requests run on one asyncio loop through the providers' `astream` (AsyncOpenAI / ollama.AsyncClient),
  at most `concurrency` in flight (an asyncio.Semaphore gates task creation, so a 100,000-row input
  never holds more than that many tasks either).
- Rows finish in any order; the output keeps input order by buffering a finished row until every row
  before it is written, then writing the contiguous prefix at once. Each row is one `write()` to a file
  opened for appending, so a killed batch leaves whole rows behind and `--resume` continues from them.
- A failed row is a row with an `error`; it never stops the batch. Exit code: 0 when every row
  answered, 1 when any row failed, 130 on Ctrl-C (finished rows are written, in-flight ones cancelled).
  Bad input or flags are a ConfigError (exit 2) before any request is made.
- Each row is a turn on the chat's engine (turn.py: the same accumulation, measurement and retries:
  429 and 5xx before the first token, backoff with jitter, Retry-After, at most the profile's
  `retries`); never once text arrived, except for a stream the server ended unfinished (no
  finish_reason): that row is rerun from the start (`restart_unfinished`), since a row is done only
  when its answer is whole, and from then on requests go one at a time (`Pacer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmchat.batch.output import FileSink, OrderedWriter, Sink, StdoutSink, compact, load_done
from llmchat.batch.progress import QuietReporter, Reporter, make_reporter
from llmchat.batch.rows import Row, read_rows
from llmchat.config.session import Overrides, resolve
from llmchat.core.conversation import tool_messages
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError, ProviderError, StreamUnfinished
from llmchat.core.events import TurnResult, Usage
from llmchat.core.tools import ToolRecord
from llmchat.engine.ask import open_tools
from llmchat.engine.chat import MAX_TOOL_ROUNDS, offered_tools
from llmchat.engine.context import request_options
from llmchat.engine.structured import check_format
from llmchat.engine.tooling import Nobody, NoTools, Tools, run_calls, tell_notices
from llmchat.engine.turn import Turn, adrive
from llmchat.engine.usage import Tally
from llmchat.providers import ChatOptions, connect

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.core.events import Event
    from llmchat.core.tools import ToolCall
    from llmchat.providers import Message, Provider

DEFAULT_CONCURRENCY = 4


# -------------------------------------------------------------------------------------------------- run


@dataclass
class Outcome:
    """What the summary reports about this run: a `Tally` of its calls (the one way tokens and money are
    added up, as in the REPL's /usage and `llmchat usage`), which rows failed, whether it was cut short."""

    tally: Tally = field(default_factory=Tally)
    failed_at: dict[int, Any] = field(default_factory=dict)  # input position -> id
    interrupted: bool = False

    @property
    def rows(self) -> int:
        return self.tally.turns

    @property
    def failed(self) -> list[Any]:
        """Failed ids in input order (they finish in any order)."""
        return [self.failed_at[index] for index in sorted(self.failed_at)]

    def add(self, index: int, record: dict[str, Any], usage: Usage | None, profile: Profile) -> None:
        if record["error"] is not None:
            self.failed_at[index] = record["id"]
        self.tally.add(usage, profile.price)


class Pacer:
    """Sends requests one at a time once the server showed that it serves one at a time.

    llama.cpp's server runs one request and, by default, ends the running stream (`[DONE]` with no
    finish_reason) as soon as another arrives, so at `--concurrency 4` every request cuts the one
    before it and retries only cut each other again. The first unfinished stream turns this on.
    """

    def __init__(self) -> None:
        self.serial = False
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.serial:
            async with self._lock:
                yield
        else:
            yield

    def cut(self, notify: Callable[[str], None]) -> None:
        if not self.serial:
            self.serial = True
            notify("The server ended a stream unfinished (it seems to run one request at a time): "
                   "the remaining requests are sent one at a time.")


class _RowShows:
    """What a row shows while it runs: only notices, on the reporter (the text goes to OUTPUT at the end)."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notice = notify

    def reasoning(self, text: str) -> None:
        pass

    def answer(self, text: str) -> None:
        pass

    def tool_call(self, call: ToolCall) -> None:  # the calls are in the row's "tool_calls"
        pass

    def tool_done(self, record: ToolRecord) -> None:
        pass


async def ask_row(
    provider: Provider, messages: list[Message], options: ChatOptions, *, retries: int, label: str,
    notify: Callable[[str], None], pacer: Pacer | None = None, tools: Tools | None = None,
    max_tool_rounds: int = MAX_TOOL_ROUNDS,
) -> tuple[TurnResult, ProviderError | None]:
    """One row's turn on the shared engine (turn.py): `run_turn`'s retry rule (429/5xx before any text,
    backoff, bounded), and one more: a stream the server ended unfinished is retried even after text
    arrived, from the start, since a row is done only when its answer is whole.

    Never raises a ProviderError: like `run_turn`, it returns it with whatever text arrived, so a
    failed row becomes a row with an error and the batch goes on.

    Tools (`options.tool_specs`) run as in the chat, in a worker thread, but nobody is there to approve:
    only trusted tools run, other calls are declined (tools.md §2), and the model is told so.
    """
    # A provider's notices are about the model, not the row: the reporter shows each once, unlabelled.
    shows = _RowShows(notify)
    turn = Turn(options.model, shows, retries=retries, label=label, restart_unfinished=True)
    messages = list(messages)  # grows with the row's tool rounds

    @contextlib.asynccontextmanager
    async def attempt() -> AsyncIterator[AsyncIterator[Event]]:
        async with (pacer.slot() if pacer else contextlib.nullcontext()), \
                contextlib.aclosing(provider.astream(messages, options)) as events:
            yield events

    def cut(exc: ProviderError) -> bool:
        if isinstance(exc, StreamUnfinished) and pacer is not None:
            pacer.cut(notify)
        return False  # the retry policy decides

    while True:
        error = await adrive(turn, attempt, recover=cut)
        if error is not None or not turn.calls:
            break
        if (step := turn.next_round(max_tool_rounds)) is None:  # the round bound: its calls are recorded unrun
            break
        tool_round, calls = step
        tool_round.calls = await asyncio.to_thread(run_calls, calls, tools or NoTools(), Nobody(), shows)
        tell_notices(tools, notify)  # an MCP server that failed during the calls: said once
        messages.extend(tool_messages(tool_round))
    if isinstance(error, StreamUnfinished):
        tries = turn.attempt + 1
        error = StreamUnfinished(
            f"The server ended the stream unfinished (no finish_reason), {tries} "
            f"time{'s' if tries > 1 else ''}; try --concurrency 1 (a server that runs one request "
            "at a time cuts a stream when another arrives).", hint=error.hint)
    return turn.finish(error), error


def batch_record(row: Row, profile: Profile, result: TurnResult, error: ProviderError | None) -> dict[str, Any]:
    """One OUTPUT row; usage and timing have the shapes of `ask --json` (outputs.turn_record)."""
    from llmchat.engine.outputs import turn_record

    shape = turn_record(profile, result)
    record = {
        "id": row.id,
        "prompt": row.prompt,
        "answer": result.answer if result.answer or error is None else None,
        "reasoning": shape["reasoning"],
        "usage": shape["usage"],
        "timing": shape["timing"],
        "error": error.message if error is not None else None,
    }
    if shape["tool_calls"]:  # only when the row called tools: rows without keep their shape
        record["tool_calls"] = shape["tool_calls"]
    return record


@dataclass
class Batch:
    """Everything the runner needs, resolved before the loop starts."""

    rows: list[Row]
    profile: Profile
    provider: Provider
    options: ChatOptions
    concurrency: int
    writer: OrderedWriter
    reporter: Reporter
    outcome: Outcome = field(default_factory=Outcome)
    pacer: Pacer = field(default_factory=Pacer)
    #: LLMCHAT_DEBUG=1 in the run's Environment: a row's internal error is raised; None: the process's
    debug: bool | None = None
    #: The tools offered (`options.tool_specs` says which the model sees); only trusted ones run.
    tools: Tools | None = None

    def options_for(self, row: Row) -> ChatOptions:
        """The row's options as sent: its own model if it names one, and that model's window as the
        Ollama num_ctx (as in ask and the chat), so a long prompt is not cut silently."""
        options = replace(self.options, model=row.model) if row.model else self.options
        return request_options(options, self.profile.provider, self.provider)

    def learn_windows(self) -> None:
        """Ask the server for each model's window before the loop starts (Ollama: one `/api/show` per
        model, cached by the provider), so no row blocks the event loop on it."""
        for model in dict.fromkeys(row.model or self.options.model for row in self.rows):
            request_options(replace(self.options, model=model), self.profile.provider, self.provider)

    async def run_row(self, index: int, row: Row) -> None:
        """Run one row and hand its record to the writer; whatever happens, the row gets a record."""
        label = f"row {row.key}"
        options = self.options_for(row)
        try:
            result, error = await ask_row(self.provider, row.to_send(self.profile.system), options,
                                          retries=self.profile.retries, label=label, notify=self.reporter.notice,
                                          pacer=self.pacer, tools=self.tools,
                                          max_tool_rounds=self.profile.max_tool_rounds)
        except Exception as exc:  # a bug must not sink a long batch; LLMCHAT_DEBUG=1 shows it
            if self.debug if self.debug is not None else os.environ.get("LLMCHAT_DEBUG") == "1":
                raise
            result = TurnResult(model=options.model)
            error = ProviderError(f"Unexpected internal error: {type(exc).__name__}: {exc}")
        record = batch_record(row, self.profile, result, error)
        self.outcome.add(index, record, result.usage, self.profile)
        self.writer.add(index, record)
        self.reporter.row_done(error is None, (result.usage.completion or 0) if result.usage else 0)
        if error is not None:
            self.reporter.notice(f"{label} failed: {error.message}")

    async def run(self) -> None:
        """All rows, at most `concurrency` at a time; Ctrl-C cancels the rest and keeps what finished."""
        gate = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            gate.release()

        try:
            for index, row in enumerate(self.rows):
                await gate.acquire()
                task = asyncio.create_task(self.run_row(index, row))
                running.add(task)
                task.add_done_callback(finished)
            while running:
                await asyncio.gather(*running)
        except asyncio.CancelledError:
            self.outcome.interrupted = True
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(Exception):
                await _aclose(self.provider)


async def _aclose(provider: Provider) -> None:
    close = getattr(provider, "aclose", None)
    if close is not None:
        await close()


def run_batch(
    flags: Overrides, input_path: str, *, output: str | None, concurrency: int = DEFAULT_CONCURRENCY,
    resume: bool = False, fmt: str | None = None, environment: Environment | None = None,
) -> int:
    """Run INPUT's prompts and write OUTPUT (stdout without one); returns the exit code.

    0: every row answered; 1: at least one row failed (its row says why); 130: interrupted.
    Configuration and input problems raise ConfigError (exit 2) before any request is sent.
    """
    _check_arguments(output, concurrency, resume, fmt)
    rows = read_rows(input_path, environment.stdin if environment else None)
    config, profile = resolve(flags, environment)
    provider = connect(profile, environment=environment)
    options = replace(ChatOptions.from_profile(profile), format=fmt)
    tools = open_tools(config, profile, environment)
    out_path = Path(output) if output else None
    def say(text: str) -> None:
        _say(text, environment.stderr if environment else None)

    done = load_done(out_path, say) if resume and out_path else set()
    todo = [row for row in rows if row.key not in done]
    stdout = environment.stdout if environment else None
    sink: Sink = FileSink(out_path, append=resume) if out_path else StdoutSink(stdout)
    writer = OrderedWriter(sink)
    if tools is not None:  # what the model is offered; only the trusted ones will run (nobody approves)
        options = replace(options, tool_specs=offered_tools(tools, provider, options.model, say))
        tell_notices(tools, say)  # an MCP server that did not start
    batch = Batch(todo, profile, provider, options, concurrency, writer, QuietReporter(),
                  debug=environment.debug if environment else None, tools=tools)
    started = time.monotonic()
    try:
        if todo:
            batch.reporter = make_reporter(len(todo), rows_on_stdout=out_path is None, environment=environment)
            batch.learn_windows()
            asyncio.run(batch.run())
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
        batch.outcome.interrupted = True
    finally:
        batch.reporter.stop()
        if batch.outcome.interrupted:
            writer.drain()
        sink.close()
        if tools is not None and hasattr(tools, "close"):  # MCP servers' children end with the batch
            tools.close()
    if resume and out_path and not batch.outcome.interrupted and out_path.exists():
        compact(out_path, rows)
    say(summary(batch.outcome, profile, skipped=len(rows) - len(todo), seconds=time.monotonic() - started,
                 output=output))
    if batch.outcome.interrupted:
        return 130
    return 1 if batch.outcome.failed else 0


def _check_arguments(output: str | None, concurrency: int, resume: bool, fmt: str | None) -> None:
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1 (got {concurrency}).", hint="The default is 4.")
    if resume and not output:
        raise ConfigError("--resume needs -o OUTPUT: it continues the file an earlier run wrote.",
                          hint="Run e.g. `llmchat batch prompts.txt -o answers.jsonl --resume`.")
    check_format(fmt)


def summary(outcome: Outcome, profile: Profile, *, skipped: int, seconds: float, output: str | None) -> str:
    """The closing line(s) on stderr: rows, failures, tokens, cost when the profile has a price."""
    ok = outcome.rows - len(outcome.failed)
    parts = [f"{outcome.rows} row{'s' if outcome.rows != 1 else ''} in {seconds:.1f}s: {ok} answered",
             f"{len(outcome.failed)} failed"]
    if skipped:
        parts.append(f"{skipped} already done")
    tally = outcome.tally  # llama.cpp's server reports no usage when streaming
    if tally.reported:
        parts.append(f"{tally.total:,} tokens ({tally.prompt:,} prompt + {tally.completion:,} completion)")
        if tally.reported < ok:
            parts.append(f"tokens not reported for {ok - tally.reported} rows")
    elif outcome.rows:
        parts.append("tokens not reported by the server")
    if profile.price is not None and tally.costs:
        parts.append(f"cost {tally.cost_text()}")
    lines = ["Batch: " + ", ".join(parts) + "."]
    if outcome.failed:
        shown = ", ".join(json.dumps(i, ensure_ascii=False) for i in outcome.failed[:10])
        more = f" and {len(outcome.failed) - 10} more" if len(outcome.failed) > 10 else ""
        lines.append(f"Failed ids: {shown}{more} (each row's \"error\" says why).")
    if outcome.interrupted:
        then = (f"rerun with --resume -o {output} to finish the rest" if output
                else "finished rows were written; use -o FILE to be able to --resume")
        lines.append(f"Interrupted: in-flight rows were cancelled; {then}.")
    elif outcome.failed and output:
        lines.append(f"Rerun with --resume -o {output} to retry only the failed rows.")
    return "\n".join(lines)


def _say(text: str, stream: TextIO | None = None) -> None:
    from llmchat.core.safe_text import sanitize

    # quotes ids, errors from servers: DESIGN §4
    print(sanitize(text), file=stream if stream is not None else sys.stderr, flush=True)
