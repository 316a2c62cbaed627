"""The database layout: the column names, and the migrations that bring any older file to SCHEMA_VERSION."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

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
                   "finish_reason", "interrupted", "created", *COST_COLUMNS, "tool_rounds")
SUMMARY_COLUMNS = ("covers", "content", "profile", "model", "prompt_tokens", "completion_tokens", "total_tokens",
                   "reasoning_tokens", "cached_tokens", "cost", "currency", "created")
CONVERSATION_COLUMNS = ("id", "title", "profile", "provider", "model", "system", "created", "updated")


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


def _migrate_to_4(db: sqlite3.Connection, fts: bool) -> None:
    """Issue 15: the tool rounds of an answer (calls, arguments, outcomes, results), before its text.

    One JSON column on the assistant row (`[ToolRound.as_json(), ...]`, NULL when the model called no
    tool) rather than tables of rounds and calls: the rounds are only ever read and written whole, with
    their answer (saved, resumed, exported), never queried one call at a time; the JSON is the export's
    own form, so export -> import is exact by construction; and a progress save stays one upsert of one
    row. Rows saved before this have no rounds, which is what they had.
    """
    db.execute("ALTER TABLE messages ADD COLUMN tool_rounds TEXT")


def _migrate_to_5(db: sqlite3.Connection, fts: bool) -> None:
    """Issue 19: remote batch jobs (a provider's Batch API), remembered with the profile and the local
    files that made them, so `batch status|fetch|cancel|list` need no `-p` and a job started on Monday
    is fetched on Tuesday. The tokens and cost are filled in when the results are fetched, and
    `llmchat usage` counts them (`rows` answered calls at the batch price)."""
    db.execute("""
        CREATE TABLE batch_jobs (
            id                TEXT PRIMARY KEY,  -- the provider's batch id
            provider          TEXT NOT NULL,
            profile           TEXT NOT NULL,
            model             TEXT,
            input             TEXT,              -- the local INPUT file (absolute), NULL for stdin
            output            TEXT,              -- the local OUTPUT file (absolute), NULL when none given
            status            TEXT NOT NULL,
            total             INTEGER,
            completed         INTEGER,
            failed            INTEGER,
            keys              TEXT NOT NULL,     -- JSON list of the row ids (as JSON) this job carries
            input_file_id     TEXT,
            output_file_id    TEXT,
            error_file_id     TEXT,
            created           TEXT NOT NULL,
            updated           TEXT NOT NULL,
            fetched           TEXT,              -- when its results were written to OUTPUT
            rows              INTEGER,           -- answered rows (billed calls), once fetched
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            total_tokens      INTEGER,
            reasoning_tokens  INTEGER,
            cached_tokens     INTEGER,
            cost              REAL,
            currency          TEXT
        )""")
    db.execute("CREATE INDEX batch_jobs_created ON batch_jobs (created)")


#: MIGRATIONS[n] upgrades a database at user_version n to n + 1; append, never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection, bool], None]] = [_migrate_to_1, _migrate_to_2, _migrate_to_3,
                                                                _migrate_to_4, _migrate_to_5]
SCHEMA_VERSION = len(MIGRATIONS)
