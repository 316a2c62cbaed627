"""Tool calling on the two wires: the neutral tool messages in each protocol's form, and the calls read back.

Ollama (tools.md §7) sends complete calls with object arguments and takes the assistant turn back as
received (content, thinking, tool_calls) plus one `tool` message per call with `tool_name` and
`tool_call_id`. The OpenAI-compatible wire (§8) streams each call in deltas keyed by `index`: the id and
name once, then pieces of the argument string, which `CallAssembler` joins and parses only when the
stream ends; the assistant turn goes back with `reasoning_content` when the model reasoned (DeepSeek
refuses it missing, newer Qwen models leak reasoning into `content` without it) and the arguments as a
JSON string, `"{}"` when empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llmchat.core.tools import ToolCall, parse_arguments

#: Words in a server's refusal that mean "this model or server does not do tools" (Ollama: "does not
#: support tools"; vLLM: "auto" tool choice requires --enable-auto-tool-choice; llama.cpp: tools param
#: requires --jinja flag).
_REFUSALS = ("does not support tools", "tool choice requires", "tools param requires", "tool_choice",
             "tools is not supported", "tool calling is not supported", "does not support tool")


def refuses_tools(text: str) -> bool:
    """Whether a 4xx/5xx body is the server refusing `tools` (then the question is asked without them)."""
    lowered = text.lower()
    return any(word in lowered for word in _REFUSALS)


def call_id(value: Any, index: int) -> str:
    """The server's id, or `call_N` for a server that sends none (older Ollama; results then match by name)."""
    return value if isinstance(value, str) and value else f"call_{index}"


# ------------------------------------------------------------------------------------------- Ollama


def _translated(messages: Iterable[Mapping[str, Any]], assistant: Callable[[Mapping[str, Any]], dict[str, Any]],
                tool: Callable[[Mapping[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each neutral tool-call turn and tool result in one protocol's form (`assistant`,
    `tool`); every other message as it is, without the neutral `reasoning` key."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            out.append(assistant(message))
        elif message.get("role") == "tool":
            out.append(tool(message))
        else:
            out.append({k: v for k, v in message.items() if k != "reasoning"})
    return out


def _assistant(message: Mapping[str, Any], reasoning_key: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("reasoning"):
        wire[reasoning_key] = message["reasoning"]
    wire["tool_calls"] = calls
    return wire


def ollama_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Neutral tool messages in Ollama's form: `thinking`, object arguments, `tool_name` + `tool_call_id`."""
    return _translated(
        messages,
        lambda m: _assistant(m, "thinking", [{"id": c.id, "function": {"name": c.name, "arguments": dict(c.arguments)}}
                                             for c in m["tool_calls"]]),
        lambda m: {"role": "tool", "tool_name": m.get("name") or "", "tool_call_id": m.get("tool_call_id") or "",
                   "content": m.get("content") or ""})


def ollama_calls(raw: Any, first_index: int) -> list[ToolCall]:
    """The complete calls in one Ollama chunk's `message.tool_calls` (arguments an object, or a string some
    servers send); `first_index` numbers calls without an id across the whole response."""
    calls: list[ToolCall] = []
    for offset, item in enumerate(raw if isinstance(raw, list) else []):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        index = function.get("index") if isinstance(function.get("index"), int) else first_index + offset
        arguments = function.get("arguments")
        name = str(function.get("name") or "")
        if isinstance(arguments, Mapping):
            calls.append(ToolCall(id=call_id(item.get("id"), index), name=name, arguments=dict(arguments)))
        else:
            text = arguments if isinstance(arguments, str) else None
            parsed, error = parse_arguments(text)
            calls.append(ToolCall(id=call_id(item.get("id"), index), name=name, arguments=parsed,
                                  raw_arguments=text, error=error))
    return calls


# ------------------------------------------------------------------------------------ OpenAI-compatible


def openai_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Neutral tool messages in the OpenAI form: `reasoning_content`, argument strings (`"{}"` when empty),
    tool results by `tool_call_id`."""
    return _translated(
        messages,
        lambda m: _assistant(m, "reasoning_content", [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
            for c in m["tool_calls"]]),
        lambda m: {"role": "tool", "tool_call_id": m.get("tool_call_id") or "", "content": m.get("content") or ""})


def openai_tools(specs: Sequence[Any]) -> dict[str, Any]:
    """What a request offering tools adds: the tools, `tool_choice` "auto" (DashScope refuses anything
    else with thinking on) and `parallel_tool_calls` (DashScope sends one call per response without it)."""
    return {"tools": [spec.wire() for spec in specs], "tool_choice": "auto", "parallel_tool_calls": True}


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK object or of a plain dict (a raw line), None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class CallAssembler:
    """Joins one response's streamed tool-call deltas into complete calls.

    Keyed by `index`; a delta without an index, or whose id names another call (self-hosted Qwen behind
    vLLM/sglang numbers inconsistently), goes by id. An id or name is never overwritten by `""`;
    `"function": {}` deltas are expected; argument pieces are joined as strings (a piece may end in
    the middle of a character's escape, so nothing is parsed before the end).
    """

    def __init__(self) -> None:
        self._slots: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._slots)

    def feed(self, deltas: Any) -> None:
        for delta in deltas or ():
            delta_id = _field(delta, "id") or ""
            index = _field(delta, "index")
            if delta_id:
                owner = next((i for i, slot in self._slots.items() if slot["id"] == delta_id), None)
                if owner is not None:
                    index = owner
            if not isinstance(index, int):
                index = max(self._slots, default=0) if self._slots and not delta_id else len(self._slots)
            slot = self._slots.setdefault(index, {"id": "", "name": "", "arguments": []})
            if delta_id and not slot["id"]:
                slot["id"] = delta_id
            function = _field(delta, "function")
            if function is not None:
                name = _field(function, "name")
                if name and not slot["name"]:
                    slot["name"] = name
                arguments = _field(function, "arguments")
                if isinstance(arguments, str) and arguments:
                    slot["arguments"].append(arguments)

    def calls(self) -> list[ToolCall]:
        """The complete calls, in index order; invalid argument JSON is kept as the call's error."""
        calls = []
        for index in sorted(self._slots):
            slot = self._slots[index]
            text = "".join(slot["arguments"])
            arguments, error = parse_arguments(text)
            calls.append(ToolCall(id=call_id(slot["id"], index), name=slot["name"], arguments=arguments,
                                  raw_arguments=text if error else None, error=error))
        return calls


def message_calls(raw: Any) -> list[ToolCall]:
    """The calls of a non-streamed OpenAI answer (`message.tool_calls`, arguments as strings)."""
    assembler = CallAssembler()
    assembler.feed(raw)
    return assembler.calls()
