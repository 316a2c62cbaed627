"""A fake Ollama + DashScope (OpenAI-compatible) HTTP server for llmchat's tests and benchmarks.

Why a real socket server and not ``httpx.MockTransport``: llmchat talks to providers through the real
``ollama`` (httpx) and ``openai`` 3.x (httpx2) clients. Only a real HTTP/1.1 server exercises what those
clients actually see: chunked transfer encoding, lines arriving one flush at a time, connections cut in
the middle of a chunked body, read timeouts, and keep-alive reuse.

Why byte-faithful: the streams a client parses are produced here, so they must follow the serialisation
rules of the real servers (see ``tests/wire/README.md``), or llmchat's parsers would be tested against
something no real server sends:

* Ollama (Go ``encoding/json`` + gin): compact JSON in Go struct-field order, ``<`` ``>`` ``&`` escaped as
  ``\\u003c`` ``\\u003e`` ``\\u0026``, other non-ASCII raw UTF-8, RFC 3339 nanosecond timestamps with the
  trailing zeros trimmed, one object per NDJSON line, each line flushed as its own HTTP chunk.
* DashScope compatible mode: ``data: {json}\\n\\n`` events, compact JSON with raw UTF-8 and ``null`` written
  out, one ``id``/``created`` per stream, choice key order that varies from chunk to chunk exactly as in
  the captures, ``data: [DONE]\\n\\n`` at the end.

* llama.cpp (``dialect = "llama.cpp"``, llama-cpp-python's server): ``json.dumps`` with its default
  separators, no usage in streams, ``: ping`` comments, errors after the headers as a 200 with an empty
  stream, one request at a time with a waiting request cutting the running stream, ``json_schema`` refused.

``tests/test_fakeserver.py`` regenerates every recorded stream in ``tests/wire/`` with this server and
compares the bytes, so any drift from the real shapes fails a test (``tests/test_llamacpp_dialect.py``
for the captured ``llamacpp_*`` files).

Tool calling (``tests/test_fakeserver_tools.py``; the wire facts are ``tools.md`` §7-8):

* A reply scripts calls with ``Stream(tool_calls=[Call(name, arguments), ...])``, optionally after
  ``reasoning`` and an ``answer`` (no answer text by default when there are calls). Ollama sends each
  complete call on its own line (``calls_together``: all on one), ``{"id":"call_xxxxxxxx","function":
  {"index":N,"name":…,"arguments":{…}}}`` with ``content:""``, then the ``done_reason:"stop"`` line
  (``call_ids=False``: a server before 0.12.10). DashScope streams deltas by index: the first names the
  call (id, type, name, first argument fragment; ``role`` when it opens the stream), later ones carry
  ``"id":""`` and argument pieces (``Call.pieces`` / ``split_at`` / ``piece_size``, ``empty_delta`` for
  ``"function":{}``; ``interleave_calls`` for parallel calls round-robin), then
  ``{"finish_reason":"tool_calls","delta":{}}``, the usage chunk when asked, ``[DONE]``; only the first
  call unless the request says ``parallel_tool_calls: true`` (``single_call_unless_parallel``). ``stream:false``
  gives ``message.tool_calls`` on both. A ``str`` as ``Call.arguments`` is sent verbatim (invalid JSON
  included); ``Stream(cut_chars=True)`` cuts HTTP chunks inside UTF-8 characters. llama.cpp dialect:
  tools only take effect with a named ``tool_choice`` (the first scripted call, or an empty call to the
  named tool, in that server's captured shape); otherwise they are ignored and the answer is text.
* Follow-ups are checked like the real servers: Ollama refuses arguments that are not an object and
  ``tools`` for a model outside ``tool_models``; DashScope refuses a tool message that answers no call of
  the assistant message before it, fewer tool messages than calls, arguments that are not a JSON string
  (``check_tool_arguments``), malformed ``tools`` and bad ``tool_choice``; ``refuse_tools`` answers like
  vLLM without a tool parser. ``Recorded.tools`` / ``tool_choice`` / ``parallel_tool_calls`` /
  ``sent_tool_calls`` / ``tool_results`` and ``FakeServer.chats`` read what the client sent.

Usage::

    # a round of two parallel calls, then the final answer (the second request carries the results;
    # DashScope sends the second call only if the request said "parallel_tool_calls": true)
    server.enqueue(Stream(tool_calls=[Call("get_weather", {"city": "杭州"}), Call("get_time")]),
                   Stream(answer="杭州晴，现在 10:00。"))
    # an invalid-JSON call, its string cut between 杭 and 州
    server.enqueue(Stream(tool_calls=[Call("get_weather", '{"city": "杭州', split_at=(11,))]))
    # Ollama: only models in tool_models take tools (the others answer 400 "... does not support tools")
    server.tool_models.add("qwen3:8b")
    # an OpenAI-compatible server that refuses tools (vLLM without --enable-auto-tool-choice)
    server.refuse_tools = True

Standard library only. Usable as a module (``from fakeserver import FakeServer, Stream``) or as a script::

    python tests/fakeserver.py [--port N] [--delay S] [--piece-size N] [--answer-chars N] ...

which prints ``http://127.0.0.1:PORT`` on its first stdout line and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import re
import socket
import string
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Union

__all__ = [
    "WIRE_DIR",
    "DEFAULT_MODELS",
    "FakeServer",
    "Recorded",
    "Stream",
    "Call",
    "Raw",
    "Stall",
    "Drop",
    "Reply",
    "go_json",
    "go_quote",
    "dashscope_json",
    "rfc3339nano",
    "load_fixture",
    "manifest",
    "ollama_call_id",
    "dashscope_call_id",
    "OLLAMA_ARGUMENTS_NOT_OBJECT",
    "DASHSCOPE_TOOL_NOT_A_RESPONSE",
    "DASHSCOPE_TOOL_CALLS_UNANSWERED",
    "DASHSCOPE_ARGUMENTS_NOT_JSON",
    "DASHSCOPE_TOOL_CHOICE_THINKING",
    "VLLM_NO_AUTO_TOOL_CHOICE",
]

WIRE_DIR = Path(__file__).resolve().parent / "wire"
"""The recorded wire fixtures (a byte-for-byte copy of the shared wire samples)."""

DEFAULT_MODELS: tuple[str, ...] = ("qwen3:0.6b", "qwen3:8b", "llama3.2:latest", "qwen-plus", "qwen3-max")

OLLAMA_JSON = "application/json; charset=utf-8"  # gin's c.JSON
OLLAMA_NDJSON = "application/x-ndjson"
OPENAI_JSON = "application/json"
SSE = "text/event-stream"

OLLAMA_MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
DASHSCOPE_INTERNAL_ERROR = "An internal error has occured, try again later or contact service support."

_BATCH_BYTES = 64 * 1024  # with delay 0, framed chunks are sent in writes of about this size


# --------------------------------------------------------------------------------------------------------
# Serialisers
# --------------------------------------------------------------------------------------------------------

_GO_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_SURROGATES = re.compile("[\ud800-\udfff]")


def _go_str(s: str) -> str:
    """A JSON string literal exactly as Go's ``encoding/json`` writes it.

    Python and Go agree on ``\\"``, ``\\\\``, ``\\b``, ``\\f``, ``\\n``, ``\\r``, ``\\t`` and lower-case
    ``\\u00XX`` for the other control characters. Go additionally HTML-escapes ``<``, ``>``, ``&`` and
    escapes U+2028/U+2029; invalid UTF-8 (here: lone surrogates) becomes ``\\ufffd``.
    """
    out = json.dumps(s, ensure_ascii=False).translate(_GO_HTML_ESCAPES)
    if _SURROGATES.search(out):
        out = _SURROGATES.sub(r"\\ufffd", out)
    return out


def _go_float(x: float) -> str:
    """Go's float64 encoding: shortest digits, positional unless ``|x| < 1e-6`` or ``|x| >= 1e21``."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"json: unsupported value: {x!r}")
    r = repr(x)
    a = abs(x)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        return r.replace("e-0", "e-")  # Go cleans "e-07" to "e-7" but keeps "e+21"
    text = format(Decimal(r), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def go_json(obj: Any) -> str:
    """Serialise like Go's ``json.Marshal``: compact, key order as given (= Go struct order), HTML-escaped."""
    if isinstance(obj, str):
        return _go_str(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return _go_float(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(_go_str(str(k)) + ":" + go_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in obj) + "]"
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def go_quote(s: str) -> str:
    """Go's ``%q`` (``strconv.Quote``), used by Ollama in error texts such as ``"llama3.2" does not ...``."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append(
                {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[
                    ch
                ]
            )
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def dashscope_json(obj: Any) -> str:
    """DashScope's serialisation: compact, raw UTF-8, ``null`` written out, key order as given."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def rfc3339nano(ns: int | None = None) -> str:
    """Go's ``time.RFC3339Nano`` in UTC (Linux clock: up to 9 digits; trailing zeros, bare dot trimmed)."""
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


# --------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------

_manifest_cache: dict[str, Any] | None = None


def manifest() -> dict[str, Any]:
    """``tests/wire/manifest.json``: status, content type and request of every fixture."""
    global _manifest_cache
    if _manifest_cache is None:
        _manifest_cache = json.loads((WIRE_DIR / "manifest.json").read_text(encoding="utf-8"))
    return _manifest_cache


def load_fixture(name: str) -> bytes:
    """The exact bytes of a fixture in ``tests/wire/``."""
    return (WIRE_DIR / name).read_bytes()


# --------------------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One tool call in a scripted reply (``Stream(tool_calls=[Call("get_weather", {"city": "杭州"})])``).

    ``arguments``: a mapping is the call's JSON object (Ollama: Go-serialised in the given key order; OpenAI
    compatible: ``json.dumps`` with its default ``", "``/``": "`` separators and raw UTF-8, as DashScope's
    ``{"location": "杭州市"}``). A ``str`` is sent verbatim: on the OpenAI wire it is the arguments string
    (invalid JSON included: what a model may produce), on Ollama it is spliced in as the raw JSON value.

    ``id``: None generates one of the server's shape (Ollama ``call_`` + 8 of ``[a-z0-9]``, DashScope ``call_``
    + 22 hex digits); a string is sent as given.

    OpenAI-compatible streams send the arguments string in fragments, the first in the delta that carries
    id, type and name, the others in deltas with ``"id":""``. ``pieces`` gives the fragments exactly;
    ``split_at`` cuts the string at these character offsets (e.g. between 杭 and 州); otherwise the first
    fragment runs to the first ``:`` (``""`` when there is none, as DashScope sends for ``{}``) and the rest
    comes ``piece_size`` characters at a time. ``empty_delta`` adds the ``"function":{}`` delta DashScope
    sends after the arguments of some calls.
    """

    name: str
    arguments: Any = field(default_factory=dict)
    id: str | None = None
    pieces: list[str] | None = None
    split_at: tuple[int, ...] | None = None
    piece_size: int = 16
    empty_delta: bool = False

    def text(self) -> str:
        """The arguments string of the OpenAI wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)

    def fragments(self) -> list[str]:
        """The argument string pieces, first one included (it rides in the delta that names the call)."""
        if self.pieces is not None:
            return list(self.pieces) or [""]
        text = self.text()
        if self.split_at is not None:
            cuts = sorted({c for c in self.split_at if 0 < c < len(text)})
            return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        colon = text.find(":")
        first, rest = (text[: colon + 1], text[colon + 1 :]) if colon >= 0 else ("", text)
        return [first, *(_split(rest, self.piece_size) if rest else [])]


@dataclass
class Stream:
    """A generated model reply, rendered in whichever protocol the request used.

    ``answer=None`` means the default answer ``"You said: " + <last user message>``; ``reasoning=None``
    means ``"Let me think about: " + <last user message>`` when the request asked for thinking (Ollama
    ``think: true``, DashScope ``enable_thinking: true``) and no reasoning otherwise. An explicit string
    (``""`` included) is sent as given, whatever the request asked: scripted replies are not second-guessed.

    Chunking: ``pieces`` / ``reasoning_pieces`` give the exact chunks; otherwise the text is cut every
    ``piece_size`` characters. One piece is one NDJSON line (Ollama) or one SSE event (DashScope).

    Failure knobs count *pieces* (reasoning + answer chunks, then the tool calls' lines or deltas;
    DashScope's leading role chunk is not counted and is always sent). If N >= the number of pieces, all
    pieces are sent and the failure replaces the normal ending. When several are set, the smallest N wins.

    * ``cut_after``: close the socket with no terminator (no ``done:true`` / ``[DONE]`` and no final
      0-length HTTP chunk): clients see an incomplete chunked body.
    * ``error_after``: send the in-band error (Ollama ``{"error":...}`` line, status stays 200; DashScope
      ``data: {"error":{...}}`` event) and end the body properly. ``error`` overrides the message.
    * ``stall_after``: stop sending for ``stall_seconds``, then close like ``cut_after``.

    Usage: ``prompt_tokens`` defaults to sum(len(content)//4 + 4) over the request messages (at least 1);
    ``completion_tokens`` to the number of pieces sent (plus, for Ollama's ``eval_count``, the 4 hidden
    ``<think>``/``\\n``/``</think>``/``\\n\\n`` tokens when thinking was split out); ``reasoning_tokens`` to
    the number of reasoning pieces. ``usage=False`` suppresses the DashScope usage chunk even if the
    request asked ``stream_options.include_usage`` (it is only ever sent if it asked).
    """

    answer: str | None = None
    reasoning: str | None = None
    piece_size: int = 3
    pieces: list[str] | None = None
    reasoning_pieces: list[str] | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    inline_think: bool = False
    cut_after: int | None = None
    error_after: int | None = None
    error: str | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage: bool = True
    cached_tokens: int | None = None
    unfinished: bool = False
    """End the stream with ``data: [DONE]`` and no finish_reason, then drop the connection without the final
    0-length chunk: what llama.cpp's server sends when another request cut the running stream."""
    tool_calls: list[Call] | None = None
    """The model calls these tools (see the module docstring, "Tool calling"). With calls and no explicit
    ``answer`` the reply has no text; the OpenAI-compatible ``finish_reason`` becomes ``"tool_calls"``
    unless another value than ``"stop"`` is set; Ollama's ``done_reason`` stays ``"stop"`` as the real
    server's does."""
    interleave_calls: bool = False
    """OpenAI compatible: send the calls' deltas round-robin (index 0, 1, 0, 1, …) instead of one call after
    the other."""
    calls_together: bool = False
    """Ollama: all calls on one line (the generic tool parser of templated models) instead of one line per
    call (the built-in parsers of qwen3 and others)."""
    call_ids: bool = True
    """Ollama: False is a server older than 0.12.10: no ``id`` in the calls, and the arguments a Go map,
    so their keys are written sorted."""
    cut_chars: bool = False
    """Send every NDJSON line / SSE event that holds a multi-byte UTF-8 character as two HTTP chunks, cut
    inside that character's bytes (proxies and slow links do this; a client must decode across chunks)."""


@dataclass
class Raw:
    """A verbatim HTTP response: status, body bytes, content type and extra headers.

    With ``chunked=True`` the body is sent with ``Transfer-Encoding: chunked``, one HTTP chunk per NDJSON
    line (``\\n``) or SSE event (``\\n\\n``), as the real servers flush them; otherwise with Content-Length.
    """

    status: int
    body: bytes | str
    content_type: str = OPENAI_JSON
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    split_at: tuple[int, ...] | None = None
    """With ``chunked``: cut the body at these byte offsets instead of at line/event ends, so a line, an
    event, even a UTF-8 character arrives in pieces (what proxies and slow links do)."""
    chunk_delay: float = 0.0
    """Seconds between HTTP chunks, so each piece reaches the client in its own read."""

    @classmethod
    def fixture(
        cls,
        name: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        chunked: bool | None = None,
    ) -> Raw:
        """Replay ``tests/wire/<name>``; status, content type and chunking default to ``manifest.json``."""
        meta = manifest().get(name, {})
        if chunked is None:
            chunked = meta.get("transfer") == "chunked" or name.endswith((".ndjson", ".sse"))
        return cls(
            status=status if status is not None else int(meta.get("status", 200)),
            body=load_fixture(name),
            content_type=content_type or meta.get("content_type", OPENAI_JSON),
            headers=dict(headers or {}),
            chunked=chunked,
        )


@dataclass
class Stall:
    """Accept the request, send nothing for ``seconds``, then close: the client gets a read timeout."""

    seconds: float = 30.0


@dataclass
class Drop:
    """Close the connection at once, without any response (clients: "server disconnected")."""


Reply = Union[Stream, Raw, Stall, Drop]


@dataclass
class Recorded:
    """One request as received. ``headers`` has lower-case names; ``body`` is the parsed JSON or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    query: str = ""
    aborted: bool = False
    """Set (best effort) when the client went away while the server was still writing."""

    # -- what a tool-calling request sent (both protocols; None / [] when absent) ------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` (the dict entries)."""
        return _messages(self.body) if isinstance(self.body, dict) else []

    @property
    def tools(self) -> list[Any] | None:
        """The ``tools`` array as sent, or None when the request had none."""
        return self.body.get("tools") if isinstance(self.body, dict) else None

    @property
    def tool_names(self) -> list[str]:
        """The names of the offered tools, in order."""
        return [t["function"]["name"] for t in self.tools or []
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]]

    @property
    def tool_choice(self) -> Any:
        return self.body.get("tool_choice") if isinstance(self.body, dict) else None

    @property
    def parallel_tool_calls(self) -> Any:
        return self.body.get("parallel_tool_calls") if isinstance(self.body, dict) else None

    @property
    def sent_tool_calls(self) -> list[dict[str, Any]]:
        """Every ``tool_calls`` entry of the assistant messages sent back, in order."""
        return [c for m in self.messages if m.get("role") == "assistant" and isinstance(m.get("tool_calls"), list)
                for c in m["tool_calls"] if isinstance(c, dict)]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``role: tool`` messages, in order."""
        return [m for m in self.messages if m.get("role") == "tool"]


# --------------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------------


class FakeServer:
    """Ollama and DashScope compatible-mode endpoints on one local port.

    Knobs are plain attributes read on every request, so tests may change them between requests.
    Use ``start()``/``stop()`` or ``with FakeServer() as server:``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.models: list[str] = list(DEFAULT_MODELS)
        self.non_thinking_models: set[str] = {"llama3.2:latest"}
        self.vision_models: set[str] = set()
        self.version: str | None = None
        """``/api/version``'s answer; None replays the recorded ``ollama_version.json`` (0.13.5)."""
        self.tags_capabilities: bool = False
        """Ollama >= 0.30 shape for ``/api/tags``: ``details.context_length`` and per-model ``capabilities``."""
        self.context_lengths: dict[str, int | None] = {}
        """Per model (the resolved name, e.g. ``llama3.2:latest``): ``model_info["<arch>.context_length"]``
        in ``/api/show`` and ``details.context_length`` in >= 0.30 ``/api/tags``; None leaves the key out (a
        server or model that does not say). Unset: by family, as real models are trained (qwen3 40960,
        llama 131072, others 32768)."""
        self.registry: dict[str, list[int]] = {"qwen3:14b": [9_276_198_565, 11_338, 487], "llava:7b": [4_113_289_216]}
        """Models ``/api/pull`` can download: name -> layer sizes in bytes. A pulled model joins ``models``."""
        self.pull_steps: int = 4
        """Progress lines per layer after its first (``completed`` omitted), the last one complete."""
        self.pull_delay: float = 0.0
        """Seconds between pull progress lines."""
        self.api_key: str | None = None
        self.think_by_default: bool = False
        """Ollama >= 0.12.4 thinks when ``think`` is unset; off by default so tests opt in explicitly."""
        self.default_reply: Stream = Stream()
        """Template for generated replies when the queue is empty (its ``answer``/``reasoning`` stay None)."""
        self.requests: list[Recorded] = []
        self.overrides: dict[str, Raw | Stall | Drop] = {}
        """Path -> the reply every request to it gets instead of the normal one (a proxy's HTML error page
        for ``/api/tags`` or ``/v1/models``, an empty 200 body, …); chat paths still use the queue."""
        self.dialect: str = "dashscope"
        """``"dashscope"``, or ``"llama.cpp"``: the OpenAI-compatible routes speak llama-cpp-python's server
        (0.3.36, ``tests/wire/llamacpp_*``): no usage in streams, ``: ping`` comments, a prompt that does not
        fit ``n_ctx`` answered 200 with an empty stream (400 ``context_length_exceeded`` without streaming),
        one request at a time with a waiting request cutting the running stream, ``json_schema`` refused
        with a 500 while ``json_object`` with a ``schema`` is accepted, any model name answered."""
        self.n_ctx: int = 2048
        """llama.cpp: the context window; a prompt of at least this many (estimated) tokens is refused."""
        self.ping_interval: float = 15.0
        """llama.cpp: seconds between ``: ping - <time>`` comments while a stream is open."""
        self.loaded_model: str = "smollm2"
        """llama.cpp: the one model ``/v1/models`` lists (the ``--model_alias``)."""
        self.tool_models: set[str] = set()
        """Ollama: models with the ``tools`` capability (listed in ``/api/show`` and v0.30 ``/api/tags``);
        a chat that sends ``tools`` to any other model gets 400 ``registry.ollama.ai/library/NAME does not
        support tools``. Opt-in like ``vision_models``, so the metadata of the default models is unchanged."""
        self.refuse_tools: bool = False
        """OpenAI compatible: answer ``tools`` (with ``tool_choice`` unset or ``"auto"``) as vLLM started without
        ``--enable-auto-tool-choice`` does: 400 ``"auto" tool choice requires --enable-auto-tool-choice and
        --tool-call-parser to be set``."""
        self.single_call_unless_parallel: bool = True
        """DashScope: without ``"parallel_tool_calls": true`` in the request the model makes one call per
        response, so only the first scripted call is sent (tools.md §8); False sends them all anyway."""
        self.check_tool_arguments: bool = True
        """DashScope: an assistant ``tool_calls`` entry sent back whose ``function.arguments`` is not a string
        holding JSON gets 400 ``The "function.arguments" parameter of the code model must be in JSON format.``
        (real since 2025: a model's invalid arguments must not be echoed back verbatim)."""
        self.running = threading.Lock()
        self.waiting = 0
        self._host = host
        self._port = port
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        """Bind and serve on one daemon thread. Returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake up stalled handlers and close every open connection. Idempotent."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self._host}:{self.port}"

    # -- scripting and inspection ----------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Queue scripted replies (FIFO) for the next chat requests of either protocol.

        A reply is consumed only by a chat request that passed the server's own checks (auth, JSON, known
        model, thinking support); the default reply is generated when the queue is empty.
        """
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._queue)

    def last(self, path_suffix: str | None = None) -> Recorded:
        """The last request (optionally: whose path ends with ``path_suffix``). Raises LookupError if none."""
        with self._lock:
            for rec in reversed(self.requests):
                if path_suffix is None or rec.path.endswith(path_suffix):
                    return rec
        raise LookupError(f"no request{'' if path_suffix is None else ' to *' + path_suffix}")

    @property
    def chats(self) -> list[Recorded]:
        """The chat requests of either protocol, in order (a tool loop's rounds)."""
        with self._lock:
            return [r for r in self.requests if r.path == "/api/chat" or r.path.endswith("/chat/completions")]

    def reset(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()

    # -- internals used by the handler -----------------------------------------------------------------

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.default_reply

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server stops (so stalls never hold up a test's teardown)."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Abort

    def _resolve_ollama(self, name: str) -> str | None:
        """Ollama's name resolution: ``llama3.2`` means ``llama3.2:latest``."""
        if name in self.models:
            return name
        if ":" not in name and name + ":latest" in self.models:
            return name + ":latest"
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # real servers queue far more than socketserver's 5; batch opens 16 at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeServer):
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (Ctrl-C, a timeout test) is normal here, not a server error to print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Abort(Exception):
    """End the response now and close the connection (scripted cut/stall/drop, or the server stopping)."""


class _ClientGone(_Abort):
    """A write failed: the client closed the connection."""


# --------------------------------------------------------------------------------------------------------
# Reply planning (protocol independent)
# --------------------------------------------------------------------------------------------------------


def _raw_pieces(body: bytes, reply: Raw) -> list[bytes]:
    """A raw body's HTTP chunks: at the given offsets, else one per NDJSON line or SSE event."""
    if reply.split_at is not None:
        cuts = sorted({c for c in reply.split_at if 0 < c < len(body)})
        return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    sep = b"\n\n" if reply.content_type.startswith(SSE) else b"\n"
    pieces, start = [], 0
    while start < len(body):
        end = body.find(sep, start)
        end = len(body) if end < 0 else end + len(sep)
        pieces.append(body[start:end])
        start = end
    return pieces


def _split(text: str, size: int) -> list[str]:
    if size <= 0:
        raise ValueError("piece_size must be positive")
    return [text[i : i + size] for i in range(0, len(text), size)]


def _text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return "".join(t for t in texts if isinstance(t, str))
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    msgs = body.get("messages")
    return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(_messages(body)):
        if m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _estimate_prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, sum(len(_text_of(m.get("content"))) // 4 + 4 for m in _messages(body)))


@dataclass
class _Plan:
    pieces: list[tuple[bool, str]]  # (is_reasoning, text) in emission order
    content: str  # everything sent as content (inline tags included)
    reasoning: str  # reasoning sent in its own field
    thinking: bool  # thinking mode: DashScope delta shape, Ollama hidden tag tokens
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


def _plan(spec: Stream, body: dict[str, Any], thinking_requested: bool, *, ollama: bool) -> _Plan:
    user = _last_user(body)
    if spec.pieces is not None:
        answer_pieces = list(spec.pieces)
    else:
        default = "" if spec.tool_calls else "You said: " + user
        answer = spec.answer if spec.answer is not None else default
        answer_pieces = _split(answer, spec.piece_size)
    if spec.reasoning_pieces is not None:
        reasoning_pieces = list(spec.reasoning_pieces)
    else:
        if spec.reasoning is not None:
            reasoning = spec.reasoning
        else:
            reasoning = "Let me think about: " + user if thinking_requested else ""
        reasoning_pieces = _split(reasoning, spec.piece_size)

    if spec.inline_think:
        # Older Ollama / no reasoning parser: the tags arrive as content pieces (one token each).
        tags_open = ["<think>", "\n"] if reasoning_pieces else ["<think>", "\n\n"]
        inline = tags_open + reasoning_pieces + ["</think>", "\n\n"]
        pieces = [(False, p) for p in inline + answer_pieces]
        thinking = thinking_requested and not ollama
        hidden = 0
        reasoning_text = ""
        default_reasoning_tokens = 0
    else:
        pieces = [(True, p) for p in reasoning_pieces] + [(False, p) for p in answer_pieces]
        thinking = thinking_requested or bool(reasoning_pieces)
        # Ollama's parser swallows <think>, \n, </think>, \n\n; they still count in eval_count.
        hidden = 4 if ollama and thinking else 0
        reasoning_text = "".join(reasoning_pieces)
        default_reasoning_tokens = len(reasoning_pieces)
    # A call costs its arguments (about 4 characters a token) plus the name and the call tags.
    call_tokens = sum(len(c.text()) // 4 + 3 for c in spec.tool_calls or [])
    completion_tokens = spec.completion_tokens
    if completion_tokens is None:
        completion_tokens = len(pieces) + hidden + call_tokens
    return _Plan(
        pieces=pieces,
        content="".join(p for is_r, p in pieces if not is_r),
        reasoning=reasoning_text,
        thinking=thinking,
        prompt_tokens=spec.prompt_tokens if spec.prompt_tokens is not None else _estimate_prompt_tokens(body),
        completion_tokens=completion_tokens,
        reasoning_tokens=default_reasoning_tokens if spec.reasoning_tokens is None else spec.reasoning_tokens,
    )


def _failure(spec: Stream) -> tuple[int, str] | None:
    """The failure that triggers first: (pieces to send before it, "cut" | "error" | "stall")."""
    limits = [
        (max(0, n), kind)
        for n, kind in ((spec.cut_after, "cut"), (spec.error_after, "error"), (spec.stall_after, "stall"))
        if n is not None
    ]
    return min(limits) if limits else None


# --------------------------------------------------------------------------------------------------------
# Renderers: one chunk (NDJSON line / SSE event) at a time, so timestamps are taken at send time
# --------------------------------------------------------------------------------------------------------


def ollama_call_id() -> str:
    """``server/routes.go`` toolCallId: ``call_`` + 8 characters of ``[a-z0-9]``."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def dashscope_call_id() -> str:
    """DashScope's call ids, e.g. ``call_0bdcc155f2534f65a05cb1``: ``call_`` + 22 hex digits."""
    return "call_" + uuid.uuid4().hex[:22]


class _OllamaRenderer:
    """Ollama >= 0.12 ``api.ChatResponse`` lines (``done`` before ``done_reason``)."""

    def __init__(self, model: str, plan: _Plan, spec: Stream) -> None:
        self.plan = plan
        self.spec = spec
        self.head = '{"model":' + _go_str(model) + ',"created_at":"'
        self.calls = list(spec.tool_calls or [])
        self.ids = [c.id if c.id is not None else ollama_call_id() for c in self.calls]

    def preamble(self) -> list[bytes]:
        return []

    def _call_json(self, n: int) -> str:
        """``api.ToolCall``: ``{"id":…,"function":{"index":N,"name":…,"arguments":{…}}}`` (id omitempty)."""
        call = self.calls[n]
        if isinstance(call.arguments, str):
            args = call.arguments
        else:
            items = dict(call.arguments)
            args = go_json(dict(sorted(items.items())) if not self.spec.call_ids else items)
        head = '{"id":' + _go_str(self.ids[n]) + "," if self.spec.call_ids and self.ids[n] else "{"
        return head + '"function":{"index":' + str(n) + ',"name":' + _go_str(call.name) + ',"arguments":' + args + "}}"

    def _calls_line(self, numbers: list[int]) -> bytes:
        calls = ",".join(self._call_json(n) for n in numbers)
        mid = '","message":{"role":"assistant","content":"","tool_calls":[' + calls + ']},"done":false}\n'
        return (self.head + rfc3339nano() + mid).encode()

    def call_events(self) -> list[Callable[[], bytes]]:
        """One line per call (built-in parsers), or one line with all of them (``calls_together``)."""
        if not self.calls:
            return []
        if self.spec.calls_together:
            return [lambda: self._calls_line(list(range(len(self.calls))))]
        return [lambda n=n: self._calls_line([n]) for n in range(len(self.calls))]

    def piece(self, is_reasoning: bool, text: str) -> bytes:
        if is_reasoning:
            mid = '","message":{"role":"assistant","content":"","thinking":'
        else:
            mid = '","message":{"role":"assistant","content":'
        return (self.head + rfc3339nano() + mid + _go_str(text) + '},"done":false}\n').encode()

    def _final_obj(self, content: str, thinking: str, with_calls: bool = False) -> str:
        plan = self.plan
        prompt, evals = plan.prompt_tokens, plan.completion_tokens
        # Deterministic, consistent durations (ns): ~87 tokens/s generation, total >= the parts.
        load = 58_910_344
        prompt_eval = prompt * 2_172_370 + 457 if prompt else 0
        eval_ = evals * 11_437_281 + 123 if evals else 0
        total = load + prompt_eval + eval_ + 6_738_678
        msg = '{"role":"assistant","content":' + _go_str(content)
        if thinking:
            msg += ',"thinking":' + _go_str(thinking)
        if with_calls and self.calls:
            msg += ',"tool_calls":[' + ",".join(self._call_json(n) for n in range(len(self.calls))) + "]"
        out = self.head + rfc3339nano() + '","message":' + msg + '},"done":true'
        if self.spec.finish_reason:
            out += ',"done_reason":' + _go_str(self.spec.finish_reason)
        # Go's omitempty drops zero metrics.
        for key, value in (
            ("total_duration", total),
            ("load_duration", load),
            ("prompt_eval_count", prompt),
            ("prompt_eval_duration", prompt_eval),
            ("eval_count", evals),
            ("eval_duration", eval_),
        ):
            if value:
                out += f',"{key}":{value}'
        return out + "}"

    def final(self) -> list[bytes]:
        return [(self._final_obj("", "") + "\n").encode()]

    def nonstream(self) -> bytes:
        return self._final_obj(self.plan.content, self.plan.reasoning, with_calls=True).encode()

    def error(self) -> bytes:
        return (go_json({"error": self.spec.error or OLLAMA_MIDSTREAM_ERROR}) + "\n").encode()


class _DashScopeRenderer:
    """DashScope compatible-mode chunks, with the per-position choice key order of the captures."""

    def __init__(self, model: str, plan: _Plan, spec: Stream, include_usage: bool) -> None:
        self.plan = plan
        self.spec = spec
        self.include_usage = include_usage and spec.usage
        self.id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())  # one id and one created per stream
        self.model = model
        self.meta = (
            f',"created":{self.created},"system_fingerprint":null,"model":{dashscope_json(model)},'
            f'"id":"{self.id}"}}\n\n'
        )
        self.tail = '],"object":"chat.completion.chunk","usage":null' + self.meta
        self.position = 0  # events sent so far
        self.calls = list(spec.tool_calls or [])
        self.ids = [c.id if c.id is not None else dashscope_call_id() for c in self.calls]
        self.finish_reason = "tool_calls" if self.calls and spec.finish_reason == "stop" else spec.finish_reason

    def _event(self, choice: str) -> bytes:
        self.position += 1
        return ('data: {"choices":[' + choice + self.tail).encode()

    def _call_deltas(self, n: int) -> list[Callable[[], bytes]]:
        """One call as qwen-plus streams it (Alibaba's function-calling doc, 2026): the first delta names it
        (``index``/``id``/``type``/``function`` in that order, ``role`` once per stream), the later ones carry
        ``"id":""`` and an argument fragment in ``function``/``index``/``id``/``type`` order and no
        ``finish_reason``; the ``"function":{}`` delta is qwen-max's (2025)."""
        call = self.calls[n]
        first, *rest = call.fragments()

        def head() -> bytes:
            tool = ('{"index":' + str(n) + ',"id":' + dashscope_json(self.ids[n]) + ',"type":"function","function":'
                    '{"name":' + dashscope_json(call.name) + ',"arguments":' + dashscope_json(first) + "}}")
            role = ',"role":"assistant"' if self.position == 0 else ""
            delta = '{"content":null,"tool_calls":[' + tool + "]" + role + "}"
            return self._event('{"delta":' + delta + ',"finish_reason":null,"index":0,"logprobs":null}')

        def more(fragment: str) -> bytes:
            tool = ('{"function":{"arguments":' + dashscope_json(fragment) + '},"index":' + str(n)
                    + ',"id":"","type":"function"}')
            return self._event('{"delta":{"tool_calls":[' + tool + ']},"index":0}')

        def empty() -> bytes:
            tool = '{"function":{},"index":' + str(n) + ',"id":"","type":"function"}'
            delta = '{"content":null,"tool_calls":[' + tool + "]}"
            return self._event('{"delta":' + delta + ',"finish_reason":null,"index":0,"logprobs":null}')

        events: list[Callable[[], bytes]] = [head]
        events += [lambda f=f: more(f) for f in rest]
        if call.empty_delta:
            events.append(empty)
        return events

    def call_events(self) -> list[Callable[[], bytes]]:
        """Every call's deltas, one call after the other or round-robin (``interleave_calls``)."""
        per_call = [self._call_deltas(n) for n in range(len(self.calls))]
        if not self.spec.interleave_calls:
            return [e for events in per_call for e in events]
        out: list[Callable[[], bytes]] = []
        for i in range(max((len(e) for e in per_call), default=0)):
            out += [events[i] for events in per_call if i < len(events)]
        return out

    def preamble(self) -> list[bytes]:
        if self.calls and not self.plan.pieces:
            return []  # the first call's delta carries the role
        if self.plan.thinking:
            delta = '{"content":null,"role":"assistant","reasoning_content":""}'
        else:
            delta = '{"content":"","role":"assistant"}'
        return [self._event('{"delta":' + delta + ',"index":0,"logprobs":null,"finish_reason":null}')]

    def piece(self, is_reasoning: bool, text: str) -> bytes:
        value = dashscope_json(text)
        if not self.plan.thinking:
            delta = '{"content":' + value + "}"
        elif is_reasoning:
            delta = '{"content":null,"reasoning_content":' + value + "}"
        else:
            delta = '{"content":' + value + ',"reasoning_content":null}'
        if self.position == 1:
            if self.plan.thinking:
                choice = '{"finish_reason":null,"logprobs":null,"delta":' + delta + ',"index":0}'
            else:
                choice = '{"finish_reason":null,"delta":' + delta + ',"index":0,"logprobs":null}'
        else:
            choice = '{"delta":' + delta + ',"finish_reason":null,"index":0,"logprobs":null}'
        return self._event(choice)

    def usage_obj(self) -> dict[str, Any]:
        plan = self.plan
        usage: dict[str, Any] = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        }
        if plan.thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": plan.reasoning_tokens}
        usage["prompt_tokens_details"] = {"cached_tokens": self.spec.cached_tokens or 0}
        return usage

    def final(self) -> list[bytes]:
        if self.calls:
            delta = "{}"
        elif self.plan.thinking:
            delta = '{"content":"","reasoning_content":null}'
        else:
            delta = '{"content":""}'
        out = [
            self._event(
                '{"finish_reason":'
                + dashscope_json(self.finish_reason)
                + ',"delta":'
                + delta
                + ',"index":0,"logprobs":null}'
            )
        ]
        if self.include_usage:
            out.append(
                (
                    'data: {"choices":[],"object":"chat.completion.chunk","usage":'
                    + dashscope_json(self.usage_obj())
                    + self.meta
                ).encode()
            )
        out.append(b"data: [DONE]\n\n")
        return out

    def nonstream(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": self.plan.content}
        if self.plan.reasoning:
            message["reasoning_content"] = self.plan.reasoning
        if self.calls:
            message["tool_calls"] = [
                {"function": {"name": c.name, "arguments": c.text()}, "index": n, "id": self.ids[n], "type": "function"}
                for n, c in enumerate(self.calls)
            ]
        body = {
            "choices": [
                {"message": message, "finish_reason": self.finish_reason, "index": 0, "logprobs": None}
            ],
            "object": "chat.completion",
            "usage": self.usage_obj(),
            "created": self.created,
            "system_fingerprint": None,
            "model": self.model,
            "id": self.id,
        }
        return dashscope_json(body).encode()

    def error_obj(self) -> dict[str, Any]:
        return {
            "error": {
                "code": "internal_error",
                "message": self.spec.error or DASHSCOPE_INTERNAL_ERROR,
                "param": None,
                "type": "internal_error",
            },
            "request_id": self.id[len("chatcmpl-") :],
        }

    def error(self) -> bytes:
        return ("data: " + dashscope_json(self.error_obj()) + "\n\n").encode()


class _LlamaCppRenderer:
    """llama-cpp-python's server: ``json.dumps`` with its default separators, id/model/created/object/choices,
    a role chunk, one chunk per token, an empty-delta finish chunk, ``[DONE]``; never any usage.

    A forced tool call (a named ``tool_choice``; ``tests/wire/llamacpp_stream_tool_call.sse``) is another
    shape: id/object/created/model/choices and index/finish_reason/logprobs/delta, every delta repeating
    the call's id and name beside a legacy ``function_call``, one argument token each, an empty one last,
    then ``finish_reason:"tool_calls"`` with a delta of nulls."""

    def __init__(self, model: str, plan: _Plan, spec: Stream) -> None:
        self.plan = plan
        self.spec = spec
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.call = spec.tool_calls[0] if spec.tool_calls else None
        if self.call is not None:
            self.call_id = self.call.id or f"call__0_{self.call.name}_{self.id[len('chat'):]}"

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self.call is not None:
            chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [{"index": 0, "finish_reason": finish, "logprobs": None, "delta": delta}]}
        else:
            chunk = {
                "id": self.id, "model": self.model, "created": self.created, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
        return ("data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n").encode()

    def _call_delta(self, arguments: str) -> dict[str, Any]:
        assert self.call is not None
        function = {"name": self.call.name, "arguments": arguments}
        return {"role": None, "content": None, "function_call": function,
                "tool_calls": [{"index": 0, "id": self.call_id, "type": "function", "function": dict(function)}]}

    def preamble(self) -> list[bytes]:
        if self.call is not None:
            return [self._event({"role": "assistant", "content": None, "function_call": None, "tool_calls": None})]
        return [self._event({"role": "assistant"})]

    def call_events(self) -> list[Callable[[], bytes]]:
        if self.call is None:
            return []
        return [lambda f=f: self._event(self._call_delta(f)) for f in [*self.call.fragments(), ""]]

    def piece(self, is_reasoning: bool, text: str) -> bytes:
        return self._event({"content": text})

    def final(self) -> list[bytes]:
        if self.call is not None:
            nulls = {"role": None, "content": None, "function_call": None, "tool_calls": None}
            return [self._event(nulls, "tool_calls"), b"data: [DONE]\n\n"]
        return [self._event({}, self.spec.finish_reason), b"data: [DONE]\n\n"]

    def nonstream(self) -> bytes:
        message: dict[str, Any] = {"content": self.plan.content, "role": "assistant"}
        finish = self.spec.finish_reason
        if self.call is not None:
            function = {"name": self.call.name, "arguments": self.call.text()}
            message = {"content": None,
                       "tool_calls": [{"id": self.call_id, "type": "function", "function": function}],
                       "role": "assistant", "function_call": dict(function)}
            finish = "tool_calls"
        body = {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": self.plan.prompt_tokens, "completion_tokens": self.plan.completion_tokens,
                      "total_tokens": self.plan.prompt_tokens + self.plan.completion_tokens},
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def llamacpp_ping(now: float | None = None) -> bytes:
    """sse-starlette's keep-alive comment: ``: ping - 2026-11-26 13:55:00.123456+00:00``."""
    import datetime

    stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    return f": ping - {stamp}\n\n".encode()


def llamacpp_null_content(body: dict[str, Any]) -> bytes | None:
    """The 500 for an assistant message whose ``content`` is null (``tests/wire/
    llamacpp_error_assistant_content_null.json``, streaming or not): the request model's pydantic union
    lists why the message fits none of the roles. An assistant tool-call turn must send ``""``."""
    errors: list[dict[str, Any]] = []
    for i, message in enumerate(_messages(body)):
        if message.get("role") != "assistant" or "content" not in message or message["content"] is not None:
            continue

        def role(kind: str, want: str, i: int = i) -> dict[str, Any]:
            loc = ("body", "messages", i, f"ChatCompletionRequest{kind}Message", "role")
            return {"type": "literal_error", "loc": loc, "msg": f"Input should be '{want}'", "input": "assistant",
                    "ctx": {"expected": f"'{want}'"}}

        def missing(kind: str, field: str, i: int = i, message: dict[str, Any] = message) -> dict[str, Any]:
            return {"type": "missing", "loc": ("body", "messages", i, f"ChatCompletionRequest{kind}Message", field),
                    "msg": "Field required", "input": message}

        errors += [role("System", "system"), role("User", "user"),
                   {"type": "string_type", "loc": ("body", "messages", i, "ChatCompletionRequestAssistantMessage",
                                                   "content"), "msg": "Input should be a valid string", "input": None},
                   role("Tool", "tool"), missing("Tool", "tool_call_id"), role("Function", "function"),
                   missing("Function", "name")]
    if not errors:
        return None
    text = (f"{len(errors)} validation errors:\n" + "\n".join("  " + repr(e) for e in errors)
            + '\n\n  File "/usr/local/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in '
            "create_chat_completion\n    POST /v1/chat/completions")
    error = {"message": text, "type": "internal_server_error", "param": None, "code": None}
    return json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":")).encode()


def llamacpp_too_long(n_ctx: int, prompt_tokens: int, max_tokens: Any) -> bytes:
    """The 400 for a prompt longer than the window (``llama_cpp/server/errors.py``, chat completions)."""
    message = (
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{(max_tokens or 0) + prompt_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
        "completion). Please reduce the length of the messages or completion."
    )
    error = {
        "message": message, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
    }
    return json.dumps({"error": error}, separators=(",", ":")).encode()


_Renderer = Union[_OllamaRenderer, _DashScopeRenderer, _LlamaCppRenderer]


# --------------------------------------------------------------------------------------------------------
# Ollama metadata
# --------------------------------------------------------------------------------------------------------


def _family(name: str) -> str:
    base = name.split(":", 1)[0]
    if base.startswith("llama"):
        return "llama"
    m = re.match(r"[a-z]+[0-9]*", base)
    return m.group(0) if m else base


def _details(name: str) -> dict[str, Any]:
    family = _family(name)
    tag = name.split(":", 1)[1] if ":" in name else ""
    size = tag.upper() if re.fullmatch(r"\d+(\.\d+)?b", tag) else "7.6B"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "Q4_K_M",
    }


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def _capabilities(fake: FakeServer, name: str) -> list[str]:
    # Ollama's order (server/images.go): completion, tools, insert, vision, thinking.
    caps = ["completion"]
    if name in fake.tool_models:
        caps.append("tools")
    if name in fake.vision_models:
        caps.append("vision")
    if name not in fake.non_thinking_models:
        caps.append("thinking")
    return caps


def _context_length(fake: FakeServer, name: str) -> int | None:
    if name in fake.context_lengths:
        return fake.context_lengths[name]
    return {"qwen3": 40960, "llama": 131072}.get(_family(name), 32768)


def _tags_body(fake: FakeServer) -> bytes:
    models = []
    for m in fake.models:
        entry: dict[str, Any] = {
            "name": m,
            "model": m,
            "modified_at": "2026-03-02T18:11:40.412736152+08:00",
            "size": 1_000_000_000 + len(m) * 123_456_789,
            "digest": _digest(m),
            "details": _details(m),
        }
        if fake.tags_capabilities:  # >= 0.30 (ollama_tags_v030.json): two more details, then capabilities
            if (ctx := _context_length(fake, m)) is not None:
                entry["details"]["context_length"] = ctx
            entry["details"]["embedding_length"] = 4096
            entry["capabilities"] = _capabilities(fake, m)
        models.append(entry)
    return go_json({"models": models}).encode()


def _pull_lines(layers: list[int] | None, steps: int) -> list[dict[str, Any]]:
    """``api.ProgressResponse`` objects (status, digest, total, completed; zero values omitted) as
    ``ollama pull`` receives them; an unknown model fails at the manifest with the registry's text."""
    lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    if layers is None:
        lines.append({"error": "pull model manifest: file does not exist"})
        return lines
    for n, total in enumerate(layers):
        digest = _digest(f"layer-{n}-{total}")
        head = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": total}
        lines.append(dict(head))
        for step in range(1, max(steps, 1) + 1):
            lines.append({**head, "completed": total * step // max(steps, 1)})
    lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
    return lines


def _show_body(fake: FakeServer, name: str) -> bytes:
    """Built from the (trimmed) qwen3 capture so field order and value types are those of a real server."""
    show = json.loads(load_fixture("ollama_show_qwen3.json"))
    family = _family(name)
    details = _details(name)
    show["modelfile"] = show["modelfile"].replace("qwen3:8b", name)
    show["details"] = details
    info: dict[str, Any] = {}
    for key, value in show["model_info"].items():
        if key.startswith("qwen3."):
            key = family + key[len("qwen3") :]
        info[key] = value
    info["general.architecture"] = family
    info["general.size_label"] = details["parameter_size"]
    del info[f"{family}.context_length"]
    if (ctx := _context_length(fake, name)) is not None:
        info[f"{family}.context_length"] = ctx
    show["model_info"] = dict(sorted(info.items()))  # Go marshals map keys sorted
    show["capabilities"] = _capabilities(fake, name)
    return go_json(show).encode()


def _go_decode_error(raw: bytes) -> str:
    """Approximate Go ``encoding/json`` decoder messages for a bad request body."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0) or 0
        text = raw.decode("utf-8", "replace")
        if pos >= len(text.rstrip()):
            return "unexpected EOF"
        return f"invalid character '{text[pos]}' looking for beginning of value"
    kinds = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}
    kind = kinds.get(type(value), "value")
    return f"json: cannot unmarshal {kind} into Go value of type api.ChatRequest"


# --------------------------------------------------------------------------------------------------------
# Tool-calling request checks, as the real servers make them
# --------------------------------------------------------------------------------------------------------

OLLAMA_ARGUMENTS_NOT_OBJECT = "Value looks like object, but can't find closing '}' symbol"
"""Ollama >= 0.14 (``api.ToolCallFunctionArguments`` is an ordered map decoded by ``jsonparser.ObjectEach``):
the 400 for a ``tool_calls[].function.arguments`` that is not a JSON object. 0.12-0.13 said
``json: cannot unmarshal string into Go struct field ToolCallFunction.tool_calls.function.arguments of type
api.ToolCallFunctionArguments``."""

DASHSCOPE_TOOL_NOT_A_RESPONSE = (
    'messages with role "tool" must be a response to a preceeding message with "tool_calls".'
)
DASHSCOPE_TOOL_CALLS_UNANSWERED = (
    'An assistant message with "tool_calls" must be followed by tool messages responding to each "tool_call_id". '
    "The following tool_call_ids did not have response messages: message[{index}].role"
)
DASHSCOPE_ARGUMENTS_NOT_JSON = 'The "function.arguments" parameter of the code model must be in JSON format.'
DASHSCOPE_TOOL_CHOICE_THINKING = (
    "The tool_choice parameter does not support being set to required or object in thinking mode"
)
VLLM_NO_AUTO_TOOL_CHOICE = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


def _ollama_tool_calls_error(body: dict[str, Any]) -> str | None:
    """Go decoding ``messages[].tool_calls[].function.arguments`` into its ordered map: anything but an
    object (a JSON string above all: the OpenAI form) fails the whole request."""
    for message in _messages(body):
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and "arguments" in function and not isinstance(function["arguments"], dict):
                return OLLAMA_ARGUMENTS_NOT_OBJECT
    return None


def _tools_shape_error(tools: Any) -> str | None:
    """``tools`` must be ``[{"type": "function", "function": {"name": …, …}}]`` (wording modelled on
    OpenAI's: no DashScope capture of this error was found)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "Invalid type for 'tools': expected an array of objects."
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return f"Invalid type for 'tools[{i}]': expected an object."
        if tool.get("type") != "function":
            return f"Invalid value for 'tools[{i}].type': supported values are: 'function'."
        function = tool.get("function")
        if not isinstance(function, dict):
            return f"Missing required parameter: 'tools[{i}].function'."
        if not isinstance(function.get("name"), str) or not function["name"]:
            return f"Missing required parameter: 'tools[{i}].function.name'."
        if "parameters" in function and not isinstance(function["parameters"], dict):
            return f"Invalid type for 'tools[{i}].function.parameters': expected an object."
    return None


def _dashscope_tool_error(body: dict[str, Any], thinking: bool, check_arguments: bool) -> str | None:
    """The message of DashScope's 400 for a malformed tool-calling request, or None.

    Messages: each ``tool`` message must answer a call of the assistant message it follows (directly or
    after other tool messages); each assistant ``tool_calls`` message must be followed by one tool message
    per call. ``message[K]`` is the first message where a missing answer was expected (0-based).
    """
    if (bad := _tools_shape_error(body.get("tools"))) is not None:
        return bad
    choice = body.get("tool_choice")
    if thinking and (choice == "required" or isinstance(choice, dict)):
        return DASHSCOPE_TOOL_CHOICE_THINKING
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
        names = [t["function"]["name"] for t in body.get("tools") or []]
        if wanted not in names:
            return (f'Invalid value for "tool_choice": no function named "{wanted}" was specified in the '
                    '"tools" parameter.')
    messages = _messages(body)
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.get("role") == "tool":
            return DASHSCOPE_TOOL_NOT_A_RESPONSE  # not after an assistant message with tool_calls
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        i += 1
        if not isinstance(calls, list) or not calls:
            continue
        ids: list[Any] = []
        for call in calls:
            call = call if isinstance(call, dict) else {}
            ids.append(call.get("id"))
            function = call.get("function")
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if not isinstance(arguments, str) or (check_arguments and not _is_json_text(arguments)):
                return DASHSCOPE_ARGUMENTS_NOT_JSON
        answered: set[Any] = set()
        while i < len(messages) and messages[i].get("role") == "tool":
            if messages[i].get("tool_call_id") not in ids:
                return DASHSCOPE_TOOL_NOT_A_RESPONSE
            answered.add(messages[i].get("tool_call_id"))
            i += 1
        if answered != set(ids):
            return DASHSCOPE_TOOL_CALLS_UNANSWERED.format(index=i)
    return None


def _is_json_text(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# Handler
# --------------------------------------------------------------------------------------------------------


class _ChunkedWriter:
    """Chunked transfer encoding; each line/event is its own HTTP chunk, flushed or batched."""

    def __init__(self, handler: _Handler, batch: bool, cut_chars: bool = False) -> None:
        self.handler = handler
        self.batch = batch
        self.cut_chars = cut_chars
        self.buf: list[bytes] = []
        self.size = 0

    def start(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

    def chunk(self, data: bytes) -> None:
        if not data:
            return  # a 0-length chunk would end the body
        if self.cut_chars:
            lead = next((i for i, b in enumerate(data) if b >= 0xC0), -1)  # first multi-byte character
            if lead >= 0:
                self.cut_chars = False
                try:
                    self.chunk(data[: lead + 1])  # its lead byte ends this chunk …
                    self.chunk(data[lead + 1 :])  # … its continuation bytes start the next
                finally:
                    self.cut_chars = True
                return
        framed = b"%x\r\n%s\r\n" % (len(data), data)
        if not self.batch:
            self.handler._write(framed)
            return
        self.buf.append(framed)
        self.size += len(framed)
        if self.size >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            data = b"".join(self.buf)
            self.buf.clear()
            self.size = 0
            self.handler._write(data)

    def end(self) -> None:
        self.buf.append(b"0\r\n\r\n")
        self.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    verbose: ClassVar[bool] = False

    # -- plumbing -------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Go's net package sets TCP_NODELAY on every connection, and so does this: without it, a response
        # written in two pieces (headers, then body) waits for the client's delayed ACK, ~40 ms a request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        if self.verbose:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Like the base class but without a ``Server:`` header (neither Ollama nor DashScope's gateway
        sends Python's)."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def end_headers(self) -> None:
        try:
            super().end_headers()
        except OSError as exc:
            raise _ClientGone from exc

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        path, _, query = self.path.partition("?")
        raw = self._read_body()
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        rec = Recorded(method=method, path=path, headers=headers, body=body, raw=raw, query=query)
        fake._record(rec)
        try:
            self._route(method, path, rec)
        except _ClientGone:
            rec.aborted = True
            self.close_connection = True
        except _Abort:
            self.close_connection = True

    def _route(self, method: str, path: str, rec: Recorded) -> None:
        fake = self.server.fake
        if path in fake.overrides:
            self._send_other(fake.overrides[path])
        elif path == "/" and method in ("GET", "HEAD"):
            self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version" and method == "GET":
            if fake.version is None:
                self._send(200, load_fixture("ollama_version.json"), OLLAMA_JSON)
            else:
                self._send(200, go_json({"version": fake.version}).encode(), OLLAMA_JSON)
        elif path == "/api/pull" and method == "POST":
            self._ollama_pull(rec)
        elif path == "/api/tags" and method == "GET":
            self._send(200, _tags_body(fake), OLLAMA_JSON)
        elif path == "/api/show" and method == "POST":
            self._ollama_show(rec)
        elif path == "/api/chat" and method == "POST":
            self._ollama_chat(rec)
        elif path.endswith("/chat/completions") and method == "POST":
            self._openai_chat(rec)
        elif path.endswith("/models") and method == "GET":
            self._openai_models(rec)
        elif "/files" in path or "/batches" in path:  # the Batch File API lives in tests/fakebatch.py
            import fakebatch

            fakebatch.route(self, method, path, rec)
        else:
            self._send(404, b"404 page not found", "text/plain")  # gin's default 404

    # -- responses ------------------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A complete response with Content-Length (no trailing newline added)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # HEAD: same headers, no body
            self._write(body)

    def _ollama_error(self, status: int, message: str) -> None:
        self._send(status, go_json({"error": message}).encode(), OLLAMA_JSON)

    def _dashscope_error(self, status: int, error: dict[str, Any]) -> None:
        body = {"error": error, "request_id": str(uuid.uuid4())}
        self._send(status, dashscope_json(body).encode(), OPENAI_JSON)

    def _dashscope_invalid_parameter(self, message: str) -> None:
        """DashScope's 400 ``InternalError.Algo.InvalidParameter`` in the key order of the 2025 captures
        (``code, param, message, type``, then the call's ``id`` and ``request_id``)."""
        request_id = str(uuid.uuid4())
        error = {"code": "invalid_parameter_error", "param": None,
                 "message": "<400> InternalError.Algo.InvalidParameter: " + message, "type": "invalid_request_error"}
        body = {"error": error, "id": "chatcmpl-" + request_id, "request_id": request_id}
        self._send(400, dashscope_json(body).encode(), OPENAI_JSON)

    def _send_raw(self, reply: Raw) -> None:
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        if not reply.chunked:
            self._send(reply.status, body, reply.content_type, reply.headers)
            return
        writer = _ChunkedWriter(self, batch=False)
        writer.start(reply.status, reply.content_type, reply.headers)
        for i, piece in enumerate(_raw_pieces(body, reply)):
            if i and reply.chunk_delay > 0:
                self.server.fake._sleep(reply.chunk_delay)
            writer.chunk(piece)
        writer.end()

    def _send_other(self, reply: Raw | Stall | Drop) -> None:
        if isinstance(reply, Raw):
            self._send_raw(reply)
        elif isinstance(reply, Stall):
            self.server.fake._sleep(reply.seconds)
            raise _Abort
        else:
            raise _Abort

    def _stream(self, spec: Stream, plan: _Plan, renderer: _Renderer, content_type: str) -> None:
        fake = self.server.fake
        fake._sleep(spec.first_delay)  # before the headers: servers send them with the first chunk
        writer = _ChunkedWriter(self, batch=spec.delay <= 0, cut_chars=spec.cut_chars)
        writer.start(200, content_type)
        for data in renderer.preamble():
            writer.chunk(data)
        # Text pieces, then the tool calls' lines/deltas: the failure knobs count both.
        items: list[Callable[[], bytes]] = [
            lambda r=is_reasoning, t=text: renderer.piece(r, t) for is_reasoning, text in plan.pieces
        ]
        items += renderer.call_events()
        stop_at, action = _failure(spec) or (len(items), "")
        for i, render in enumerate(items[:stop_at]):
            if i and spec.delay > 0:
                fake._sleep(spec.delay)
            writer.chunk(render())
        if action == "error":
            writer.chunk(renderer.error())
            writer.end()
            return
        if action:  # cut or stall: no terminator, no final 0-length chunk
            writer.flush()
            if action == "stall":
                fake._sleep(spec.stall_seconds)
            raise _Abort
        if spec.unfinished and content_type.startswith(SSE):
            writer.chunk(b"data: [DONE]\n\n")
            writer.flush()
            raise _Abort
        if spec.delay > 0 and items:
            fake._sleep(spec.delay)
        for data in renderer.final():
            writer.chunk(data)
        writer.end()

    def _nonstream_failure(self, spec: Stream) -> bool:
        """A failure knob on a non-streaming request. True: send an error body (``error_after``);
        ``cut_after`` drops the connection; ``stall_after`` stalls, then drops it."""
        failure = _failure(spec)
        if failure is None:
            return False
        if failure[1] == "error":
            return True
        if failure[1] == "stall":
            self.server.fake._sleep(spec.stall_seconds)
        raise _Abort

    # -- Ollama -----------------------------------------------------------------------------------------

    def _ollama_pull(self, rec: Recorded) -> None:
        """``server/routes.go`` PullHandler: progress lines through ``streamResponse``; a failure after the
        stream began (an unknown model: the manifest fetch) is an in-band ``{"error":…}`` line, status 200."""
        fake = self.server.fake
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str) or not name:
            self._ollama_error(400, "model is required")
            return
        full = name if ":" in name else name + ":latest"
        layers = fake.registry.get(name, fake.registry.get(full))
        lines = _pull_lines(layers, fake.pull_steps)

        def install() -> None:  # before "success" goes out: a client may use the model at once
            with fake._lock:
                if fake._resolve_ollama(name) is None:
                    fake.models.append(full)

        if body.get("stream") is False:
            final = lines[-1]
            if layers is not None:
                install()
            self._send(500 if "error" in final else 200, go_json(final).encode(), OLLAMA_JSON)
            return
        writer = _ChunkedWriter(self, batch=False)
        writer.start(200, OLLAMA_NDJSON)
        for i, line in enumerate(lines):
            if i and fake.pull_delay > 0:
                fake._sleep(fake.pull_delay)
            if line.get("status") == "success":
                install()
            writer.chunk((go_json(line) + "\n").encode())
        writer.end()

    def _ollama_show(self, rec: Recorded) -> None:
        fake = self.server.fake
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str) or not name:
            self._ollama_error(400, "model is required")
            return
        resolved = fake._resolve_ollama(name)
        if resolved is None:
            self._ollama_error(404, f"model '{name}' not found")
            return
        self._send(200, _show_body(fake, resolved), OLLAMA_JSON)

    def _ollama_chat(self, rec: Recorded) -> None:
        fake = self.server.fake
        if not rec.raw.strip():
            self._ollama_error(400, "missing request body")
            return
        body = rec.body
        if not isinstance(body, dict):
            self._ollama_error(400, _go_decode_error(rec.raw))
            return
        if (bad := _ollama_tool_calls_error(body)) is not None:  # while binding the JSON, before anything else
            self._ollama_error(400, bad)
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._ollama_error(400, "model is required")
            return
        resolved = fake._resolve_ollama(model)
        if resolved is None:
            self._ollama_error(404, f"model '{model}' not found")
            return
        capable = resolved not in fake.non_thinking_models
        think = body.get("think")
        if think is None:
            thinking = fake.think_by_default and capable
        elif isinstance(think, bool):
            if think and not capable:
                self._ollama_error(400, f"{go_quote(model)} does not support thinking")
                return
            thinking = think
        elif isinstance(think, str) and think in ("high", "medium", "low", "max"):
            if not capable:
                self._ollama_error(400, f"{go_quote(model)} does not support thinking")
                return
            if not resolved.startswith("gpt-oss"):  # Ollama 0.11.1-0.17.6: levels are for gpt-oss only
                self._ollama_error(400, f"think value {go_quote(think)} is not supported for this model")
                return
            thinking = True
        else:
            shown = go_quote(think) if isinstance(think, str) else json.dumps(think)
            self._ollama_error(
                400, f'invalid think value: {shown} (must be "high", "medium", "low", "max", true, or false)'
            )
            return
        tools = body.get("tools")
        if isinstance(tools, list) and tools and resolved not in fake.tool_models:
            # scheduleRunner -> CheckCapabilities: "%s %w" with the model's full name
            full = resolved if "/" in resolved else "library/" + resolved
            self._ollama_error(400, f"registry.ollama.ai/{full} does not support tools")
            return
        if not _messages(body):
            # An empty chat loads the model and answers with one object (c.JSON even when streaming).
            load = (
                '{"model":'
                + _go_str(model)
                + ',"created_at":"'
                + rfc3339nano()
                + '","message":{"role":"assistant","content":""},"done":true,"done_reason":"load"}'
            )
            self._send(200, load.encode(), OLLAMA_JSON)
            return

        reply = fake._next_reply()
        if not isinstance(reply, Stream):
            self._send_other(reply)
            return
        plan = _plan(reply, body, thinking, ollama=True)
        renderer = _OllamaRenderer(model, plan, reply)
        if body.get("stream") is not False:  # Go *bool: absent or null means stream
            self._stream(reply, plan, renderer, OLLAMA_NDJSON)
            return
        fake._sleep(reply.first_delay + reply.delay * len(plan.pieces))
        if self._nonstream_failure(reply):
            self._ollama_error(500, reply.error or OLLAMA_MIDSTREAM_ERROR)
            return
        self._send(200, renderer.nonstream(), OLLAMA_JSON)

    # -- OpenAI compatible (DashScope) ------------------------------------------------------------------

    def _authorised(self, rec: Recorded) -> bool:
        key = self.server.fake.api_key
        if key is None or rec.headers.get("authorization") == f"Bearer {key}":
            return True
        self._send(401, load_fixture("openai_error_invalid_key.json"), OPENAI_JSON)
        return False

    def _openai_models(self, rec: Recorded) -> None:
        if not self._authorised(rec):
            return
        if self.server.fake.dialect == "llama.cpp":
            data = [{"id": self.server.fake.loaded_model, "object": "model", "owned_by": "me", "permissions": []}]
            self._send(200, json.dumps({"object": "list", "data": data}, separators=(",", ":")).encode(), OPENAI_JSON)
            return
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for m in self.server.fake.models
        ]
        self._send(200, dashscope_json({"object": "list", "data": data}).encode(), OPENAI_JSON)

    def _openai_chat(self, rec: Recorded) -> None:
        fake = self.server.fake
        if not self._authorised(rec):
            return
        body = rec.body if isinstance(rec.body, dict) else {}
        if fake.refuse_tools and body.get("tools") and body.get("tool_choice") in (None, "auto"):
            # vLLM: tools without a tool_choice mean "auto", which needs a tool parser
            error = {"message": VLLM_NO_AUTO_TOOL_CHOICE, "type": "BadRequestError", "param": None, "code": 400}
            self._send(400, json.dumps({"error": error}, separators=(",", ":")).encode(), OPENAI_JSON)
            return
        if fake.dialect == "llama.cpp":
            self._llamacpp_chat(rec)
            return
        body = rec.body
        if not isinstance(body, dict):
            self._dashscope_error(
                400,
                {
                    "code": "invalid_parameter_error",
                    "message": "<400> InternalError.Algo.InvalidParameter: "
                    "The request body is not valid JSON.",
                    "param": None,
                    "type": "invalid_request_error",
                },
            )
            return
        model = body.get("model")
        if not isinstance(model, str) or model not in fake.models:
            name = model if isinstance(model, str) else ""
            self._dashscope_error(
                404,
                {
                    "message": f"The model `{name}` does not exist or you do not have access to it.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                },
            )
            return
        thinking = body.get("enable_thinking") is True
        stream = body.get("stream") is True
        if (bad := _dashscope_tool_error(body, thinking, fake.check_tool_arguments)) is not None:
            self._dashscope_invalid_parameter(bad)
            return
        if thinking and not stream:
            self._send(400, load_fixture("openai_error_thinking_nonstream.json"), OPENAI_JSON)
            return

        reply = fake._next_reply()
        if not isinstance(reply, Stream):
            self._send_other(reply)
            return
        if reply.tool_calls and fake.single_call_unless_parallel and body.get("parallel_tool_calls") is not True:
            reply = dataclasses.replace(reply, tool_calls=reply.tool_calls[:1])
        plan = _plan(reply, body, thinking, ollama=False)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        renderer = _DashScopeRenderer(model, plan, reply, include_usage)
        if stream:
            self._stream(reply, plan, renderer, SSE)
            return
        fake._sleep(reply.first_delay + reply.delay * len(plan.pieces))
        if self._nonstream_failure(reply):
            self._send(500, dashscope_json(renderer.error_obj()).encode(), OPENAI_JSON)
            return
        self._send(200, renderer.nonstream(), OPENAI_JSON)


    # -- llama.cpp (llama-cpp-python's server) ----------------------------------------------------------

    def _llamacpp_chat(self, rec: Recorded) -> None:
        """``llama_cpp/server/app.py``: validation, then one request at a time (``--interrupt_requests``)."""
        fake = self.server.fake
        body = rec.body if isinstance(rec.body, dict) else {}
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") not in (None, "text", "json_object"):
            self._send(500, load_fixture("llamacpp_error_json_schema.json"), OPENAI_JSON)
            return
        if (refusal := llamacpp_null_content(body)) is not None:
            self._send(500, refusal, OPENAI_JSON)
            return
        model = body.get("model") if isinstance(body.get("model"), str) else fake.loaded_model
        with fake._lock:
            fake.waiting += 1
        try:
            fake.running.acquire()
        finally:
            with fake._lock:
                fake.waiting -= 1
        try:
            self._llamacpp_answer(rec, body, model)
        finally:
            fake.running.release()

    def _llamacpp_answer(self, rec: Recorded, body: dict[str, Any], model: str) -> None:
        fake = self.server.fake
        stream = body.get("stream") is True
        prompt = _estimate_prompt_tokens(body)
        if prompt >= fake.n_ctx:
            if not stream:
                self._send(400, llamacpp_too_long(fake.n_ctx, prompt, body.get("max_tokens")), OPENAI_JSON)
                return
            # The error is raised inside the generator, after the headers: an empty body, then uvicorn
            # closes the connection although it said keep-alive.
            writer = _ChunkedWriter(self, batch=False)
            writer.start(200, SSE + "; charset=utf-8")
            writer.end()
            raise _Abort
        reply = fake._next_reply()
        if not isinstance(reply, Stream):
            self._send_other(reply)
            return
        # Tools take effect only with a named tool_choice (a grammar forces that one call); otherwise the
        # server ignores them and the model answers in text.
        choice = body.get("tool_choice")
        function = choice.get("function") if isinstance(choice, dict) else None
        named = function.get("name") if isinstance(function, dict) else None
        if isinstance(named, str):
            call = (reply.tool_calls or [Call(named)])[0]
            reply = dataclasses.replace(reply, answer="", pieces=None, reasoning="", reasoning_pieces=None,
                                        tool_calls=[call])
        else:
            reply = dataclasses.replace(reply, tool_calls=None)
        plan = _plan(reply, body, False, ollama=False)
        renderer = _LlamaCppRenderer(model, plan, reply)
        if not stream:
            fake._sleep(reply.first_delay + reply.delay * len(plan.pieces))
            self._send(200, renderer.nonstream(), OPENAI_JSON)
            return
        writer = _ChunkedWriter(self, batch=False)
        writer.start(200, SSE + "; charset=utf-8")
        last = time.monotonic()

        def send(data: bytes) -> None:
            nonlocal last
            writer.chunk(data)
            last = time.monotonic()
            if fake.waiting:  # another request arrived: end this one, unfinished, without the last chunk
                writer.chunk(b"data: [DONE]\n\n")
                raise _Abort

        def wait(seconds: float) -> None:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                until_ping = fake.ping_interval - (time.monotonic() - last)
                if until_ping > left:
                    fake._sleep(left)
                    break
                fake._sleep(max(until_ping, 0.0))
                send(llamacpp_ping())

        wait(reply.first_delay)
        for data in renderer.preamble():
            send(data)
        items = [lambda t=text: renderer.piece(False, t) for _, text in plan.pieces] + renderer.call_events()
        for i, render in enumerate(items):
            if i and reply.delay > 0:
                wait(reply.delay)
            send(render())
        if reply.unfinished:
            writer.chunk(b"data: [DONE]\n\n")
            raise _Abort
        for data in renderer.final():
            writer.chunk(data)
        writer.end()


# --------------------------------------------------------------------------------------------------------
# Script entry point (benchmarks)
# --------------------------------------------------------------------------------------------------------

_LOREM = "The quick brown fox jumps over the lazy dog; <tags> & ampersands, naïve café, 中文, 😊. "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake Ollama + DashScope server for llmchat tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument("--piece-size", type=int, default=3, help="characters per chunk")
    parser.add_argument("--answer", default=None, help="fixed answer text (default: echo the user)")
    parser.add_argument(
        "--answer-chars",
        type=int,
        default=0,
        help="answer with N characters of mixed text (overrides --answer)",
    )
    parser.add_argument("--api-key", default=None, help="require this Bearer key on OpenAI routes")
    parser.add_argument("--think-by-default", action="store_true")
    parser.add_argument("--dialect", choices=("dashscope", "llama.cpp"), default="dashscope",
                        help="what the OpenAI-compatible routes speak")
    parser.add_argument("--n-ctx", type=int, default=2048, help="llama.cpp dialect: the context window")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    answer = args.answer
    if args.answer_chars > 0:
        answer = (_LOREM * (args.answer_chars // len(_LOREM) + 1))[: args.answer_chars]
    server = FakeServer(args.host, args.port)
    server.default_reply = Stream(
        answer=answer, delay=args.delay, first_delay=args.first_delay, piece_size=args.piece_size
    )
    server.api_key = args.api_key
    server.think_by_default = args.think_by_default
    server.dialect = args.dialect
    server.n_ctx = args.n_ctx
    _Handler.verbose = args.verbose
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
