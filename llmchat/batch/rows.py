"""The input: a text or JSONL file (or stdin) read into checked Rows before any request."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmchat.core.errors import ConfigError
from llmchat.core.suggest import closest

if TYPE_CHECKING:
    from llmchat.providers import Message


ROW_KEYS = ("id", "prompt", "messages", "system", "model")
ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Row:
    """One prompt to run. `id` is the user's (JSONL) or the line number (text); `line` is for messages."""

    id: str | int
    prompt: str
    line: int
    messages: tuple[Mapping[str, Any], ...] | None = None
    system: str | None = None
    model: str | None = None

    @property
    def key(self) -> str:
        """How ids are compared with OUTPUT's: as JSON, so 3 and "3" stay different ids."""
        return json.dumps(self.id)

    def to_send(self, system: str | None) -> list[Message]:
        """The messages for the request; `system` (row, else flag/profile) goes first unless the row has one."""
        system = self.system or system
        if self.messages is not None:
            own = any(m.get("role") == "system" for m in self.messages)
            head: list[Message] = [] if own or not system else [{"role": "system", "content": system}]
            return head + [dict(m) for m in self.messages]
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": self.prompt}]


def read_rows(input_path: str, stdin: TextIO | None = None) -> list[Row]:
    """Parse INPUT (a path, or `-` for stdin) into rows; every problem is a ConfigError naming the line."""
    text, name = _read_input(input_path, stdin)
    rows = _parse_jsonl(text, name) if _is_jsonl(input_path, text) else _parse_text(text)
    if not rows:
        raise ConfigError(f"{name} has no prompts.", hint="Give one prompt per line, or JSONL rows with a prompt.")
    _check_unique(rows, name)
    return rows


def _read_input(input_path: str, stdin: TextIO | None = None) -> tuple[str, str]:
    if input_path == "-":
        data, name = (stdin if stdin is not None else sys.stdin).buffer.read(), "stdin"
    else:
        name = input_path
        try:
            data = Path(input_path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read {input_path}: {exc.strerror or exc}.",
                              hint="Check the path; use - to read prompts from stdin.") from None
    try:
        return data.decode("utf-8-sig"), name
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{name}, line {line}: not UTF-8 text (is it a binary file?).",
                          hint="Convert it first, e.g. `iconv -f GBK -t UTF-8`.") from None


def _is_jsonl(input_path: str, text: str) -> bool:
    """JSONL by extension; otherwise when the first non-blank line is a JSON object (stdin, other names)."""
    suffix = Path(input_path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return True
    if suffix == ".txt":
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first.startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _parse_text(text: str) -> list[Row]:
    return [Row(id=n, prompt=line.strip(), line=n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_jsonl(text: str, name: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise _bad_row(name, number, f"not valid JSON ({exc})") from None
        rows.append(_parse_row(data, name, number))
    return rows


def _parse_row(data: Any, name: str, line: int) -> Row:
    if not isinstance(data, dict):
        raise _bad_row(name, line, "a row must be a JSON object like {\"id\": 1, \"prompt\": \"…\"}")
    for key in data:
        if key not in ROW_KEYS:
            near = closest(key, ROW_KEYS)
            hint = f" (did you mean '{near}'?)" if near else ""
            raise _bad_row(name, line, f"unknown key '{key}'{hint}; allowed: {', '.join(ROW_KEYS)}")
    row_id = data.get("id", line)
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise _bad_row(name, line, "'id' must be a string or an integer")
    system, model = data.get("system"), data.get("model")
    for key, value in (("system", system), ("model", model)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _bad_row(name, line, f"'{key}' must be a non-empty string")
    if ("prompt" in data) == ("messages" in data):
        raise _bad_row(name, line, "give exactly one of 'prompt' or 'messages'")
    if "prompt" in data:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise _bad_row(name, line, "'prompt' must be a non-empty string")
        return Row(id=row_id, prompt=prompt, line=line, system=system, model=model)
    messages = _parse_messages(data["messages"], name, line)
    if system is not None and any(m["role"] == "system" for m in messages):
        raise _bad_row(name, line, "'system' given twice: as a key and as a system message")
    return Row(id=row_id, prompt=_last_user_text(messages), line=line, messages=messages, system=system, model=model)


def _parse_messages(messages: Any, name: str, line: int) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(messages, list) or not messages:
        raise _bad_row(name, line, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise _bad_row(name, line, f"each message needs a role ({', '.join(ROLES)}) and a content")
    if messages[-1]["role"] != "user":
        raise _bad_row(name, line, "the last message must be the user's (the one to answer)")
    return tuple(messages)


def _last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _check_unique(rows: list[Row], name: str) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        if row.key in seen:
            raise _bad_row(name, row.line, f"id {row.key} is already used on line {seen[row.key]}")
        seen[row.key] = row.line


def _bad_row(name: str, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{name}, line {line}: {problem}.",
                       hint='Rows are {"id": …, "prompt": "…"} or {"id": …, "messages": […]}, '
                            'with optional "system" and "model".')
