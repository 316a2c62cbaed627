"""The command line fits people's habits (issue 17): a bare question, -V, a piped `chat`, readable help."""

from __future__ import annotations

import re

import pytest

HELPS = ((), ("ask",), ("chat",), ("batch",), ("usage",), ("history",), ("history", "export"), ("history", "list"),
         ("config",), ("config", "init"), ("doctor",), ("pull",), ("models",), ("profiles",))


def test_a_bare_question_is_asked_as_ask_asks_it(fake_server, config_file, llmchat) -> None:
    run = llmchat("why is the sky blue")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: why is the sky blue\n"
    words = llmchat("-m", "qwen3:8b", "why", "is", "it", "blue")  # unquoted words, global options before
    assert words.code == 0 and words.stdout == "You said: why is it blue\n", words.stderr
    assert fake_server.last("/api/chat").body["model"] == "qwen3:8b"


def test_a_mistyped_command_is_a_usage_error_not_a_question(fake_server, config_file, llmchat) -> None:
    run = llmchat("hsitory")
    assert run.code == 2 and "Did you mean 'history'?" in run.stderr
    assert not [r for r in fake_server.requests if r.path.endswith("/api/chat")]


def test_dash_capital_v_prints_the_version(env, llmchat) -> None:
    from llmchat import __version__

    run = llmchat("-V")
    assert run.code == 0 and run.stdout.strip() == f"llmchat {__version__}"


def test_piped_text_to_chat_is_answered_like_ask(fake_server, config_file, llmchat_process) -> None:
    run = llmchat_process("chat", input="hi there\n")
    assert run.code == 0, run.stderr
    assert run.stdout == "You said: hi there\n"  # the answer only: no prompt-toolkit screen in the pipe
    assert "\x1b" not in run.stdout and ">>>" not in run.stdout


@pytest.mark.parametrize("argv", HELPS, ids=lambda argv: " ".join(argv) or "llmchat")
def test_help_shows_words_not_python_types_and_fits_80_columns(env, llmchat, argv) -> None:
    run = llmchat(*argv, "--help", COLUMNS="80")
    assert run.code == 0, run.stderr
    text = run.stdout
    assert "<bool>" not in text and "<str>" not in text and "list[" not in text, text
    assert "{INPUT}" not in text and "<float" not in text and "<file>" not in text, text
    assert "…" not in text, text  # nothing cut short, option names included
    assert all(len(line) <= 80 for line in text.splitlines()), text


def test_help_names_what_each_value_is(env, llmchat) -> None:
    ask = llmchat("ask", "--help", COLUMNS="100").stdout
    assert "[PROMPT]..." in ask and "PROMPT..." in ask and "--profile" in ask and "PROFILE" in ask
    assert re.search(r"--think\s+/?\s*--no-think\s+Ask the model", ask), ask  # an on/off flag: no value column
    batch = llmchat("batch", "--help", COLUMNS="100").stdout
    assert "llmchat batch INPUT [OPTIONS]" in batch and "{INPUT}" not in batch  # the group's own usage line
    root = llmchat("--help", COLUMNS="100").stdout
    assert "--install-completion" in root  # named in the text, out of the table


def test_usage_flag_does_what_its_help_says(fake_server, config_file, llmchat) -> None:
    """--usage: the reasoning and the usage line on stderr even in a pipe; its help says exactly that."""
    helped = " ".join(llmchat("ask", "--help", COLUMNS="200").stdout.split())
    assert "Print the reasoning and the usage line on stderr even when it is not a terminal" in helped
    quiet = llmchat("ask", "--think", "2+2?")
    assert quiet.stderr == ""  # stderr is not a terminal here: nothing by default
    loud = llmchat("ask", "--think", "--usage", "2+2?")
    assert loud.stdout == quiet.stdout and "Let me think about: 2+2?" in loud.stderr
    assert re.search(r"\d+ in · \d+ out", loud.stderr)


def test_a_toml_error_shows_the_line_to_fix(env, llmchat, tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('default_profile = "local"\n[profiles.local]\nprovider = "ollama"\ntemperature = abc\n')
    run = llmchat("--config", str(path), "profiles")
    assert run.code == 2 and "Fix the line shown" in run.stderr
    lines = run.stderr.splitlines()
    quoted = next(i for i, line in enumerate(lines) if "4 | temperature = abc" in line)
    assert lines[quoted + 1].index("^") == lines[quoted].index("abc")  # the caret under the bad value
    assert "Traceback" not in run.stderr


def test_doctor_checks_the_built_in_profiles_too(fake_server, env, llmchat) -> None:
    run = llmchat("doctor", OLLAMA_HOST=fake_server.url)  # no config file: the built-ins are every profile
    assert run.code == 0, run.stdout
    titles = [line.split()[0] for line in run.stdout.splitlines() if "(" in line and "·" in line
              and not line.startswith(("✓", "✗", "–", "?", "!"))]
    assert titles == ["local", "bailian"], run.stdout
    assert "not set up: DASHSCOPE_API_KEY is not set" in run.stdout
    assert not [r for r in fake_server.requests if "compatible-mode" in r.path]


def test_doctor_passes_without_a_local_ollama_the_user_does_not_use(fake_server, config_file, llmchat) -> None:
    """A Bailian-only user (the default profile is theirs) has no Ollama: the built-in `local` profile is
    shown as not set up here, with the fix, and doctor still passes; named with -p, it fails."""
    config_file.write_text(config_file.read_text().replace('default_profile = "local"', 'default_profile = "bailian"')
                           .replace("[profiles.local]", "[profiles.mine]"), encoding="utf-8")
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    run = llmchat("doctor", DASHSCOPE_API_KEY="sk-x", OLLAMA_HOST=down)
    assert run.code == 0, run.stdout
    assert "not set up here: Cannot reach Ollama" in " ".join(run.stdout.split())
    named = llmchat("doctor", "-p", "local", OLLAMA_HOST=down)
    assert named.code == 1 and "Cannot reach Ollama" in named.stdout


def test_key_messages_say_empty_and_leave_regions_to_region_urls(fake_server, config_file, llmchat) -> None:
    empty = llmchat("ask", "-p", "bailian", "hi", DASHSCOPE_API_KEY="")
    assert empty.code == 2 and "DASHSCOPE_API_KEY, which is set but empty" in empty.stderr
    inner = empty.stderr[empty.stderr.index("(") + 1:]
    assert "(" not in inner.split(")")[0], empty.stderr  # no parentheses inside parentheses
    doctor = llmchat("doctor", "-p", "bailian", DASHSCOPE_API_KEY="")
    assert "DASHSCOPE_API_KEY is set but empty" in doctor.stdout
    fake_server.api_key = "the-right-key"
    refused = llmchat("ask", "-p", "bailian", "hi", DASHSCOPE_API_KEY="a-wrong-key")
    assert refused.code == 1 and "rejected the API key" in refused.stderr
    assert "singapore" not in refused.stderr.lower() and "beijing" not in refused.stderr.lower()


def test_a_rejected_key_on_a_region_url_still_names_the_regions(fake_server) -> None:
    from llmchat.core.errors import AuthFailed
    from llmchat.providers import ChatOptions
    from llmchat.providers.openai_compat import OpenAICompatProvider

    fake_server.api_key = "the-right-key"
    provider = OpenAICompatProvider(f"{fake_server.url}/compatible-mode/v1", "a-wrong-key", 10, bailian=True,
                                    key_variable="DASHSCOPE_API_KEY", region="beijing")
    with pytest.raises(AuthFailed) as info:
        list(provider.stream([{"role": "user", "content": "hi"}], ChatOptions(model="qwen-plus")))
    assert "beijing" in info.value.hint and 'region = "singapore"' in info.value.hint


def test_a_refused_request_saves_no_conversation_and_no_turn(fake_server, config_file, llmchat) -> None:
    import json

    run = llmchat("ask", "-p", "bailian", "-m", "no-such-model", "hi")
    assert run.code == 1 and "does not offer the model" in run.stderr
    assert json.loads(llmchat("history", "--json").stdout) == []
    assert json.loads(llmchat("usage", "--json").stdout)["total"]["turns"] == 0
    assert llmchat("ask", "hello").code == 0
    assert llmchat("ask", "-c", "-p", "bailian", "-m", "no-such-model", "again?").code == 1  # refused in a saved one
    listed = json.loads(llmchat("history", "--json").stdout)
    assert [row["turns"] for row in listed] == [1]
    assert json.loads(llmchat("usage", "--json").stdout)["total"]["turns"] == 1


@pytest.mark.parametrize("variables", [{"TERM": "dumb"}, {"NO_COLOR": "1"}, {"PLAIN": "--plain"}],
                         ids=["TERM=dumb", "NO_COLOR", "--plain"])
def test_plain_modes_on_a_terminal_are_readable(fake_server, config_file, env, variables) -> None:
    """In a real terminal: the reasoning framed and apart from the answer, words whole at the edge, and
    under TERM=dumb or NO_COLOR not one escape byte."""
    from fakeserver import Stream
    from test_ask_terminal import screen_lines, spawn_ask

    thought = "The user asks about the sky and I will answer with the scattering of light by air. " * 2
    answer = "Sunlight scatters off the molecules of the air, and blue light scatters the most of all. " * 2
    fake_server.enqueue(Stream(reasoning=thought, answer=answer, piece_size=5))
    env = {**env, **{k: v for k, v in variables.items() if k != "PLAIN"}}
    child = spawn_ask(env, *([variables["PLAIN"]] if "PLAIN" in variables else []), "--think", "why blue?")
    raw = child.read()
    child.close()
    assert child.exitstatus == 0, raw
    if "PLAIN" not in variables:
        assert "\x1b" not in raw, repr(raw[:300])
    lines = screen_lines(raw)
    assert lines[0] == "Thinking…" and "…done thinking." in lines
    done = lines.index("…done thinking.")
    assert all(len(line) < 90 for line in lines)
    assert " ".join(lines[1:done]).split() == thought.split()  # every word whole
    assert " ".join(lines[done + 1:]).split()[: len(answer.split())] == answer.split()
