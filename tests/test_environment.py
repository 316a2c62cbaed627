"""The one Environment (core/environment.py): built once by `cli.main()` and passed in, so what llmchat
reads — the variables and the standard streams — is what main() was given, not whatever the process holds."""

from __future__ import annotations

import io
import json
import os
import pty

import pytest
from fakeserver import Raw

from llmchat.cli.app import main
from llmchat.core.environment import Environment
from llmchat.core.errors import LlmchatError


def _streams(stdin: bytes = b"") -> tuple[io.TextIOWrapper, io.StringIO, io.StringIO]:
    return io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"), io.StringIO(), io.StringIO()


def _run(argv: list[str], environment: Environment) -> int:
    try:
        main(argv, environment=environment)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def test_colour_and_terminals_follow_the_streams_and_variables() -> None:
    controller, terminal_fd = pty.openpty()
    try:
        with open(terminal_fd, "w", closefd=False) as tty:
            pipe = io.StringIO()
            plain = Environment(stdin=None, stdout=tty, stderr=pipe, variables={"TERM": "xterm"})
            assert plain.stdin_is_terminal  # no stdin at all: nothing is piped in
            assert plain.stdout_is_terminal and not plain.stderr_is_terminal
            assert plain.color_for(tty) and not plain.color_for(pipe) and not plain.wants_plain()
            for variables in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
                muted = Environment(stdin=None, stdout=tty, stderr=tty, variables=variables)
                assert not muted.color_for(tty) and muted.wants_plain()
            assert Environment(stdin=None, stdout=tty, stderr=tty, variables={"NO_COLOR": ""}).color_for(tty)
    finally:
        os.close(controller)
        os.close(terminal_fd)
    assert Environment(stdin=io.StringIO(), stdout=pipe, stderr=pipe).get("HOME") is None


def test_main_reads_the_streams_and_variables_it_is_given(fake_server, config_file, env, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCHAT_PROFILE", "no-such-profile")  # the process says one thing, the Environment another
    stdin, out, err = _streams(b"piped text\n")
    code = _run(["ask", "summarise"], Environment(stdin=stdin, stdout=out, stderr=err, variables=dict(env)))
    assert (code, out.getvalue(), err.getvalue()) == (0, "You said: summarise\n\npiped text\n", "")
    assert capsys.readouterr() == ("", "")  # nothing went to the process's own streams


def test_config_profile_and_key_come_from_the_environment_not_os_environ(fake_server, config_file, env, capsys,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-process")  # the process has a key; the Environment says unset
    assert "LLMCHAT_PROFILE" not in os.environ
    stdin, out, err = _streams()
    code = _run(["ask", "hi"], Environment(stdin=stdin, stdout=out, stderr=err,
                                           variables={**env, "LLMCHAT_PROFILE": "nope"}))
    assert code == 2 and "Unknown profile 'nope' (from LLMCHAT_PROFILE)" in err.getvalue()
    stdin, out, err = _streams()
    code = _run(["ask", "-p", "bailian", "hi"], Environment(stdin=stdin, stdout=out, stderr=err,
                                                            variables={**env, "DASHSCOPE_API_KEY": ""}))
    assert code == 2 and "DASHSCOPE_API_KEY" in err.getvalue()  # the process's key was not used
    assert capsys.readouterr() == ("", "")


def test_debug_comes_from_the_environment(fake_server, config_file, env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCHAT_DEBUG", "1")  # ignored: the Environment given has no LLMCHAT_DEBUG
    fake_server.enqueue(Raw(404, '{"error":"model \\"qwen3:14b\\" not found"}'))
    stdin, out, err = _streams()
    assert _run(["ask", "-m", "qwen3:14b", "hi"], Environment(stdin, out, err, dict(env))) == 1
    assert err.getvalue().startswith("Error: ") and "Traceback" not in err.getvalue()
    monkeypatch.delenv("LLMCHAT_DEBUG")
    fake_server.enqueue(Raw(404, '{"error":"model \\"qwen3:14b\\" not found"}'))
    with pytest.raises(LlmchatError):  # LLMCHAT_DEBUG=1 in the Environment: the exception is not turned into a code
        _run(["ask", "-m", "qwen3:14b", "hi"], Environment(stdin, out, err, {**env, "LLMCHAT_DEBUG": "1"}))


def test_batch_reads_rows_and_writes_to_the_environments_streams(fake_server, config_file, env, capsys) -> None:
    stdin, out, err = _streams(b"first\nsecond\n")
    assert _run(["batch", "-"], Environment(stdin, out, err, dict(env))) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row["answer"] for row in rows] == ["You said: first", "You said: second"]
    assert err.getvalue().startswith("Batch: 2 rows in ")  # the summary line went to the given stderr
    assert capsys.readouterr() == ("", "")


def test_profiles_and_config_show_report_the_environments_variables(fake_server, config_file, env, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-process")  # set in the process, unset in the Environment
    variables = {**env, "LLMCHAT_PROFILE": "bailian", "DASHSCOPE_API_KEY": ""}
    stdin, out, err = _streams()
    assert _run(["config", "show"], Environment(stdin, out, err, variables)) == 0
    assert 'default_profile = "bailian"' in out.getvalue() and "DASHSCOPE_API_KEY is NOT set" in out.getvalue()
    stdin, out, err = _streams()
    assert _run(["profiles"], Environment(stdin, out, err, variables)) == 0
    marked = [line for line in out.getvalue().splitlines() if line.lstrip().startswith("*")]
    assert len(marked) == 1 and "bailian" in marked[0] and "(unset)" in marked[0]
    assert capsys.readouterr() == ("", "")


def _terminal_output(argv: list[str], variables: dict[str, str]) -> tuple[int, str]:
    """Run main() with a pseudo-terminal as the Environment's stdout; what the terminal received."""
    controller, terminal_fd = pty.openpty()
    try:
        with open(terminal_fd, "w", encoding="utf-8", closefd=False) as tty:
            code = _run(argv, Environment(stdin=None, stdout=tty, stderr=io.StringIO(), variables=variables))
        os.set_blocking(controller, False)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return code, b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(controller)
        os.close(terminal_fd)


def test_history_commands_use_the_environments_streams(fake_server, config_file, env, capsys,
                                                       tmp_path) -> None:
    stdin, out, err = _streams()
    assert _run(["history"], Environment(stdin, out, err, dict(env))) == 0
    assert (out.getvalue(), err.getvalue()) == ("", "No saved conversations yet.\n")
    assert _run(["ask", "remember me"], Environment(*_streams(), dict(env))) == 0
    stdin, out, err = _streams()
    assert _run(["history", "export", "last", "--format", "json"], Environment(stdin, out, err, dict(env))) == 0
    exported = out.getvalue()
    record = json.loads(exported)
    assert record["messages"][0]["content"] == "remember me"
    for argv in (["history", "list"], ["history", "show", "last"]):
        stdin, out, err = _streams()
        assert _run(argv, Environment(stdin, out, err, dict(env))) == 0
        assert "remember me" in out.getvalue() and "\x1b[" not in out.getvalue()  # a pipe: plain text
    stdin, out, err = _streams()
    assert _run(["history", "rm", record["id"]], Environment(stdin, out, err, dict(env))) == 0
    assert out.getvalue().startswith(f"Deleted {record['id']} (")
    # `history import -` reads the Environment's stdin, not the process's (which pytest has emptied)
    stdin, out, err = _streams(exported.encode("utf-8"))
    assert _run(["history", "import", "-"], Environment(stdin, out, err, dict(env))) == 0
    assert out.getvalue().startswith(f"Imported {record['id']} (") and err.getvalue() == ""
    assert capsys.readouterr() == ("", "")


def test_history_and_usage_colour_follow_the_environment_not_the_process(fake_server, config_file, env, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(["ask", "colourful"], Environment(*_streams(), dict(env))) == 0
    monkeypatch.setenv("NO_COLOR", "1")  # the process says no colour; the Environment's terminal allows it
    for argv in (["history", "list"], ["usage"]):
        code, drawn = _terminal_output(argv, {k: v for k, v in env.items() if k != "NO_COLOR"})
        assert code == 0 and "\x1b[1m" in drawn  # Rich's bold header: drawn for a terminal, in colour
        code, drawn = _terminal_output(argv, {**env, "TERM": "dumb"})
        assert code == 0 and drawn and "\x1b[" not in drawn  # TERM=dumb in the Environment: plain text
    assert capsys.readouterr() == ("", "")


def test_usage_writes_to_the_environments_streams(fake_server, config_file, env, capsys) -> None:
    stdin, out, err = _streams()
    assert _run(["usage"], Environment(stdin, out, err, dict(env))) == 0
    assert (out.getvalue(), err.getvalue()) == ("", "No usage saved yet.\n")
    assert _run(["ask", "count me"], Environment(*_streams(), dict(env))) == 0
    stdin, out, err = _streams()
    assert _run(["usage", "--json"], Environment(stdin, out, err, dict(env))) == 0
    assert json.loads(out.getvalue())["total"]["turns"] == 1
    stdin, out, err = _streams()
    assert _run(["usage"], Environment(stdin, out, err, dict(env))) == 0
    assert out.getvalue().splitlines()[0].split()[:2] == ["profile", "turns"]
    assert capsys.readouterr() == ("", "")


def test_the_chats_messages_and_errors_go_to_the_environments_streams(fake_server, config_file, env, capsys) -> None:
    import functools

    from llmchat.config.session import Overrides, resolve
    from llmchat.core.errors import ConfigError
    from llmchat.providers import connect
    from llmchat.repl.state import ReplState

    environment = Environment(*_streams(), {**env, "NO_COLOR": "1"})
    config, profile = resolve(Overrides(), environment)
    state = ReplState.start(config, profile, environment=environment,
                            connector=functools.partial(connect, environment=environment))
    state.say("hello")
    state.report(ConfigError("broken", hint="Fix it."))
    assert environment.stdout.getvalue() == "hello\n"  # type: ignore[attr-defined]
    assert environment.stderr.getvalue() == "Error: broken\nFix it.\n"  # type: ignore[attr-defined]
    assert capsys.readouterr() == ("", "")


def test_pull_writes_to_the_environments_streams(fake_server, config_file, env, capsys) -> None:
    stdin, out, err = _streams()
    assert _run(["pull", "qwen3:14b"], Environment(stdin, out, err, dict(env))) == 0
    assert out.getvalue().startswith("Pulled qwen3:14b") and "into Ollama at " in out.getvalue()
    assert err.getvalue().splitlines()[0] == "pulling manifest" and "success" in err.getvalue()
    assert capsys.readouterr() == ("", "")


def test_the_offer_to_pull_asks_on_the_environments_terminal(fake_server, env, capsys) -> None:
    from test_models_pull_doctor import ollama

    from llmchat.engine.pull import offer_pull

    controller, terminal_fd = pty.openpty()
    try:
        os.write(controller, b"y\n")  # the answer, typed before the question is asked
        with open(terminal_fd, encoding="utf-8", closefd=False) as tty_in, \
                open(terminal_fd, "w", encoding="utf-8", closefd=False) as tty_out:
            environment = Environment(stdin=tty_in, stdout=io.StringIO(), stderr=tty_out,
                                      variables={**env, "TERM": "dumb"})  # dumb: plain progress lines
            # pytest's own stdin is no terminal: reading the process would never ask
            assert offer_pull(ollama(fake_server), "qwen3:14b", environment=environment) is True
        os.set_blocking(controller, False)
        shown = b""
        try:
            while chunk := os.read(controller, 65536):
                shown += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        os.close(controller)
        os.close(terminal_fd)
    text = shown.decode("utf-8", "replace")
    assert "qwen3:14b is not on the Ollama server" in text and "pulling manifest" in text and "\x1b[" not in text
    assert "qwen3:14b" in fake_server.models
    assert capsys.readouterr() == ("", "")


def test_config_show_uses_the_environments_ollama_host(env, capsys, tmp_path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "plain.toml"
    config.write_text('default_profile = "home"\n\n[profiles.home]\nprovider = "ollama"\nmodel = "qwen3:0.6b"\n')
    monkeypatch.setenv("OLLAMA_HOST", "process.invalid:1")  # the process says one host, the Environment another
    stdin, out, err = _streams()
    variables = {**env, "LLMCHAT_CONFIG": str(config), "OLLAMA_HOST": "http://given.invalid:4321"}
    assert _run(["config", "show"], Environment(stdin, out, err, variables)) == 0
    assert 'base_url = "http://given.invalid:4321"' in out.getvalue() and "process.invalid" not in out.getvalue()
    assert capsys.readouterr() == ("", "")
