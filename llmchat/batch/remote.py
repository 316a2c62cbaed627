"""`llmchat batch --remote`: the rows run on the provider's Batch API instead of from this machine.

Why it is shaped this way:
- The same input and output as a local batch: rows.py reads INPUT, the results become the rows a local
  batch writes (input order, same fields, usage per row; timing is null: the server does not say), the
  error file's lines and rows the job never ran become failed rows, so `--resume` works the same way:
  it submits only the rows that failed or are missing.
- Everything is checked before anything is uploaded (input, profile, the Batch API's limits); a job is
  remembered in the store (store/jobs.py) as soon as it exists, with its profile and local files, so
  the status/fetch/cancel commands need no `-p` and a killed follower loses nothing: `batch fetch` or
  `--resume` picks the job up again instead of submitting it twice.
- HTTP is the providers' (providers/batch_api.py); this module plans, follows and writes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmchat.batch.output import StdoutSink, load_done
from llmchat.batch.remote_follow import first_interval, follow, make_board
from llmchat.batch.remote_lines import (
    TEST_MODEL,
    Part,
    batch_price,
    parse_results,
    plan_parts,
    prompt_tokens,
    result_record,
)
from llmchat.batch.rows import Row, read_rows
from llmchat.config.session import Overrides, resolve
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError, ProviderError
from llmchat.engine.structured import check_format
from llmchat.engine.usage import Tally
from llmchat.providers import ChatOptions
from llmchat.providers.batch_api import BatchApi, RemoteJob
from llmchat.store.db import open_store
from llmchat.store.jobs import JobRecord, find_job, now, save_job, unfetched, unfetched_for

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.store.db import Store

WHY_MISSING = {
    "failed": "not run: the job failed validation",
    "expired": "not run: the job expired (its 24 h completion window ended first)",
    "cancelled": "not run: the job was cancelled",
}


class Remote:
    """One command's context: where to say things, the store, and a Batch API per profile name."""

    def __init__(self, flags: Overrides, environment: Environment | None) -> None:
        self.flags = flags
        self.environment = environment
        self.store: Store = open_store()
        self._apis: dict[str, tuple[Profile, BatchApi]] = {}
        self.errors: dict[str, tuple[str, ...]] = {}  # job id -> what the server said was wrong with it

    def say(self, text: str) -> None:
        from llmchat.core.safe_text import sanitize

        stream = self.environment.stderr if self.environment else sys.stderr
        print(sanitize(text), file=stream, flush=True)

    def api(self, profile_name: str | None = None) -> tuple[Profile, BatchApi]:
        """The profile (the flags', or a remembered job's by name) and its Batch API client."""
        key = profile_name or ""
        if key not in self._apis:
            flags = replace(self.flags, profile=profile_name) if profile_name else self.flags
            _, profile = resolve(flags, self.environment)
            self._apis[key] = (profile, BatchApi(profile, self.environment))
        return self._apis[key]

    def remember(self, job: JobRecord, seen: RemoteJob) -> None:
        job.status, job.total, job.completed, job.failed = seen.status, seen.total, seen.completed, seen.failed
        job.output_file_id, job.error_file_id = seen.output_file_id, seen.error_file_id
        self.errors[job.id] = seen.errors
        save_job(self.store, job)

    def follow(self, jobs: list[JobRecord]) -> dict[str, RemoteJob]:
        """Poll the jobs until all have ended, a bar (or lines) on stderr; Ctrl-C propagates."""
        by_id = {job.id: job for job in jobs}
        board = make_board(self.environment, self.say)
        return follow(list(by_id), lambda i: self.api(by_id[i].profile)[1].retrieve(i), board,
                      first=first_interval(self.environment), seen=lambda seen: self.remember(by_id[seen.id], seen))

    def close(self) -> None:
        self.store.close()


# ------------------------------------------------------------------------------------- submit and run


def run_remote(flags: Overrides, input_path: str, *, output: str | None, resume: bool = False,
               fmt: str | None = None, test: bool = False, split: int | None = None,
               environment: Environment | None = None) -> int:
    """`llmchat batch INPUT --remote`: submit, follow, write OUTPUT; returns the exit code (DESIGN §5).

    0: every row answered; 1: a row failed or a job did not complete; 130: Ctrl-C while following
    (the jobs go on; `batch fetch` or `--resume` collects them). Problems found before upload: exit 2.
    """
    if resume and not output:
        raise ConfigError("--resume needs -o OUTPUT: it continues the file an earlier run wrote.",
                          hint="Run e.g. `llmchat batch prompts.jsonl -o answers.jsonl --remote --resume`.")
    if split is not None and split < 1:
        raise ConfigError(f"--split must be at least 1 (got {split}).", hint="--split N submits N jobs.")
    check_format(fmt)
    rows = read_rows(input_path, environment.stdin if environment else None)
    out_path = Path(output).resolve() if output else None
    remote = Remote(flags, environment)
    try:
        profile, api = remote.api(flags.profile)
        if resume and out_path is not None:
            earlier = unfetched_for(remote.store, str(out_path))
            if earlier:
                remote.say(f"Collecting {len(earlier)} earlier job{'s' * (len(earlier) > 1)} for {output} first: "
                           + ", ".join(job.id for job in earlier))
                code = _follow_and_write(remote, earlier, rows, out_path, output)
                if code == 130:
                    return code
        done = load_done(out_path, remote.say) if resume and out_path else set()
        todo = [row for row in rows if row.key not in done]
        if not todo:
            remote.say(f"Nothing to submit: every row of {input_path} is answered in {output}.")
            return 0
        options = _options(profile, fmt, test, remote.say)
        parts = plan_parts(todo, lambda row: TEST_MODEL if test else (row.model or options.model),
                           lambda row, model: api.request_body(row.to_send(profile.system),
                                                               replace(options, model=model)), split)
        remote.say(_estimate(profile, todo, test))
        source = None if input_path == "-" else str(Path(input_path).resolve())
        jobs = [_submit(remote, profile, api, part, source, out_path, n, len(parts)) for n, part in enumerate(parts, 1)]
        if skipped := len(rows) - len(todo):
            remote.say(f"{skipped} row{'s' * (skipped != 1)} already answered in {output}: not submitted.")
        return _follow_and_write(remote, jobs, rows, out_path, output)
    finally:
        remote.close()


def _options(profile: Profile, fmt: str | None, test: bool, say: Callable[[str], None]) -> ChatOptions:
    """The request options; Bailian's `enable_thinking` is always sent, and false: its Batch API runs
    requests without streaming, where DashScope refuses thinking (bailian-api §4.3)."""
    if test and profile.provider != "bailian":
        raise ConfigError(f"--test uses Bailian's {TEST_MODEL}, and profile '{profile.name}' is provider "
                          f"'{profile.provider}'.", hint="Use a bailian profile with --test, or drop --test.")
    options = replace(ChatOptions.from_profile(profile), format=fmt, tool_specs=())
    if profile.provider == "bailian":
        if options.think and not test:
            say("Note: Bailian refuses thinking in requests that do not stream, as batch requests are: "
                "the rows run with enable_thinking = false.")
        options = replace(options, think=False, thinking_budget=None)
    return options


def _estimate(profile: Profile, rows: list[Row], test: bool) -> str:
    """Before submitting: the prompt side of the cost at the batch price (the answers' length is unknown)."""
    if test:
        return f"{TEST_MODEL}: the requests are checked and answered without inference, at no charge."
    price = batch_price(profile.price)
    tokens = prompt_tokens(row.to_send(profile.system) for row in rows)
    if price is None:
        return (f"About {tokens:,} prompt tokens in {len(rows):,} requests (no price in profile "
                f"'{profile.name}', so no cost estimate).")
    return (f"Estimated cost: {price.format(tokens * price.input / 1000)} for about {tokens:,} prompt tokens, plus "
            f"{price.format(price.output)} per 1,000 answer tokens (the batch price: half the price of profile "
            f"'{profile.name}').")


def _submit(remote: Remote, profile: Profile, api: BatchApi, part: Part, source: str | None,
            out_path: Path | None, number: int, parts: int) -> JobRecord:
    name = f"llmchat-batch-{number}-of-{parts}.jsonl" if parts > 1 else "llmchat-batch.jsonl"
    file_id = api.upload(part.data, name)
    created = api.create(file_id, {"client": "llmchat", **({"input": Path(source).name[:64]} if source else {})})
    job = JobRecord(id=created.id, provider=profile.provider, profile=profile.name, model=part.model, input=source,
                    output=str(out_path) if out_path else None, status=created.status, keys=part.keys,
                    total=created.total or len(part.rows), input_file_id=file_id)
    which = f" ({number} of {parts})" if parts > 1 else ""
    remote.say(f"Submitted job {job.id}{which}: {len(part.rows):,} rows, model {part.model}.")  # at once
    save_job(remote.store, job)
    return job


# ------------------------------------------------------------------------------------- follow and write


def _follow_and_write(remote: Remote, jobs: list[JobRecord], rows: list[Row] | None, out_path: Path | None,
                      output: str | None) -> int:
    unfinished = [job for job in jobs if not job.finished]
    try:
        if unfinished:
            remote.follow(unfinished)
    except ProviderError as error:  # the network, the key…: the jobs themselves go on
        ids = " ".join(job.id for job in unfinished)
        error.hint = (f"{error.hint} " if error.hint else "") + (
            f"The job{'s' * (len(unfinished) > 1)} ({ids}) keep running on the server: "
            "`llmchat batch fetch` collects them later.")
        raise
    except KeyboardInterrupt:
        ids = " ".join(job.id for job in unfinished)
        remote.say(f"Stopped following; the job{'s' * (len(unfinished) > 1)} ({ids}) keep running on the server. "
                   f"Collect the results with `llmchat batch fetch{'' if len(unfinished) > 1 else ' ' + ids}"
                   f"{' -o ' + output if output else ''}` (it waits for them), or rerun with --resume.")
        return 130
    return write_results(remote, jobs, rows, out_path, output)


def write_results(remote: Remote, jobs: list[JobRecord], rows: list[Row] | None, out_path: Path | None,
                  output: str | None) -> int:
    """Download the finished jobs' result files, write their rows (merged into OUTPUT, input order),
    remember what they cost, and summarise. Exit 1 when a row failed or a job did not complete."""
    records: dict[str, dict[str, Any]] = {}
    tally = Tally()
    order: list[Row] = []
    failed_jobs = []
    for job in jobs:
        profile, api = remote.api(job.profile)
        job_rows = _rows_of(job, rows, api)
        results = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if file_id:
                results.update(parse_results(api.content(file_id)))
        price = batch_price(profile.price)
        job_tally = Tally()
        for row in job_rows:
            record, usage = result_record(row, results.get(row.key), WHY_MISSING.get(job.status, "no result"))
            records[row.key] = record
            if record["error"] is None:
                job_tally.add(usage, price)
        job.rows, job.fetched = job_tally.turns, now()
        job.prompt_tokens, job.completion_tokens = job_tally.prompt, job_tally.completion
        job.total_tokens, job.reasoning_tokens = job_tally.total, job_tally.reasoning
        job.cached_tokens = job_tally.cached
        job.cost = sum(job_tally.costs.values()) if job_tally.costs else None
        job.currency = price.currency if price is not None and job_tally.costs else None
        save_job(remote.store, job)
        tally.merge(job_tally)
        order.extend(job_rows)
        if job.status != "completed":
            failed_jobs.append(job)
    if rows is not None:
        order = [row for row in rows if row.key in records] + [r for r in order if r.key not in {x.key for x in rows}]
    if out_path is not None:  # ordered by the whole input, so rows from earlier runs keep their places
        merge_output(out_path, rows or _read_quietly(jobs[0].input) or order, records, remote.say)
    else:
        sink = StdoutSink(remote.environment.stdout if remote.environment else None)
        for row in order:
            sink.write(records[row.key])
    failed = [records[row.key]["id"] for row in order if records[row.key]["error"] is not None]
    remote.say(_summary(jobs, len(order), failed, tally, failed_jobs, output, remote.errors))
    return 1 if failed or failed_jobs else 0


def _rows_of(job: JobRecord, rows: list[Row] | None, api: BatchApi) -> list[Row]:
    """The job's rows in its order: from the input given, else the local input file, else (moved, edited,
    or stdin) from the request file uploaded with the job, so a result is never without its row."""
    wanted = set(job.keys)
    for source in (rows, _read_quietly(job.input)):
        if source is not None:
            by_key = {row.key: row for row in source if row.key in wanted}
            if len(by_key) == len(wanted):
                return [by_key[key] for key in job.keys]
    if not job.input_file_id:
        raise ConfigError(f"Job {job.id}: its input {job.input or '(stdin)'} is gone and no request file is known.")
    found = []
    for line, request in enumerate(parse_results(api.content(job.input_file_id)).items(), 1):
        key, data = request
        messages = (data.get("body") or {}).get("messages") or []
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users and isinstance(users[-1], str) else json.dumps(users[-1:], ensure_ascii=False)
        found.append(Row(id=json.loads(key), prompt=prompt, line=line))
    return found


def _read_quietly(path: str | None) -> list[Row] | None:
    if not path:
        return None
    try:
        return read_rows(path)
    except ConfigError:
        return None


def merge_output(path: Path, order: list[Row], records: dict[str, dict[str, Any]], say: Callable[[str], None]) -> None:
    """Write the new rows into OUTPUT: a row answered before is kept over a new failure, the rest
    replaced; rows in input order, rows of other inputs after. Written whole, then renamed (atomic)."""
    existing: dict[str, dict[str, Any]] = {}
    if path.exists():
        load_done(path, say)  # drops a last line cut short by a kill
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                existing[json.dumps(record["id"])] = record
    for key, record in records.items():
        if record["error"] is None or existing.get(key, {}).get("error", "x") is not None:
            existing[key] = record
    keys = [row.key for row in order if row.key in existing]
    ordered = [existing[key] for key in keys] + [r for k, r in existing.items() if k not in set(keys)]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
    os.replace(temporary, path)


def _summary(jobs: list[JobRecord], rows: int, failed: list[Any], tally: Tally, failed_jobs: list[JobRecord],
             output: str | None, errors: dict[str, tuple[str, ...]]) -> str:
    parts = [f"{rows:,} row{'s' * (rows != 1)} from {len(jobs)} job{'s' * (len(jobs) != 1)}: "
             f"{rows - len(failed):,} answered", f"{len(failed):,} failed"]
    if tally.reported:
        parts.append(f"{tally.total:,} tokens ({tally.prompt:,} prompt + {tally.completion:,} completion)")
    if tally.costs:
        parts.append(f"cost {tally.cost_text()} at the batch price")
    lines = ["Remote batch: " + ", ".join(parts) + "."]
    for job in failed_jobs:
        why = "; ".join(errors.get(job.id) or ())
        lines.append(f"Job {job.id} ended {job.status}" + (f": {why}" if why else "."))
    if failed:
        shown = ", ".join(json.dumps(i, ensure_ascii=False) for i in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        lines.append(f"Failed ids: {shown}{more} (each row's \"error\" says why).")
        if output:
            lines.append(f"Rerun with --remote --resume -o {output} to submit only the failed rows again.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ status, fetch, cancel


def fetch(flags: Overrides, job_id: str | None, output: str | None, environment: Environment | None) -> int:
    """`batch fetch [ID] [-o OUT]`: wait for the job (ID, else the latest unfetched one with the other
    parts of its split) to end, then write its rows to OUT (else the OUTPUT it was submitted with)."""
    remote = Remote(flags, environment)
    try:
        jobs = [find_job(remote.store, job_id)] if job_id else unfetched(remote.store)
        if not jobs:
            raise ConfigError("No remote batch job is waiting to be fetched.",
                              hint="`llmchat batch list` shows the jobs; `llmchat batch fetch ID` fetches one again.")
        target = output or jobs[0].output
        out_path = Path(target).resolve() if target else None
        if job_id is None:
            remote.say(f"Fetching {', '.join(job.id for job in jobs)}.")
        return _follow_and_write(remote, jobs, None, out_path, target)
    finally:
        remote.close()


def status(flags: Overrides, job_id: str, environment: Environment | None, out: TextIO | None = None) -> int:
    """`batch status ID`: ask the server once, remember and print what it says."""
    remote = Remote(flags, environment)
    try:
        job = find_job(remote.store, job_id)
        seen = remote.api(job.profile)[1].retrieve(job.id)
        remote.remember(job, seen)
        from llmchat.core.safe_text import text_for

        stream = out or (environment.stdout if environment else sys.stdout)
        stream.write(text_for(stream, "\n".join(describe(job, seen.errors)) + "\n"))  # server text: DESIGN §4
        return 0
    finally:
        remote.close()


def describe(job: JobRecord, errors: tuple[str, ...] = ()) -> list[str]:
    done = (job.completed or 0) + (job.failed or 0)
    lines = [f"{job.id}: {job.status}, {done:,}/{job.total or 0:,} done, {job.failed or 0:,} failed",
             f"  profile {job.profile} ({job.provider}), model {job.model}",
             f"  input {job.input or '(stdin)'} -> output {job.output or '(stdout)'}",
             f"  submitted {job.created}" + (f", fetched {job.fetched}" if job.fetched else "")]
    lines += [f"  error: {text}" for text in errors]
    return lines


def cancel(flags: Overrides, job_id: str, environment: Environment | None) -> int:
    remote = Remote(flags, environment)
    try:
        job = find_job(remote.store, job_id)
        seen = remote.api(job.profile)[1].cancel(job.id)
        remote.remember(job, seen)
        remote.say(f"Job {job.id}: {seen.status}. The rows answered before it stopped can be fetched with "
                   f"`llmchat batch fetch {job.id}`.")
        return 0
    finally:
        remote.close()


def list_recent(limit: int, environment: Environment | None, out: TextIO | None = None) -> int:
    """`batch list`: the jobs this machine submitted, newest first, as last seen (`status ID` asks again)."""
    from llmchat.core.safe_text import text_for
    from llmchat.store.db import existing_store
    from llmchat.store.jobs import list_jobs

    store = existing_store()
    jobs = []
    if store is not None:
        with store:
            jobs = list_jobs(store, limit)
    stream = out or (environment.stdout if environment else sys.stdout)
    if not jobs:
        print("No remote batch jobs yet (`llmchat batch INPUT -o OUT --remote` submits one).",
              file=environment.stderr if environment else sys.stderr)
        return 0
    for job in jobs:
        done = (job.completed or 0) + (job.failed or 0)
        fetched = "fetched" if job.fetched else "not fetched"
        stream.write(text_for(stream, f"{job.id}  {job.status}  {done:,}/{job.total or 0:,} done  "
                                      f"{job.failed or 0:,} failed  {job.profile}/{job.model}  {job.created[:16]}  "
                                      f"{fetched}  {job.input or '(stdin)'} -> {job.output or '(stdout)'}\n"))
    return 0
