"""The MCP hub: every server session of the process, on one asyncio loop in a background thread.

Why a thread: the `mcp` SDK is async, the engine calls tools synchronously, and servers should start
while the user is already typing. So one daemon thread runs a loop; each server is one task there that
opens the session (spawning a stdio child or connecting to a URL), lists the tools, and then holds the
session open until it is told to stop: the SDK's own shutdown (close stdin, wait, then SIGTERM/SIGKILL
the child's process group) runs inside that same task, as anyio requires. A call is a coroutine sent
with `run_coroutine_threadsafe`; the caller waits with a timeout, and Ctrl-C or the timeout cancels it.

`mcp` itself (about a second to import) is imported in that thread, only when a server is started: a
run with no server configured never loads it. Stdio children run in their own session (the SDK's
`start_new_session`), so Ctrl-C at the prompt does not reach them; they are stopped by `close()`, which
the front ends call on every way out and `atexit` calls as a last resort (SIGTERM/SIGHUP end the
process through `Terminated`, so it runs then too). A child whose parent vanished (SIGKILL) sees its
stdin close, which is the protocol's own signal to exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from llmchat.config.mcp import McpServerConfig
from llmchat.core import collector
from llmchat.tools.mcp_launch import Launch, Unset, launch_of

#: How long a server may take to start and list its tools (an `npx -y` download included).
START_TIMEOUT = 60.0
#: How long `close()` waits for every session to shut down (the SDK's own escalation is bounded at ~6 s).
CLOSE_TIMEOUT = 8.0
STDERR_LINES = 5

Status = Literal["starting", "ready", "failed", "stopped"]


@dataclass(frozen=True)
class RemoteTool:
    """A tool as the server listed it: its own name, description and input schema (passed on unchanged)."""

    name: str
    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class CallResult:
    """What a call came to, already flattened to text (mcp_results): an error when `is_error`."""

    is_error: bool
    text: str


@dataclass
class Server:
    """One configured server in this process: its state, its tools once listed, why it failed."""

    config: McpServerConfig
    status: Status = "starting"
    tools: tuple[RemoteTool, ...] = ()
    error: str | None = None
    reported: bool = False  # the failure notice was given (once per server and run)
    ready: threading.Event = field(default_factory=threading.Event)  # set when no longer starting
    _stderr: Any = None  # a temporary file the child's stderr goes to (stdio only)
    _client: Any = None
    _scope: Any = None  # the anyio cancel scope of its task: cancelled to stop it
    _done: Future[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def stderr_tail(self, lines: int = STDERR_LINES) -> list[str]:
        """The last lines the child wrote to stderr (stdio servers), for failure notices and `mcp list`."""
        if self._stderr is None:
            return []
        try:
            fd = self._stderr.fileno()
            size = os.fstat(fd).st_size
            data = os.pread(fd, 8192, max(0, size - 8192))
        except (OSError, ValueError):
            return []
        text = data.decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]

    def failure(self) -> str:
        """`MCP server notes failed: REASON; …` with the stderr lines: the one notice a failure gets."""
        tail = self.stderr_tail()
        lines = [f"MCP server {self.name} failed: {self.error}; its tools are withdrawn for this session."]
        lines += [f"  {self.name} stderr: {line}" for line in tail]
        return "\n".join(lines)


class Hub:
    """The process's MCP sessions. Thread-safe for the calls the engine and the front ends make."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ---------------------------------------------------------------------------------------- loop

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._run, args=(loop,), name="llmchat-mcp", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                atexit.register(self.close)
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    # -------------------------------------------------------------------------------------- servers

    def start(self, config: McpServerConfig, variables: Mapping[str, str]) -> Server:
        """Start `config`'s server in the background (once: a known server is returned as it is)."""
        known = self.servers.get(config.name)
        if known is not None and known.status != "stopped":
            return known
        server = Server(config)
        self.servers[config.name] = server
        try:
            launch = launch_of(config, variables)
        except Unset as exc:
            self._fail(server, str(exc))
            return server
        if launch.transport == "stdio":
            server._stderr = tempfile.TemporaryFile(  # noqa: SIM115 - open as long as the server runs
                mode="w+", encoding="utf-8", errors="replace", prefix=f"llmchat-mcp-{config.name}-")
        loop = self._ensure_loop()
        server._done = asyncio.run_coroutine_threadsafe(self._serve(server, launch), loop)
        return server

    def wait(self, names: list[str], timeout: float = START_TIMEOUT) -> None:
        """Block until each named server is ready or failed (at most `timeout` seconds for them all)."""
        import time

        deadline = time.monotonic() + timeout
        for name in names:
            server = self.servers.get(name)
            if server is not None and not server.ready.wait(max(0.0, deadline - time.monotonic())):
                self.stop(name, f"did not start within {timeout:.0f} s")

    def stop(self, name: str, error: str | None = None) -> None:
        """Stop one server's session (its child with it); with `error`, it is marked failed for that reason."""
        server = self.servers.get(name)
        if server is None:
            return
        if error is not None and server.status in ("starting", "ready"):
            self._fail(server, error)
        elif server.status in ("starting", "ready"):
            server.status = "stopped"
            server.ready.set()
        self._cancel(server)

    def _cancel(self, server: Server) -> None:
        loop = self._loop
        if loop is not None and server._scope is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(server._scope.cancel)

    def _fail(self, server: Server, error: str) -> None:
        if server.status in ("failed", "stopped"):
            return
        server.status, server.error, server.tools = "failed", error, ()
        server.ready.set()

    async def _serve(self, server: Server, launch: Launch) -> None:
        """The server's whole session, in one task: open, list, hold until cancelled, close."""
        try:
            _quiet_sdk_logs()
            import anyio

            with anyio.CancelScope() as scope:
                server._scope = scope
                if server.status != "starting":  # stopped before the task ran
                    return
                watchdog = asyncio.get_running_loop().call_later(START_TIMEOUT, self._start_timeout, server)
                try:
                    async with _client(launch, server, self._garbage_handler(server)) as client:
                        tools = await _list_tools(client)
                        watchdog.cancel()
                        server.tools = tuple(t for t in tools if server.config.wanted(t.name))
                        server._client, server.status = client, "ready"
                        server.ready.set()
                        await anyio.sleep_forever()
                finally:
                    watchdog.cancel()
        except BaseException as exc:  # noqa: BLE001 - whatever ended it is the failure's reason
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                self._fail(server, reason(exc, server))
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
        finally:
            server._client = None
            if server.status == "starting":
                self._fail(server, "closed the connection during start-up")
            elif server.status == "ready":  # the session ended by itself: the server went away
                self._fail(server, "closed the connection (it exited or crashed)")

    def _garbage_handler(self, server: Server) -> Any:
        """The session's message handler: a line that is not JSON-RPC ends the server, said once."""

        async def handle(message: object) -> None:
            if isinstance(message, Exception):
                self._fail(server, garbage(message))
                if server._scope is not None:
                    server._scope.cancel()

        return handle

    def _start_timeout(self, server: Server) -> None:
        if server.status == "starting":
            self._fail(server, f"did not start within {START_TIMEOUT:.0f} s")
            if server._scope is not None:
                server._scope.cancel()

    def check(self) -> None:
        """Mark failed each ready server whose connection has closed since (it exited while idle): its
        tools are then not offered to the next request. The SDK keeps that state on the session's
        dispatcher, not publicly; if it ever moves, such a server is noticed at its next call instead."""
        for server in list(self.servers.values()):
            client = server._client
            if server.status != "ready" or client is None:
                continue
            try:
                closed = bool(getattr(getattr(client.session, "_dispatcher", None), "_closed", False))
            except Exception:  # noqa: BLE001 - a session being torn down: the serve task reports it
                closed = False
            if closed:
                self.stop(server.name, "closed the connection (it exited or crashed)")

    # ---------------------------------------------------------------------------------------- calls

    def call(self, name: str, tool: str, arguments: Mapping[str, Any], timeout: float,
             limit: int) -> CallResult:
        """Call `tool` on server `name`, waiting at most `timeout` s. A timeout or a broken session fails the
        server (its tools are withdrawn); Ctrl-C cancels the call and propagates (the server stays)."""
        server = self.servers.get(name)
        if server is None or server.status != "ready" or server._client is None or self._loop is None:
            why = server.error if server is not None and server.error else "it is not running"
            return CallResult(True, f"error: MCP server {name} is not available: {why}")
        future = asyncio.run_coroutine_threadsafe(_call(server._client, tool, dict(arguments), limit), self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            self.stop(name, f"the call to {tool} timed out after {timeout:g} s")
            return CallResult(True, f"error: {tool} timed out after {timeout:g} s (MCP server {name} was stopped)")
        except KeyboardInterrupt:
            future.cancel()
            raise
        except FutureCancelled:  # the session ended under the call (its server failed or was stopped)
            why = server.error or "the server was stopped"
            return CallResult(True, f"error: MCP server {name} failed during the call: {why}")
        except Exception as exc:  # noqa: BLE001 - the session broke: the server is gone for this run
            why = reason(exc, server)
            self.stop(name, why)
            return CallResult(True, f"error: MCP server {name} failed during the call: {why}")

    # ---------------------------------------------------------------------------------------- close

    def close(self) -> None:
        """Stop every session and its child, waiting (bounded) for the SDK's shutdown; idempotent."""
        if self._closed:
            return
        self._closed = True
        for server in list(self.servers.values()):
            self.stop(server.name)
        import time

        deadline = time.monotonic() + CLOSE_TIMEOUT
        for server in list(self.servers.values()):
            if server._done is not None:
                with contextlib.suppress(Exception):
                    server._done.result(max(0.0, deadline - time.monotonic()))
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(1.0)


# ------------------------------------------------------------------------------------ the SDK's side


def _quiet_sdk_logs() -> None:
    """The SDK logs tracebacks (a bad line from a server) that would land on the user's terminal; what
    went wrong reaches the user as one notice instead."""
    import logging

    for name in ("mcp", "httpx2", "httpx"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


@contextlib.asynccontextmanager
async def _client(launch: Launch, server: Server, handler: Any) -> Any:
    """An open `mcp.Client` for the launch parameters (stdio, Streamable HTTP or SSE)."""
    with collector.off_for_import():  # the SDK's first import: nearly half its cost is the collector
        from mcp import Client as SdkClient
        from mcp_types import Implementation

    from llmchat import __version__

    def Client(transport: Any) -> Any:  # noqa: N802 - the SDK's class, with llmchat's settings
        return SdkClient(transport, message_handler=handler,
                         client_info=Implementation(name="llmchat", version=__version__))

    if launch.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=launch.command or "", args=list(launch.args), env=dict(launch.env),
                                       cwd=launch.cwd or None)
        transport: Any = stdio_client(params, errlog=server._stderr)
    elif launch.transport == "sse":
        from mcp.client.sse import sse_client

        transport = sse_client(launch.url or "", headers=dict(launch.headers) or None)
    else:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = create_mcp_http_client(headers=dict(launch.headers) or None)
        async with http, Client(streamable_http_client(launch.url or "", http_client=http)) as client:
            yield client
        return
    async with Client(transport) as client:
        yield client


async def _list_tools(client: Any) -> list[RemoteTool]:
    tools: list[RemoteTool] = []
    cursor = None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        tools += [RemoteTool(t.name, t.description or "", dict(t.input_schema or {"type": "object"}))
                  for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


async def _call(client: Any, tool: str, arguments: dict[str, Any], limit: int) -> CallResult:
    from llmchat.tools.mcp_results import flatten

    result = await client.call_tool(tool, arguments)
    return CallResult(bool(result.is_error), flatten(result, limit))


def garbage(exc: Exception) -> str:
    """What a server wrote that is not JSON-RPC, quoted short."""
    errors = getattr(exc, "errors", None)
    line = None
    with contextlib.suppress(Exception):
        line = errors()[0].get("input") if callable(errors) else None
    shown = " ".join(str(line).split())[:80] if line is not None else type(exc).__name__
    return f"it answered something that is not MCP: {shown!r}"


def reason(exc: BaseException, server: Server | None = None) -> str:
    """A failure as one short phrase: the innermost cause, with what it means for a user."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError) and server is not None and server.config.command is not None:
        return f"command not found: {server.config.command} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        return f"cannot run {exc.filename or 'the command'}: permission denied"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot start it: {exc.strerror}"
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if name in ("ConnectError", "ConnectTimeout"):
        return f"cannot connect to {server.config.target if server else 'it'}: {text or name}"
    if name == "ValidationError":
        return "it answered something that is not MCP (invalid message)"
    if name == "MCPError" and "closed" in text.lower():
        return "closed the connection (it exited or crashed)"
    return f"{text or name}"[:300]
