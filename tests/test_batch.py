"""`llmchat batch` against the fake server: real HTTP, the real async clients, real concurrency.

Three sections:
1. in-process tests of `run_batch` (ordering, failures and retries, resume, inputs, concurrency);
2. subprocess tests that need a process to kill or interrupt (SIGKILL + --resume, Ctrl-C); they run
   the real `llmchat batch` when the CLI has the command, else a small driver with the same flags;
3. CLI tests that only make sense through Typer; skipped until `llmchat batch --help` works.

Replies are chosen per prompt (RoutedServer), not by arrival order: with requests in flight
concurrently, the fake server's FIFO queue would hand a scripted failure to whichever row came first.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest
from conftest import TEST_KEY
from fakeserver import FakeServer, Raw, Reply, Stream

from llmchat.batch.output import OrderedWriter
from llmchat.batch.progress import RichReporter
from llmchat.batch.runner import run_batch
from llmchat.config.session import Overrides
from llmchat.core.errors import ConfigError

# ------------------------------------------------------------------------------------------- fixtures


def last_user(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    users = [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else None


class RoutedServer(FakeServer):
    """A FakeServer whose scripted replies are picked by the request's last user message.

    It hooks the server's two internal steps of a chat request, `_record` (the request, on the handler's
    thread) and `_next_reply` (on the same thread, right after): a thread-local carries the prompt from
    one to the other. Prompts without a route get the ordinary queue or `default_reply`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, deque[Reply]] = {}
        self._local = threading.local()

    def route(self, prompt: str, *replies: Reply) -> None:
        with self._lock:
            self.routes.setdefault(prompt, deque()).extend(replies)

    def asked(self, prompt: str) -> int:
        """How many chat requests carried this prompt."""
        return sum(1 for r in list(self.requests) if r.path.endswith("chat") or r.path.endswith("completions")
                   if last_user(r.body) == prompt)

    def chats(self) -> list[Any]:
        """The chat requests, in order (an Ollama batch also asks `/api/show` once for the model's window)."""
        return [r for r in list(self.requests) if r.path.endswith(("/api/chat", "/chat/completions"))]

    def _record(self, rec: Any) -> None:
        super()._record(rec)
        self._local.prompt = last_user(rec.body)

    def _next_reply(self) -> Reply:
        prompt = getattr(self._local, "prompt", None)
        with self._lock:
            queue = self.routes.get(prompt) if prompt is not None else None
            if queue:
                return queue.popleft()
        return super()._next_reply()


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoutedServer]:
    """Overrides conftest's: the same server, with replies routed by prompt and a real listen backlog.

    socketserver listens with a backlog of 5; a batch opens up to `concurrency` connections at once,
    and SYNs beyond the accept queue are dropped and retried by the kernel 1 s later (or reset). Real
    servers listen with SOMAXCONN (Go's net.Listen does), so the tests do too.
    """
    import fakeserver

    monkeypatch.setattr(fakeserver._HTTPServer, "request_queue_size", 128)
    with RoutedServer() as server:
        yield server


@pytest.fixture
def batch(config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `run_batch` in this process on an input written to a file; returns (exit code, rows written)."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", TEST_KEY)
    out = tmp_path / "out.jsonl"

    def run(text: str | None, *, name: str = "in.txt", output: Path | None = out, concurrency: int = 4,
            resume: bool = False, fmt: str | None = None, input_path: str | None = None,
            **flags: Any) -> tuple[int, list[dict[str, Any]]]:
        if input_path is None:
            input_path = str(tmp_path / name)
            Path(input_path).write_text(text or "", encoding="utf-8")
        code = run_batch(Overrides(config=str(config_file), **flags), input_path,
                         output=str(output) if output else None, concurrency=concurrency, resume=resume, fmt=fmt)
        return code, read_rows(output) if output else []

    return run


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def ids(rows: list[dict[str, Any]]) -> list[Any]:
    return [row["id"] for row in rows]


def allow_retries(config_file: Path, retries: int) -> None:
    """The bailian test profile has retries = 0; some tests want the retry path."""
    config_file.write_text(config_file.read_text().replace("retries = 0", f"retries = {retries}"))


# ------------------------------------------------------------------------------- 1. ordering and output


def test_rows_finish_out_of_order_but_are_written_in_input_order(fake_server, batch) -> None:
    fake_server.route("slow", Stream(first_delay=0.6))
    fake_server.route("medium", Stream(first_delay=0.3))
    rows = [{"id": "a", "prompt": "slow"}, {"id": "b", "prompt": "medium"}] + [
        {"id": f"q{n}", "prompt": f"quick {n}"} for n in range(6)
    ]
    code, out = batch(jsonl(*rows), name="in.jsonl", concurrency=4)
    assert code == 0
    assert ids(out) == ["a", "b"] + [f"q{n}" for n in range(6)]
    assert [r["answer"] for r in out[:3]] == ["You said: slow", "You said: medium", "You said: quick 0"]
    # The quick rows started with "slow" in flight, and finished long before it did.
    assert out[0]["timing"]["total_s"] > 0.55 and out[2]["timing"]["total_s"] < 0.3
    assert set(out[0]) == {"id", "prompt", "answer", "reasoning", "usage", "timing", "error"}
    assert set(out[0]["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens",
                                    "cached_tokens"}
    assert set(out[0]["timing"]) == {"ttft_s", "total_s", "tokens_per_s"}


def test_the_writer_writes_each_row_as_soon_as_the_rows_before_it_are_written() -> None:
    class ListSink:
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def write(self, record: dict[str, Any]) -> None:
            self.rows.append(record["id"])

        def close(self) -> None:
            pass

    sink = ListSink()
    writer = OrderedWriter(sink)
    writer.add(2, {"id": "c"})
    writer.add(4, {"id": "e"})
    assert sink.rows == []
    writer.add(0, {"id": "a"})
    assert sink.rows == ["a"]
    writer.add(1, {"id": "b"})
    assert sink.rows == ["a", "b", "c"]
    writer.drain()  # interrupted with row 3 unfinished: what finished is written, in order
    assert sink.rows == ["a", "b", "c", "e"]


def test_text_input_one_prompt_per_line_blank_lines_skipped(fake_server, batch) -> None:
    code, out = batch("first prompt\n\n   \n  second prompt  \nthird\n", concurrency=2)
    assert code == 0
    assert ids(out) == [1, 4, 5]  # ids are line numbers
    assert [r["prompt"] for r in out] == ["first prompt", "second prompt", "third"]
    assert sorted(last_user(r.body) for r in fake_server.chats()) == ["first prompt", "second prompt", "third"]


def test_output_goes_to_stdout_without_o(fake_server, batch, capsys) -> None:
    code, _ = batch("one\ntwo\n", output=None)
    captured = capsys.readouterr()
    assert code == 0
    assert [json.loads(line)["answer"] for line in captured.out.splitlines()] == ["You said: one", "You said: two"]
    assert "Batch: 2 rows" in captured.err and "2 answered, 0 failed" in captured.err


def test_stdin_input(fake_server, batch, monkeypatch, capsys) -> None:
    data = jsonl({"id": "x", "prompt": "from stdin"}, {"id": "y", "prompt": "too"})
    stdin = io.TextIOWrapper(io.BytesIO(data.encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _ = batch(None, input_path="-", output=None)
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and ids(out) == ["x", "y"] and out[0]["answer"] == "You said: from stdin"


def test_jsonl_messages_system_and_model_per_row(fake_server, batch) -> None:
    rows = [
        {"id": 1, "prompt": "plain"},
        {"id": 2, "prompt": "own system", "system": "Be a pirate."},
        {"id": 3, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "and now?"}]},
        {"id": 4, "messages": [{"role": "system", "content": "Theirs."}, {"role": "user", "content": "q4"}]},
        {"id": 5, "prompt": "other model", "model": "qwen3:8b"},
    ]
    code, out = batch(jsonl(*rows), name="rows.jsonl", system="Be terse.")
    assert code == 0 and ids(out) == [1, 2, 3, 4, 5]
    assert out[2]["prompt"] == "and now?" and out[2]["answer"] == "You said: and now?"
    sent = {last_user(r.body): r.body for r in fake_server.chats()}
    assert sent["plain"]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["own system"]["messages"][0] == {"role": "system", "content": "Be a pirate."}
    assert sent["and now?"]["messages"] == [{"role": "system", "content": "Be terse."}, *rows[2]["messages"]]
    assert sent["q4"]["messages"] == rows[3]["messages"]  # a row's own system message is left alone
    assert sent["other model"]["model"] == "qwen3:8b" and sent["plain"]["model"] == "qwen3:0.6b"


def test_summary_reports_tokens_and_cost_when_the_profile_has_a_price(fake_server, batch, config_file,
                                                                      capsys) -> None:
    config_file.write_text(config_file.read_text().replace(
        "retries = 0", 'retries = 0\nprice = { input = 0.0008, output = 0.002, currency = "CNY" }'))
    fake_server.default_reply = Stream(prompt_tokens=100, completion_tokens=50)
    code, out = batch("a\nb\nc\n", profile="bailian")
    err = capsys.readouterr().err
    assert code == 0 and len(out) == 3
    assert "3 rows" in err and "450 tokens (300 prompt + 150 completion)" in err
    assert "cost 0.0005 CNY" in err  # 3 × (100 × 0.0008 + 50 × 0.002) / 1000 = 0.00054


# ------------------------------------------------------------------------ 1b. failures and retries


def test_a_rate_limited_row_is_retried_and_a_failing_row_is_recorded(fake_server, batch, config_file,
                                                                     capsys) -> None:
    allow_retries(config_file, 1)
    fake_server.route("b", Raw.fixture("openai_error_rate_limit.json", status=429, headers={"Retry-After": "0"}))
    failure = '{"error":{"message":"An internal error has occured","type":"internal_error","code":"internal_error"}}'
    fake_server.route("c", *[Raw(status=500, body=failure, headers={"Retry-After": "0"})] * 2)
    rows = [{"id": name, "prompt": name} for name in "abcd"]
    code, out = batch(jsonl(*rows), name="in.jsonl", profile="bailian", output=None)
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1  # some row failed
    assert ids(out) == ["a", "b", "c", "d"]
    assert out[1]["answer"] == "You said: b" and out[1]["error"] is None
    assert fake_server.asked("b") == 2 and fake_server.asked("c") == 2  # one retry each, as the profile says
    assert out[2]["answer"] is None and "failed (500 internal_error)" in out[2]["error"]
    assert out[3]["error"] is None
    assert "1 failed" in captured.err and 'Failed ids: "c"' in captured.err
    assert TEST_KEY not in captured.out + captured.err


def test_ollama_rows_fail_alone_model_not_found_and_cut_stream(fake_server, batch, capsys) -> None:
    fake_server.route("cut", Stream(answer="Partial ollama answer here", piece_size=4, cut_after=2, first_delay=0.3))
    rows = [{"id": 1, "prompt": "fine"}, {"id": 2, "prompt": "cut"},
            {"id": 3, "prompt": "missing", "model": "nope"}, {"id": 4, "prompt": "also fine"}]
    code, out = batch(jsonl(*rows), name="in.jsonl")
    assert code == 1
    assert [r["error"] is None for r in out] == [True, False, False, True]
    assert "stopped mid-answer" in out[1]["error"] and out[1]["answer"] == "Partial "  # partial text kept
    assert "does not have the model 'nope'" in out[2]["error"] and out[2]["answer"] is None
    assert fake_server.asked("cut") == 1  # text had arrived: never retried
    assert "Failed ids: 2, 3 " in capsys.readouterr().err  # input order, though 3 failed first


def test_bailian_stream_cut_mid_answer_keeps_the_partial_answer(fake_server, batch) -> None:
    fake_server.route("cut", Stream(answer="The first part arrives and then", piece_size=4, cut_after=3))
    code, out = batch("ok\ncut\n", profile="bailian")
    assert code == 1
    assert out[1]["answer"] == "The first pa" and "broke mid-answer" in out[1]["error"]


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_unreachable_server_fails_every_row_without_stopping(fake_server, config_file, batch, profile) -> None:
    from test_errors import closed_port

    config_file.write_text(config_file.read_text().replace(fake_server.url, f"http://127.0.0.1:{closed_port()}"))
    code, out = batch("a\nb\nc\n", profile=profile)
    assert code == 1 and ids(out) == [1, 2, 3]
    assert all("Cannot reach" in r["error"] for r in out)


def test_a_model_without_thinking_is_retried_without_it_per_row(fake_server, batch) -> None:
    code, out = batch("one\ntwo\n", model="llama3.2", think=True)
    assert code == 0 and [r["answer"] for r in out] == ["You said: one", "You said: two"]
    thinks = [r.body.get("think") for r in fake_server.chats() if last_user(r.body) == "one"]
    assert thinks == [True, None]


# ------------------------------------------------------------------------------------ 1c. concurrency


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(fake_server, batch, monkeypatch, concurrency: int) -> None:
    from llmchat.providers.ollama import OllamaProvider

    in_flight, peak = 0, 0
    original = OllamaProvider.astream

    async def counted(self, messages, options):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            async for event in original(self, messages, options):
                yield event
        finally:
            in_flight -= 1

    monkeypatch.setattr(OllamaProvider, "astream", counted)
    fake_server.default_reply = Stream(first_delay=0.1)
    started = time.monotonic()
    code, out = batch("".join(f"p{n}\n" for n in range(9)), concurrency=concurrency)
    elapsed = time.monotonic() - started
    assert code == 0 and len(out) == 9
    assert peak == concurrency  # never more, and the bound is actually used
    assert elapsed >= 0.1 * (9 // concurrency)  # rows queued behind the bound


def test_many_rows_in_flight_really_overlap(fake_server, batch) -> None:
    fake_server.default_reply = Stream(first_delay=0.5)
    started = time.monotonic()
    code, out = batch("".join(f"p{n}\n" for n in range(8)), concurrency=8)
    assert code == 0 and len(out) == 8
    assert time.monotonic() - started < 2.0  # 8 × 0.5 s in sequence would be 4 s


# -------------------------------------------------------------------------------------- 1d. resume


def test_resume_retries_only_failed_rows_and_leaves_each_id_once_in_order(fake_server, batch, tmp_path) -> None:
    fake_server.route("c", Raw(status=400, body='{"error":"bad"}', content_type="application/json"))
    code, first = batch("a\nb\nc\nd\n")
    assert code == 1 and first[2]["error"] is not None
    before = len(fake_server.chats())
    code, final = batch("a\nb\nc\nd\n", resume=True)
    assert code == 0
    assert [last_user(r.body) for r in fake_server.chats()[before:]] == ["c"]
    assert ids(final) == [1, 2, 3, 4] and all(r["error"] is None for r in final)


def test_resume_with_everything_done_sends_nothing(fake_server, batch, capsys) -> None:
    assert batch("a\nb\n")[0] == 0
    before = len(fake_server.requests)
    code, rows = batch("a\nb\n", resume=True)
    assert code == 0 and ids(rows) == [1, 2] and len(fake_server.requests) == before
    assert "2 already done" in capsys.readouterr().err


def test_resume_drops_a_row_cut_short_by_a_kill(fake_server, batch, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    good = {"id": 1, "prompt": "a", "answer": "You said: a", "reasoning": None, "usage": {}, "timing": {},
            "error": None}
    out.write_text(json.dumps(good) + "\n" + '{"id": 2, "prompt": "b", "ans', encoding="utf-8")
    code, rows = batch("a\nb\nc\n", resume=True, output=out)
    assert code == 0 and ids(rows) == [1, 2, 3]
    assert sorted(last_user(r.body) for r in fake_server.chats()) == ["b", "c"]  # the cut row is rerun


def test_resume_refuses_a_file_that_is_not_batch_output(batch, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: not a batch output row"):
        batch("a\n", resume=True, output=out)


# --------------------------------------------------------------------------------- 1e. bad input


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("in.jsonl", '{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": \n', "in.jsonl, line 2: not valid JSON"),
        ("in.jsonl", '{"id": 1, "promt": "typo"}\n', "unknown key 'promt' (did you mean 'prompt'?)"),
        ("in.jsonl", '{"id": 1}\n', "line 1: give exactly one of 'prompt' or 'messages'"),
        ("in.jsonl", '{"id": 1, "prompt": "a", "messages": []}\n', "exactly one of"),
        ("in.jsonl", '{"id": 1, "prompt": " "}\n', "'prompt' must be a non-empty string"),
        ("in.jsonl", '{"id": 1, "prompt": "a"}\n\n{"id": 1, "prompt": "b"}\n',
         "line 3: id 1 is already used on line 1"),
        ("in.jsonl", '{"id": true, "prompt": "a"}\n', "'id' must be a string or an integer"),
        ("in.jsonl", '[1, 2]\n', "a row must be a JSON object"),
        ("in.jsonl", '{"id": 1, "messages": [{"role": "user"}]}\n', "each message needs a role"),
        ("in.jsonl", '{"id": 1, "messages": [{"role": "assistant", "content": "x"}]}\n', "last message must be"),
        ("in.jsonl", '{"id": 1, "prompt": "a", "model": 3}\n', "'model' must be a non-empty string"),
        ("in.txt", "\n\n  \n", "has no prompts"),
    ],
)
def test_bad_input_is_a_config_error_naming_the_line(fake_server, batch, name, content, phrase) -> None:
    with pytest.raises(ConfigError) as caught:
        batch(content, name=name)
    assert caught.value.exit_code == 2 and phrase in caught.value.message
    assert fake_server.requests == []


def test_non_utf8_and_missing_input(batch, tmp_path) -> None:
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"fine\n\xff\xfe bad\n")
    with pytest.raises(ConfigError, match="line 2: not UTF-8"):
        batch(None, input_path=str(binary))
    with pytest.raises(ConfigError, match="Cannot read"):
        batch(None, input_path=str(tmp_path / "nope.txt"))


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [({"concurrency": 0}, "--concurrency must be at least 1"), ({"resume": True, "output": None}, "--resume needs -o"),
     ({"fmt": "yaml"}, "--format 'yaml' is not supported")],
)
def test_bad_arguments_are_config_errors(fake_server, batch, kwargs, phrase) -> None:
    with pytest.raises(ConfigError, match=phrase):
        batch("a\n", **kwargs)
    assert fake_server.requests == []


def test_missing_api_key_is_reported_before_any_request(fake_server, batch, monkeypatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        batch("a\n", profile="bailian")
    assert fake_server.requests == []


# ---------------------------------------------------------------------------------- 1f. --format json


def test_format_json_reaches_ollama(fake_server, batch) -> None:
    code, _ = batch("give me a fruit\n", fmt="json")
    assert code == 0 and fake_server.last("/api/chat").body["format"] == "json"


def test_format_json_on_dashscope_mentions_json_when_the_prompt_does_not(fake_server, batch) -> None:
    code, _ = batch("give me a fruit\nanswer in JSON please\n", profile="bailian", fmt="json", system="Be brief.")
    assert code == 0
    sent = {last_user(r.body): r.body for r in fake_server.chats()}
    assert all(body["response_format"] == {"type": "json_object"} for body in sent.values())
    assert sent["give me a fruit"]["messages"][0] == {"role": "system",
                                                      "content": "Be brief.\n\nAnswer with a single JSON object."}
    assert sent["answer in JSON please"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_no_format_no_response_format(fake_server, batch) -> None:
    assert batch("a\n", profile="bailian")[0] == 0
    assert "response_format" not in fake_server.last("/chat/completions").body


# ------------------------------------------------------------------------ 1g. progress and providers


def test_progress_bar_shows_done_failed_speed_and_notices_once() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    stdout = sys.stdout
    reporter = RichReporter(3, console=Console(file=buffer, force_terminal=True, width=120))
    assert sys.stdout is stdout  # rows written to stdout must not be routed through the bar's console
    reporter.row_done(True, 40)
    reporter.notice("llama3.2 does not support thinking; answering without it.")
    reporter.notice("llama3.2 does not support thinking; answering without it.")
    reporter.row_done(False, 0)
    reporter.stop()
    text = buffer.getvalue()
    assert "2/3" in text and "1 failed" in text and "tok/s" in text and "ETA" in text
    assert text.count("does not support thinking") == 1


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_async_and_sync_streams_yield_the_same_events(fake_server, config_file, monkeypatch, profile) -> None:
    from llmchat.config.session import resolve
    from llmchat.providers import ChatOptions, connect

    monkeypatch.setenv("DASHSCOPE_API_KEY", TEST_KEY)
    _, resolved = resolve(Overrides(config=str(config_file), profile=profile, think=True))
    provider = connect(resolved)
    options = ChatOptions.from_profile(resolved)
    messages = [{"role": "user", "content": "2+2?"}]
    reply = Stream(answer="Four.", reasoning="Add them.", piece_size=2, prompt_tokens=9, completion_tokens=5)

    fake_server.route("2+2?", reply)
    sync_events = list(provider.stream(messages, options))

    async def collect() -> list[Any]:
        try:
            return [event async for event in provider.astream(messages, options)]
        finally:
            await provider.aclose()

    fake_server.route("2+2?", reply)
    async_events = asyncio.run(collect())
    assert async_events == sync_events
    assert "".join(e.text for e in async_events if type(e).__name__ == "Answer") == "Four."


# --------------------------------------------------------------- 2. subprocesses: kill, Ctrl-C, resume

DRIVER = r"""
import argparse, sys
from llmchat.batch.runner import run_batch
from llmchat.render.errors import print_error
from llmchat.core.errors import LlmchatError
from llmchat.config.session import Overrides
p = argparse.ArgumentParser()
p.add_argument("input")
p.add_argument("-o", "--output")
p.add_argument("-p", "--profile")
p.add_argument("-m", "--model")
p.add_argument("-s", "--system")
p.add_argument("--concurrency", type=int, default=4)
p.add_argument("--resume", action="store_true")
p.add_argument("--format", dest="fmt")
p.add_argument("--think", dest="think", action="store_true", default=None)
p.add_argument("--no-think", dest="think", action="store_false", default=None)
a = p.parse_args()
flags = Overrides(profile=a.profile, model=a.model, system=a.system, think=a.think)
try:
    code = run_batch(flags, a.input, output=a.output, concurrency=a.concurrency, resume=a.resume, fmt=a.fmt)
except LlmchatError as exc:
    print_error(exc)
    code = exc.exit_code
except KeyboardInterrupt:
    code = 130
sys.exit(code)
"""


def _cli_has_batch() -> bool:
    """Whether `llmchat batch` exists, read from the CLI's command tree (no process at collection time:
    under xdist every worker collects)."""
    import typer

    from llmchat.cli.app import app

    return "batch" in getattr(typer.main.get_command(app), "commands", {})


CLI_READY = _cli_has_batch()
needs_cli = pytest.mark.skipif(not CLI_READY, reason="`llmchat batch` is not wired into cli.py yet")


def batch_argv(*args: str) -> list[str]:
    """`llmchat batch ARGS` when the CLI has it, else the driver above with the same flags."""
    if CLI_READY:
        return [sys.executable, "-m", "llmchat", "batch", *args]
    return [sys.executable, "-c", DRIVER, *args]


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"batch ended early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"no {count} rows in {path} after {timeout} s")


def test_resume_after_sigkill_finishes_only_the_missing_ids(fake_server, config_file, env, tmp_path) -> None:
    prompts = [f"prompt {n:02d}" for n in range(1, 13)]
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    fake_server.default_reply = Stream(delay=0.05, piece_size=4)  # about 0.3 s a row
    proc = forkserver.Popen(batch_argv(str(source), "-o", str(out), "--concurrency", "2"), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_rows(out, 3, proc)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    written = ids(read_rows(out))
    assert written == list(range(1, len(written) + 1)) and 3 <= len(written) < 12  # a prefix, in order

    fake_server.default_reply = Stream()
    before = len(fake_server.chats())
    resumed = forkserver.run(batch_argv(str(source), "-o", str(out), "--resume"), env=env, capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    asked = sorted(last_user(r.body) for r in fake_server.chats()[before:])
    assert asked == prompts[len(written):]  # only the missing ids
    final = read_rows(out)
    assert ids(final) == list(range(1, 13))  # every id exactly once, in input order
    assert [r["answer"] for r in final] == [f"You said: {p}" for p in prompts]
    assert f"{len(written)} already done" in resumed.stderr.decode()


def test_ctrl_c_exits_130_with_finished_rows_written(fake_server, config_file, env, tmp_path) -> None:
    prompts = [f"prompt {n:02d}" for n in range(1, 11)]
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    fake_server.default_reply = Stream(delay=0.05, piece_size=4)
    fake_server.route("prompt 03", Stream(first_delay=30))  # in flight when Ctrl-C comes: row 4+ wait past it
    proc = forkserver.Popen(batch_argv(str(source), "-o", str(out), "--concurrency", "3"), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_rows(out, 2, proc)
        time.sleep(0.5)  # rows after the stalled one finish and wait in memory
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = stderr.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "Interrupted" in text
    rows = read_rows(out)
    written = ids(rows)
    assert written[:2] == [1, 2] and 3 not in written  # the in-flight row was cancelled, not recorded
    assert written == sorted(written) and len(written) > 2  # rows past the gap are kept, in order
    assert all(r["error"] is None for r in rows)

    resumed = forkserver.run(batch_argv(str(source), "-o", str(out), "--resume"), env=env, capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert ids(read_rows(out)) == list(range(1, 11))  # gaps filled, order restored, each id once


def test_stdin_dash_in_a_subprocess(fake_server, config_file, env) -> None:
    proc = forkserver.run(batch_argv("-", "-p", "bailian"), env=env, input=b"alpha\nbeta\n", capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert ids(rows) == [1, 2] and rows[1]["answer"] == "You said: beta"


def test_bad_input_exits_2_with_one_clear_message(fake_server, config_file, env, tmp_path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "ok"}\n{"id": 2, "promt": "x"}\n', encoding="utf-8")
    proc = forkserver.run(batch_argv(str(source)), env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "line 2" in err and "did you mean 'prompt'" in err and "Traceback" not in err
    assert fake_server.requests == []


# -------------------------------------------------------------------------- 3. through the real CLI


@needs_cli
def test_cli_help_lists_the_batch_options(llmchat) -> None:
    run = llmchat("batch", "--help")
    assert run.code == 0
    for option in ("--output", "--concurrency", "--resume", "--format", "--think", "--profile", "--model",
                   "--system"):
        assert option in run.stdout


@needs_cli
def test_cli_flags_reach_the_requests(fake_server, config_file, llmchat, tmp_path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run = llmchat("batch", str(source), "-o", str(out), "-p", "bailian", "-m", "qwen3-max", "-s", "Be brief.",
                  "--think", "--concurrency", "2", "--format", "json")
    assert run.code == 0, run.stderr
    assert ids(read_rows(out)) == [1, 2] and run.stdout == ""
    body = fake_server.last("/chat/completions").body
    assert body["model"] == "qwen3-max" and body["enable_thinking"] is True
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["content"].startswith("Be brief.")


@needs_cli
def test_cli_exit_1_when_a_row_failed(fake_server, config_file, llmchat, tmp_path) -> None:
    fake_server.route("bad", Raw(status=400, body='{"error":"nope"}', content_type="application/json"))
    source = tmp_path / "in.txt"
    source.write_text("good\nbad\n", encoding="utf-8")
    run = llmchat("batch", str(source))
    assert run.code == 1 and "Traceback" not in run.output
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert ids(rows) == [1, 2] and rows[1]["error"] and rows[0]["error"] is None


def test_ollama_rows_send_the_models_window_as_num_ctx(fake_server, config_file, llmchat, tmp_path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b", "model": "llama3.2"}\n'
                    '{"id": 3, "prompt": "c", "model": "llama3.2"}\n')
    fake_server.context_lengths["llama3.2:latest"] = 8192  # what this server's /api/show says
    run = llmchat("batch", str(rows), "-p", "local")
    assert run.code == 0, run.stderr
    sent = {r.body["messages"][-1]["content"]: r.body["options"] for r in fake_server.chats()}
    assert sent == {"a": {"num_ctx": 40960}, "b": {"num_ctx": 8192}, "c": {"num_ctx": 8192}}
    shown = sorted(r.body["model"] for r in fake_server.requests if r.path == "/api/show")
    assert shown == ["llama3.2", "qwen3:0.6b"]  # once per model, before the rows start
