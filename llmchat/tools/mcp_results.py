"""An MCP tool result as the text the model reads (tools.md §9).

Text content is the result. Structured content becomes JSON text when the server sent no text (a server
that sends both puts the same data in its text, as the spec asks). Images, audio and binary resources
are described, `[image: 12 KB PNG omitted]`: tool results travel as text in both protocols llmchat
speaks (an OpenAI-compatible `tool` message and Ollama's take strings), so a picture cannot reach even
a model that could see it without being re-sent as a user image, which would change the conversation.
The whole is cut at `tool_output_limit` like any tool's output.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from llmchat.tools.output import cut


def flatten(result: Any, limit: int) -> str:
    """The result's content blocks as text, in order, cut at `limit` characters."""
    parts = [part for block in result.content or () if (part := _block(block))]
    has_text = any(getattr(block, "type", None) == "text" for block in result.content or ())
    if result.structured_content is not None and not has_text:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if not text:
        text = "(no output)"
    return cut(text, limit)


def _block(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        return f"[{kind}: {_size(block.data)} {_format(block.mime_type)} omitted]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return f"[resource {resource.uri}]\n{text}"
        return f"[resource {resource.uri}: {_size(getattr(resource, 'blob', ''))} " \
               f"{_format(getattr(resource, 'mime_type', None))} omitted]"
    if kind == "resource_link":
        return f"[resource link: {block.uri}{' (' + block.name + ')' if getattr(block, 'name', None) else ''}]"
    return f"[{kind or 'unknown'} content omitted]"


def _size(data: str | None) -> str:
    try:
        size = len(base64.b64decode(data or "", validate=False))
    except (binascii.Error, ValueError):
        size = len(data or "") * 3 // 4
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"


def _format(mime: str | None) -> str:
    """`image/png` -> `PNG`; unknown -> `binary`."""
    if not mime:
        return "binary"
    return mime.split("/", 1)[-1].split(";", 1)[0].upper()
