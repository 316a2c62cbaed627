"""`llmchat profiles`, `config path | init | show`, `--version`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from conftest import TEST_KEY


def test_profiles_table_marks_the_default_and_key_state(config_file, llmchat) -> None:
    run = llmchat("profiles")
    assert run.code == 0, run.stderr
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert lines["local"].startswith("*") and "ollama" in lines["local"] and "qwen3:0.6b" in lines["local"]
    assert "DASHSCOPE_API_KEY ✓" in lines["bailian"] and TEST_KEY not in run.stdout
    assert "/compatible-mode/v1" in lines["bailian"]
    assert not llmchat("profiles", LLMCHAT_PROFILE="vllm").stdout.splitlines()[1].startswith("*")


def test_builtin_profiles_without_a_file(env, llmchat) -> None:
    run = llmchat("profiles")
    assert run.code == 0
    assert "qwen3:0.6b" in run.stdout and "qwen-plus" in run.stdout and "built-in" in run.stdout
    assert "DASHSCOPE_API_KEY (unset)" in run.stdout


def test_config_path_follows_platformdirs_and_overrides(env, llmchat, tmp_path: Path) -> None:
    default = llmchat("config", "path").stdout.strip()
    assert default == f"{env['XDG_CONFIG_HOME']}/llmchat/config.toml"
    assert llmchat("config", "path", LLMCHAT_CONFIG="/x/y.toml").stdout.strip() == "/x/y.toml"
    assert llmchat("config", "path", "--config", "/a/b.toml").stdout.strip() == "/a/b.toml"


def test_config_init_writes_a_loadable_file_and_never_overwrites(env, llmchat) -> None:
    first = llmchat("config", "init")
    assert first.code == 0, first.stderr
    path = Path(env["XDG_CONFIG_HOME"]) / "llmchat" / "config.toml"
    assert tomllib.loads(path.read_text())["default_profile"] == "local"
    assert "# " in path.read_text()  # commented, not a bare dump
    path.write_text(path.read_text() + "\n# mine\n")
    again = llmchat("config", "init")
    assert again.code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert path.read_text().endswith("# mine\n")
    assert llmchat("config", "init", "--force").code == 0
    assert not path.read_text().endswith("# mine\n")
    assert llmchat("profiles").code == 0 and "qwen3-max" in llmchat("profiles").stdout


def test_config_show_masks_secrets_and_is_valid_toml(config_file, llmchat) -> None:
    run = llmchat("config", "show")
    assert run.code == 0, run.stderr
    assert TEST_KEY not in run.output
    assert "# DASHSCOPE_API_KEY is set (value hidden)" in run.stdout
    data = tomllib.loads(run.stdout)
    assert data["default_profile"] == "local"
    assert data["profiles"]["bailian"]["api_key_env"] == "DASHSCOPE_API_KEY"
    assert data["profiles"]["local"]["base_url"].startswith("http://127.0.0.1:")


def test_version(env, llmchat) -> None:
    from llmchat import __version__

    run = llmchat("--version")
    assert run.code == 0 and run.stdout.strip() == f"llmchat {__version__}"


def test_choice_flags_list_their_values_and_refuse_others_with_typers_error(env, llmchat) -> None:
    """--format (ask, batch), --by and `history export --format` are Typer choices: --help lists the
    values, anything else is Typer's own usage error (exit 2) before any work."""
    for argv, listed, bad in (
        (("ask",), "[json]", ("ask", "--format", "yaml", "hi")),
        (("batch",), "[json]", ("batch", "in.jsonl", "--format", "xml")),
        (("usage",), "[profile|model|day]", ("usage", "--by", "week")),
        (("history", "export"), "[md|markdown|json]", ("history", "export", "last", "--format", "html")),
    ):
        shown = llmchat(*argv, "--help", COLUMNS="200")
        assert shown.code == 0 and listed in shown.stdout.replace("<", "[").replace(">", "]"), shown.stdout
        refused = llmchat(*bad)
        wrong = bad[-2] if bad[-1] == "hi" else bad[-1]
        assert refused.code == 2 and f"'{wrong}' is not" in refused.stderr  # click: "is not 'json'" / "is not one of"
        assert "Traceback" not in refused.stderr


def test_choice_values_match_the_modules_that_check_them() -> None:
    """The CLI's choice tuples and the library-level checks (used by non-CLI callers) cannot drift apart."""
    from llmchat.cli import options as cli
    from llmchat.engine import history as history_cli
    from llmchat.engine import structured
    from llmchat.engine import usage as usage_report

    assert cli.ANSWER_FORMATS == structured.FORMATS
    assert cli.GROUPINGS == usage_report.GROUPINGS
    assert set(cli.EXPORT_FORMATS) == {*history_cli.EXPORT_FORMATS, "markdown"}
