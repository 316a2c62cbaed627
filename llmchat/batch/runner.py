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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmchat.config.session import Overrides, resolve
from llmchat.core.errors import ConfigError, ProviderError, StreamUnfinished
from llmchat.core.events import TurnResult, Usage
from llmchat.core.suggest import closest
from llmchat.engine.context import request_options
from llmchat.engine.structured import check_format
from llmchat.engine.turn import Turn, adrive
from llmchat.engine.usage import Tally
from llmchat.providers import ChatOptions, connect

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.core.events import Event
    from llmchat.providers import Message, Provider

ROW_KEYS = ("id", "prompt", "messages", "system", "model")
ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DEFAULT_CONCURRENCY = 4


# ------------------------------------------------------------------------------------------------ input


@dataclass(frozen=True)
class Row:
    """One prompt to run. `id` is the user's (JSONL) or the line number (text); `line` is for messages."""

    id: str | int
    prompt: str
    line: int
    messages: tuple[Mapping[str, Any], ...] | None = None
    system: str | None = None
    model: str | None = None

    @property
    def key(self) -> str:
        """How ids are compared with OUTPUT's: as JSON, so 3 and "3" stay different ids."""
        return json.dumps(self.id)

    def to_send(self, system: str | None) -> list[Message]:
        """The messages for the request; `system` (row, else flag/profile) goes first unless the row has one."""
        system = self.system or system
        if self.messages is not None:
            own = any(m.get("role") == "system" for m in self.messages)
            head: list[Message] = [] if own or not system else [{"role": "system", "content": system}]
            return head + [dict(m) for m in self.messages]
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": self.prompt}]


def read_rows(input_path: str) -> list[Row]:
    """Parse INPUT (a path, or `-` for stdin) into rows; every problem is a ConfigError naming the line."""
    text, name = _read_input(input_path)
    rows = _parse_jsonl(text, name) if _is_jsonl(input_path, text) else _parse_text(text)
    if not rows:
        raise ConfigError(f"{name} has no prompts.", hint="Give one prompt per line, or JSONL rows with a prompt.")
    _check_unique(rows, name)
    return rows


def _read_input(input_path: str) -> tuple[str, str]:
    if input_path == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        name = input_path
        try:
            data = Path(input_path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read {input_path}: {exc.strerror or exc}.",
                              hint="Check the path; use - to read prompts from stdin.") from None
    try:
        return data.decode("utf-8-sig"), name
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{name}, line {line}: not UTF-8 text (is it a binary file?).",
                          hint="Convert it first, e.g. `iconv -f GBK -t UTF-8`.") from None


def _is_jsonl(input_path: str, text: str) -> bool:
    """JSONL by extension; otherwise when the first non-blank line is a JSON object (stdin, other names)."""
    suffix = Path(input_path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return True
    if suffix == ".txt":
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first.startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _parse_text(text: str) -> list[Row]:
    return [Row(id=n, prompt=line.strip(), line=n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_jsonl(text: str, name: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise _bad_row(name, number, f"not valid JSON ({exc})") from None
        rows.append(_parse_row(data, name, number))
    return rows


def _parse_row(data: Any, name: str, line: int) -> Row:
    if not isinstance(data, dict):
        raise _bad_row(name, line, "a row must be a JSON object like {\"id\": 1, \"prompt\": \"…\"}")
    for key in data:
        if key not in ROW_KEYS:
            near = closest(key, ROW_KEYS)
            hint = f" (did you mean '{near}'?)" if near else ""
            raise _bad_row(name, line, f"unknown key '{key}'{hint}; allowed: {', '.join(ROW_KEYS)}")
    row_id = data.get("id", line)
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise _bad_row(name, line, "'id' must be a string or an integer")
    system, model = data.get("system"), data.get("model")
    for key, value in (("system", system), ("model", model)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _bad_row(name, line, f"'{key}' must be a non-empty string")
    if ("prompt" in data) == ("messages" in data):
        raise _bad_row(name, line, "give exactly one of 'prompt' or 'messages'")
    if "prompt" in data:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise _bad_row(name, line, "'prompt' must be a non-empty string")
        return Row(id=row_id, prompt=prompt, line=line, system=system, model=model)
    messages = _parse_messages(data["messages"], name, line)
    if system is not None and any(m["role"] == "system" for m in messages):
        raise _bad_row(name, line, "'system' given twice: as a key and as a system message")
    return Row(id=row_id, prompt=_last_user_text(messages), line=line, messages=messages, system=system, model=model)


def _parse_messages(messages: Any, name: str, line: int) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(messages, list) or not messages:
        raise _bad_row(name, line, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise _bad_row(name, line, f"each message needs a role ({', '.join(ROLES)}) and a content")
    if messages[-1]["role"] != "user":
        raise _bad_row(name, line, "the last message must be the user's (the one to answer)")
    return tuple(messages)


def _last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _check_unique(rows: list[Row], name: str) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        if row.key in seen:
            raise _bad_row(name, row.line, f"id {row.key} is already used on line {seen[row.key]}")
        seen[row.key] = row.line


def _bad_row(name: str, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{name}, line {line}: {problem}.",
                       hint='Rows are {"id": …, "prompt": "…"} or {"id": …, "messages": […]}, '
                            'with optional "system" and "model".')


# ----------------------------------------------------------------------------------------------- output


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class FileSink:
    """Appends rows to OUTPUT; one `os.write` per row, so a killed process never leaves half a row
    in the page cache for the next write to land after."""

    def __init__(self, path: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}.", hint="Check the -o path.") from None

    def write(self, record: dict[str, Any]) -> None:
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        os.close(self._fd)


class StdoutSink:
    """Rows on stdout, flushed one by one so a pipe sees each as soon as its turn comes."""

    def write(self, record: dict[str, Any]) -> None:
        from llmchat.core.safe_text import json_for  # a terminal gets C1/bidi escaped; a pipe the exact row

        sys.stdout.write(json_for(sys.stdout, json.dumps(record, ensure_ascii=False)) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class OrderedWriter:
    """Writes finished rows in input order: a row waits only for the rows before it."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._next = 0
        self._waiting: dict[int, dict[str, Any]] = {}

    def add(self, index: int, record: dict[str, Any]) -> None:
        self._waiting[index] = record
        while self._next in self._waiting:
            self._sink.write(self._waiting.pop(self._next))
            self._next += 1

    def drain(self) -> None:
        """On interruption: write the rows finished past a gap too (still in input order among themselves)."""
        for index in sorted(self._waiting):
            self._sink.write(self._waiting.pop(index))


def load_done(path: Path, notify: Callable[[str], None]) -> set[str]:
    """For `--resume`: the ids (as keys) whose latest row in OUTPUT has no error; those are skipped.

    A last line cut short by a kill is removed first (its row will be rerun), so the rows appended
    next start on a line of their own.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path} to resume: {exc.strerror or exc}.") from None
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
        notify(f"{path}: removed an incomplete last row (the batch was killed while writing it).")
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise ConfigError(f"{path}, line {number}: not a batch output row, so --resume cannot use it.",
                              hint="Point -o at the file an earlier `llmchat batch` wrote, or drop --resume.")
        latest[json.dumps(record["id"])] = record
    return {key for key, record in latest.items() if record.get("error") is None}


def compact(path: Path, rows: list[Row]) -> None:
    """After a resumed run: one row per id, in input order, unless the file already is exactly that.

    Appending keeps a kill at any moment harmless; this final rewrite (to a temporary file, then an
    atomic rename) removes the superseded failed rows and restores input order. Rows whose id is not
    in this input are kept, after the others.
    """
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest = {json.dumps(r["id"]): r for r in records}
    keys = [row.key for row in rows if row.key in latest]
    wanted = set(keys)
    foreign = [r for r in records if json.dumps(r["id"]) not in wanted]
    ordered = [latest[key] for key in keys] + foreign
    if [json.dumps(r["id"]) for r in records] == [json.dumps(r["id"]) for r in ordered]:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------- progress


class Reporter(Protocol):
    """Where progress goes: a Rich bar in a terminal, nothing otherwise."""

    def row_done(self, ok: bool, completion_tokens: int) -> None: ...
    def notice(self, text: str) -> None: ...
    def stop(self) -> None: ...


class QuietReporter:
    def row_done(self, ok: bool, completion_tokens: int) -> None:
        pass

    def notice(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


class RichReporter:
    """A progress bar on stderr: done / total, failed, tokens per second, ETA; notices print above it."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from llmchat.render.terminal import terminal_console

        self._progress = Progress(
            TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[speed]} tok/s"),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=console or terminal_console(stderr=True), transient=False,
            # Rich would otherwise route sys.stdout through its (stderr) console: the rows must stay on stdout.
            redirect_stdout=False, redirect_stderr=False,
        )
        self._task = self._progress.add_task("batch", total=total, failed=0, speed="–")
        self._started = time.monotonic()
        self._failed = 0
        self._tokens = 0
        self._seen: set[str] = set()
        self._progress.start()

    def row_done(self, ok: bool, completion_tokens: int) -> None:
        self._failed += not ok
        self._tokens += completion_tokens
        elapsed = time.monotonic() - self._started
        speed = f"{self._tokens / elapsed:,.0f}" if elapsed > 0 else "–"
        self._progress.update(self._task, advance=1, failed=self._failed, speed=speed)

    def notice(self, text: str) -> None:
        if text not in self._seen:  # e.g. "does not support thinking" would otherwise repeat per row
            self._seen.add(text)
            self._progress.console.print(text, style="yellow", markup=False, highlight=False)

    def stop(self) -> None:
        self._progress.stop()


def make_reporter(total: int, *, rows_on_stdout: bool) -> Reporter:
    """The bar only when stderr is a terminal: logs and pipes get the summary alone.

    Rows printed to a terminal are their own progress, and a bar redrawn between them would garble both.
    """
    if not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return QuietReporter()
    if rows_on_stdout and sys.stdout.isatty():
        return QuietReporter()
    return RichReporter(total)


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


async def ask_row(
    provider: Provider, messages: list[Message], options: ChatOptions, *, retries: int, label: str,
    notify: Callable[[str], None], pacer: Pacer | None = None,
) -> tuple[TurnResult, ProviderError | None]:
    """One row's turn on the shared engine (turn.py): `run_turn`'s retry rule (429/5xx before any text,
    backoff, bounded), and one more: a stream the server ended unfinished is retried even after text
    arrived, from the start, since a row is done only when its answer is whole.

    Never raises a ProviderError: like `run_turn`, it returns it with whatever text arrived, so a
    failed row becomes a row with an error and the batch goes on.
    """
    # A provider's notices are about the model, not the row: the reporter shows each once, unlabelled.
    turn = Turn(options.model, _RowShows(notify), retries=retries, label=label, restart_unfinished=True)

    @contextlib.asynccontextmanager
    async def attempt() -> AsyncIterator[AsyncIterator[Event]]:
        async with (pacer.slot() if pacer else contextlib.nullcontext()), \
                contextlib.aclosing(provider.astream(messages, options)) as events:
            yield events

    def cut(exc: ProviderError) -> bool:
        if isinstance(exc, StreamUnfinished) and pacer is not None:
            pacer.cut(notify)
        return False  # the retry policy decides

    error = await adrive(turn, attempt, recover=cut)
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
    return {
        "id": row.id,
        "prompt": row.prompt,
        "answer": result.answer if result.answer or error is None else None,
        "reasoning": shape["reasoning"],
        "usage": shape["usage"],
        "timing": shape["timing"],
        "error": error.message if error is not None else None,
    }


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
                                          pacer=self.pacer)
        except Exception as exc:  # a bug must not sink a long batch; LLMCHAT_DEBUG=1 shows it
            if os.environ.get("LLMCHAT_DEBUG") == "1":
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
    resume: bool = False, fmt: str | None = None,
) -> int:
    """Run INPUT's prompts and write OUTPUT (stdout without one); returns the exit code.

    0: every row answered; 1: at least one row failed (its row says why); 130: interrupted.
    Configuration and input problems raise ConfigError (exit 2) before any request is sent.
    """
    _check_arguments(output, concurrency, resume, fmt)
    rows = read_rows(input_path)
    _, profile = resolve(flags)
    provider = connect(profile)
    options = replace(ChatOptions.from_profile(profile), format=fmt)
    out_path = Path(output) if output else None
    done = load_done(out_path, _say) if resume and out_path else set()
    todo = [row for row in rows if row.key not in done]
    sink: Sink = FileSink(out_path, append=resume) if out_path else StdoutSink()
    writer = OrderedWriter(sink)
    batch = Batch(todo, profile, provider, options, concurrency, writer, QuietReporter())
    started = time.monotonic()
    try:
        if todo:
            batch.reporter = make_reporter(len(todo), rows_on_stdout=out_path is None)
            batch.learn_windows()
            asyncio.run(batch.run())
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
        batch.outcome.interrupted = True
    finally:
        batch.reporter.stop()
        if batch.outcome.interrupted:
            writer.drain()
        sink.close()
    if resume and out_path and not batch.outcome.interrupted and out_path.exists():
        compact(out_path, rows)
    _say(summary(batch.outcome, profile, skipped=len(rows) - len(todo), seconds=time.monotonic() - started,
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


def _say(text: str) -> None:
    from llmchat.core.safe_text import sanitize

    print(sanitize(text), file=sys.stderr, flush=True)  # quotes ids, errors from servers: DESIGN §4
