"""Saved conversations: one SQLite file under the user data directory (DESIGN §1 store.py, issue 5).

Why it is built the way it is:
- **Nothing lost.** The question is committed before the request goes out, the answer as far as it got
  about once a second while it streams (`Recorder.progress`), and the answer when the turn ends,
  however it ends, each in its own short transaction. SQLite's journal makes a process killed
  mid-write (SIGKILL) leave the file exactly as of the last commit: at most the last second of a
  streaming answer is lost.
- **Several writers.** WAL mode lets readers and one writer work at once, a busy timeout makes a second
  writer wait instead of failing with "database is locked", and every write starts with
  `BEGIN IMMEDIATE` so two REPLs never deadlock upgrading a read into a write.
- **Private.** The directory is created 0700 and the file 0600 before SQLite opens it (SQLite gives its
  -wal/-shm files the database's mode). Only the profile's name, provider and model are saved: never
  its base URL (which may carry a key in a query string) nor anything from the environment.
- **Versioned.** `PRAGMA user_version` is the schema version; `MIGRATIONS[n]` takes a file from version n
  to n + 1 inside the same transaction that bumps the version, so a half-migrated file cannot exist.
- **Searchable.** Message text is indexed with FTS5's trigram tokenizer when this SQLite has it, which
  gives case-insensitive substring search (CJK included) with the same meaning as the LIKE fallback.

Money: each answer row stores its cost, computed at write time from the profile's price, with the
currency and the profile's name, so `llmchat usage` reports what the turn cost when it was made even
after the price list changes. Summaries that replaced old turns (context.py) are rows of their own,
with their cost too: a resumed conversation keeps its summary, and `usage` counts what it cost.

Layout: the exchange in slot k of a conversation is the user message at position 2k and, once the
turn has ended (or while it streams), the assistant message at 2k + 1. Slots are in time order; a new
question takes the slot after everything saved, whichever process saved it, and only this process's
/retry and /undo reuse or delete a slot, so an undo in a shared conversation can leave a gap (loading
skips it, exports renumber). A question whose answer never came (the process died before the first
progress save) is a user row without its partner, and resumes as an exchange with no answer (so it
is not resent).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmchat.core.conversation import ContextSummary, Conversation, Exchange
from llmchat.core.images import Image
from llmchat.store import records
from llmchat.store.export import build_record, validate_record
from llmchat.store.files import create_private, default_path, refuse_symlink
from llmchat.store.recorder import Recorder, delete_slot
from llmchat.store.records import (
    SUMMARY_SQL,
    Imported,
    NotFound,
    StoredMessage,
    StoreError,
    Summary,
    UsageRow,
    answer_row,
    insert_row,
    make_title,
    message_from_row,
    save_images,
    summary_from_row,
    usage_from_row,
    user_row,
)
from llmchat.store.schema import (
    BUSY_TIMEOUT_S,
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    USAGE_COLUMNS,
)
from llmchat.store.search import has_json, search_clause

if TYPE_CHECKING:
    from llmchat.store.records import Answerer


def open_store(path: Path | None = None, *, reading: bool = False) -> Store:
    """The store at `path` (default: the user data directory), created and migrated on first use;
    `reading`: opened read-only if it cannot be written (see `existing_store`)."""
    return Store(path or default_path(), reading=reading)


def existing_store(path: Path | None = None) -> Store | None:
    """The store if its file exists, else None: read-only commands must not create a database.

    A store in a directory this process cannot write (a read-only mount, a restored backup) is still
    opened, read-only, so `history` and `usage` keep working; only writes to it fail, saying why.
    """
    path = path or default_path()
    if path.is_symlink():
        refuse_symlink(path)
    return Store(path, reading=True) if path.exists() else None


# ----------------------------------------------------------------------------------------- store

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _translated(method: _Method) -> _Method:
    """SQLite's errors from a public method become a `StoreError` with the right advice (a damaged page
    is found by whichever read touches it first), never an "internal error"."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    return wrapper  # type: ignore[return-value]


class Store:
    """The history database. Thread-safe (one connection behind a lock); use one per process.

    Every method that takes `ref` accepts a conversation id, a unique prefix of one, or "last"
    (the most recently updated conversation).
    """

    def __init__(self, path: Path, *, fts: bool = True, reading: bool = False) -> None:
        """`reading`: the caller only reads (history, usage), so a file that cannot be opened for
        writing (a read-only directory) is opened read-only instead of refused."""
        self.path = Path(path)
        self.read_only = False
        try:
            create_private(self.path)
        except OSError as exc:
            if not (reading and self.path.exists()):
                raise StoreError(f"Cannot create the history database {self.path}: {exc.strerror}.",
                                 hint="Check the directory's permissions, or use --no-save.") from None
        self._lock = threading.RLock()
        try:
            self._open(self.path, fts)
        except StoreError as exc:
            if not (reading and exc.unwritable):
                raise
            self._open_read_only(fts)
        try:
            self.has_fts = self._scalar("SELECT count(*) FROM sqlite_master WHERE name = 'messages_fts'") > 0
            self.has_json = has_json(self._db)
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None

    def _open(self, target: Path | str, fts: bool, *, uri: bool = False) -> None:
        try:
            self._db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False, uri=uri)
        except sqlite3.Error as exc:  # e.g. the path is a directory
            raise self._error(exc) from None
        self._db.row_factory = sqlite3.Row
        try:
            self._retry_busy(lambda: (self._configure(), self._migrate(fts)))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._error(exc) from None
        except BaseException:
            self._db.close()
            raise

    def _open_read_only(self, fts: bool) -> None:
        """Read a database whose directory cannot be written. SQLite's WAL mode needs to create the
        -shm file to read; when no -wal file exists, everything committed is in the main file and
        `immutable=1` reads it without one."""
        from urllib.parse import quote

        self.read_only = True
        base = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            self._open(base, fts, uri=True)
        except StoreError as exc:
            if not exc.unwritable or Path(f"{self.path}-wal").exists():
                raise
            self._open(base + "&immutable=1", fts, uri=True)

    # -- plumbing -----------------------------------------------------------------------------

    def _configure(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if not self.read_only:
            db.execute("PRAGMA journal_mode = WAL")  # persistent: a no-op after the first open
        db.execute("PRAGMA synchronous = FULL")  # a committed turn survives a power cut too, at 2 fsyncs/turn
        db.execute("PRAGMA foreign_keys = ON")

    def _retry_busy(self, action: Callable[[], object]) -> None:
        """Run `action`, retrying while another process holds a lock SQLite will not wait for.

        Two processes opening a brand-new file at once both try to switch it to WAL and migrate it;
        SQLite answers one of them SQLITE_BUSY at once, without its busy handler, when waiting could
        deadlock. Both steps are idempotent, so trying again (briefly, with jitter) is safe.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005 + random.random() * 0.02)

    def _migrate(self, fts: bool) -> None:
        if self._scalar("PRAGMA user_version") == SCHEMA_VERSION:
            return
        with self._write() as db:  # re-read inside the lock: another process may have just migrated
            version = self._scalar("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer llmchat (schema {version}; this one knows {SCHEMA_VERSION}).",
                    hint="Upgrade llmchat, or use --no-save.")
            for step in MIGRATIONS[version:]:
                step(db, fts)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """The advice that fits what SQLite said: only a damaged file is worth moving away."""
        text = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if code is not None else None
        if _is_busy(exc):
            return StoreError(f"The history database {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f}s.",
                              hint="Another llmchat is writing a lot; try again, or use --no-save.")
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
                primary is None and ("malformed" in text or "not a database" in text)):
            return StoreError(f"The history database {self.path} is damaged ({text}).",
                              hint="Move the file away to start a fresh history (llmchat makes a new one), "
                                   "or use --no-save.")
        if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) and not self._writable():
            error = StoreError(f"The history database {self.path} is read-only here ({text}), so nothing can be "
                               "saved.", hint=f"Make {self.path.parent} writable, or use --no-save. Reading it "
                               "(`llmchat history`, `llmchat usage`) still works.")
            error.unwritable = True
            return error
        if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return StoreError(f"The history database {self.path} could not be written or read ({text}); "
                              "is the disk full?", hint="Free some space and try again, or use --no-save.")
        return StoreError(f"The history database {self.path} cannot be used: {text}.",
                          hint="Use --no-save to go on without it.")

    def _writable(self) -> bool:
        """Whether this process may write the file and its directory (os.access knows read-only mounts)."""
        directory = os.access(self.path.parent, os.W_OK)
        return directory and (not self.path.exists() or os.access(self.path, os.W_OK))

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def _write(self, patience: float | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, waiting up to the busy timeout
        (or `patience` seconds: a progress save skips a beat rather than stall the stream)."""
        with self._lock:
            if patience is None:
                self._db.execute("BEGIN IMMEDIATE")
            else:
                self._db.execute(f"PRAGMA busy_timeout = {int(patience * 1000)}")
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                finally:
                    self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # an error can end the transaction itself (SQLITE_FULL…)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for reads made of several statements."""
        with self._lock:
            if self._db.in_transaction:  # already inside a write: that is a snapshot too
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording ----------------------------------------------------------------------------

    def recorder(self, profile: Answerer, *, warn: Callable[[str], None] | None = None) -> Recorder:
        """The `TurnRecorder` for `run_turn`; cheap, so make one per turn or whenever the profile changes."""
        return Recorder(self, profile, warn=warn)

    def truncate(self, conversation: Conversation) -> None:
        """Forget the saved exchanges the caller dropped from `conversation` (the REPL's /undo), so a
        resume shows what the user last saw. Only those (`conversation.freed`): turns another process
        added to the same conversation stay. (/retry needs nothing: its question takes the freed slot.)"""
        if conversation.id is None or not conversation.freed:
            conversation.freed.clear()
            return
        try:
            with self._write() as db:
                for slot in conversation.freed:
                    delete_slot(db, conversation.id, slot)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        conversation.freed.clear()

    def _ensure(self, db: sqlite3.Connection, conversation: Conversation, profile: Answerer, upto: int,
                stamp: str) -> str:
        """The conversation's row, created on its first question (or recreated if `history rm` removed it
        while a chat was open, with the exchanges before `upto`, so nothing said is lost)."""
        if conversation.id is not None and db.execute(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation.id,)).fetchone():
            return conversation.id
        cid = conversation.id or self._new_id(db)
        first = conversation.exchanges[0].user if conversation.exchanges else ""
        db.execute("INSERT INTO conversations (id, title, profile, provider, model, system, created, updated) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (cid, make_title(first), profile.name, profile.provider, profile.model, conversation.system,
                    stamp, stamp))
        for index, earlier in enumerate(conversation.exchanges[:upto]):
            insert_row(db, cid, user_row(2 * index, earlier, stamp))
            save_images(db, cid, 2 * index, earlier.images)
            if earlier.answer or earlier.interrupted or earlier.rounds:
                insert_row(db, cid, answer_row(2 * index + 1, earlier, None, stamp))
        for index, exchange in enumerate(conversation.exchanges):  # written afresh: its own numbering
            exchange.slot = index
        conversation.freed.clear()
        conversation.id = cid
        return cid

    def _new_id(self, db: sqlite3.Connection) -> str:
        """8 hex digits: short enough to type, and 4 billion of them make a collision a rare retry."""
        while True:
            cid = secrets.token_hex(4)
            if not db.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone():
                return cid

    # -- reading ------------------------------------------------------------------------------

    @_translated
    def resolve(self, ref: str) -> str:
        """The id that `ref` names: "last", an exact id, or an unambiguous prefix of one."""
        ref = ref.strip()
        if ref == "last":
            cid = self._scalar("SELECT id FROM conversations ORDER BY updated DESC, rowid DESC LIMIT 1")
            if cid is None:
                raise NotFound("There is no saved conversation yet.", hint="Chat first; every turn is saved.")
            return cid
        with self._lock:
            rows = self._db.execute("SELECT id FROM conversations WHERE id = ? OR substr(id, 1, ?) = ? "
                                    "ORDER BY id = ? DESC, id LIMIT 6", (ref, len(ref), ref, ref)).fetchall()
        if ref and rows and (rows[0]["id"] == ref or len(rows) == 1):
            return rows[0]["id"]
        if not rows or not ref:
            raise NotFound(f"No saved conversation has the id '{ref}'.",
                           hint="`llmchat history list` shows the ids; `last` names the latest.")
        shown = ", ".join(r["id"] for r in rows[:5])
        raise NotFound(f"'{ref}' matches several conversations ({shown}{', …' if len(rows) > 5 else ''}).",
                       hint="Type more of the id.")

    @_translated
    def summary(self, ref: str) -> Summary:
        cid = self.resolve(ref)
        with self._lock:
            row = self._db.execute(SUMMARY_SQL + " WHERE c.id = ?", (cid,)).fetchone()
        if row is None:  # removed between resolve() and here, by another process
            raise NotFound(f"No saved conversation has the id '{ref}'.")
        return summary_from_row(row)

    @_translated
    def list_conversations(self, limit: int | None = 20, search: str | None = None) -> list[Summary]:
        """Conversations, most recently updated first; `search` keeps those with a message containing
        every word of it (case-insensitive substrings; in its text, or in its tool calls: search.py).
        `limit` None or <= 0: all of them."""
        where, params = ("", []) if not (search and search.split()) else search_clause(
            search, fts=self.has_fts, json=self.has_json)
        sql = SUMMARY_SQL + where + " ORDER BY c.updated DESC, c.rowid DESC"
        if limit and limit > 0:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return [summary_from_row(row) for row in self._db.execute(sql, params)]

    @_translated
    def messages(self, ref: str) -> tuple[Summary, list[StoredMessage]]:
        """The conversation's summary and every message in order."""
        row, rows = self._snapshot(ref)
        return summary_from_row(row), [message_from_row(r) for r in rows]

    def _snapshot(self, ref: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        """The conversation row and its message rows, read from one snapshot."""
        cid = self.resolve(ref)
        with self._read() as db:
            row = db.execute(SUMMARY_SQL + " WHERE c.id = ?", (cid,)).fetchone()
            rows = db.execute(f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE conversation = ? "
                              "ORDER BY position", (cid,)).fetchall()
        if row is None:  # removed between resolve() and here, by another process
            raise NotFound(f"No saved conversation has the id '{ref}'.")
        return row, rows

    @_translated
    def load_conversation(self, ref: str = "last") -> Conversation:
        """The conversation ready to continue: its system prompt and exchanges, interrupted answers kept
        and flagged, a question that never got an answer kept without one (so it is not resent)."""
        summary, stored = self.messages(ref)
        images = self._images(summary.id)
        conversation = Conversation(system=summary.system, id=summary.id)
        by_slot: dict[int, Exchange] = {}  # slots have gaps where a shared conversation had an /undo
        for message in stored:
            slot = message.position // 2
            if message.role == "user":
                by_slot[slot] = Exchange(user=message.content, model=message.model,
                                         images=images.get(message.position, ()), slot=slot)
                conversation.exchanges.append(by_slot[slot])
                continue
            exchange = by_slot.get(slot)
            if exchange is None:  # an answer without its question: nothing to attach it to
                continue
            exchange.answer, exchange.reasoning = message.content, message.reasoning or ""
            exchange.model = message.model or exchange.model
            exchange.interrupted, exchange.usage = message.interrupted, message.usage
            exchange.rounds = list(message.rounds)  # re-sent by Conversation.messages(), even without an answer
        conversation.summary = self.latest_summary(conversation.id or "", len(conversation.exchanges))
        if conversation.summary is not None:
            conversation.start = conversation.summary.covers
        return conversation

    def _images(self, cid: str) -> dict[int, tuple[Image, ...]]:
        """The images of each user message of `cid`, by position, in the order they were attached."""
        with self._lock:
            rows = self._db.execute("SELECT m.position, i.sha256, i.data, i.url FROM message_images m "
                                    "JOIN images i ON i.sha256 = m.sha256 WHERE m.conversation = ? "
                                    "ORDER BY m.position, m.ord", (cid,)).fetchall()
        found: dict[int, list[Image]] = {}
        for row in rows:
            if row["data"] is not None:
                image = Image.from_bytes(bytes(row["data"]), source=f"image {row['sha256'][:12]}")
            else:
                image = Image.from_url(row["url"])
            found.setdefault(row["position"], []).append(image)
        return {position: tuple(kept) for position, kept in found.items()}

    # -- summaries and usage ------------------------------------------------------------------

    def save_summary(self, conversation: Conversation, summary: ContextSummary) -> None:
        """Keep the summary with its conversation (a resume sends it again) and what it cost."""
        if conversation.id is None:
            return
        usage = summary.usage
        values = {"covers": summary.covers, "content": summary.text, "profile": summary.profile,
                  "model": summary.model, "cost": summary.cost, "currency": summary.currency, "created": records.now()}
        for column, field in USAGE_COLUMNS.items():
            if column in SUMMARY_COLUMNS:
                values[column] = getattr(usage, field) if usage is not None else None
        try:
            with self._write() as db:
                db.execute(f"INSERT INTO summaries (conversation, {', '.join(values)}) "
                           f"VALUES (?, {', '.join('?' * len(values))})", [conversation.id, *values.values()])
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @_translated
    def latest_summary(self, cid: str, exchanges: int) -> ContextSummary | None:
        """The newest summary of `cid` that covers no more than its `exchanges` (after /undo, fewer)."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM summaries WHERE conversation = ? "
                                   "AND covers <= ? ORDER BY id DESC LIMIT 1", (cid, exchanges)).fetchone()
        if row is None:
            return None
        return ContextSummary(text=row["content"], covers=row["covers"], profile=row["profile"], model=row["model"],
                              usage=usage_from_row(row), cost=row["cost"], currency=row["currency"])

    @_translated
    def usage_rows(self, since: str | None = None) -> list[UsageRow]:
        """Every answer and every summary call, with the tokens and cost saved with it, oldest first.

        `since` is an ISO 8601 UTC time as the store writes them (they compare as text).
        """
        where = " AND m.created >= ?" if since else ""
        sql = ("SELECT 'turn' AS kind, m.created, COALESCE(m.profile, c.profile) AS profile, "
               "COALESCE(m.model, c.model) AS model, " + ", ".join(f"m.{c}" for c in USAGE_COLUMNS) + ", "
               "m.cost, m.currency, 1 AS calls FROM messages m JOIN conversations c ON c.id = m.conversation "
               "WHERE m.role = 'assistant'" + where + " UNION ALL "
               "SELECT 'summary', s.created, s.profile, s.model, s.prompt_tokens, s.completion_tokens, "
               "s.total_tokens, s.reasoning_tokens, s.cached_tokens, NULL, s.cost, s.currency, 1 "
               "FROM summaries s" + (" WHERE s.created >= ?" if since else "") + " UNION ALL "
               # a remote batch job, once fetched: its answered rows at the batch price (schema 5)
               "SELECT 'batch', b.fetched, b.profile, b.model, b.prompt_tokens, b.completion_tokens, "
               "b.total_tokens, b.reasoning_tokens, b.cached_tokens, NULL, b.cost, b.currency, b.rows "
               "FROM batch_jobs b WHERE b.fetched IS NOT NULL AND b.rows > 0" + (" AND b.fetched >= ?" if since else "")
               + " ORDER BY 2")
        with self._read() as db:
            rows = db.execute(sql, (since, since, since) if since else ()).fetchall()
        return [UsageRow(kind=r["kind"], created=r["created"], profile=r["profile"], model=r["model"],
                         usage=usage_from_row(r), cost=r["cost"], currency=r["currency"],
                         calls=r["calls"]) for r in rows]

    # -- export, import, remove ---------------------------------------------------------------

    @_translated
    def export_record(self, ref: str) -> dict[str, Any]:
        """Everything saved about one conversation, as JSON-ready data that `import_record` restores."""
        row, rows = self._snapshot(ref)
        return build_record(row, rows, self._images(row["id"]))

    def export_json(self, ref: str) -> str:
        return json.dumps(self.export_record(ref), ensure_ascii=False, indent=2) + "\n"

    @_translated
    def import_record(self, record: Any, source: str = "the file") -> Imported:
        """Save an exported conversation under its own id; the same conversation already saved is left
        alone, and a different one holding that id makes the import take a fresh id (reported)."""
        conversation, messages, images = validate_record(record, source)
        original = conversation["id"]
        with self._write() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (original,)).fetchone():
                if self._same(original, record):
                    return Imported(original, original, duplicate=True)
                conversation["id"] = self._new_id(db)
            db.execute(f"INSERT INTO conversations ({', '.join(CONVERSATION_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(CONVERSATION_COLUMNS))})",
                       [conversation[c] for c in CONVERSATION_COLUMNS])
            for row in messages:
                insert_row(db, conversation["id"], row)
            for position, attached in images.items():
                save_images(db, conversation["id"], position, attached)
        return Imported(conversation["id"], original)

    def _same(self, cid: str, record: dict[str, Any]) -> bool:
        """Whether `record` is what is saved as `cid`, compared as validated rows so that a file written
        before a field existed (e.g. costs, images) still matches the conversation it came from."""
        def key(found: tuple[dict[str, Any], list[dict[str, Any]], dict[int, tuple[Image, ...]]]) -> Any:
            conversation, rows, images = found
            return conversation, rows, {p: [i.sha256 for i in kept] for p, kept in images.items()}

        again = json.loads(json.dumps(record))
        return key(validate_record(self.export_record(cid), "")) == key(validate_record(again, ""))

    @_translated
    def remove(self, ref: str) -> Summary:
        """Delete a conversation and its messages (and their index entries); returns what was deleted."""
        summary = self.summary(ref)
        with self._write() as db:
            db.execute("DELETE FROM messages WHERE conversation = ?", (summary.id,))
            db.execute("DELETE FROM message_images WHERE conversation = ?", (summary.id,))
            db.execute("DELETE FROM summaries WHERE conversation = ?", (summary.id,))
            db.execute("DELETE FROM conversations WHERE id = ?", (summary.id,))
        return summary


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED, whatever the message says ("database is locked", "… busy")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
