"""The built-in tools: `time`, `read_file`, `fetch`, `shell` — what each offers the model, says it will do, and does.

Each is bounded: `read_file` reads text files only and no more than the output limit, `fetch` only
http(s) and within its timeout, `shell` runs one command in its own process group with a timeout.
httpx is imported only when `fetch` runs.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import stat
import threading
import time as clock
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmchat.core.tools import ToolStatus
from llmchat.tools.output import Collector, cut

#: name -> (description, JSON Schema of the arguments), in config.tools.BUILTIN_TOOLS' order.
BUILTIN_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "time": ("The current local date, time, weekday and time zone of the user's computer.",
             {"type": "object", "properties": {}, "required": []}),
    "read_file": ("Read a UTF-8 text file on the user's computer (a path relative to the current directory, "
                  "or absolute).",
                  {"type": "object", "properties": {"path": {"type": "string", "description": "The file's path"}},
                   "required": ["path"]}),
    "fetch": ("Fetch a web page or other text resource by HTTP GET (http and https URLs only) and return it as text.",
              {"type": "object", "properties": {"url": {"type": "string", "description": "An http(s) URL"}},
               "required": ["url"]}),
    "shell": ("Run one command with /bin/sh on the user's computer and return its output.",
              {"type": "object", "properties": {"command": {"type": "string",
                                                            "description": "The shell command line"}},
               "required": ["command"]}),
}

#: The bytes looked at to tell a text file from a binary one (as git does: a NUL, or invalid UTF-8).
SNIFF_BYTES = 8192
#: Bytes read past the limit only to count what was cut (a huge log is not read whole for a number).
READ_BUDGET = 64 << 20


def local_time(variables: Mapping[str, str]) -> str:
    """`Thursday 2026-11-26 17:40:02, time zone Europe/Berlin (CET, UTC+01:00)`."""
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if len(offset) == 5 else offset
    zone = _zone_name(variables)
    abbreviation = now.tzname() or ""
    inner = ", ".join(part for part in (abbreviation if abbreviation != zone else "", f"UTC{offset}") if part)
    return f"{now:%A %Y-%m-%d %H:%M:%S}, time zone {zone + ' ' if zone else ''}({inner})"


def _zone_name(variables: Mapping[str, str]) -> str:
    """The IANA name of the local zone (TZ, else /etc/localtime's link), or "" when the system does not say."""
    name = variables.get("TZ", "").lstrip(":")
    if name and "/" in name and not name.startswith("/"):
        return name
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return name
    return target.partition("zoneinfo/")[2] or name


def resolve_path(path: str) -> Path:
    """The absolute path `read_file` reads: relative paths from the current directory, `~` expanded."""
    return Path(os.path.abspath(Path(path).expanduser()))


def describe_read(path: Path) -> str:
    """The approval's line for `read_file`: the path, and the file really read when a symlink on the way
    leads elsewhere (`notes.txt` linking to `~/.ssh/id_ed25519` must not pass for notes)."""
    try:
        real = path.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop: the read fails too
        return f"read {path}"
    return f"read {path}" if real == path else f"read {path}, which leads to {real}"


def read_file(path: Path, limit: int) -> tuple[ToolStatus, str]:
    """The text of `path`, cut at `limit` characters; an error for what is not a readable text file."""
    try:
        if path.is_dir():
            return "error", f"{path} is a directory, not a file"
        if not path.exists():
            return "error", f"{path} does not exist"
        if not path.is_file():
            return "error", f"{path} is not a regular file"
        # Opened without blocking and checked again on the open file: a FIFO put in its place after the
        # checks above would otherwise hang the read (and the turn) until something writes to it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            return "error", f"{path} is not a regular file"
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
            if b"\0" in head:
                return "error", f"{path} is a binary file, not text"
            try:
                codecs.getincrementaldecoder("utf-8")().decode(head, len(head) < SNIFF_BYTES)
            except UnicodeDecodeError:
                return "error", f"{path} is not UTF-8 text (a binary file, or another encoding)"
            collector = Collector(limit)
            collector.feed(head)
            budget = max(limit * 8, READ_BUDGET)  # bytes read to count what is cut; beyond that, "more than"
            while chunk := stream.read(65536):
                collector.feed(chunk)
                budget -= len(chunk)
                if budget <= 0 and collector.dropped:
                    collector.unread = True
                    break
            collector.feed(b"", final=True)
    except PermissionError:
        return "error", f"{path}: permission denied"
    except OSError as exc:
        return "error", f"cannot read {path}: {exc.strerror or exc}"
    return "ok", collector.text()


TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/xhtml")


def fetch(url: str, *, limit: int, timeout: float, user_agent: str) -> tuple[ToolStatus, str]:
    """GET `url` (http or https only) as text: within `timeout` seconds in all, at most `limit` characters.

    httpx's timeouts bound each read, not the whole: a server sending its headers or body a byte at a time
    (slow-loris) would hold the turn for ever. So the request runs in a worker thread and this one waits
    `timeout`; past it the client is closed under the worker, whose next read then fails and ends it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or not urlsplit(url).netloc:
        return "error", f"only http and https URLs can be fetched, not {url!r}"
    import httpx

    client = httpx.Client(follow_redirects=True, max_redirects=5, timeout=timeout, headers={"User-Agent": user_agent})
    deadline = clock.monotonic() + timeout
    outcome: list[tuple[ToolStatus, str]] = []

    def work() -> None:
        try:
            outcome.append(_get(client, url, limit=limit, timeout=timeout, deadline=deadline))
        except Exception as exc:  # noqa: BLE001 (the client closed under it at the deadline, or any failure)
            outcome.append(("error", f"cannot fetch {url}: {exc or type(exc).__name__}"))

    worker = threading.Thread(target=work, name="llmchat-fetch", daemon=True)
    worker.start()
    try:
        worker.join(timeout + 0.5)  # Ctrl-C interrupts the wait; the finally stops the worker
    finally:
        if worker.is_alive():
            with contextlib.suppress(Exception):
                client.close()
    if worker.is_alive() or not outcome:
        return "error", f"timed out after {timeout:g} s"
    client.close()
    return outcome[0]


def _get(client: Any, url: str, *, limit: int, timeout: float, deadline: float) -> tuple[ToolStatus, str]:
    """The GET itself (in fetch's worker thread)."""
    import httpx

    try:
        with client.stream("GET", url) as response:
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and not (kind.startswith(TEXT_TYPES) or kind.endswith(("+json", "+xml"))):
                return "error", f"{url} is not text (content-type {kind})"
            collector = Collector(limit, _codec(response.charset_encoding))
            budget = max(limit * 8, 1 << 20)  # bytes read to count what is cut; beyond that, "more than"
            seen = 0
            for chunk in response.iter_bytes():
                collector.feed(chunk)
                seen += len(chunk)
                if clock.monotonic() > deadline:
                    return "error", cut(f"timed out after {timeout:g} s\n{collector.kept_text()}", limit)
                if collector.dropped and seen > budget:
                    collector.unread = True
                    break
            collector.feed(b"", final=True)
            if response.status_code >= 400:
                return "error", cut(f"HTTP {response.status_code} {response.reason_phrase}\n{collector.kept_text()}",
                                    limit, dropped=collector.dropped)
            return "ok", collector.text()
    except httpx.TimeoutException:
        return "error", f"timed out after {timeout:g} s"
    except httpx.HTTPError as exc:
        return "error", f"cannot fetch {url}: {exc or type(exc).__name__}"


def _codec(name: str | None) -> str:
    """The response's charset when Python knows it, else UTF-8."""
    if name:
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"
