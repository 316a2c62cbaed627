"""Text llmchat did not write itself, made harmless for a terminal (DESIGN §4, "Untrusted text").

A model's answer, a server's error message, a model name or a saved title can carry escape
sequences that write the clipboard (OSC 52), retitle the window, clear the screen, or draw a
hyperlink whose text lies; bidi overrides can make text read differently from what it is. Every
writer of such text to a terminal passes it through `sanitize` first, and only then adds
llmchat's own styling, so the styling is never touched.

The mapping is per character (one `str.translate` table), so a stream sanitized piece by piece
gives exactly what sanitizing the whole text gives, wherever it was split:

- C0 controls other than newline and tab, shown in caret notation: ESC as `^[`, BEL as `^G`, NUL as `^@`.
- Carriage return is dropped: a lone CR can return to the line start and overwrite (hide) what was
  written, and CR LF, common in model output, then ends the line as the LF alone does.
- DEL as `^?`.
- C1 controls (U+0080–U+009F, e.g. the 8-bit CSI U+009B) as `<U+009B>`.
- Bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) as `<U+202E>`: visible, so
  reordered text cannot pass for something else. The marks (U+200E, U+200F, U+061C) are kept: they
  occur in ordinary right-to-left text and cannot reorder a run of letters on their own.

Standard library only: this module is imported by the lightest paths (errors, the plain view).
"""

from __future__ import annotations

import re
from typing import TextIO

__all__ = ["UNSAFE", "is_terminal", "json_for", "sanitize", "sanitize_json", "text_for"]

_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {code: "^" + chr(code + 64) for code in range(0x20) if code not in (0x09, 0x0A)}
    table[0x0D] = None
    table[0x7F] = "^?"
    for code in (*range(0x80, 0xA0), *_BIDI):
        table[code] = f"<U+{code:04X}>"
    return table


_TABLE = _table()
UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _TABLE) + "]")
"""Matches any character `sanitize` changes: a cheap test before doing any work."""

# JSON already escapes every C0 control (json.dumps always does); what it leaves raw with
# ensure_ascii=False, and a terminal would still act on, is written as a \\uXXXX escape instead.
# Those characters can only occur inside JSON strings, so the document stays valid and decodes
# to the same values.
_JSON_TABLE = {code: f"\\u{code:04x}" for code in (0x7F, *range(0x80, 0xA0), *_BIDI)}
_JSON_UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _JSON_TABLE) + "]")


def sanitize(text: str) -> str:
    """`text` with terminal controls shown visibly (see the module docstring); newline and tab kept."""
    # The search is the common case (clean text) and several times cheaper than a translate of
    # non-ASCII text, which matters: this runs on every streamed token.
    return text.translate(_TABLE) if UNSAFE.search(text) else text


def sanitize_json(document: str) -> str:
    """A JSON document whose strings may hold DEL, C1 or bidi controls, with those written as escapes."""
    return document.translate(_JSON_TABLE) if _JSON_UNSAFE.search(document) else document


def is_terminal(stream: TextIO | None) -> bool:
    """`isatty` that tolerates stand-ins (None, closed files, objects without the method)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def text_for(stream: TextIO | None, text: str) -> str:
    """Sanitized for a terminal; unchanged for a pipe or file, where it is data (byte-exact)."""
    return sanitize(text) if is_terminal(stream) else text


def json_for(stream: TextIO | None, document: str) -> str:
    """A JSON document as it should reach `stream`: escaped further on a terminal, exact in a pipe."""
    return sanitize_json(document) if is_terminal(stream) else document
