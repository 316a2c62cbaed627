"""Start `python -m llmchat` for tests in milliseconds: a fork server with the interpreter already warm.

Hundreds of tests run llmchat as a person does, in a pseudo-terminal or behind pipes, because signals,
exit codes, the screen and /dev/tty can only be seen from outside the process. Each such start used to
cost a fresh interpreter about 0.3-0.5 s of CPU importing the same libraries (prompt_toolkit, Rich, Typer,
the ollama and openai SDKs), and that import time was most of the default suite's CPU on a 2-core machine.

Here one server process per test worker imports all of llmchat and its libraries once, then forks a child
for each run. The child is made exactly what `exec` would have made it before llmchat's `main` runs:

- a session of its own whose controlling terminal is the test's pty (so Ctrl-C typed on the terminal is
  SIGINT to it, /dev/tty opens, SIGWINCH arrives), or the test's pipes on fds 0, 1 and 2;
- the test's environment, working directory and `sys.argv`, fresh `sys.std*` streams built on those
  fds as CPython builds them (encoding, line buffering on a terminal, stderr's backslashreplace);
- Python's default signal dispositions; `llmchat.__main__` run by runpy as `-m` runs it; then
  interpreter shutdown as CPython does it (non-daemon threads joined, atexit, stdio flushed, exit 120
  when stdout cannot be flushed, death by SIGINT after an uncaught KeyboardInterrupt).

Its PID is the real PID of the process that runs llmchat, so tests signal it and look for orphans by
PID as before; the exit status is reported by the server, which is the child's parent.

What it cannot be is a fresh import: a run whose interpreter would start differently (other arguments
than `-m llmchat ...`, a different PYTHON* or locale variable, e.g. `PYTHONPROFILEIMPORTTIME` in
tests/test_preload.py) is exec'd as before, and tests of what a command imports spawn their own
interpreter (tests/test_imports.py). A forked child's /proc/PID/environ is the server's (the kernel keeps
the environment a process was exec'd with): a test that reads it passes `LLMCHAT_TEST_SPAWN=exec` in the
run's environment. `LLMCHAT_TEST_SPAWN=exec` in the tests' own environment turns the fork server off for a
whole run: the suite passes either way (tests/test_forkserver.py compares a forked and an exec'd run directly).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from pathlib import Path
from typing import Any

import pexpect
import ptyprocess

ROOT = Path(__file__).resolve().parent.parent
#: Variables read while the interpreter starts (before any of llmchat runs): a run that differs from the
#: server in one of these is exec'd, because a forked child has already started with the server's.
STARTUP_VARIABLES = ("LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE")


# ------------------------------------------------------------------------------------------- the server


#: Libraries llmchat imports lazily, imported by the server too.
LIBRARIES = ("openai", "ollama", "httpx", "sqlite3", "jsonschema", "prompt_toolkit", "prompt_toolkit.shortcuts",
             "rich.console", "rich.markdown", "rich.live", "rich.table", "rich.panel", "rich.progress", "rich.syntax",
             "pygments.lexers.python", "mcp", "mcp.client.stdio", "mcp.client.streamable_http", "mcp.client.sse")


def _preload() -> None:
    """Import what llmchat's commands import, so a forked child imports (almost) nothing."""
    import importlib
    import pkgutil

    import llmchat

    names = [module.name for module in pkgutil.walk_packages(llmchat.__path__, "llmchat.")
             if module.name != "llmchat.__main__"]
    for name in [*names, *LIBRARIES]:
        with contextlib.suppress(Exception):  # what cannot be imported here is imported by the child, if used
            importlib.import_module(name)


#: The server's module search path without its script's folder: a child's is its cwd, then this.
_SYSTEM_PATH: list[str] = []


def _serve(path: str) -> None:
    """Accept one request per connection: fork a child for it, report its wait status when it ends."""
    import gc

    parent = os.getppid()
    gc.disable()  # as llmchat's own start-up does (core/collector.py): the imports make objects that all live
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    gc.freeze()  # what the server made stays shared with its children instead of being copied by the GC
    gc.enable()
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent:  # the test worker is gone: so is its server
        readable, _, _ = select.select([listener], [], [], 0.02)
        if readable:
            conn, _ = listener.accept()
            try:
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            except OSError:
                conn.close()
                continue
            spec = json.loads(message)
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                conn.close()
                _child(spec, fds)  # never returns
            for fd in fds:
                os.close(fd)
            conn.send(json.dumps({"pid": pid}).encode())
            waiting[pid] = conn
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.send(json.dumps({"status": status}).encode())
                conn.close()


def _child(spec: dict[str, Any], fds: list[int]) -> None:
    """Become `python -m llmchat ARGS` on the given terminal or pipes, run it, and exit as CPython does."""
    try:
        trio = fds * 3 if spec["tty"] else fds
        if spec["tty"]:  # a session of its own, whose controlling terminal is the test's pty
            os.setsid()
            fcntl.ioctl(trio[0], termios.TIOCSCTTY, 0)
        for target, fd in enumerate(trio):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGALRM"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython sets it at start
        os.environ.clear()
        os.environ.update(spec["env"])
        os.chdir(spec["cwd"])
        sys.path[:] = [os.getcwd(), *_SYSTEM_PATH]  # `-m` puts the working directory first
        _fresh_streams()
        sys.argv = ["-m", *spec["args"]]
    except BaseException:  # setting up failed: say why on whatever stderr is now, and fail
        import traceback

        traceback.print_exc()
        os._exit(1)
    code = _run_main()
    os._exit(code)


def _fresh_streams() -> None:
    """sys.stdin/stdout/stderr on fds 0-2, as CPython's create_stdio makes them for these fds."""
    import io

    old_out, old_err = sys.__stdout__, sys.__stderr__
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))  # -u: stdout and stderr unbuffered, stdin as ever
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        template = old_err if name == "stderr" else old_out
        raw = unbuffered and mode == "w"
        line_buffering = mode == "w" and not raw and (fd == 2 or os.isatty(fd))
        binary = open(fd, mode + "b", 0 if raw else -1, closefd=False)  # noqa: SIM115 (lives as long as the process)
        stream = io.TextIOWrapper(binary, encoding=template.encoding, errors=template.errors, newline="\n",
                                  line_buffering=line_buffering, write_through=raw)
        stream.mode = mode  # type: ignore[misc]
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run_main() -> int:
    """runpy as `-m` does it, then the interpreter's own shutdown; returns the exit status."""
    import runpy

    interrupted = False
    code = 0
    try:
        runpy.run_module("llmchat", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted = True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as Py_Finalize does
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except Exception as exc:  # CPython: "Exception ignored ... BrokenPipeError" and exit status 120
        with contextlib.suppress(Exception):
            sys.stderr.write(f"Exception ignored in: {sys.stdout!r}\n{type(exc).__name__}: {exc}\n")
        code = 120 if code == 0 else code
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    return code


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{value}\n")
    return 1


# ------------------------------------------------------------------------------------------- the client


class _Server:
    """One fork server: started at the first run that needs its startup variables, stopped at exit."""

    def __init__(self, startup: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not _is_startup(k) or k in PER_RUN_STARTUP}
        self.env = {**env, **startup}
        directory = tempfile.mkdtemp(prefix="llmchat-fork-")
        self.path = os.path.join(directory, "socket")
        self.process = subprocess.Popen([sys.executable, __file__, self.path], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=ROOT)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            self.process.kill()
            raise RuntimeError("the tests' fork server did not start")
        atexit.register(self.stop)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))

    def start(self, args: list[str], env: dict[str, str], cwd: str | None, fds: list[int], tty: bool) -> _Started:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        spec = {"args": args, "env": env, "cwd": cwd or os.getcwd(), "tty": tty}
        socket.send_fds(conn, [json.dumps(spec).encode()], fds)
        reply = json.loads(conn.recv(4096))
        return _Started(reply["pid"], conn)


#: Startup variables a forked child may differ from an exec'd one in none of: one server per combination.
#: Any other PYTHON* variable (PYTHONPROFILEIMPORTTIME, PYTHONDEVMODE, PYTHONWARNINGS...) changes how the
#: interpreter runs from its first line, so such a run is exec'd.
SERVED_STARTUP = ("PYTHONIOENCODING", "PYTHONUTF8", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
                  *STARTUP_VARIABLES)
#: Startup variables a child applies itself, per run (PYTHONUNBUFFERED: how its std streams are built).
PER_RUN_STARTUP = ("PYTHONUNBUFFERED",)
_servers: dict[tuple[tuple[str, str], ...], _Server] = {}
_servers_lock = threading.Lock()


def _is_startup(name: str) -> bool:
    return name.startswith("PYTHON") or name in STARTUP_VARIABLES


def server_for(argv: list[str], env: dict[str, str] | None) -> tuple[_Server, list[str]] | None:
    """The server and llmchat's arguments when `argv` is `python -m llmchat ...` and a fork may run it."""
    if "exec" in (os.environ.get("LLMCHAT_TEST_SPAWN"), (env or {}).get("LLMCHAT_TEST_SPAWN")):
        return None
    if len(argv) < 3 or argv[1:3] != ["-m", "llmchat"] or os.path.realpath(argv[0]) != os.path.realpath(sys.executable):
        return None
    env = dict(os.environ) if env is None else env
    startup = {k: v for k, v in env.items() if _is_startup(k) and k not in PER_RUN_STARTUP}
    if any(k not in SERVED_STARTUP for k in startup):
        return None
    key = tuple(sorted(startup.items()))
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            server = _servers[key] = _Server(startup)
    return server, argv[3:]


class _Started:
    """A forked child's PID and the connection on which its wait status arrives."""

    def __init__(self, pid: int, conn: socket.socket) -> None:
        self.pid = pid
        self.conn = conn
        self.status: int | None = None

    def poll(self, block: bool, timeout: float | None = None) -> int | None:
        """The child's wait status once it has ended (waiting for it when `block`), else None."""
        if self.status is not None:
            return self.status
        if not block:
            timeout = 0
        ready, _, _ = select.select([self.conn], [], [], timeout)
        if not ready:
            return None
        data = self.conn.recv(4096)
        self.conn.close()
        if not data:
            raise RuntimeError("the tests' fork server went away before the child ended")
        self.status = json.loads(data)["status"]
        return self.status


# -------------------------------------------------------------------------------- pexpect (terminals)


class _ForkedPty(ptyprocess.PtyProcess):
    """ptyprocess's view of a forked child: its wait status comes from the server, not waitpid."""

    def __init__(self, started: _Started, fd: int) -> None:
        super().__init__(started.pid, fd)
        self.started = started

    def _settle(self, status: int) -> None:
        self.status = status
        if os.WIFEXITED(status):
            self.exitstatus, self.signalstatus = os.WEXITSTATUS(status), None
        else:
            self.exitstatus, self.signalstatus = None, os.WTERMSIG(status)
        self.terminated = True

    def isalive(self) -> bool:
        if self.terminated:
            return False
        status = self.started.poll(block=self.flag_eof, timeout=10)
        if status is None:
            return True
        self._settle(status)
        return False

    def wait(self) -> int | None:
        if not self.terminated:
            status = self.started.poll(block=True)
            assert status is not None
            self._settle(status)
        return self.exitstatus


class spawn(pexpect.spawn):  # noqa: N801 (a drop-in for pexpect.spawn)
    """`pexpect.spawn`; `python -m llmchat ...` is started by the fork server, anything else exec'd."""

    def _spawnpty(self, args: list[Any], **kwargs: Any) -> ptyprocess.PtyProcess:
        argv = [a.decode() if isinstance(a, bytes) else a for a in args]
        served = None if kwargs.get("preexec_fn") else server_for(argv, kwargs.get("env"))
        if served is None:
            return super()._spawnpty(args, **kwargs)
        server, llmchat_args = served
        master, slave = os.openpty()
        rows, cols = kwargs.get("dimensions") or (24, 80)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if not kwargs.get("echo", True):
            attrs = termios.tcgetattr(slave)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = kwargs.get("env")
        try:
            started = server.start(llmchat_args, dict(os.environ) if env is None else env, kwargs.get("cwd"),
                                    [slave], tty=True)
        finally:
            os.close(slave)
        process = _ForkedPty(started, master)
        process.argv = argv
        return process


# ------------------------------------------------------------------------------------ subprocess (pipes)


class Popen(subprocess.Popen):  # type: ignore[type-arg]
    """`subprocess.Popen`; `python -m llmchat ...` is started by the fork server, anything else exec'd."""

    def _execute_child(self, args: Any, executable: Any, preexec_fn: Any, close_fds: Any, pass_fds: Any, cwd: Any,
                       env: Any, startupinfo: Any, creationflags: Any, shell: Any, p2cread: int, p2cwrite: int,
                       c2pread: int, c2pwrite: int, errread: int, errwrite: int, *rest: Any) -> None:
        argv = [os.fsdecode(a) for a in args] if isinstance(args, list | tuple) and not shell else []
        text_env = {os.fsdecode(k): os.fsdecode(v) for k, v in (env if env is not None else os.environ).items()}
        served = None if (preexec_fn or executable or pass_fds) else server_for(argv, text_env)
        self._forked: _Started | None = None
        if served is None:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                                          creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                                          errwrite, *rest)
        server, llmchat_args = served
        fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1, errwrite if errwrite != -1 else 2]
        try:
            self._forked = server.start(llmchat_args, text_env, os.fsdecode(cwd) if cwd else None, fds, tty=False)
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)
        self.pid = self._forked.pid
        self._child_created = True

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        if self._forked is None:
            return super()._try_wait(wait_flags)
        status = self._forked.poll(block=not (wait_flags & os.WNOHANG))
        return (0, 0) if status is None else (self.pid, status)

    def _internal_poll(self, _deadstate: Any = None, **_: Any) -> int | None:
        if getattr(self, "_forked", None) is None:
            return super()._internal_poll(_deadstate)
        if self.returncode is None:
            pid, status = self._try_wait(os.WNOHANG)
            if pid:
                self._handle_exitstatus(status)
        return self.returncode


def run(*popenargs: Any, input: bytes | None = None, timeout: float | None = None, check: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` through `Popen` above."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        code = process.poll()
        if check and code:
            raise subprocess.CalledProcessError(code, process.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(process.args, code, stdout, stderr)


if __name__ == "__main__":  # the server itself: python tests/forkserver.py SOCKET
    _SYSTEM_PATH[:] = sys.path[1:]  # without this script's folder (tests/), which `-m llmchat` would not have
    try:
        _serve(sys.argv[1])
    finally:
        with contextlib.suppress(OSError):
            os.unlink(sys.argv[1])
            os.rmdir(os.path.dirname(sys.argv[1]))  # the server's own temporary folder
