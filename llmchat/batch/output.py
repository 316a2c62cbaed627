"""The output: JSONL rows written in input order, and what `--resume` finds already done."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from llmchat.batch.rows import Row
from llmchat.core.errors import ConfigError


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class FileSink:
    """Appends rows to OUTPUT; one `os.write` per row, so a killed process never leaves half a row
    in the page cache for the next write to land after."""

    def __init__(self, path: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}.", hint="Check the -o path.") from None

    def write(self, record: dict[str, Any]) -> None:
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        os.close(self._fd)


class StdoutSink:
    """Rows on stdout (the Environment's, else the process's), flushed one by one so a pipe sees each
    as soon as its turn comes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write(self, record: dict[str, Any]) -> None:
        from llmchat.core.safe_text import json_for  # a terminal gets C1/bidi escaped; a pipe the exact row

        out = self._stream if self._stream is not None else sys.stdout
        out.write(json_for(out, json.dumps(record, ensure_ascii=False)) + "\n")
        out.flush()

    def close(self) -> None:
        pass


class OrderedWriter:
    """Writes finished rows in input order: a row waits only for the rows before it."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._next = 0
        self._waiting: dict[int, dict[str, Any]] = {}

    def add(self, index: int, record: dict[str, Any]) -> None:
        self._waiting[index] = record
        while self._next in self._waiting:
            self._sink.write(self._waiting.pop(self._next))
            self._next += 1

    def drain(self) -> None:
        """On interruption: write the rows finished past a gap too (still in input order among themselves)."""
        for index in sorted(self._waiting):
            self._sink.write(self._waiting.pop(index))


def load_done(path: Path, notify: Callable[[str], None]) -> set[str]:
    """For `--resume`: the ids (as keys) whose latest row in OUTPUT has no error; those are skipped.

    A last line cut short by a kill is removed first (its row will be rerun), so the rows appended
    next start on a line of their own.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path} to resume: {exc.strerror or exc}.") from None
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
        notify(f"{path}: removed an incomplete last row (the batch was killed while writing it).")
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise ConfigError(f"{path}, line {number}: not a batch output row, so --resume cannot use it.",
                              hint="Point -o at the file an earlier `llmchat batch` wrote, or drop --resume.")
        latest[json.dumps(record["id"])] = record
    return {key for key, record in latest.items() if record.get("error") is None}


def compact(path: Path, rows: list[Row]) -> None:
    """After a resumed run: one row per id, in input order, unless the file already is exactly that.

    Appending keeps a kill at any moment harmless; this final rewrite (to a temporary file, then an
    atomic rename) removes the superseded failed rows and restores input order. Rows whose id is not
    in this input are kept, after the others.
    """
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest = {json.dumps(r["id"]): r for r in records}
    keys = [row.key for row in rows if row.key in latest]
    wanted = set(keys)
    foreign = [r for r in records if json.dumps(r["id"]) not in wanted]
    ordered = [latest[key] for key in keys] + foreign
    if [json.dumps(r["id"]) for r in records] == [json.dumps(r["id"]) for r in ordered]:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
    os.replace(temporary, path)
