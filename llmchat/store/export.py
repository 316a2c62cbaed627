"""The one export format (`history export`, `/save x.json`, `history import`): records in, records out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from llmchat.core.conversation import Conversation
from llmchat.core.errors import ConfigError
from llmchat.core.images import Image
from llmchat.core.tools import TOOL_STATUSES, ToolRound
from llmchat.store import records
from llmchat.store.records import (
    ImportFormatError,
    StoredMessage,
    Summary,
    answer_row,
    make_title,
    message_from_row,
    rounds_to_json,
    user_row,
)
from llmchat.store.schema import (
    CONVERSATION_COLUMNS,
    COST_COLUMNS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MESSAGE_COLUMNS,
    TIMING_COLUMNS,
    USAGE_COLUMNS,
)

if TYPE_CHECKING:
    from llmchat.store.records import Answerer


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


def conversation_record(conversation: Conversation, profile: Answerer, *, cid: str, created: str,
                        model: str | None = None) -> dict[str, Any]:
    """The export of a conversation that is only in memory (`--no-save`, a profile with save = false):
    the rows the recorder would have written, so it reads exactly like one exported from the store.
    What only a live turn knows (timings, finish reasons, costs) is not kept in memory, so it is null."""
    stamp = records.now()
    first = conversation.exchanges[0].user if conversation.exchanges else ""
    last_model = next((e.model for e in reversed(conversation.exchanges) if e.model), None)
    row = {"id": cid, "title": make_title(first), "profile": profile.name, "provider": profile.provider,
           "model": last_model or model or profile.model, "system": conversation.system,
           "created": created, "updated": stamp}
    rows: list[dict[str, Any]] = []
    images: dict[int, tuple[Image, ...]] = {}
    for index, exchange in enumerate(conversation.exchanges):
        rows.append(user_row(2 * index, exchange, stamp))
        images[2 * index] = exchange.images
        rows.append(answer_row(2 * index + 1, exchange, None, stamp))
    blank = dict.fromkeys(MESSAGE_COLUMNS, None) | {"interrupted": 0}  # what the table's defaults fill in
    return build_record(row, [blank | r for r in rows], images)


def record_parts(record: Any, source: str = "the file") -> tuple[Summary, list[StoredMessage]]:
    """A record as `history show` and the Markdown transcript read the store: summary and messages."""
    conversation, rows, _ = validate_record(record, source)
    turns = sum(row["role"] == "user" for row in rows)
    return Summary(**conversation, turns=turns), [message_from_row(row) for row in rows]


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
    } | ({"tool_rounds": _stored_rounds(row["tool_rounds"])} if row["role"] == "assistant" else {})


def _stored_rounds(text: str | None) -> list[Any]:
    """The `tool_rounds` column as the export carries it: the saved JSON itself, so nothing is re-encoded."""
    if not text:
        return []
    data = json.loads(text)
    return data if isinstance(data, list) else []


def _export_image(image: Image) -> dict[str, Any]:
    """An attached image as the store keeps it: by hash, with its bytes (base64) or the URL it names."""
    data = base64.b64encode(image.data).decode("ascii") if image.data is not None else None
    return {"sha256": image.sha256, "mime": image.mime, "data": data, "url": image.url}


def validate_record(record: Any, source: str,
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, tuple[Image, ...]]]:
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
    for n, (message, row) in enumerate(zip(messages, rows, strict=True)):
        row["tool_rounds"] = _message_rounds(message, row, n, fail)
    return conversation, rows, images


#: Each tool call's fields in an export: the key, the types it may have, whether null is allowed.
_CALL_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("id", (str,), False), ("name", (str,), False), ("arguments", (dict,), False), ("status", (str,), False),
    ("result", (str,), False), ("seconds", (int, float), True), ("raw_arguments", (str,), True),
    ("argument_error", (str,), True))


def _message_rounds(message: dict[str, Any], row: dict[str, Any], n: int,
                    fail: Callable[[str], ImportFormatError]) -> str | None:
    """An answer's tool rounds, checked field by field (they are re-sent to the model on the next turn),
    as the store's `tool_rounds` column. Files exported before tools were saved have none."""
    entries = message.get("tool_rounds")
    if entries is None or entries == []:
        return None
    where = f"messages[{n}].tool_rounds"
    if not isinstance(entries, list) or row["role"] != "assistant":
        raise fail(f"{where} must be a list, and only on an assistant message.")
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise fail(f"{where}[{k}] must be an object.")
        for key in ("content", "reasoning"):
            if not isinstance(entry.get(key, ""), str):
                raise fail(f"{where}[{k}].{key} must be a string.")
        calls = entry.get("calls")
        if not isinstance(calls, list) or not calls:
            raise fail(f"{where}[{k}].calls must be a non-empty list.")
        for c, call in enumerate(calls):
            _check_call(call, f"{where}[{k}].calls[{c}]", fail)
    return rounds_to_json(ToolRound.from_json(entry) for entry in entries)


def _check_call(call: Any, where: str, fail: Callable[[str], ImportFormatError]) -> None:
    if not isinstance(call, dict):
        raise fail(f"{where} must be an object.")
    for key, kinds, nullable in _CALL_FIELDS:
        value = call.get(key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise fail(f"{where}.{key} has the wrong type ({type(value).__name__}).")
    if not call["name"]:
        raise fail(f"{where}.name must not be empty.")
    if call["status"] not in TOOL_STATUSES:
        raise fail(f"{where}.status must be one of {', '.join(TOOL_STATUSES)}.")


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
    saved = old.get("saved") if isinstance(old.get("saved"), str) and old.get("saved") else records.now()
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
