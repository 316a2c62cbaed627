"""Scripted tool-calling responses for the fake server, as the real servers stream them (tools.md §7-8).

DashScope: the id and name in the first delta of a call, then `"id":""` deltas with pieces of the
argument string, then `finish_reason: "tool_calls"`. Ollama: complete calls with object arguments in one
chunk, then the `done` line. Used by the engine tests (test_tool_loop.py) and the CLI ones.
"""

from __future__ import annotations

import json
from typing import Any

from fakeserver import Raw


def sse(*objects: dict[str, Any]) -> Raw:
    body = "".join(f"data: {json.dumps(o, ensure_ascii=False, separators=(',', ':'))}\n\n" for o in objects)
    return Raw(200, body + "data: [DONE]\n\n", content_type="text/event-stream", chunked=True)


def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"delta": d, "finish_reason": finish, "index": 0}], "object": "chat.completion.chunk"}


def openai_calls(*calls: tuple[str, str, list[str]], content: str | None = None) -> Raw:
    """A response calling tools: (id, name, argument pieces) each, as DashScope streams them (id and name
    once, then "id":"" deltas with argument pieces), then finish_reason tool_calls."""
    chunks = [delta({"content": content, "role": "assistant"})]
    for index, (call_id, name, pieces) in enumerate(calls):
        chunks.append(delta({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": pieces[0]}}]}))
        chunks += [delta({"tool_calls": [{"index": index, "id": "", "type": "function",
                                          "function": {"arguments": piece}}]}) for piece in pieces[1:]]
    chunks.append(delta({}, "tool_calls"))
    chunks.append({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    return sse(*chunks)


def openai_answer(text: str) -> Raw:
    return sse(delta({"content": text, "role": "assistant"}), delta({}, "stop"),
               {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}})


def ndjson(*lines: dict[str, Any]) -> Raw:
    return Raw(200, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
               content_type="application/x-ndjson", chunked=True)


def ollama_calls(*calls: dict[str, Any], call_ids: bool = True) -> Raw:
    tool_calls = [{**({"id": f"call_{i:08d}"} if call_ids else {}),
                   "function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
                  for i, c in enumerate(calls)]
    return ndjson({"model": "qwen3:8b", "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                   "done": False},
                  {"model": "qwen3:8b", "message": {"role": "assistant", "content": ""}, "done": True,
                   "done_reason": "stop", "prompt_eval_count": 30, "eval_count": 7})


def ollama_answer(text: str) -> Raw:
    return ndjson({"model": "qwen3:8b", "message": {"role": "assistant", "content": text}, "done": False},
                  {"model": "qwen3:8b", "message": {"role": "assistant", "content": ""}, "done": True,
                   "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 2})
