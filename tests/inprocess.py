"""Run `llmchat.cli.app.main(argv)` inside the test process, as `python -m llmchat` would run in a subprocess.

Why: a subprocess costs 0.3-0.5 s of interpreter start and imports per call, and most CLI tests only
look at exit codes and text, which the same `cli.main` produces in-process. What a child process gives
for free is rebuilt here, one piece of process state at a time, and put back afterwards:

- the environment: `main(argv, environment=...)` is given an `Environment` holding exactly the dict the
  test built (the `env` fixture plus per-call variables) and the streams below, as in a child given
  `env=`. `os.environ` is still swapped too, for what does not take the Environment: libraries
  (platformdirs' XDG_*/HOME, the SDKs) and the reads DESIGN §1 lists as not yet threaded;
- the standard streams: stdin is the piped bytes (or an empty pipe, like `stdin=DEVNULL`), stdout and
  stderr are UTF-8 byte buffers, none of them a terminal (as pipes are not); stdout is strict and stderr
  `backslashreplace`, the error handlers `PYTHONIOENCODING=utf-8` gives a real process;
- the exit: `SystemExit` becomes the code (`None` 0, a string printed to stderr and 1); any other
  exception is printed as Python's own traceback to stderr with code 1, which is what an uncaught
  exception does to a process (so "no Traceback in stderr" assertions keep their meaning).

What this cannot reproduce, and tests that need it use the `llmchat_process` fixture (a real
subprocess) or their own: signals (Ctrl-C, kill), terminals (ptys), the cost of imports and start-up
(`sys.modules` here already holds whatever earlier tests imported), and a hard per-call timeout (a hung
in-process call is stopped by pytest-timeout instead).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
from collections.abc import Mapping, Sequence


def run_in_process(args: Sequence[str], stdin: bytes | None, env: Mapping[str, str]) -> tuple[int, str, str]:
    """`llmchat *args` with `stdin` piped in (None: an empty pipe) and exactly `env` as its environment.

    Returns (exit code, stdout, stderr) decoded as UTF-8 with replacement, like the subprocess runner.
    """
    from llmchat.cli import app as cli
    from llmchat.core.environment import Environment

    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    fake_in = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
    fake_out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    fake_err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    saved_env = dict(os.environ)
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    os.environ.clear()
    os.environ.update(env)
    sys.stdin, sys.stdout, sys.stderr = fake_in, fake_out, fake_err
    try:
        environment = Environment(stdin=fake_in, stdout=fake_out, stderr=fake_err, variables=dict(env))
        code = _exit_code(lambda argv: cli.main(argv, environment=environment), list(args))
    finally:
        for stream in (sys.stdout, sys.stderr):  # Rich or click may have swapped in a wrapper
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
    for stream in (fake_out, fake_err):
        stream.flush()
    return code, out_bytes.getvalue().decode("utf-8", "replace"), err_bytes.getvalue().decode("utf-8", "replace")


def _exit_code(main, argv: list[str]) -> int:
    """Run `main` and turn its ending into a process exit status, the way the interpreter does."""
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # an uncaught exception: the interpreter prints the traceback and exits 1
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0
