"""Bounded tool output: keep the first N characters of whatever a tool produces, and count the rest.

A tool's result goes back to the model and into the history, so it is cut at the profile's
`tool_output_limit`, with a marker saying how much was dropped (the model then knows it saw a part).
Output is decoded and counted as it arrives, so a command printing gigabytes costs no memory.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO


def cut_marker(dropped: int, *, unread: bool = False) -> str:
    """`[… 1,234 characters cut]`; with `unread` (the rest was never read, e.g. an endless download)
    `[… more than 1,234 characters cut]`."""
    return f"[… {'more than ' if unread else ''}{dropped:,} characters cut]"


def cut(text: str, limit: int, *, dropped: int = 0) -> str:
    """`text`, or its first `limit` characters and the marker on a line of its own; `dropped`: characters
    already left out before `text` was made (counted in the marker)."""
    dropped += max(0, len(text) - limit)
    return f"{text[:limit]}\n{cut_marker(dropped)}" if dropped else text


class Collector:
    """The first `limit` characters of a byte stream (decoded as UTF-8, bad bytes replaced), and how many more."""

    def __init__(self, limit: int, encoding: str = "utf-8") -> None:
        self.limit = limit
        self.kept: list[str] = []
        self.size = 0  # characters kept
        self.dropped = 0  # characters seen beyond the limit
        self.unread = False  # the reader stopped before the end: `dropped` is a lower bound
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        room = self.limit - self.size
        if room > 0:
            self.kept.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))

    def drain(self, stream: BinaryIO, chunk: int = 65536) -> None:
        """Read `stream` to its end (a thread per pipe does this while the process runs)."""
        try:
            while data := stream.read1(chunk) if hasattr(stream, "read1") else stream.read(chunk):
                self.feed(data)
        except (OSError, ValueError):  # the pipe was closed under us: what came is what there is
            pass
        self.feed(b"", final=True)

    def kept_text(self) -> str:
        return "".join(self.kept)

    def text(self) -> str:
        """What was kept, with the cut marker when anything was dropped."""
        kept = self.kept_text()
        return f"{kept}\n{cut_marker(self.dropped, unread=self.unread)}" if self.dropped or self.unread else kept
