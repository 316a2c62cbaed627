"""`llmchat batch --remote` and `batch status|fetch|cancel|list` against the fake Batch File API.

The real `openai` client uploads, creates, polls and downloads over HTTP (tests/fakebatch.py serves
DashScope's shapes; a job advances one status per poll). CLI runs are in-process unless a process must
be killed or interrupted while it follows a job.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fakebatch
import forkserver
import pytest
from conftest import TEST_KEY

POLL = {"LLMCHAT_BATCH_POLL": "0.01"}
LOCAL_FIELDS = {"id", "prompt", "answer", "reasoning", "usage", "timing", "error"}
PRICE_IN, PRICE_OUT = 0.0008, 0.002


@pytest.fixture
def cloud(fake_server, config_file: Path, env: dict[str, str]) -> Any:
    """A bailian profile with a price, on the fake server, whose key the server checks."""
    with open(config_file, "a", encoding="utf-8") as handle:
        handle.write(f'''
[profiles.cloud]
provider = "bailian"
model = "qwen-plus"
base_url = "{fake_server.url}/compatible-mode/v1"
system = "Be brief."
price = {{ input = {PRICE_IN}, output = {PRICE_OUT}, currency = "CNY" }}
''')
    fake_server.api_key = TEST_KEY
    env.update(POLL)
    return fakebatch.state(fake_server)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_out(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


ROWS = [{"id": 1, "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": 3, "prompt": "three"},
        {"id": "4", "prompt": "four"}]


def test_a_remote_job_end_to_end(fake_server, cloud, llmchat, tmp_path) -> None:
    cloud.fail_ids = {json.dumps("b")}
    source = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    run = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud")
    assert run.code == 1, run.output  # a row failed
    job = next(iter(cloud.jobs.values()))
    assert f"Submitted job {job.id}: 4 rows, model qwen-plus." in run.stderr
    assert "Estimated cost: " in run.stderr and "half the price of profile 'cloud'" in run.stderr
    assert cloud.retrieves >= 4 and job.status == "completed"  # validating → in_progress → finalizing → completed
    # the request lines: custom_id = the id as JSON, the chat body as a local row would send it, no streaming
    lines = [json.loads(line) for line in cloud.files[job.input_file_id].data.decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ["1", '"b"', "3", '"4"']
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    body = lines[0]["body"]
    assert body["model"] == "qwen-plus" and body["enable_thinking"] is False and "stream" not in body
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}]
    create = next(r for r in fake_server.requests if r.path.endswith("/batches") and r.method == "POST")
    assert create.body["completion_window"] == "24h" and create.body["endpoint"] == "/v1/chat/completions"
    assert create.headers["authorization"] == f"Bearer {TEST_KEY}"
    # the output: a local batch's rows, in input order, the error file's row a failed row
    rows = read_out(out)
    assert [r["id"] for r in rows] == [1, "b", 3, "4"] and all(set(r) == LOCAL_FIELDS for r in rows)
    assert rows[0]["answer"] == "Answer to: one" and rows[0]["error"] is None and rows[0]["usage"]["prompt_tokens"]
    assert rows[1]["answer"] is None and "Range of max_tokens" in rows[1]["error"]
    assert "invalid_parameter_error" in rows[1]["error"]
    # the actual cost, at half the profile's price, in the summary and in `llmchat usage`
    answered = [r for r in rows if r["error"] is None]
    cost = sum(r["usage"]["prompt_tokens"] * PRICE_IN + r["usage"]["completion_tokens"] * PRICE_OUT
               for r in answered) / 1000 / 2
    assert "3 answered, 1 failed" in run.stderr and "at the batch price" in run.stderr
    assert "Failed ids: \"b\"" in run.stderr and "--remote --resume" in run.stderr
    usage = json.loads(llmchat("usage", "--json").stdout)
    assert usage["total"]["turns"] == 3 and usage["total"]["cost"]["CNY"] == pytest.approx(cost)
    assert usage["total"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in answered)

    # --resume submits only the failed row again, and the file ends whole, in input order
    cloud.fail_ids = set()
    again = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud", "--resume")
    assert again.code == 0, again.output
    assert len(cloud.jobs) == 2
    second = max(cloud.jobs.values(), key=lambda j: j.created_at if j.id != job.id else -1)
    assert [line["custom_id"] for line in second.lines] == ['"b"']
    rows = read_out(out)
    assert [r["id"] for r in rows] == [1, "b", 3, "4"] and all(r["error"] is None for r in rows)
    assert rows[1]["answer"] == "Answer to: two"
    assert "3 rows already answered" in again.stderr
    assert json.loads(llmchat("usage", "--json").stdout)["total"]["turns"] == 4


def test_results_go_to_stdout_without_o(cloud, llmchat, tmp_path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("alpha\nbeta\n", encoding="utf-8")
    run = llmchat("batch", str(source), "--remote", "-p", "cloud")
    assert run.code == 0, run.output
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and rows[1]["answer"] == "Answer to: beta"
    assert "Remote batch: 2 rows from 1 job: 2 answered, 0 failed" in run.stderr


def test_an_expired_job_keeps_what_ran_and_fails_the_rest(cloud, llmchat, tmp_path) -> None:
    cloud.outcome = "expired"
    source = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    run = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud")
    assert run.code == 1 and "ended expired" in run.stderr, run.output
    rows = read_out(out)
    assert [r["error"] is None for r in rows] == [True, True, False, False]
    assert "completion window expired" in rows[2]["error"] and "batch_expired" in rows[2]["error"]


def test_a_job_that_fails_validation(cloud, llmchat, tmp_path) -> None:
    cloud.outcome = "failed"
    source = write_rows(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.jsonl"
    run = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud")
    assert run.code == 1 and "ended failed" in run.stderr, run.output
    assert [r["error"] for r in read_out(out)] == ["not run: the job failed validation"] * 2
    job_id = next(iter(cloud.jobs))
    status = llmchat("batch", "status", job_id[:12])
    assert status.code == 0 and f"{job_id}: failed" in status.stdout
    assert "error: Line 1: the request body is not valid JSON." in status.stdout
    assert f"Job {job_id} ended failed: Line 1: the request body is not valid JSON." in run.stderr


def test_test_model_checks_the_chain_for_free(cloud, llmchat, tmp_path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("ping\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run = llmchat("batch", str(source), "-o", str(out), "--remote", "--test", "-p", "cloud")
    assert run.code == 0, run.output
    job = next(iter(cloud.jobs.values()))
    assert job.lines[0]["body"]["model"] == "batch-test-model"
    assert "no charge" in run.stderr and "Estimated cost" not in run.stderr
    assert read_out(out)[0]["answer"] == "This is a test result."


def test_the_limits_are_checked_before_anything_is_uploaded(fake_server, cloud, llmchat, tmp_path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("q\n" * 50_001, encoding="utf-8")
    run = llmchat("batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--remote", "-p", "cloud")
    assert run.code == 2 and "at most 50,000 requests" in run.stderr and "--split 2" in run.stderr, run.output
    assert "Traceback" not in run.stderr and fake_server.requests == []


def test_one_model_per_job_and_split(cloud, fake_server, llmchat, tmp_path) -> None:
    rows = [{"id": n, "prompt": f"p{n}", **({"model": "qwen-max"} if n % 2 else {})} for n in range(1, 7)]
    source = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    refused = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud")
    assert refused.code == 2 and "2 models (qwen-max, qwen-plus)" in refused.stderr
    assert "--split 2" in refused.stderr and fake_server.requests == []
    run = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud", "--split", "3")
    assert run.code == 0, run.output
    models = sorted(({line["body"]["model"] for line in job.lines}, len(job.lines)) for job in cloud.jobs.values())
    assert len(cloud.jobs) == 3 and all(len(m) == 1 for m, _ in models)
    assert sorted(n for _, n in models) == [1, 2, 3]  # 3 + 3 rows in 3 jobs: one model each
    assert "(1 of 3)" in run.stderr and "Remote batch: 6 rows from 3 jobs" in run.stderr
    assert [r["id"] for r in read_out(out)] == [1, 2, 3, 4, 5, 6]
    listed = llmchat("batch", "list")
    assert listed.code == 0 and listed.stdout.count(str(source)) == 3 and "fetched" in listed.stdout


def test_usage_errors(cloud, llmchat, tmp_path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    for argv, text in (
        (("batch", str(source), "--test"), "--test goes with --remote"),
        (("batch", str(source), "--remote", "-p", "local"), "Ollama profile, which has no Batch API"),
        (("batch", str(source), "--remote", "--test", "-p", "vllm"), "--test uses Bailian's batch-test-model"),
        (("batch", str(source), "--remote", "-p", "cloud", "--split", "0"), "--split must be at least 1"),
        (("batch", "status", "batch_nope"), "No remote batch job 'batch_nope'"),
        (("batch", "fetch"), "No remote batch job is waiting to be fetched"),
        (("batch",), "Missing argument 'INPUT'"),
    ):
        run = llmchat(*argv)
        assert run.code == 2 and text in run.stderr and "Traceback" not in run.stderr, (argv, run.output)


# ------------------------------------------------------------------- a follower killed or interrupted


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return forkserver.Popen([sys.executable, "-m", "llmchat", "batch", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until_following(state: Any, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.jobs and state.retrieves >= 2:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        time.sleep(0.05)
    raise AssertionError("the job was never followed")


@pytest.mark.parametrize("collect", ["fetch", "resume"])
def test_killed_while_following_then_fetch_or_resume(cloud, env, llmchat, tmp_path, collect) -> None:
    source = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    cloud.hold = True
    proc = start(env, str(source), "-o", str(out), "--remote", "-p", "cloud")
    wait_until_following(cloud, proc)
    proc.kill()
    proc.wait(timeout=10)
    assert not out.exists()
    cloud.hold = False
    if collect == "fetch":  # no id, no -o: the latest unfetched job, into the OUTPUT it was submitted with
        run = llmchat("batch", "fetch")
    else:  # the same command with --resume collects the running job instead of submitting it again
        run = llmchat("batch", str(source), "-o", str(out), "--remote", "-p", "cloud", "--resume")
    assert run.code == 0, run.output
    assert len(cloud.jobs) == 1
    assert [r["answer"] for r in read_out(out)] == ["Answer to: one", "Answer to: two", "Answer to: three",
                                                    "Answer to: four"]
    again = llmchat("batch", "fetch")
    assert again.code == 2 and "No remote batch job is waiting" in again.stderr
    turns = json.loads(llmchat("usage", "--json").stdout)["total"]["turns"]
    refetched = llmchat("batch", "fetch", next(iter(cloud.jobs)))  # fetching again counts nothing twice
    assert refetched.code == 0 and turns == 4
    assert json.loads(llmchat("usage", "--json").stdout)["total"]["turns"] == 4


def test_ctrl_c_stops_following_not_the_job_and_cancel(cloud, env, llmchat, tmp_path) -> None:
    source = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    cloud.hold = True
    proc = start(env, str(source), "-o", str(out), "--remote", "-p", "cloud")
    wait_until_following(cloud, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    stderr = err.decode()
    job_id = next(iter(cloud.jobs))
    assert proc.returncode == 130, stderr
    assert "keep running on the server" in stderr and f"llmchat batch fetch {job_id} -o {out}" in stderr
    assert "Traceback" not in stderr and cloud.jobs[job_id].status == "validating"
    cancelled = llmchat("batch", "cancel", job_id)
    assert cancelled.code == 0 and "cancelling" in cancelled.stderr, cancelled.output
    cloud.hold = False
    run = llmchat("batch", "fetch", job_id, "-o", str(tmp_path / "other.jsonl"))
    assert run.code == 1 and "ended cancelled" in run.stderr
    assert {r["error"] for r in read_out(tmp_path / "other.jsonl")} == {"not run: the job was cancelled"}


def test_fetch_without_the_input_file_takes_the_prompts_from_the_uploaded_requests(cloud, env, llmchat,
                                                                                  tmp_path) -> None:
    source = write_rows(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.jsonl"
    cloud.hold = True
    proc = start(env, str(source), "-o", str(out), "--remote", "-p", "cloud")
    wait_until_following(cloud, proc)
    proc.kill()
    proc.wait(timeout=10)
    source.unlink()
    cloud.hold = False
    run = llmchat("batch", "fetch")
    assert run.code == 0, run.output
    assert [(r["id"], r["prompt"]) for r in read_out(out)] == [(1, "one"), ("b", "two")]


# ------------------------------------------------------------------------------ following, the store


def test_polls_back_off_to_a_minute_and_the_first_wait_is_configurable(cloud, llmchat, tmp_path) -> None:
    from itertools import islice

    from llmchat.batch.remote_follow import intervals

    waits = list(islice(intervals(2.0), 12))
    assert waits[:3] == [2.0, 3.0, 4.5] and waits[-1] == 60.0 and waits == sorted(waits)
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    run = llmchat("batch", str(source), "--remote", "-p", "cloud", LLMCHAT_BATCH_POLL="soon")
    assert run.code == 2 and "LLMCHAT_BATCH_POLL='soon' is out of range" in run.stderr


def test_the_bar_shows_request_counts_and_status() -> None:
    import io

    from rich.console import Console

    from llmchat.batch.remote_follow import BarBoard
    from llmchat.providers.batch_api import RemoteJob

    screen = io.StringIO()
    board = BarBoard(Console(file=screen, force_terminal=True, width=100, color_system=None))
    board.show({"a": RemoteJob("a", "in_progress", total=40, completed=25, failed=3),
                "b": RemoteJob("b", "completed", total=10, completed=10, failed=0)})
    board.stop()
    text = screen.getvalue()
    assert "38/50" in text and "3 failed" in text and "1 in_progress, 1 completed" in text


def test_schema_5_adds_the_jobs_table(tmp_path) -> None:
    import sqlite3

    from llmchat.store.db import open_store
    from llmchat.store.jobs import JobRecord, find_job, save_job, unfetched

    with open_store(tmp_path / "history.db") as store:
        save_job(store, JobRecord(id="batch_1", provider="bailian", profile="p", model="m", input="/in",
                                  output="/out", status="in_progress", keys=['"a"', "2"]))
        assert find_job(store, "batch_").keys == ['"a"', "2"] and [j.id for j in unfetched(store)] == ["batch_1"]
    db = sqlite3.connect(tmp_path / "history.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    assert db.execute("SELECT status FROM batch_jobs").fetchall() == [("in_progress",)]


def test_the_size_limit_names_the_split_that_fits() -> None:
    from llmchat.batch.remote_lines import plan_parts
    from llmchat.batch.rows import Row
    from llmchat.core.errors import ConfigError

    big = "x" * (40 * 1024 * 1024)
    rows = [Row(id=n, prompt=big, line=n) for n in range(1, 4)]  # 120 MB of requests, one model

    def body(row: Row, model: str) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": row.prompt}]}

    with pytest.raises(ConfigError, match=r"would carry 120\.0 MB of requests") as refused:
        plan_parts(rows, lambda row: "qwen-plus", body, None)
    assert "--split 2" in (refused.value.hint or "")
    parts = plan_parts(rows, lambda row: "qwen-plus", body, 2)
    assert [[row.id for row in part.rows] for part in parts] == [[1, 2], [3]]
    assert all(len(part.data) < 100 * 1024 * 1024 for part in parts)


def test_following_on_a_terminal_draws_the_bar_from_request_counts(cloud, env, tmp_path) -> None:

    source = write_rows(tmp_path / "in.jsonl", ROWS)
    cloud.fail_ids = {"3"}
    env.pop("NO_COLOR", None)
    child = forkserver.spawn(sys.executable, ["-m", "llmchat", "batch", str(source), "-o", str(tmp_path / "o.jsonl"),
                                           "--remote", "-p", "cloud"], env={**env, "LLMCHAT_BATCH_POLL": "0.2"},
                          encoding="utf-8", dimensions=(30, 160), timeout=30)
    raw = child.read()
    child.close()
    assert child.exitstatus == 1, raw
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]|\r", "", raw)
    assert "remote batch" in text and "4/4" in text and "1 failed" in text and "completed" in text, text
    assert "in_progress" in text  # redrawn while the job ran


def test_losing_the_server_while_following_says_the_job_goes_on(fake_server, cloud, env, tmp_path) -> None:
    source = write_rows(tmp_path / "in.jsonl", ROWS[:1])
    cloud.hold = True
    proc = start(env, str(source), "-o", str(tmp_path / "out.jsonl"), "--remote", "-p", "cloud")
    wait_until_following(cloud, proc)
    job_id = next(iter(cloud.jobs))
    fake_server.stop()
    _, err = proc.communicate(timeout=30)
    stderr = err.decode()
    assert proc.returncode == 1, stderr
    assert "Cannot reach" in stderr and f"({job_id}) keep running on the server" in stderr
    assert "llmchat batch fetch" in stderr and "Traceback" not in stderr
