"""Saving a conversation as it happens: each question before its answer, the answer as it streams."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from llmchat.core.conversation import Conversation, Exchange
from llmchat.core.events import TurnResult
from llmchat.store import records
from llmchat.store.records import answer_row, insert_row, make_title, save_images, user_row

if TYPE_CHECKING:
    from llmchat.store.db import Store
    from llmchat.store.records import Answerer


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

    def __init__(self, store: Store, profile: Answerer, *, warn: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.profile = profile
        self.warn = warn or _warn

    def question(self, conversation: Conversation, exchange: Exchange) -> None:
        index = _index_of(conversation, exchange)
        stamp = records.now()
        try:
            with self.store._write() as db:
                cid = self.store._ensure(db, conversation, self.profile, index, stamp)
                freed = list(conversation.freed)
                for slot in freed:  # this process's own turns, dropped by /retry or /undo
                    delete_slot(db, cid, slot)
                slot = freed[-1] if freed else _next_slot(db, cid)  # a /retry takes its turn's place
                insert_row(db, cid, user_row(2 * slot, exchange, stamp))
                save_images(db, cid, 2 * slot, exchange.images)
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
        one upsert of its row, so a SIGKILL loses at most the last PROGRESS_INTERVAL_S of it.

        The tool rounds done so far (`exchange.rounds`) are saved with it: a turn loop that calls this
        after each round keeps the calls that already ran on record even if the process dies in the next
        one, and a resumed conversation re-sends them.
        """
        if exchange.slot is None or conversation.id is None:
            return
        try:
            with self.store._write(patience=0.05) as db:
                db.execute("INSERT INTO messages (conversation, position, role, content, reasoning, model, "
                           "interrupted, created, profile, tool_rounds) "
                           "VALUES (?, ?, 'assistant', ?, ?, ?, 1, ?, ?, ?) "
                           "ON CONFLICT (conversation, position) DO UPDATE SET content = excluded.content, "
                           "reasoning = excluded.reasoning, tool_rounds = excluded.tool_rounds",
                           (conversation.id, 2 * exchange.slot + 1, answer, reasoning or None, exchange.model,
                            records.now(), self.profile.name, records.rounds_to_json(exchange.rounds)))
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
            stamp = records.now()
            with self.store._write() as db:
                cid = self.store._ensure(db, conversation, self.profile, index, stamp)
                slot = exchange.slot if exchange.slot is not None else _next_slot(db, cid)
                if not db.execute("SELECT 1 FROM messages WHERE conversation = ? AND position = ?",
                                  (cid, 2 * slot)).fetchone():
                    insert_row(db, cid, user_row(2 * slot, exchange, stamp))  # removed mid-turn elsewhere
                    save_images(db, cid, 2 * slot, exchange.images)
                db.execute("DELETE FROM messages WHERE conversation = ? AND position = ?", (cid, 2 * slot + 1))
                insert_row(db, cid, answer_row(2 * slot + 1, exchange, result, stamp, self.profile))
                db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (stamp, cid))
            exchange.slot = slot
        except (sqlite3.Error, ValueError) as exc:
            self.warn(f"The answer could not be saved to history: {exc}.")


def _next_slot(db: sqlite3.Connection, cid: str) -> int:
    """The first exchange number after everything saved in `cid`, whoever saved it."""
    last = db.execute("SELECT max(position) FROM messages WHERE conversation = ?", (cid,)).fetchone()[0]
    return 0 if last is None else last // 2 + 1


def delete_slot(db: sqlite3.Connection, cid: str, slot: int) -> None:
    """Remove one exchange (question, answer, images) from the store."""
    db.execute("DELETE FROM messages WHERE conversation = ? AND position IN (?, ?)", (cid, 2 * slot, 2 * slot + 1))
    db.execute("DELETE FROM message_images WHERE conversation = ? AND position = ?", (cid, 2 * slot))


def _warn(text: str, stream: TextIO | None = None) -> None:
    from llmchat.core.safe_text import sanitize

    print(sanitize(text), file=stream if stream is not None else sys.stderr, flush=True)


def warn_on(stream: TextIO | None) -> Callable[[str], None]:
    """A recorder's `warn` writing to `stream` (the run's stderr); None: the process's stderr."""
    return functools.partial(_warn, stream=stream)
