"""What the store hands out and takes in: its errors, the row records, and rows to and from records."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from llmchat.core.conversation import Exchange
from llmchat.core.errors import ConfigError, LlmchatError
from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.core.images import Image
from llmchat.core.tools import ToolRound
from llmchat.store.schema import CONVERSATION_COLUMNS, TIMING_COLUMNS, TITLE_CHARS, USAGE_COLUMNS

if TYPE_CHECKING:
    from llmchat.core.pricing import Price


class Answerer(Protocol):
    """What the store records of the profile that answered: its name, provider, model and price.

    A Protocol, not `config.Profile`: the store depends on core only, and any object with these four
    attributes (a Profile, a test's stand-in) can be recorded."""

    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def price(self) -> Price | None: ...


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
    #: The tool rounds that came before this answer (assistant messages only), oldest first.
    rounds: tuple[ToolRound, ...] = ()

    def result(self) -> TurnResult:
        """The turn as the renderers know it, so the usage line reads the same as it did live."""
        return TurnResult(model=self.model or "", answer=self.content, reasoning=self.reasoning or "",
                          finish_reason=self.finish_reason, usage=self.usage, timing=self.timing or Timing(),
                          interrupted=self.interrupted, rounds=list(self.rounds))


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
    calls: int = 1  # a fetched remote batch job is one row here for all its answered rows


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


SUMMARY_SQL = ("SELECT c.id, c.title, c.profile, c.provider, c.model, c.system, c.created, c.updated, "
                "(SELECT count(*) FROM messages t WHERE t.conversation = c.id AND t.role = 'user') AS turns "
                "FROM conversations c")


def summary_from_row(row: sqlite3.Row) -> Summary:
    return Summary(**{name: row[name] for name in (*CONVERSATION_COLUMNS, "turns")})


def usage_from_row(row: Mapping[str, Any]) -> Usage | None:
    """The usage columns of a row (those it has), or None when the server reported none of them."""
    present = {column: row[column] for column in USAGE_COLUMNS if column in row.keys()}  # noqa: SIM118
    if all(value is None for value in present.values()):
        return None
    return Usage(**{USAGE_COLUMNS[column]: value for column, value in present.items()})


def rounds_to_json(rounds: Iterable[ToolRound]) -> str | None:
    """The `tool_rounds` column: `[ToolRound.as_json(), ...]` as JSON text, NULL when no tool was called."""
    data = [tool_round.as_json() for tool_round in rounds]
    return json.dumps(data, ensure_ascii=False) if data else None


def rounds_from_json(text: str | None) -> tuple[ToolRound, ...]:
    """The inverse of `rounds_to_json`; a column the store did not write (edited by hand) reads as none."""
    if not text:
        return ()
    try:
        data = json.loads(text)
    except ValueError:
        return ()
    return tuple(ToolRound.from_json(item) for item in data if isinstance(item, Mapping)) \
        if isinstance(data, list) else ()


def message_from_row(row: Mapping[str, Any]) -> StoredMessage:
    usage = usage_from_row(row)
    timing = None
    if any(row[c] is not None for c in TIMING_COLUMNS):
        timing = Timing(**{c: row[c] for c in TIMING_COLUMNS})
    return StoredMessage(position=row["position"], role=row["role"], content=row["content"],
                         reasoning=row["reasoning"], model=row["model"], usage=usage, timing=timing,
                         finish_reason=row["finish_reason"], interrupted=bool(row["interrupted"]),
                         created=row["created"], profile=row["profile"], cost=row["cost"], currency=row["currency"],
                         rounds=rounds_from_json(row["tool_rounds"] if "tool_rounds" in row.keys() else None))  # noqa: SIM118


def insert_row(db: sqlite3.Connection, cid: str, row: dict[str, Any]) -> None:
    columns = ["conversation", *row]
    db.execute(f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
               [cid, *row.values()])


def save_images(db: sqlite3.Connection, cid: str, position: int, images: tuple[Image, ...]) -> None:
    """Each image once by hash (INSERT OR IGNORE), and which message carries it, in order."""
    for ord_, image in enumerate(images):
        db.execute("INSERT OR IGNORE INTO images (sha256, mime, data, url) VALUES (?, ?, ?, ?)",
                   (image.sha256, image.mime, image.data, image.url))
        db.execute("INSERT OR REPLACE INTO message_images (conversation, position, ord, sha256) VALUES (?, ?, ?, ?)",
                   (cid, position, ord_, image.sha256))


def user_row(position: int, exchange: Exchange, stamp: str) -> dict[str, Any]:
    return {"position": position, "role": "user", "content": exchange.user, "model": exchange.model,
            "created": stamp}


def answer_row(position: int, exchange: Exchange, result: TurnResult | None, stamp: str,
                profile: Answerer | None = None) -> dict[str, Any]:
    """The assistant row; an answer that failed before any text is saved empty, so the turn is on record.
    Its tool rounds (`exchange.rounds`, filled by the turn loop) go with it, in `tool_rounds`.

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
    row["tool_rounds"] = rounds_to_json(exchange.rounds)
    return row
