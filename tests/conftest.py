"""Shared fixtures: an isolated environment, the fake server, a config pointing at it, and a CLI runner.

Every CLI test runs the real `llmchat` with a scrubbed environment, so nothing from the developer's
machine (keys, config, OLLAMA_HOST) leaks in, and nothing of the tests leaks out: `llmchat` runs
`cli.main(argv)` in-process (fast), `llmchat_process` runs `python -m llmchat` as a process of its own (for
signals and interpreter exits), started warm by tests/forkserver.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest_server import *  # noqa: E402,F403  (the fake_server fixture)

TEST_KEY = "sk-test-4f1c2a9e8b7d6c5a"  # a fake key whose every appearance in output is a leak
SCRUBBED = ("DASHSCOPE_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "OLLAMA_API_KEY",
            "LLMCHAT_CONFIG", "LLMCHAT_PROFILE", "LLMCHAT_TIMEOUT", "LLMCHAT_DEBUG", "NO_COLOR",
            "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the addopts): two workers per core, not one. Many tests spend half their time waiting on a
    pseudo-terminal, a child process or the fake server; measured on 2 cores, the suite took 226 s with 2
    workers, 171 s with 4 and 189 s with 8."""
    return 2 * (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    """Compile llmchat once, in the controller, before any test spawns it.

    Hundreds of tests start `python -m llmchat` (pseudo-terminals, signals, exits). An editable install
    has no bytecode of its own, and where PYTHONDONTWRITEBYTECODE is set (this sandbox sets it) every
    child would compile the modules it imports again (about 0.1 s of CPU a start); an installed package
    ships compiled, so this is also what a user's `llmchat` runs."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "llmchat"), quiet=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Live tests need a real server or key; without one they are deselected, never counted as passing.

    Real-server tests (tests/real/, marked `real`) start llama.cpp and take a minute: they run only when
    asked for with `-m real` (CI does, in a second step), never as part of the plain `pytest`.
    """
    live_ok = bool(os.environ.get("LLMCHAT_LIVE_OLLAMA") or os.environ.get("DASHSCOPE_API_KEY"))
    real_asked = "real" in (config.getoption("markexpr", "") or "")

    def unwanted(item: pytest.Item) -> bool:
        return (not live_ok and bool(item.get_closest_marker("live"))) or \
            (not real_asked and bool(item.get_closest_marker("real")))

    deselected = [item for item in items if unwanted(item)]
    selected = [item for item in items if not unwanted(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A clean environment for subprocesses (and this process): own HOME, XDG dirs, no keys, no proxies.

    Afterwards every file under the test's tmp dir is scanned for the test key: whatever the test
    did, the key must not have been stored anywhere.
    """
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    values = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "100",
        "TERM": "xterm-256color",
        "PYTHONIOENCODING": "utf-8",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    assert_no_key_in(tmp_path)


def assert_no_key_in(root: Path) -> None:
    """Every file a test left behind (config, history, input history, exports) is free of the key."""
    needle = TEST_KEY.encode()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), f"the API key was written to {path}"


@pytest.fixture
def config_file(fake_server, env: dict[str, str], tmp_path: Path) -> Path:  # noqa: F811
    """A config whose profiles all point at the fake server; LLMCHAT_CONFIG names it."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'''default_profile = "local"

[profiles.local]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "{fake_server.url}"

[profiles.bailian]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
api_key_env = "DASHSCOPE_API_KEY"
retries = 0

[profiles.vllm]
provider = "openai"
model = "qwen-plus"
base_url = "{fake_server.url}/v1"
''',
        encoding="utf-8",
    )
    env["LLMCHAT_CONFIG"] = str(path)
    env["DASHSCOPE_API_KEY"] = TEST_KEY
    fake_server.api_key = None
    return path


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _checked(result: Run) -> Run:
    assert TEST_KEY not in result.output, "the API key appeared in llmchat's output"
    return result


@pytest.fixture
def llmchat(env: dict[str, str]):
    """Run the real CLI in this process: llmchat("ask", "hi", input="piped text") -> Run.

    `cli.main(argv)` with the test's environment, piped stdin and captured stdout/stderr, exactly as the
    subprocess would get them (tests/inprocess.py says what is rebuilt and what cannot be). Use
    `llmchat_process` for what needs a real process: signals, exits of the interpreter, import costs.
    `timeout` is accepted for compatibility; in-process, pytest-timeout bounds a hung call.
    """
    from inprocess import run_in_process

    def run(*args: str, input: str | bytes | None = None, timeout: float = 30, **extra_env: str) -> Run:
        data = input.encode() if isinstance(input, str) else input
        return _checked(Run(*run_in_process(args, data, {**env, **extra_env})))

    return run


@pytest.fixture
def llmchat_process(env: dict[str, str]):
    """Run the real CLI as a process (`python -m llmchat`, forked warm): llmchat_process("ask", "hi") -> Run."""

    def run(*args: str, input: str | bytes | None = None, timeout: float = 30, **extra_env: str) -> Run:
        from forkserver import run as run_process  # `python -m llmchat`, started warm (tests/forkserver.py)

        proc = run_process(
            [sys.executable, "-m", "llmchat", *args],
            input=input.encode() if isinstance(input, str) else input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env={**env, **extra_env},
            timeout=timeout,
        )
        return _checked(Run(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                            proc.stderr.decode("utf-8", "replace")))

    return run
