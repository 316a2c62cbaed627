"""The request side of structured output: a format value ("json" or a JSON Schema) in each wire's form.

Ollama takes the value as its `format` field unchanged; OpenAI-compatible servers need `response_format`
(json_object, or json_schema with a name), and llama.cpp's server takes json_object + schema instead.
DashScope refuses `json_object` with a 400 unless the word "JSON" appears in the messages (bailian-api
§2.6); `mention_json` adds a one-line instruction only when it is missing. These are rules about the
request every caller shares, kept with the providers that send it so no provider imports the engine;
checking the answer (`engine.structured`) is the engine's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

JSON_OBJECT_INSTRUCTION = "Answer with a single JSON object."
JSON_SCHEMA_INSTRUCTION = "Answer with JSON only."


def schema_name(schema: Mapping[str, Any]) -> str:
    """The `json_schema.name` OpenAI requires (^[a-zA-Z0-9_-]{1,64}$): the schema's title, else "answer"."""
    title = schema.get("title")
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", title).strip("_")[:64] if isinstance(title, str) else ""
    return name or "answer"


# ------------------------------------------------------------------------------------------ request


def response_format(fmt: str | Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's `response_format` for a format value: json_object for "json", json_schema for a schema."""
    if isinstance(fmt, Mapping):
        return {"type": "json_schema", "json_schema": {"name": schema_name(fmt), "schema": dict(fmt)}}
    return {"type": "json_object"}


def as_json_object(fmt: Mapping[str, Any]) -> dict[str, Any]:
    """A json_schema `response_format` in the form llama.cpp's server takes instead: json_object + schema."""
    schema = fmt.get("json_schema", {}).get("schema") if isinstance(fmt.get("json_schema"), Mapping) else None
    return {"type": "json_object", "schema": schema} if schema is not None else {"type": "json_object"}


def mention_json(messages: list[dict[str, Any]], fmt: str | Mapping[str, Any] = "json") -> list[dict[str, Any]]:
    """The messages, with a short instruction to answer in JSON unless one of them already says "JSON".

    DashScope (and OpenAI) refuse `response_format: json_object` with a 400 unless the word appears
    in the messages; saying it is also what makes the model comply rather than merely be constrained.
    The instruction joins an existing system message (models follow one system message best).
    """
    if any("json" in _text(m.get("content")).lower() for m in messages):
        return messages
    instruction = JSON_SCHEMA_INSTRUCTION if isinstance(fmt, Mapping) else JSON_OBJECT_INSTRUCTION
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{_text(messages[0].get('content'))}\n\n{instruction}".lstrip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
