"""`history --search`: which conversations have a message containing every word searched for.

Words of 3+ characters go through the trigram index (FTS5) when the database has one; shorter words
(which a trigram index cannot find) and every word without FTS5 use LIKE, so both paths mean the same:
case-insensitive substrings. A message matches on its text, or on its tool calls (the names,
arguments and results saved in `tool_rounds`): each word in some value of them, never in the JSON's
own keys, so searching for "result" does not find every conversation that called a tool. That part
needs SQLite's JSON functions (built in since 3.38, and in the older builds Python ships with); without
them only the text is searched.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def has_json(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions (`json_tree`) that searching tool calls needs."""
    try:
        db.execute("SELECT json_valid('[]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def search_clause(search: str, *, fts: bool, json: bool) -> tuple[str, list[Any]]:
    """The `WHERE` clause (on `conversations c`) and its parameters for `search`'s words."""
    words = search.split()
    indexed = [w for w in words if len(w) >= 3] if fts else []
    scanned = [w for w in words if w not in indexed]
    likes = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in scanned)
    params: list[Any] = [like_pattern(w) for w in scanned]
    if indexed:
        inner = ("SELECT m.conversation FROM messages_fts f JOIN messages m ON m.id = f.rowid "
                 "WHERE messages_fts MATCH ?" + (f" AND {likes}" if likes else ""))
        params.insert(0, " ".join('"' + w.replace('"', '""') + '"' for w in indexed))
    else:
        inner = f"SELECT m.conversation FROM messages m WHERE {likes}"
    if json:
        tools = " AND ".join("EXISTS (SELECT 1 FROM json_tree(CASE WHEN json_valid(m.tool_rounds) THEN m.tool_rounds "
                             "ELSE '[]' END) j WHERE j.type = 'text' "
                             "AND j.atom LIKE ? ESCAPE '\\')" for _ in words)
        inner += f" UNION SELECT m.conversation FROM messages m WHERE m.tool_rounds IS NOT NULL AND {tools}"
        params += [like_pattern(w) for w in words]
    return f" WHERE c.id IN ({inner})", params


def like_pattern(word: str) -> str:
    """`word` as a LIKE pattern for "contains", with LIKE's own wildcards taken literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
