"""llmchat's real commands against llama.cpp's server and a real model (see conftest.py here).

Each defect the real server showed (issue 13) has its test here; the same paths are covered fast,
against the fake server's llama.cpp dialect, in tests/test_llamacpp_dialect.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pexpect
import pytest
from test_ask_terminal import screen_lines

pytestmark = pytest.mark.real

NOT_REPORTED = "tokens not reported by the server"
#: ~330 tokens with the chat template: more than the small server's 256, well within the big one's 2048.
FRUITS = "Here is a list of fruits: " + ", ".join(["apple", "banana", "cherry", "grape", "mango"] * 12)
LONG = "word " * 400


def rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# ---------------------------------------------------------------------------------------------- ask


def test_ask_piped_answers(real_config, llmchat) -> None:
    real_config()
    run = llmchat("ask", "Name one colour.", input="Context: we are painting a wall.", timeout=60)
    assert run.code == 0, run.stderr
    assert run.stdout.strip()


def test_ask_in_a_terminal_shows_the_answer_and_says_tokens_were_not_reported(real_config, env) -> None:
    real_config()
    child_env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    child = pexpect.spawn(sys.executable, ["-m", "llmchat", "ask", "What is 2+2?"], env=child_env,
                          encoding="utf-8", dimensions=(30, 90), timeout=60)
    raw = child.read()
    child.close()
    text = "\n".join(screen_lines(raw))
    assert child.exitstatus == 0, text
    assert NOT_REPORTED in text  # defect 6: no usage from the server is said, not left blank
    assert len(text.replace(NOT_REPORTED, "").strip()) > 10


def test_ask_json_is_one_valid_record(real_config, llmchat) -> None:
    real_config()
    run = llmchat("ask", "Say hello.", "--json", timeout=60)
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["answer"].strip() and record["model"] == "smollm2"
    assert record["finish_reason"] in ("stop", "length")
    assert set(record["usage"].values()) == {None}  # the server reports no usage when streaming


def test_usage_line_says_tokens_were_not_reported(real_config, llmchat) -> None:
    real_config()
    run = llmchat("ask", "Say hello.", "--usage", timeout=60)
    assert run.code == 0 and NOT_REPORTED in run.stderr and "0 in" not in run.stderr


def test_top_k_is_sent_and_honoured(real_config, llmchat) -> None:
    """Defect 5: with top_k = 1 sampling is greedy whatever the temperature, so two answers are the same."""
    real_config("top_k = 1\n", temperature=1.8)
    first = llmchat("ask", "Write a word.", "-p", "real", timeout=60)
    second = llmchat("ask", "Write a word.", "-p", "real", timeout=60)
    assert first.code == second.code == 0, first.stderr + second.stderr
    assert first.stdout.strip() and first.stdout == second.stdout


# --------------------------------------------------------------------------------------------- REPL


def test_repl_answers_and_exits(real_config, env) -> None:
    from conftest_repl import COLS, ROWS, ReplSession  # here: importing it at the top would pre-empt its plugin

    real_config()
    child_env = {**env, "COLUMNS": str(COLS), "LINES": str(ROWS), "NO_COLOR": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "llmchat"], env=child_env, dimensions=(ROWS, COLS),
                          encoding="utf-8", codec_errors="replace", timeout=60)
    session = ReplSession(child, None, 60)
    try:
        session.wait_prompt()
        session.enter("Name a fruit.")
        session.wait_prompt()
        answer = session.since()
        assert "Name a fruit." in answer and NOT_REPORTED in answer
        assert len(answer.replace("Name a fruit.", "").replace(NOT_REPORTED, "").strip()) > 3
        assert "Error" not in answer
        session.press("\x04")  # Ctrl-D
        assert session.wait_exit() == 0
    finally:
        if child.isalive():
            child.terminate(force=True)


# -------------------------------------------------------------------------------------------- batch


def test_batch_at_concurrency_4_answers_every_row_whole(real_config, llmchat, tmp_path: Path) -> None:
    """Defect 3: the server cuts a running stream when the next request arrives; every row must still
    be answered whole, and the summary must not claim 0 tokens."""
    real_config(max_tokens=16)
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"Name colour number {n}.\n" for n in range(1, 9)), encoding="utf-8")
    run = llmchat("batch", str(prompts), "--concurrency", "4", timeout=120)
    assert run.code == 0, run.output
    out = rows(run.stdout)
    assert [r["id"] for r in out] == list(range(1, 9))
    assert all(r["error"] is None and r["answer"] for r in out)
    assert NOT_REPORTED in run.stderr and "0 tokens" not in run.stderr


def test_batch_one_at_a_time_with_json_rows(real_config, llmchat, tmp_path: Path) -> None:
    real_config(max_tokens=16)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Say yes."}\n{"id": "b", "prompt": "Say no."}\n', encoding="utf-8")
    out_file = tmp_path / "out.jsonl"
    run = llmchat("batch", str(prompts), "-o", str(out_file), "--concurrency", "1", timeout=120)
    assert run.code == 0, run.output
    out = rows(out_file.read_text(encoding="utf-8"))
    assert [r["id"] for r in out] == ["a", "b"] and all(r["answer"] and r["error"] is None for r in out)


# ----------------------------------------------------------------------------------- structured output


def test_format_json_gives_valid_json(real_config, llmchat) -> None:
    real_config(max_tokens=48)
    run = llmchat("ask", 'Reply with a JSON object with key "ok" set to true.', "--format", "json", timeout=60)
    assert run.code == 0, run.stderr
    assert isinstance(json.loads(run.stdout), dict)


def test_schema_is_applied_through_the_json_object_form(real_config, llmchat, tmp_path: Path) -> None:
    """Defect 4: the server answers 500 to json_schema; llmchat uses json_object + schema instead."""
    real_config(max_tokens=48)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
                      encoding="utf-8")
    run = llmchat("ask", "Is the sky blue?", "--schema", str(schema), timeout=60)
    assert run.code == 0, run.stderr
    assert isinstance(json.loads(run.stdout)["ok"], bool)
    assert "Retrying" not in run.stderr and "500" not in run.stderr


def test_schema_in_batch(real_config, llmchat, tmp_path: Path) -> None:
    real_config(max_tokens=48)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Give a JSON object with a key ok.\n", encoding="utf-8")
    run = llmchat("batch", str(prompts), "--format", "json", timeout=60)
    assert run.code == 0, run.output
    assert isinstance(json.loads(rows(run.stdout)[0]["answer"]), dict)


# ------------------------------------------------------------------------------------ models, doctor


def test_models_lists_the_served_model(real_config, llmchat) -> None:
    real_config()
    run = llmchat("models", timeout=30)
    assert run.code == 0 and "smollm2" in run.stdout


def test_doctor_passes(real_config, llmchat) -> None:
    real_config()
    run = llmchat("doctor", timeout=60)
    assert run.code == 0, run.output
    assert "smollm2" in run.stdout


# ---------------------------------------------------------------------------------- too long (n_ctx 256)


def test_a_question_that_cannot_fit_is_reported_as_too_long_not_retryable(real_config, small_server,
                                                                           llmchat) -> None:
    """Defect 1: the server answers 200 with an empty stream; llmchat asks again without streaming and
    reports the server's real error, with no advice to retry (it would fail the same way)."""
    real_config(small=small_server)
    run = llmchat("ask", "-p", "small", LONG, timeout=60)
    assert run.code == 1 and run.stdout == ""
    assert "too long for smollm2" in run.stderr and "maximum context length is 256" in run.stderr
    assert "Retry" not in run.stderr and "Cannot reach" not in run.stderr
    assert run.stderr.count("Error: ") == 1


@pytest.mark.parametrize("history", ["truncate", "summarize"])
def test_a_conversation_that_outgrows_the_window_is_compacted_and_answered(real_config, small_server, llmchat,
                                                                          history: str) -> None:
    """Defects 1 and 2: after the first exchange the conversation no longer fits; llmchat learns that
    from the second look, compacts as `history` says and answers. With `summarize` the summary call
    overflows too, and the server closes that kept-alive connection: the next request must not say
    "Cannot reach" a server that is up."""
    real_config(small=small_server, history=history, max_tokens=16)
    first = llmchat("ask", "-p", "small", FRUITS[:400] + ". Which is first?", timeout=60)
    assert first.code == 0, first.stderr
    second = llmchat("ask", "-p", "small", "-c", FRUITS[:400] + ". Which is last?", timeout=90)
    assert "Cannot reach" not in second.output and "Retry the question" not in second.output
    assert second.code == 0, second.stderr
    assert second.stdout.strip()
    assert "too long" in second.stderr  # the compaction was said


def test_a_question_offering_tools_is_answered(real_config, llmchat) -> None:
    """llama.cpp's server with its default chat format: offering tools must never break a question,
    whether the server ignores them, refuses them (then llmchat asks without, once) or the model calls one."""
    real_config('tools = ["time"]\n')
    run = llmchat("ask", "What time is it?", "--json", timeout=90)
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["answer"].strip() or record["tool_calls"]
    assert all(call["status"] in ("ok", "error") for call in record["tool_calls"])  # `time` is trusted
    assert "Traceback" not in run.stderr


def test_a_real_tool_call_runs_and_its_result_goes_back(real_config, tools_server, llmchat) -> None:
    """The whole loop against a real server that calls tools: the model calls `time` (trusted by default),
    llmchat runs it and sends the result back, and the turn ends, with an answer or, as this tiny model
    tends to call again and again, at the round bound with a notice."""
    path = real_config()
    path.write_text(path.read_text() + f'\n[profiles.tools]\nprovider = "openai"\nmodel = "smollm2"\n'
                    f'temperature = 0\nmax_tokens = 24\nbase_url = "{tools_server.base_url}"\n'
                    'tools = ["time"]\nmax_tool_rounds = 2\n', encoding="utf-8")
    run = llmchat("ask", "-p", "tools", "Call the function time now.", "--json", timeout=120)
    assert run.code == 0, run.stderr
    record = json.loads(run.stdout)
    first, *later = record["tool_calls"]
    assert (first["name"], first["status"]) == ("time", "ok")
    assert first["result"].strip()  # the local date and time went back to the model
    assert record["finish_reason"] is not None
    if record["finish_reason"] == "tool_calls":  # stopped by the bound: the third response's call did not run
        assert len(later) == 2 and later[-1]["status"] == "declined" and "limit of 2" in later[-1]["result"]
        assert "max_tool_rounds" in run.stderr
