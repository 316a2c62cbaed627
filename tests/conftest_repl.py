"""Fixtures for driving the REPL in a pseudo-terminal, as a person at a keyboard would.

The child's output goes through a `pyte` screen, which answers prompt-toolkit's cursor-position
requests like a real terminal does; without answers prompt-toolkit never learns the screen height and
hides the bottom toolbar. Tests then read what is on the screen, so the live (colour) view can be
checked as easily as the plain one.

Synchronisation: prompt-toolkit switches bracketed paste on (ESC [ ? 2004 h) each time it starts
reading a line, so counting that sequence tells when the REPL is back at the prompt, without
sleeping and without depending on what the prompt looks like.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pexpect
import pyte
import pytest
from conftest import TEST_KEY

__all__ = ["repl", "repl_config", "ReplSession", "CHAT_PATHS"]

ROWS, COLS = 40, 100
PROMPT_READY = "\x1b[?2004h"
CHAT_PATHS = ("/api/chat", "/chat/completions")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


class _Screen(pyte.Screen):
    """A screen that answers device-status and cursor-position requests through `reply`."""

    def __init__(self, columns: int, lines: int, reply: Callable[[str], Any]) -> None:
        super().__init__(columns, lines)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)


class ReplSession:
    """One `llmchat` REPL process in a pty, with its screen and the fake server it talks to."""

    def __init__(self, child: pexpect.spawn, server: Any, timeout: float) -> None:
        self.child = child
        self.server = server
        self.timeout = timeout
        self.screen = _Screen(COLS, ROWS, child.send)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""
        self.mark = 0
        self.prompts_wanted = 1
        self.eof = False

    # -- reading -------------------------------------------------------------------------------------

    def pump(self, wait: float = 0.05) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=wait)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.eof = True
            return
        self.raw += data
        self.stream.feed(data)

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not ready():
            if self.eof or time.monotonic() > deadline:
                state = "exited" if self.eof else "timed out"
                raise AssertionError(f"{state} waiting for {what}; screen:\n{self.display()}\n"
                                     f"output since last input:\n{self.since()}")
            self.pump()

    def wait_prompt(self) -> None:
        """Until the REPL reads input again after everything sent so far."""
        self.wait_for(lambda: self.raw.count(PROMPT_READY) >= self.prompts_wanted, "the prompt")

    def wait_text(self, text: str, timeout: float | None = None) -> None:
        """Until `text` appears in the output since the last input (ANSI codes ignored)."""
        self.wait_for(lambda: text in self.since(), repr(text), timeout)

    def toolbar(self, expected: str = "tokens in context") -> str:
        """The bottom toolbar (the screen's last row), once it shows `expected`."""
        self.wait_for(lambda: expected in self.screen.display[-1], f"the toolbar to show {expected!r}")
        return self.screen.display[-1].strip()

    def display(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def since(self) -> str:
        """Output since the last Enter, with ANSI codes removed."""
        return _ANSI.sub("", self.raw[self.mark:])

    def text(self) -> str:
        return _ANSI.sub("", self.raw)

    # -- typing --------------------------------------------------------------------------------------

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def enter(self, line: str = "") -> None:
        """Type `line` and press Enter (a terminal sends CR)."""
        self.wait_prompt()
        self.mark = len(self.raw)
        self.prompts_wanted = self.raw.count(PROMPT_READY) + 1
        self.child.send(line + "\r")

    def press(self, keys: str) -> None:
        """Send keys that end the current prompt without Enter (Ctrl-C, Ctrl-D)."""
        self.wait_prompt()
        self.mark = len(self.raw)
        self.prompts_wanted = self.raw.count(PROMPT_READY) + 1
        self.child.send(keys)

    def command(self, line: str) -> str:
        """Run a slash command; returns what it printed."""
        self.enter(line)
        self.wait_prompt()
        return self.since()

    def ask(self, line: str) -> Any:
        """Ask a question and wait for the answer; returns the request the server received."""
        before = len(self.chat_requests())
        self.enter(line)
        self.wait_for(lambda: len(self.chat_requests()) > before, f"a chat request for {line!r}")
        self.wait_prompt()
        return self.chat_requests()[-1]

    # -- the server ----------------------------------------------------------------------------------

    def chat_requests(self) -> list[Any]:
        return [r for r in list(self.server.requests) if r.path.endswith(CHAT_PATHS)]

    # -- leaving -------------------------------------------------------------------------------------

    def wait_exit(self) -> int:
        self.wait_for(lambda: self.eof, "the REPL to exit")
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -(self.child.signalstatus or 0)


@pytest.fixture
def repl_config(fake_server: Any, env: dict[str, str], tmp_path: Path) -> Path:
    """Profiles on the fake server for both protocols; the ollama one has a persona, bailian a price."""
    path = tmp_path / "repl-config.toml"
    path.write_text(
        f'''default_profile = "local"

[profiles.local]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "{fake_server.url}"
system = "You are terse."
retries = 0

[profiles.bailian]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key_env = "DASHSCOPE_API_KEY"
price = {{ input = 0.0008, output = 0.002, currency = "CNY" }}
retries = 0

[profiles.nokey]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key_env = "LLMCHAT_TEST_UNSET_KEY"
''',
        encoding="utf-8",
    )
    env["LLMCHAT_CONFIG"] = str(path)
    env["DASHSCOPE_API_KEY"] = TEST_KEY
    return path


@pytest.fixture
def repl(fake_server: Any, env: dict[str, str], repl_config: Path) -> Iterator[Callable[..., ReplSession]]:
    """Start `llmchat` (the REPL) in a pty: repl(*args, color=False, ready=True, **env) -> ReplSession.

    Plain (NO_COLOR) by default, so answers appear in the output exactly as streamed. `ready` waits
    for the first prompt; pass False for a run that should fail before it.
    """
    sessions: list[ReplSession] = []

    def start(*args: str, color: bool = False, ready: bool = True, timeout: float = 10, **extra: str) -> ReplSession:
        child_env = {**env, "COLUMNS": str(COLS), "LINES": str(ROWS), **extra}
        child_env.pop("PROMPT_TOOLKIT_NO_CPR", None)
        if not color:
            child_env["NO_COLOR"] = "1"
        child = forkserver.spawn(sys.executable, ["-m", "llmchat", *args], env=child_env, dimensions=(ROWS, COLS),
                              encoding="utf-8", codec_errors="replace", timeout=timeout)
        child.delaybeforesend = None  # pexpect sleeps 50 ms before every send; `enter` waits for the prompt instead
        session = ReplSession(child, fake_server, timeout)
        sessions.append(session)
        if ready:
            session.wait_prompt()
        return session

    yield start
    for session in sessions:
        if session.child.isalive():
            session.child.delayafterterminate = 0.02  # the test is over: no need to give it 0.1 s per signal
            session.child.terminate(force=True)
        assert TEST_KEY not in session.raw, "the API key appeared on the REPL's screen"
