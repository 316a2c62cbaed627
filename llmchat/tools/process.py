"""Running a child process for a tool: no shell unless asked, its own process group, bounded in time and output.

The child gets its own session (so Ctrl-C in the terminal reaches llmchat, not the child, and one
`killpg` stops the child and everything it started), stdin from /dev/null (a tool never waits for
the user's typing), and an environment without the user's secrets (`child_environment`). When the
command ends, times out or the user presses Ctrl-C, its whole process group is killed: a tool call
leaves nothing running behind it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence

from llmchat.config.load import secret_looking
from llmchat.core import interrupts
from llmchat.core.tools import ToolStatus
from llmchat.tools.output import Collector, cut


def child_environment(variables: Mapping[str, str], *, hidden: Iterable[str] = (),
                      passed: Iterable[str] = ()) -> dict[str, str]:
    """The user's environment minus what looks like a secret: every variable whose name ends in KEY,
    TOKEN, SECRET, PASSWORD, … (`config.load.secret_looking`) and the `hidden` ones (the profiles' API-key
    variables, whatever they are called). `passed` names variables the config hands over anyway.

    A model templates a command tool's arguments and writes `shell` commands itself; neither should be
    able to read DASHSCOPE_API_KEY or a GITHUB_TOKEN and send it somewhere.
    """
    hidden, passed = set(hidden), set(passed)
    return {name: value for name, value in variables.items()
            if name in passed or not (name in hidden or secret_looking(name))}


def run_process(argv: Sequence[str], *, env: Mapping[str, str], timeout: float, limit: int) -> tuple[ToolStatus, str]:
    """Run `argv`; ("ok", stdout) on exit 0, else ("error", what happened: exit code, stdout, stderr).

    Output beyond `limit` characters is cut with a marker. On KeyboardInterrupt (Ctrl-C, SIGTERM) the
    process group is killed and the interrupt re-raised: the engine records the call as interrupted.
    """
    out, err = Collector(limit), Collector(limit)
    readers: list[threading.Thread] = []
    timed_out = False
    with contextlib.ExitStack() as cleanup:
        with interrupts.held():  # a Ctrl-C inside Popen waits until the child is in `cleanup`'s hands
            try:
                child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=dict(env), start_new_session=True)
            except FileNotFoundError:
                return "error", f"cannot run {argv[0]}: command not found"
            except PermissionError:
                return "error", f"cannot run {argv[0]}: permission denied"
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
                return "error", f"cannot run {argv[0]}: {exc}"
            cleanup.callback(_finish, child, readers)  # also on KeyboardInterrupt: nothing of the call survives it
        for collector, stream in ((out, child.stdout), (err, child.stderr)):
            reader = threading.Thread(target=collector.drain, args=(stream,), daemon=True)
            reader.start()
            readers.append(reader)
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
    if timed_out:
        partial = out.kept_text()
        return "error", cut(f"timed out after {timeout:g} s" + (f"\n{partial}" if partial else ""), limit,
                            dropped=out.dropped)
    if code == 0:
        return "ok", out.text() if out.size or out.dropped else "(no output)"
    header = f"exit code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            header = f"killed by signal {signal.Signals(-code).name}"
    stdout, stderr = out.kept_text(), err.kept_text()
    text = header + (f"\n{stdout}" if stdout else "") + (f"\nstderr:\n{stderr}" if stderr else "")
    return "error", cut(text, limit, dropped=out.dropped + err.dropped)


def _finish(child: subprocess.Popen[bytes], readers: list[threading.Thread]) -> None:
    """Kill what the call left running, let the readers take the rest of its output, close the pipes."""
    kill_group(child)
    for reader in readers:
        reader.join(timeout=2)
    for stream in (child.stdout, child.stderr):
        with contextlib.suppress(OSError):
            stream.close()  # type: ignore[union-attr]


def kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill the child's process group (the child and everything it started), then reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=5)
