"""Remote batch jobs in the history database (schema 5): what `batch --remote` submitted, so `batch
status|fetch|cancel|list` find the profile and the local files again without being told."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmchat.core.errors import ConfigError
from llmchat.core.events import Usage

if TYPE_CHECKING:
    from llmchat.store.db import Store

#: Statuses after which a job changes no more (the Batch API's terminal states).
FINISHED = ("completed", "failed", "expired", "cancelled")


@dataclass
class JobRecord:
    """One remote job as remembered here; `keys` are the row ids (as JSON) it carries, in input order."""

    id: str
    provider: str
    profile: str
    model: str | None
    input: str | None
    output: str | None
    status: str
    keys: list[str] = field(default_factory=list)
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created: str = ""
    updated: str = ""
    fetched: str | None = None
    rows: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def usage(self) -> Usage | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return Usage(prompt=self.prompt_tokens, completion=self.completion_tokens, total=self.total_tokens,
                     reasoning=self.reasoning_tokens, cached=self.cached_tokens)


COLUMNS = tuple(f.name for f in fields(JobRecord))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _row(record: JobRecord) -> tuple[Any, ...]:
    values = [getattr(record, name) for name in COLUMNS]
    values[COLUMNS.index("keys")] = json.dumps(record.keys)
    return tuple(values)


def _record(row: sqlite3.Row) -> JobRecord:
    data = {name: row[name] for name in COLUMNS}
    data["keys"] = json.loads(data["keys"] or "[]")
    return JobRecord(**data)


def save_job(store: Store, record: JobRecord) -> None:
    """Insert or replace the job's row (its id is the provider's, unique per provider account)."""
    record.updated = now()
    record.created = record.created or record.updated
    marks = ", ".join("?" for _ in COLUMNS)
    try:
        with store._write() as db:
            db.execute(f"INSERT OR REPLACE INTO batch_jobs ({', '.join(COLUMNS)}) VALUES ({marks})", _row(record))
    except sqlite3.Error as exc:
        raise store._error(exc) from None


def _select(store: Store, where: str = "", params: tuple[Any, ...] = (), limit: int | None = None) -> list[JobRecord]:
    sql = f"SELECT {', '.join(COLUMNS)} FROM batch_jobs {where} ORDER BY created DESC, rowid DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    try:
        with store._read() as db:
            return [_record(row) for row in db.execute(sql, params).fetchall()]
    except sqlite3.Error as exc:
        raise store._error(exc) from None


def list_jobs(store: Store, limit: int | None = 20) -> list[JobRecord]:
    """The most recent jobs first."""
    return _select(store, limit=limit)


def find_job(store: Store, ref: str) -> JobRecord:
    """A job by its id or a unique prefix of it; a StoreError (exit 2) says when there is none or several."""
    found = _select(store, "WHERE id = ?", (ref,)) or _select(store, "WHERE id LIKE ? ESCAPE '\\'",
                                                               (_like_prefix(ref),))
    if not found:
        raise ConfigError(f"No remote batch job '{ref}' is remembered here.",
                         hint="`llmchat batch list` shows the jobs this machine submitted.")
    if len(found) > 1:
        raise ConfigError(f"'{ref}' matches {len(found)} jobs.", hint="Give more of the id (`llmchat batch list`).")
    return found[0]


def unfetched(store: Store) -> list[JobRecord]:
    """The latest job whose results were not written yet, with the other unfetched jobs of the same
    OUTPUT (the parts of a `--split`), oldest first: what `batch fetch` alone collects."""
    pending = _select(store, "WHERE fetched IS NULL")
    if not pending:
        return []
    latest = pending[0]
    return list(reversed([job for job in pending if job.output == latest.output and job.input == latest.input]))


def unfetched_for(store: Store, output: str) -> list[JobRecord]:
    """Unfetched jobs that write to OUTPUT, oldest first (`--resume` collects them before submitting)."""
    return list(reversed(_select(store, "WHERE fetched IS NULL AND output = ?", (output,))))


def _like_prefix(ref: str) -> str:
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
