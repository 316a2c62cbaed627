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

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import random
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmchat.core.conversation import ContextSummary, Conversation, Exchange
from llmchat.core.errors import ConfigError, LlmchatError
from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.core.images import Image

if TYPE_CHECKING:
    from llmchat.config.profile import Profile

DB_FILENAME = "history.db"
BUSY_TIMEOUT_S = 10.0
EXPORT_FORMAT = "llmchat-conversation"
EXPORT_VERSION = 1
TITLE_CHARS = 80

# Stored column -> Usage / Timing field. The export uses the column names (as `--json` does).
USAGE_COLUMNS = {"prompt_tokens": "prompt", "completion_tokens": "completion", "total_tokens": "total",
                 "reasoning_tokens": "reasoning", "cached_tokens": "cached", "eval_s": "eval_seconds"}
TIMING_COLUMNS = ("ttft_s", "total_s", "thinking_s", "tokens_per_s")
COST_COLUMNS = ("profile", "cost", "currency")  # schema 2: who answered, and what it cost then
MESSAGE_COLUMNS = ("position", "role", "content", "reasoning", "model", *USAGE_COLUMNS, *TIMING_COLUMNS,
                   "finish_reason", "interrupted", "created", *COST_COLUMNS)
SUMMARY_COLUMNS = ("covers", "content", "profile", "model", "prompt_tokens", "completion_tokens", "total_tokens",
                   "reasoning_tokens", "cached_tokens", "cost", "currency", "created")
CONVERSATION_COLUMNS = ("id", "title", "profile", "provider", "model", "system", "created", "updated")


class StoreError(LlmchatError):
    """The history database cannot be used (locked for too long, corrupt, written by a newer llmchat)."""

    #: The file or its directory cannot be written here (a read-only mount): reading may still work.
    unwritable = False


class SymlinkRefused(StoreError):
    """The history database is a symbolic link: refused before anything is created or chmod-ed through it
    (a usage problem, exit 2)."""

    exit_code = 2


class NotFound(ConfigError):
    """No conversation matches the ID the user gave (a usage error: exit 2)."""


class ImportFormatError(ConfigError):
    """The file given to `history import` is not a conversation exported by llmchat (exit 2)."""


# ------------------------------------------------------------------------------------------- location


def data_dir() -> Path:
    """Where llmchat keeps its data; XDG_DATA_HOME moves it on Linux (the tests rely on that)."""
    from platformdirs import user_data_path

    return user_data_path("llmchat", appauthor=False)


def default_path() -> Path:
    return data_dir() / DB_FILENAME


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
        _refuse_symlink(path)
    return Store(path, reading=True) if path.exists() else None


def _refuse_symlink(path: Path) -> None:
    """A link could point the owner-only history (and our chmod) at any file: never follow one."""
    raise SymlinkRefused(f"The history database {path} is a symbolic link; llmchat does not follow it.",
                         hint="Move the real file to that path (or remove the link), or use --no-save.")


def _create_private(path: Path) -> None:
    """Create the directory (0700) and an empty file (0600) before SQLite does it with the umask's mode."""
    if path.is_symlink():
        _refuse_symlink(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    try:  # O_EXCL also fails on a link, dangling or not: nothing is created through one
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if path.is_symlink():  # made between the check above and here
            _refuse_symlink(path)
        _tighten(path)
        return
    os.close(fd)
    os.chmod(path, 0o600)  # the umask may have removed bits, never added: this only makes it exact


def _tighten(path: Path) -> None:
    """A file made by something else (an older copy, a restore) with group/other bits loses them."""
    with contextlib.suppress(OSError, NotImplementedError):
        mode = path.lstat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700, follow_symlinks=False)


# ------------------------------------------------------------------------------------------ schema


def _migrate_to_1(db: sqlite3.Connection, fts: bool) -> None:
    db.execute("""
        CREATE TABLE conversations (
            id       TEXT PRIMARY KEY,
            title    TEXT NOT NULL,
            profile  TEXT,
            provider TEXT,
            model    TEXT,
            system   TEXT,
            created  TEXT NOT NULL,
            updated  TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX conversations_updated ON conversations (updated)")
    db.execute("""
        CREATE TABLE messages (
            id                INTEGER PRIMARY KEY,
            conversation      TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position          INTEGER NOT NULL,
            role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content           TEXT NOT NULL,
            reasoning         TEXT,
            model             TEXT,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            total_tokens      INTEGER,
            reasoning_tokens  INTEGER,
            cached_tokens     INTEGER,
            eval_s            REAL,
            ttft_s            REAL,
            total_s           REAL,
            thinking_s        REAL,
            tokens_per_s      REAL,
            finish_reason     TEXT,
            interrupted       INTEGER NOT NULL DEFAULT 0,
            created           TEXT NOT NULL,
            UNIQUE (conversation, position)
        )""")
    if fts:
        _create_fts(db)


def _create_fts(db: sqlite3.Connection) -> None:
    """The trigram index and the triggers that keep it in step; skipped when this SQLite lacks them."""
    db.execute("SAVEPOINT fts")
    try:
        db.execute("CREATE VIRTUAL TABLE messages_fts USING fts5("
                   "content, content='messages', content_rowid='id', tokenize='trigram')")
    except sqlite3.OperationalError:  # no FTS5, or an FTS5 older than 3.34 without trigram
        db.execute("ROLLBACK TO fts")
        db.execute("RELEASE fts")
        return
    # REPLACE would skip delete triggers; the store never uses it, so these three cover every change.
    db.execute("CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
               "INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END")
    db.execute("CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
               "INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END")
    db.execute("CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
               "INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content); "
               "INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END")
    db.execute("RELEASE fts")


def _migrate_to_2(db: sqlite3.Connection, fts: bool) -> None:
    """Issue 6: the cost and profile of each answer, and the summaries that stand in for old turns.

    Answers saved before this have no cost (the price then is unknown); their profile is the
    conversation's, the best guess there is.
    """
    for column, kind in (("profile", "TEXT"), ("cost", "REAL"), ("currency", "TEXT")):
        db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    db.execute("UPDATE messages SET profile = (SELECT c.profile FROM conversations c "
               "WHERE c.id = messages.conversation) WHERE role = 'assistant'")
    db.execute("""
        CREATE TABLE summaries (
            id                INTEGER PRIMARY KEY,
            conversation      TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            covers            INTEGER NOT NULL,  -- it replaces exchanges 0 .. covers - 1
            content           TEXT NOT NULL,
            profile           TEXT,
            model             TEXT,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            total_tokens      INTEGER,
            reasoning_tokens  INTEGER,
            cached_tokens     INTEGER,
            cost              REAL,
            currency          TEXT,
            created           TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX summaries_conversation ON summaries (conversation, id)")
    db.execute("CREATE INDEX messages_created ON messages (created)")


def _migrate_to_3(db: sqlite3.Connection, fts: bool) -> None:
    """Issue 8: images attached to questions, each kept once by hash however often it is attached."""
    db.execute("""
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            mime   TEXT,
            data   BLOB,  -- NULL for a URL (never downloaded)
            url    TEXT
        )""")
    db.execute("""
        CREATE TABLE message_images (
            conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position     INTEGER NOT NULL,  -- the user message's position
            ord          INTEGER NOT NULL,
            sha256       TEXT NOT NULL REFERENCES images (sha256),
            PRIMARY KEY (conversation, position, ord)
        )""")


#: MIGRATIONS[n] upgrades a database at user_version n to n + 1; append, never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection, bool], None]] = [_migrate_to_1, _migrate_to_2, _migrate_to_3]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Summary:
    """One row of `history list`."""

    id: str
    title: str
    profile: str | None
    provider: str | None
    model: str | None
    system: str | None
    created: str  # ISO 8601, UTC
    updated: str
    turns: int

    def as_json(self) -> dict[str, Any]:
        """The `history list --json` shape (DESIGN §2)."""
        return {"id": self.id, "title": self.title, "profile": self.profile, "model": self.model,
                "turns": self.turns, "updated": self.updated}


@dataclass(frozen=True)
class StoredMessage:
    """A message as saved, with everything the turn reported; what `history show` draws."""

    position: int
    role: str
    content: str
    reasoning: str | None
    model: str | None
    usage: Usage | None
    timing: Timing | None
    finish_reason: str | None
    interrupted: bool
    created: str
    profile: str | None = None
    cost: float | None = None
    currency: str | None = None

    def result(self) -> TurnResult:
        """The turn as the renderers know it, so the usage line reads the same as it did live."""
        return TurnResult(model=self.model or "", answer=self.content, reasoning=self.reasoning or "",
                          finish_reason=self.finish_reason, usage=self.usage, timing=self.timing or Timing(),
                          interrupted=self.interrupted)


@dataclass(frozen=True)
class UsageRow:
    """One billed call, as `llmchat usage` adds them up: a turn's answer, or a summary call."""

    kind: str  # "turn" | "summary"
    created: str
    profile: str | None
    model: str | None
    usage: Usage | None
    cost: float | None
    currency: str | None


@dataclass(frozen=True)
class Imported:
    """What `import_record` did: the id it is saved under, and why that differs from the file's."""

    id: str
    original_id: str
    duplicate: bool = False  # the same conversation was already saved: nothing written

    @property
    def renamed(self) -> bool:
        return self.id != self.original_id and not self.duplicate


def now() -> str:
    """UTC, ISO 8601 with milliseconds: sorts as text, reads in a dump, round-trips through JSON."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_title(text: str, limit: int = TITLE_CHARS) -> str:
    """The first user message on one line, shortened: enough to recognise a conversation in a list."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


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
            _create_private(self.path)
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

    def recorder(self, profile: Profile, *, warn: Callable[[str], None] | None = None) -> Recorder:
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
                    _delete_slot(db, conversation.id, slot)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        conversation.freed.clear()

    def _ensure(self, db: sqlite3.Connection, conversation: Conversation, profile: Profile, upto: int,
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
            _insert(db, cid, _user_row(2 * index, earlier, stamp))
            _save_images(db, cid, 2 * index, earlier.images)
            if earlier.answer or earlier.interrupted:
                _insert(db, cid, _answer_row(2 * index + 1, earlier, None, stamp))
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
            row = self._db.execute(_SUMMARY_SQL + " WHERE c.id = ?", (cid,)).fetchone()
        if row is None:  # removed between resolve() and here, by another process
            raise NotFound(f"No saved conversation has the id '{ref}'.")
        return _summary(row)

    @_translated
    def list_conversations(self, limit: int | None = 20, search: str | None = None) -> list[Summary]:
        """Conversations, most recently updated first; `search` keeps those with a message containing
        every word of it (case-insensitive substrings). `limit` None or <= 0: all of them."""
        where, params = ("", []) if not (search and search.split()) else self._search_clause(search)
        sql = _SUMMARY_SQL + where + " ORDER BY c.updated DESC, c.rowid DESC"
        if limit and limit > 0:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return [_summary(row) for row in self._db.execute(sql, params)]

    def _search_clause(self, search: str) -> tuple[str, list[Any]]:
        """Words of 3+ characters go through the trigram index; shorter ones (which a trigram index
        cannot find) and every word without FTS5 use LIKE, so both paths mean the same."""
        words = search.split()
        indexed = [w for w in words if len(w) >= 3] if self.has_fts else []
        scanned = [w for w in words if w not in indexed]
        likes = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in scanned)
        params: list[Any] = [_like_pattern(w) for w in scanned]
        if indexed:
            inner = ("SELECT m.conversation FROM messages_fts f JOIN messages m ON m.id = f.rowid "
                     "WHERE messages_fts MATCH ?" + (f" AND {likes}" if likes else ""))
            params.insert(0, " ".join('"' + w.replace('"', '""') + '"' for w in indexed))
        else:
            inner = f"SELECT m.conversation FROM messages m WHERE {likes}"
        return f" WHERE c.id IN ({inner})", params

    @_translated
    def messages(self, ref: str) -> tuple[Summary, list[StoredMessage]]:
        """The conversation's summary and every message in order."""
        row, rows = self._snapshot(ref)
        return _summary(row), [_message(r) for r in rows]

    def _snapshot(self, ref: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        """The conversation row and its message rows, read from one snapshot."""
        cid = self.resolve(ref)
        with self._read() as db:
            row = db.execute(_SUMMARY_SQL + " WHERE c.id = ?", (cid,)).fetchone()
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
                  "model": summary.model, "cost": summary.cost, "currency": summary.currency, "created": now()}
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
                              usage=_usage(row), cost=row["cost"], currency=row["currency"])

    @_translated
    def usage_rows(self, since: str | None = None) -> list[UsageRow]:
        """Every answer and every summary call, with the tokens and cost saved with it, oldest first.

        `since` is an ISO 8601 UTC time as the store writes them (they compare as text).
        """
        where = " AND m.created >= ?" if since else ""
        sql = ("SELECT 'turn' AS kind, m.created, COALESCE(m.profile, c.profile) AS profile, "
               "COALESCE(m.model, c.model) AS model, " + ", ".join(f"m.{c}" for c in USAGE_COLUMNS) + ", "
               "m.cost, m.currency FROM messages m JOIN conversations c ON c.id = m.conversation "
               "WHERE m.role = 'assistant'" + where + " UNION ALL "
               "SELECT 'summary', s.created, s.profile, s.model, s.prompt_tokens, s.completion_tokens, "
               "s.total_tokens, s.reasoning_tokens, s.cached_tokens, NULL, s.cost, s.currency "
               "FROM summaries s" + (" WHERE s.created >= ?" if since else "") + " ORDER BY 2")
        with self._read() as db:
            rows = db.execute(sql, (since, since) if since else ()).fetchall()
        return [UsageRow(kind=r["kind"], created=r["created"], profile=r["profile"], model=r["model"],
                         usage=_usage(r), cost=r["cost"], currency=r["currency"]) for r in rows]

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
        conversation, messages, images = _validate(record, source)
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
                _insert(db, conversation["id"], row)
            for position, attached in images.items():
                _save_images(db, conversation["id"], position, attached)
        return Imported(conversation["id"], original)

    def _same(self, cid: str, record: dict[str, Any]) -> bool:
        """Whether `record` is what is saved as `cid`, compared as validated rows so that a file written
        before a field existed (e.g. costs, images) still matches the conversation it came from."""
        def key(found: tuple[dict[str, Any], list[dict[str, Any]], dict[int, tuple[Image, ...]]]) -> Any:
            conversation, rows, images = found
            return conversation, rows, {p: [i.sha256 for i in kept] for p, kept in images.items()}

        return key(_validate(self.export_record(cid), "")) == key(_validate(json.loads(json.dumps(record)), ""))

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


_SUMMARY_SQL = ("SELECT c.id, c.title, c.profile, c.provider, c.model, c.system, c.created, c.updated, "
                "(SELECT count(*) FROM messages t WHERE t.conversation = c.id AND t.role = 'user') AS turns "
                "FROM conversations c")


def _summary(row: sqlite3.Row) -> Summary:
    return Summary(**{name: row[name] for name in (*CONVERSATION_COLUMNS, "turns")})


def _usage(row: Mapping[str, Any]) -> Usage | None:
    """The usage columns of a row (those it has), or None when the server reported none of them."""
    present = {column: row[column] for column in USAGE_COLUMNS if column in row.keys()}  # noqa: SIM118
    if all(value is None for value in present.values()):
        return None
    return Usage(**{USAGE_COLUMNS[column]: value for column, value in present.items()})


def _message(row: Mapping[str, Any]) -> StoredMessage:
    usage = _usage(row)
    timing = None
    if any(row[c] is not None for c in TIMING_COLUMNS):
        timing = Timing(**{c: row[c] for c in TIMING_COLUMNS})
    return StoredMessage(position=row["position"], role=row["role"], content=row["content"],
                         reasoning=row["reasoning"], model=row["model"], usage=usage, timing=timing,
                         finish_reason=row["finish_reason"], interrupted=bool(row["interrupted"]),
                         created=row["created"], profile=row["profile"], cost=row["cost"], currency=row["currency"])


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED, whatever the message says ("database is locked", "… busy")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _insert(db: sqlite3.Connection, cid: str, row: dict[str, Any]) -> None:
    columns = ["conversation", *row]
    db.execute(f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
               [cid, *row.values()])


def _save_images(db: sqlite3.Connection, cid: str, position: int, images: tuple[Image, ...]) -> None:
    """Each image once by hash (INSERT OR IGNORE), and which message carries it, in order."""
    for ord_, image in enumerate(images):
        db.execute("INSERT OR IGNORE INTO images (sha256, mime, data, url) VALUES (?, ?, ?, ?)",
                   (image.sha256, image.mime, image.data, image.url))
        db.execute("INSERT OR REPLACE INTO message_images (conversation, position, ord, sha256) VALUES (?, ?, ?, ?)",
                   (cid, position, ord_, image.sha256))


def _user_row(position: int, exchange: Exchange, stamp: str) -> dict[str, Any]:
    return {"position": position, "role": "user", "content": exchange.user, "model": exchange.model,
            "created": stamp}


def _answer_row(position: int, exchange: Exchange, result: TurnResult | None, stamp: str,
                profile: Profile | None = None) -> dict[str, Any]:
    """The assistant row; an answer that failed before any text is saved empty, so the turn is on record.

    Its cost is computed now, from the price the profile has now: that is what the turn cost.
    """
    usage = result.usage if result is not None else exchange.usage
    row: dict[str, Any] = {
        "position": position, "role": "assistant", "content": exchange.answer,
        "reasoning": exchange.reasoning or None, "model": result.model if result else exchange.model,
    }
    for column, field in USAGE_COLUMNS.items():
        row[column] = getattr(usage, field) if usage is not None else None
    for column in TIMING_COLUMNS:
        row[column] = getattr(result.timing, column) if result is not None else None
    row["finish_reason"] = result.finish_reason if result is not None else None
    row["interrupted"] = int(exchange.interrupted)
    row["created"] = stamp
    price = profile.price if profile is not None else None
    cost = price.cost(usage) if price is not None and usage is not None and result is not None else None
    row["profile"] = profile.name if profile is not None else None
    row["cost"], row["currency"] = cost, (price.currency if price is not None and cost is not None else None)
    return row


# ------------------------------------------------------------------------------------- recorder


def _index_of(conversation: Conversation, exchange: Exchange) -> int:
    """Where `exchange` sits in the history (by identity: two turns may ask the same question)."""
    for index in range(len(conversation.exchanges) - 1, -1, -1):
        if conversation.exchanges[index] is exchange:
            return index
    raise ValueError("the exchange is not part of the conversation")


class Recorder:
    """`chat.TurnRecorder` for one store and profile: saves each question before the request, the answer
    as far as it got about once a second while it streams, and the whole answer when the turn ends.

    A question that cannot be saved raises `StoreError` (before anything is sent: the promise is that
    what is asked is on record). An answer that cannot be saved is reported through `warn` instead,
    since raising would skip closing the view after the user already has the answer on screen; a
    progress save that fails is skipped silently (the final save reports).

    Several processes may add to one conversation (a chat and `ask -c`, two chats): a new question is
    appended after whatever is saved, never over it; only the slots this process freed (/retry, /undo:
    `Conversation.freed`) are replaced or removed.
    """

    def __init__(self, store: Store, profile: Profile, *, warn: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.profile = profile
        self.warn = warn or _warn

    def question(self, conversation: Conversation, exchange: Exchange) -> None:
        index = _index_of(conversation, exchange)
        stamp = now()
        try:
            with self.store._write() as db:
                cid = self.store._ensure(db, conversation, self.profile, index, stamp)
                freed = list(conversation.freed)
                for slot in freed:  # this process's own turns, dropped by /retry or /undo
                    _delete_slot(db, cid, slot)
                slot = freed[-1] if freed else _next_slot(db, cid)  # a /retry takes its turn's place
                _insert(db, cid, _user_row(2 * slot, exchange, stamp))
                _save_images(db, cid, 2 * slot, exchange.images)
                db.execute("UPDATE conversations SET updated = ?, profile = ?, provider = ?, model = ?, system = ?, "
                           "title = CASE WHEN ? THEN ? ELSE title END WHERE id = ?",
                           (stamp, self.profile.name, self.profile.provider, exchange.model or self.profile.model,
                            conversation.system, slot == 0, make_title(exchange.user), cid))
        except sqlite3.Error as exc:
            raise self.store._error(exc) from None
        conversation.freed.clear()
        exchange.slot = slot
        before = conversation.exchanges[index - 1].slot if index else None
        expected = before + 1 if before is not None else index
        if not freed and slot > expected:
            added = slot - expected
            self.warn(f"Another llmchat added {added} turn{'s' if added != 1 else ''} to this conversation; "
                      f"this one is saved after them (/resume {cid} shows them all).")

    def progress(self, conversation: Conversation, exchange: Exchange, answer: str, reasoning: str) -> None:
        """The answer as far as it got, saved marked interrupted (which it is, if nothing saves it again):
        one upsert of its row, so a SIGKILL loses at most the last PROGRESS_INTERVAL_S of it."""
        if exchange.slot is None or conversation.id is None:
            return
        try:
            with self.store._write(patience=0.05) as db:
                db.execute("INSERT INTO messages (conversation, position, role, content, reasoning, model, "
                           "interrupted, created, profile) VALUES (?, ?, 'assistant', ?, ?, ?, 1, ?, ?) "
                           "ON CONFLICT (conversation, position) DO UPDATE SET content = excluded.content, "
                           "reasoning = excluded.reasoning",
                           (conversation.id, 2 * exchange.slot + 1, answer, reasoning or None, exchange.model, now(),
                            self.profile.name))
        except sqlite3.Error:
            pass  # busy, full, removed: the answer is saved when the turn ends, or that save says why not

    def answer(self, conversation: Conversation, exchange: Exchange, result: TurnResult) -> None:
        try:
            self._answer(conversation, exchange, result)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP in the middle of the save: it was rolled back
            self._answer(conversation, exchange, result)  # once more (TERM/HUP are ignored by now), then stop
            raise

    def _answer(self, conversation: Conversation, exchange: Exchange, result: TurnResult) -> None:
        try:
            index = _index_of(conversation, exchange)
            stamp = now()
            with self.store._write() as db:
                cid = self.store._ensure(db, conversation, self.profile, index, stamp)
                slot = exchange.slot if exchange.slot is not None else _next_slot(db, cid)
                if not db.execute("SELECT 1 FROM messages WHERE conversation = ? AND position = ?",
                                  (cid, 2 * slot)).fetchone():
                    _insert(db, cid, _user_row(2 * slot, exchange, stamp))  # removed mid-turn elsewhere
                    _save_images(db, cid, 2 * slot, exchange.images)
                db.execute("DELETE FROM messages WHERE conversation = ? AND position = ?", (cid, 2 * slot + 1))
                _insert(db, cid, _answer_row(2 * slot + 1, exchange, result, stamp, self.profile))
                db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (stamp, cid))
            exchange.slot = slot
        except (sqlite3.Error, ValueError) as exc:
            self.warn(f"The answer could not be saved to history: {exc}.")


def _next_slot(db: sqlite3.Connection, cid: str) -> int:
    """The first exchange number after everything saved in `cid`, whoever saved it."""
    last = db.execute("SELECT max(position) FROM messages WHERE conversation = ?", (cid,)).fetchone()[0]
    return 0 if last is None else last // 2 + 1


def _delete_slot(db: sqlite3.Connection, cid: str, slot: int) -> None:
    """Remove one exchange (question, answer, images) from the store."""
    db.execute("DELETE FROM messages WHERE conversation = ? AND position IN (?, ?)", (cid, 2 * slot, 2 * slot + 1))
    db.execute("DELETE FROM message_images WHERE conversation = ? AND position = ?", (cid, 2 * slot))


def _warn(text: str) -> None:
    from llmchat.core.safe_text import sanitize

    print(sanitize(text), file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------- export / import
#
# One transcript format (DESIGN §2, "The conversation export"): `history export --format json` and the
# REPL's `/save FILE.json` write it, `history import` reads it (and the older `/save` JSON), and the
# Markdown of both is drawn from it. `build_record` is the one place a record is made, from the store's
# rows or from a conversation held in memory (`conversation_record`, for a chat that is not saved).


def build_record(conversation: Mapping[str, Any], rows: Iterable[Mapping[str, Any]],
                 images: Mapping[int, tuple[Image, ...]]) -> dict[str, Any]:
    """The export of one conversation: its row, its message rows in order, the images of each question
    (by the position the rows give). Positions are numbered afresh: a shared conversation may have gaps."""
    record: dict[str, Any] = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION}
    record.update({name: conversation[name] for name in CONVERSATION_COLUMNS})
    record["messages"] = []
    exchange = -1
    for row in rows:
        message = _export_message(row)
        if row["role"] == "user":
            exchange += 1
            message["images"] = [_export_image(image) for image in images.get(row["position"], ())]
        message["position"] = 2 * exchange + (row["role"] == "assistant")
        record["messages"].append(message)
    return record


def conversation_record(conversation: Conversation, profile: Profile, *, cid: str, created: str,
                        model: str | None = None) -> dict[str, Any]:
    """The export of a conversation that is only in memory (`--no-save`, a profile with save = false):
    the rows the recorder would have written, so it reads exactly like one exported from the store.
    What only a live turn knows (timings, finish reasons, costs) is not kept in memory, so it is null."""
    stamp = now()
    first = conversation.exchanges[0].user if conversation.exchanges else ""
    last_model = next((e.model for e in reversed(conversation.exchanges) if e.model), None)
    row = {"id": cid, "title": make_title(first), "profile": profile.name, "provider": profile.provider,
           "model": last_model or model or profile.model, "system": conversation.system,
           "created": created, "updated": stamp}
    rows: list[dict[str, Any]] = []
    images: dict[int, tuple[Image, ...]] = {}
    for index, exchange in enumerate(conversation.exchanges):
        rows.append(_user_row(2 * index, exchange, stamp))
        images[2 * index] = exchange.images
        rows.append(_answer_row(2 * index + 1, exchange, None, stamp))
    blank = dict.fromkeys(MESSAGE_COLUMNS, None) | {"interrupted": 0}  # what the table's defaults fill in
    return build_record(row, [blank | r for r in rows], images)


def record_parts(record: Any, source: str = "the file") -> tuple[Summary, list[StoredMessage]]:
    """A record as `history show` and the Markdown transcript read the store: summary and messages."""
    conversation, rows, _ = _validate(record, source)
    turns = sum(row["role"] == "user" for row in rows)
    return Summary(**conversation, turns=turns), [_message(row) for row in rows]


def _export_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """One message for the export: the same keys for every message, null where nothing is known."""
    usage = {column: row[column] for column in USAGE_COLUMNS}
    timing = {column: row[column] for column in TIMING_COLUMNS}
    return {
        "position": row["position"], "role": row["role"], "content": row["content"],
        "reasoning": row["reasoning"], "model": row["model"],
        "usage": usage if any(v is not None for v in usage.values()) else None,
        "timing": timing if any(v is not None for v in timing.values()) else None,
        "finish_reason": row["finish_reason"], "interrupted": bool(row["interrupted"]), "created": row["created"],
        **{column: row[column] for column in COST_COLUMNS},
    }


def _export_image(image: Image) -> dict[str, Any]:
    """An attached image as the store keeps it: by hash, with its bytes (base64) or the URL it names."""
    data = base64.b64encode(image.data).decode("ascii") if image.data is not None else None
    return {"sha256": image.sha256, "mime": image.mime, "data": data, "url": image.url}


def _validate(record: Any, source: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, tuple[Image, ...]]]:
    """Check an export and turn it into rows; errors say which field is wrong, since files get edited."""
    def fail(what: str) -> ImportFormatError:
        return ImportFormatError(f"{source}: {what}", hint="`history import` reads files written by "
                                 "`llmchat history export ID --format json` or by the chat's /save FILE.json.")

    if _is_legacy_save(record):
        record = _from_legacy_save(record, fail)
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise fail(f"not an llmchat conversation export (expected \"format\": \"{EXPORT_FORMAT}\").")
    if record.get("version") != EXPORT_VERSION:
        raise fail(f"export version {record.get('version')!r} is not one this llmchat reads ({EXPORT_VERSION}).")
    conversation: dict[str, Any] = {}
    for name in CONVERSATION_COLUMNS:
        value = record.get(name)
        required = name in ("id", "title", "created", "updated")
        if not (isinstance(value, str) and (value or name == "title") or (value is None and not required)):
            raise fail(f"\"{name}\" must be {'a string' if required else 'a string or null'}.")
        conversation[name] = value
    if not conversation["id"].strip() or len(conversation["id"]) > 64:
        raise fail("\"id\" must be a short non-empty string.")
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise fail("\"messages\" must be a list.")
    rows = [_message_row(message, n, fail) for n, message in enumerate(messages)]
    _check_layout(rows, fail)
    images = {row["position"]: found for n, (message, row) in enumerate(zip(messages, rows, strict=True))
              if (found := _message_images(message, row, n, fail))}
    return conversation, rows, images


def _message_images(message: dict[str, Any], row: dict[str, Any], n: int,
                    fail: Callable[[str], ImportFormatError]) -> tuple[Image, ...]:
    """The images of one question, checked as an attached file is (format, size) and against their hash,
    so an edited or truncated file fails here rather than at the server on the next turn."""
    entries = message.get("images")
    if entries is None:  # files exported before images were carried
        return ()
    where = f"messages[{n}].images"
    if not isinstance(entries, list) or entries and row["role"] != "user":
        raise fail(f"{where} must be a list, and only on a user message.")
    found: list[Image] = []
    for k, entry in enumerate(entries):
        data, url = (entry.get("data"), entry.get("url")) if isinstance(entry, dict) else (None, None)
        try:
            if isinstance(data, str) and url is None:
                image = Image.from_bytes(base64.b64decode(data, validate=True), source=f"{where}[{k}]")
            elif isinstance(url, str) and data is None:
                image = Image.from_url(url)
            else:
                raise fail(f"{where}[{k}] must have either \"data\" (base64) or \"url\".")
        except (binascii.Error, ValueError, ConfigError) as exc:
            if isinstance(exc, ImportFormatError):
                raise
            raise fail(f"{where}[{k}] is not a usable image ({getattr(exc, 'message', exc)}).") from None
        if entry.get("sha256") not in (None, image.sha256):
            raise fail(f"{where}[{k}].sha256 does not match the image.")
        found.append(image)
    return tuple(found)


def _is_legacy_save(record: Any) -> bool:
    """A file written by `/save FILE.json` before the one format (no "format" key, a "saved" time)."""
    return (isinstance(record, dict) and "format" not in record and "saved" in record
            and isinstance(record.get("messages"), list))


def _from_legacy_save(old: dict[str, Any], fail: Callable[[str], ImportFormatError]) -> dict[str, Any]:
    """The old `/save` JSON as an export, so files saved before still import. It had no id: one is made
    from its content, so importing the same file twice finds it already there."""
    cid = hashlib.sha256(json.dumps(old, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:8]
    saved = old.get("saved") if isinstance(old.get("saved"), str) and old.get("saved") else now()
    messages: list[dict[str, Any]] = []
    exchange = -1
    for n, message in enumerate(old["messages"]):
        if not isinstance(message, dict):
            raise fail(f"messages[{n}] must be an object.")
        role = message.get("role")
        if role == "system":
            continue
        exchange += role == "user"
        usage = message.get("usage")
        messages.append({
            "position": 2 * exchange + (role == "assistant"), "role": role, "content": message.get("content"),
            "reasoning": message.get("reasoning"), "model": message.get("model"),
            "usage": {column: usage.get(column) for column in USAGE_COLUMNS} if isinstance(usage, dict) else None,
            "timing": None, "finish_reason": None, "interrupted": bool(message.get("interrupted")),
            "created": saved, "profile": old.get("profile") if role == "assistant" else None,
        })
    first = next((m["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], str)), "")
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "id": cid, "title": make_title(first),
            "profile": old.get("profile"), "provider": old.get("provider"), "model": old.get("model"),
            "system": old.get("system"), "created": saved, "updated": saved, "messages": messages}


def _message_row(message: Any, n: int, fail: Callable[[str], ImportFormatError]) -> dict[str, Any]:
    where = f"messages[{n}]"
    if not isinstance(message, dict):
        raise fail(f"{where} must be an object.")

    def get(key: str, kinds: tuple[type, ...], nullable: bool = True) -> Any:
        value = message.get(key)
        if value is None and nullable:
            return None
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise fail(f"{where}.{key} has the wrong type ({type(value).__name__}).")
        return value

    row: dict[str, Any] = {"position": get("position", (int,), False), "role": get("role", (str,), False),
                           "content": get("content", (str,), False), "reasoning": get("reasoning", (str,)),
                           "model": get("model", (str,))}
    if row["role"] not in ("user", "assistant"):
        raise fail(f"{where}.role must be \"user\" or \"assistant\".")
    for group, columns, kinds in (("usage", tuple(USAGE_COLUMNS), (int,)), ("timing", TIMING_COLUMNS, (int, float))):
        values = get(group, (dict,)) or {}
        for column in columns:
            allowed = (int, float) if column == "eval_s" else kinds
            value = values.get(column)
            if value is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
                raise fail(f"{where}.{group}.{column} must be a number or null.")
            row[column] = value
    row["finish_reason"] = get("finish_reason", (str,))
    row["interrupted"] = int(get("interrupted", (bool,), False))
    row["created"] = get("created", (str,), False)
    row["profile"], row["currency"] = get("profile", (str,)), get("currency", (str,))
    row["cost"] = get("cost", (int, float))  # absent in files exported before costs were saved
    return row


def _check_layout(rows: list[dict[str, Any]], fail: Callable[[str], ImportFormatError]) -> None:
    """The store's invariant: user k at 2k, its answer (if any) at 2k + 1, in order, without gaps."""
    expected_user = 0
    for n, row in enumerate(rows):
        position = row["position"]
        if row["role"] == "user" and position == expected_user:
            expected_user += 2
        elif not (row["role"] == "assistant" and position == expected_user - 1 and n
                  and rows[n - 1]["position"] == position - 1):
            raise fail(f"messages[{n}] is out of place (position {position}, role {row['role']}): expected the "
                       "user's message k at position 2k, followed by its answer at 2k + 1.")
