"""Untrusted text never controls the terminal (issue 12 §1, DESIGN §4).

A model answer, its reasoning, a server's error message, a model name and a saved conversation
carry the attacks: OSC 52 (writes the clipboard), OSC 0 (retitles the window), CSI 2J (clears the
screen), an OSC 8 hyperlink whose text lies, the 8-bit CSI U+009B and the bidi override U+202E.
Each writer runs for real in a pseudo-terminal and the assertions are on the raw bytes it wrote
(a terminal emulator such as pyte would swallow the sequences and hide them). Piped stdout stays
byte-exact.
"""

from __future__ import annotations

import json
import re
import sys

import forkserver
import pexpect
import pytest
from conftest_repl import repl, repl_config  # noqa: F401  (fixtures)
from fakeserver import Stream

OSC52 = "\x1b]52;c;aGVsbG8=\x1b\\"
TITLE = "\x1b]0;pwned\x1b\\"
CLEAR = "\x1b[2J"
LINK = "\x1b]8;;http://evil/\x1b\\https://bank/\x1b]8;;\x1b\\"
C1_CSI = "\x9b31m"
BIDI = "\u202e"
EVIL = f"{OSC52}{TITLE}{CLEAR}{LINK}{C1_CSI}{BIDI}"
# What must never reach the terminal. Rich's own hyperlinks are OSC 8 too, so "\x1b]" is checked whole:
# no output here has a Markdown link, so any OSC at all would be an injected one.
FORBIDDEN = ("\x1b]", "\x1b[2J", "\x9b", "\u202e", "\x1b\\")
SHOWN = "^[]0;pwned^[\\"  # the title sequence, made visible instead


def spawn(env: dict[str, str], *args: str, rows: int = 30, cols: int = 200) -> pexpect.spawn:
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    return forkserver.spawn(sys.executable, ["-m", "llmchat", *args], env=env, encoding="utf-8",
                         codec_errors="strict", dimensions=(rows, cols), timeout=30)


def run_pty(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run llmchat with stdout and stderr on one pseudo-terminal; the exit status and every byte written."""
    child = spawn(env, *args)
    raw = child.read()
    child.close()
    return child.exitstatus, raw


_OWN_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\r")


def visible(raw: str) -> str:
    """The text with llmchat's own styling and cursor moves taken out (call after `assert_clean`)."""
    return _OWN_CSI.sub("", raw)


def assert_clean(raw: str) -> None:
    for sequence in FORBIDDEN:
        assert sequence not in raw, f"{sequence!r} reached the terminal:\n{raw!r}"


# ---------------------------------------------------------------------------------------------- ask


def test_live_view_shows_answer_and_reasoning_without_their_escapes(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer=f"Answer {EVIL} done.\n\n```\n{EVIL}\n```\n",
                               reasoning=f"Reason {EVIL}\n", piece_size=5))
    env.pop("NO_COLOR", None)
    code, raw = run_pty(env, "ask", "-p", "bailian", "--think", "--show-thinking", "q")
    assert code == 0, raw
    assert_clean(raw)
    text = visible(raw)
    # (in the Markdown paragraph, the backslash of ESC \\ followed by ^ reads as a Markdown escape)
    assert text.count(SHOWN) >= 2 and "Answer ^[]52;c;aGVsbG8=^[" in text and "Reason ^[]52" in text
    assert "<U+009B>31m<U+202E>" in text
    assert "\x1b[" in raw  # the view still draws with its own styles


def test_a_markdown_link_shows_its_target_instead_of_a_hyperlink(fake_server, config_file, env, llmchat) -> None:
    """`[https://bank/](http://evil/)` would be a hyperlink reading "https://bank/" that opens evil."""
    answer = "Log in at [https://bank/](http://evil/login) today.\n"
    fake_server.enqueue(Stream(answer=answer, piece_size=7))
    env.pop("NO_COLOR", None)
    code, raw = run_pty(env, "ask", "-p", "bailian", "q")
    assert code == 0, raw
    assert_clean(raw)  # no OSC at all: not even Rich's own hyperlink
    assert "https://bank/ (http://evil/login)" in visible(raw)
    fake_server.enqueue(Stream(answer=answer, piece_size=7))
    code, raw = run_pty(env, "history", "show", "last")
    assert code == 0, raw
    assert_clean(raw)
    assert "https://bank/ (http://evil/login)" in visible(raw)


def test_live_thinking_panel_never_draws_the_reasoning_escapes(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="ok", reasoning=f"Reason {EVIL} " * 3, piece_size=4, delay=0.02))
    env.pop("NO_COLOR", None)
    code, raw = run_pty(env, "ask", "-p", "bailian", "--think", "q")
    assert code == 0, raw
    assert_clean(raw)
    assert "thinking…" in raw and "thought for" in raw


@pytest.mark.parametrize("how", ["--plain", "NO_COLOR"])
def test_plain_view_on_a_terminal_shows_the_escapes_visibly(fake_server, config_file, env, how: str) -> None:
    fake_server.enqueue(Stream(answer=f"Answer {EVIL}\r\nline two\rhidden", reasoning=f"Reason {EVIL}\n"))
    args = ["ask", "-p", "bailian", "--think", "q"]
    if how == "--plain":
        args.append("--plain")
    else:
        env["NO_COLOR"] = "1"
    code, raw = run_pty(env, *args)
    assert code == 0, raw
    assert_clean(raw)
    text = visible(raw)
    assert f"Answer ^[]52;c;aGVsbG8=^[\\{SHOWN}^[[2J^[]8;;http://evil/^[\\https://bank/^[]8;;^[\\<U+009B>31m<U+202E>" \
        in text
    assert "Reason ^[]52" in text
    assert "line twohidden" in text  # a lone CR cannot return to the start of the line to hide text


def test_server_error_message_on_stderr_is_sanitized(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="partial", error_after=1, error=f"Boom {EVIL}"))
    code, raw = run_pty(env, "ask", "-p", "bailian", "q")
    assert code == 1, raw
    assert_clean(raw)
    assert "Error:" in raw and "Boom ^[]52" in raw


def test_json_on_a_terminal_is_valid_json_with_every_control_escaped(fake_server, config_file, env) -> None:
    answer = f"Answer {EVIL}\x7f"
    fake_server.enqueue(Stream(answer=answer, reasoning=f"Reason {EVIL}"))
    code, raw = run_pty(env, "ask", "-p", "bailian", "--think", "--json", "q")
    assert code == 0, raw
    assert_clean(raw)
    assert "\x7f" not in raw
    record = json.loads(raw)
    assert record["answer"] == answer and record["reasoning"] == f"Reason {EVIL}"  # the same data, escaped


def test_piped_stdout_still_gets_the_answer_byte_exact(fake_server, config_file, llmchat) -> None:
    answer = f"Answer {EVIL}\r\nline two\rhidden\x7f\x00\x07"
    fake_server.enqueue(Stream(answer=answer, piece_size=4))
    run = llmchat("ask", "-p", "bailian", "q")
    assert run.code == 0, run.stderr
    assert run.stdout == answer + "\n"
    fake_server.enqueue(Stream(answer=answer))
    piped = llmchat("ask", "-p", "bailian", "--json", "q")
    assert f'"Answer {OSC52}'.replace("\x1b", "\\u001b") in piped.stdout and "\x9b31m\u202e" in piped.stdout
    assert json.loads(piped.stdout)["answer"] == answer


# ------------------------------------------------------------------------------------ other commands


def test_models_lists_hostile_names_harmlessly(fake_server, config_file, env) -> None:
    fake_server.models.append(f"evil{TITLE}{C1_CSI}{BIDI}[link=http://evil/]bank[/link]:7b")
    code, raw = run_pty(env, "models")
    assert code == 0, raw
    assert_clean(raw)
    assert f"evil{SHOWN}<U+009B>31m<U+202E>[link=http://evil/]bank[/link]" in raw  # no markup either


def test_history_list_and_show_sanitize_titles_and_messages(fake_server, config_file, env, llmchat) -> None:
    fake_server.enqueue(Stream(answer=f"Answer {EVIL}", reasoning=f"Reason {EVIL}"))
    saved = llmchat("ask", "-p", "bailian", "--think", f"Title {TITLE}{CLEAR}{C1_CSI}{BIDI} [link=http://evil/]x")
    assert saved.code == 0, saved.stderr
    env.pop("NO_COLOR", None)
    code, raw = run_pty(env, "history")
    assert code == 0, raw
    assert_clean(raw)
    assert f"Title {SHOWN}^[[2J<U+009B>31m<U+202E> [link=http://evil/]x" in raw
    for args in (("history", "show"), ("history", "show", "--show-thinking"), ("history", "show", "--plain")):
        code, raw = run_pty(env, *args)
        assert code == 0, raw
        assert_clean(raw)
        assert SHOWN in raw and "Answer ^[]52" in raw, args
    code, raw = run_pty(env, "history", "export", "last")
    assert code == 0 and "Answer ^[]52" in raw
    assert_clean(raw)
    code, raw = run_pty(env, "history", "export", "last", "--format", "json")
    assert code == 0
    assert_clean(raw)
    assert json.loads(raw)["messages"][1]["content"] == f"Answer {EVIL}"


def test_history_piped_is_exact(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer=f"Answer {EVIL}"))
    assert llmchat("ask", "-p", "bailian", "q").code == 0
    assert f"Answer {EVIL}" in llmchat("history", "show").stdout
    assert f"Answer {EVIL}" in llmchat("history", "export", "last").stdout


# ------------------------------------------------------------------------------------------- the REPL


def test_repl_answer_reasoning_and_commands_are_sanitized(repl, fake_server) -> None:  # noqa: F811
    fake_server.models.append(f"evil{TITLE}{BIDI}:1b")
    chat = repl("-p", "bailian", color=True)
    fake_server.enqueue(Stream(answer=f"Answer {EVIL}\n\nmore", reasoning=f"Reason {EVIL}\n", piece_size=6))
    chat.command("/think on")
    chat.ask("question")
    assert "^[]52;c;aGVsbG8=^[" in chat.since() and "Reason" in chat.since()  # the panel and the answer
    assert "Answer ^[]52" in chat.command("/history")
    assert f"evil{SHOWN}<U+202E>:1b" in chat.command("/model")
    chat.send("/model evil")  # the completion menu lists the server's names
    chat.wait_for(lambda: f"evil{SHOWN}<U+202E>:1b" in chat.display(), "the completion menu")
    chat.press("\x03")
    fake_server.enqueue(Stream(answer="x", error_after=0, error=f"Boom {EVIL}"))
    chat.ask("again")
    assert "Boom ^[]52" in chat.since()
    assert_clean(chat.raw)
    assert chat.raw.count(SHOWN) >= 3


def test_repl_plain_answer_is_sanitized(repl, fake_server) -> None:  # noqa: F811
    chat = repl()
    fake_server.enqueue(Stream(answer=f"Answer {EVIL}", reasoning=f"Reason {EVIL}\n"))
    chat.ask("q")
    assert "Answer ^[]52" in chat.since()
    assert_clean(chat.raw)


# ------------------------------------------------------------------- doctor, usage, profiles, config


def test_doctor_shows_a_hostile_server_version_harmlessly(fake_server, config_file, env) -> None:
    fake_server.version = f"0.13{EVIL}[link=http://evil/]x[/link]"
    code, raw = run_pty(env, "doctor", "-p", "local")
    assert_clean(raw)
    assert "0.13^[]52;c;aGVsbG8=" in visible(raw) and "[link=http://evil/]x[/link" in visible(raw), raw


def test_usage_shows_hostile_model_names_harmlessly(fake_server, config_file, env, llmchat) -> None:
    fake_server.models.append(f"m{TITLE}{BIDI}")
    fake_server.enqueue(Stream(answer="ok"))
    assert llmchat("ask", "-p", "bailian", "-m", f"m{TITLE}{BIDI}", "q").code == 0
    for args in (("usage", "--by", "model"), ("usage", "--by", "model", "--plain")):
        code, raw = run_pty(env, *args)
        assert code == 0, raw
        assert_clean(raw)
        assert f"m{SHOWN}<U+202E>" in visible(raw)
    code, raw = run_pty(env, "usage", "--by", "model", "--json")
    assert_clean(raw)
    assert json.loads(raw)["groups"][0]["model"] == f"m{TITLE}{BIDI}"


def test_profiles_and_config_show_quote_the_config_harmlessly(config_file, env) -> None:
    hostile = '\\u001b]0;pwned\\u001b\\\\\\u009b31m\\u202e[link=http://evil/]x[/link]'
    with config_file.open("a", encoding="utf-8") as file:
        file.write(f'\n[profiles.odd]\nprovider = "ollama"\nmodel = "m{hostile}"\n')
    for args in (("profiles",), ("config", "show")):
        code, raw = run_pty(env, *args)
        assert code == 0, raw
        assert_clean(raw)
        assert "pwned" in raw and "[link=http://evil/]x[/link]" in raw, args


def test_batch_progress_and_summary_on_a_terminal(fake_server, config_file, env, tmp_path) -> None:
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"id": f"row{TITLE}{BIDI}", "prompt": "q"}) + "\n", encoding="utf-8")
    fake_server.enqueue(Stream(answer="x", error_after=0, error=f"Boom {EVIL}"))
    code, raw = run_pty(env, "batch", "-p", "bailian", str(rows), "-o", str(tmp_path / "out.jsonl"))
    assert code == 1, raw
    assert_clean(raw)
    text = visible(raw)
    assert "failed: Bailian stopped mid-answer: Boom ^[]52;c;aGVsbG8=" in text  # the notice above the bar
    assert 'Failed ids: "row\\u001b]0;pwned\\u001b\\\\<U+202E>"' in text  # the summary
    row = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert row["id"] == f"row{TITLE}{BIDI}" and "Boom \x1b]52" in row["error"]  # the file keeps the data exact


def test_messages_on_stderr_are_sanitized_even_off_a_terminal(fake_server, config_file, llmchat, tmp_path) -> None:
    """Errors, warnings and notes are messages, never data: sanitized wherever stderr goes."""
    schema = tmp_path / "schema.json"  # jsonschema names the bad keyword by its path, the key's text included
    schema.write_text(json.dumps({"type": "object", "properties": {f"x-odd{TITLE}{BIDI}": {"type": "text"}}}),
                      encoding="utf-8")
    run = llmchat("ask", "-p", "bailian", "--schema", str(schema), "q")
    assert run.code == 2, run.stderr
    shown_key = f"x-odd{SHOWN}<U+202E>".replace("\\", "\\\\")  # the JSON path escapes a backslash
    assert f"$.properties['{shown_key}'].type must be one of" in run.stderr
    assert_clean(run.stderr)
    fake_server.enqueue(Stream(answer="x", error_after=0, error=f"Boom {EVIL}"))
    run = llmchat("ask", "-p", "bailian", "q")
    assert run.code == 1 and "Boom ^[]52;c;aGVsbG8=" in run.stderr
    assert_clean(run.stderr)


def test_config_path_and_init_show_a_hostile_file_name_harmlessly(env, tmp_path) -> None:
    """A file name is not llmchat's text: `config path` and `config init` print it sanitized on a terminal."""
    env = {**env, "LLMCHAT_CONFIG": str(tmp_path / f"cfg{TITLE}{BIDI}.toml")}
    for command in ("path", "init"):
        code, raw = run_pty(env, "config", command)
        assert code == 0, raw
        assert_clean(raw)
        assert SHOWN in visible(raw) and "<U+202E>" in visible(raw)
    assert (tmp_path / f"cfg{TITLE}{BIDI}.toml").exists()  # the file itself keeps its real name
