"""Bad input gets a clear error, fast, with bounded memory (issue 12 §3).

Each test feeds the real CLI (a subprocess; the REPL in a pseudo-terminal) something hostile or
broken and checks for one short message and the documented exit code, never a traceback, a hang
or a memory blow-up. Servers that misbehave are played by the fake server over real HTTP.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import forkserver
import pytest

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(90)

#: Address space for a child whose memory must stay bounded: enough for Python and its imports,
#: far too little to hold a 1 GB file (the old code read it whole) or an endless /dev/zero.
MEMORY_LIMIT = 768 * 2**20


def run_limited(env: dict[str, str], *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`llmchat ARGS` with its address space capped and a wall-clock limit (a FIFO must not block it)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return forkserver.run([sys.executable, "-m", "llmchat", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


# ---------------------------------------------------------------------------------------------- images


@pytest.fixture
def hostile_files(tmp_path: Path) -> Iterator[dict[str, str]]:
    big = tmp_path / "huge.png"
    with big.open("wb") as file:
        file.truncate(2**30)  # sparse: 1 GB on paper, nothing on disk
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    yield {"/dev/zero": "a device", str(big): "limited to 20 MB", str(fifo): "a FIFO", str(folder): "a directory"}
    big.unlink()  # the test's own input: the key scan after the test would otherwise read 1 GB of zeros


def test_ask_refuses_devices_fifos_huge_files_and_directories_before_reading(
        config_file, env, fake_server, hostile_files) -> None:
    for path, said in hostile_files.items():
        run = run_limited(env, "ask", "--image", path, "what is this?")
        assert run.returncode == 2, (path, run.stderr)
        assert said in run.stderr and path in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 2  # the message and what to do
    assert not fake_server.requests  # refused before anything was sent


def test_repl_image_of_a_device_or_fifo_is_a_message_and_the_chat_goes_on(repl, fake_server, hostile_files) -> None:
    chat = repl()
    for path, said in hostile_files.items():
        out = " ".join(chat.command(f"/image {path}").split())  # messages wrap at spaces (issue 17)
        assert said in out and "Traceback" not in out and not chat.eof, out
    assert "No images attached" in chat.command("/image")
    answer = chat.ask("still there?")
    assert answer.body["messages"][-1] == {"role": "user", "content": "still there?"}
    chat.enter("/exit")
    assert chat.wait_exit() == 0


# --------------------------------------------------------------------------------------------- numbers


def write_profile(config_file: Path, line: str) -> None:
    """Add `line` to the [profiles.local] table of the test config (right after its header)."""
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(text.replace("[profiles.local]\n", f"[profiles.local]\n{line}\n", 1), encoding="utf-8")


@pytest.mark.parametrize(("line", "allowed"), [
    ("timeout = 1e300", "a number above 0, up to 86400"),
    ("timeout = nan", "a number above 0, up to 86400"),
    ("temperature = nan", "a number from 0 to 2"),
    ("temperature = inf", "a number from 0 to 2"),
    ("temperature = 5", "a number from 0 to 2"),
    ("top_p = -0.5", "a number above 0, up to 1"),
    ("top_k = 0", "an integer from 1 to 2147483647"),
    ("max_tokens = -3", "an integer from 1 to 2147483647"),
    ("thinking_budget = 0", "an integer from 1 to 2147483647"),
    ("context_window = 9999999999", "an integer from 1 to 2147483647"),
    ("retries = 1000000", "an integer from 0 to 100"),
    ("retries = -1", "an integer from 0 to 100"),
])
def test_an_out_of_range_number_in_the_file_names_the_key_line_and_range(
        llmchat, config_file, fake_server, line, allowed) -> None:
    write_profile(config_file, line)
    run = llmchat("ask", "hi")
    key = line.split()[0]
    assert run.code == 2, run.output
    assert f"{config_file}, line 4: profiles.local.{key} = " in run.stderr  # the header is line 3
    assert f"is out of range: expected {allowed}." in run.stderr
    assert not fake_server.requests and "Traceback" not in run.stderr


@pytest.mark.parametrize("line", ["price = { input = nan, output = 0.002 }",
                                  "price = { input = 0.001, output = inf }",
                                  "options = { num_ctx = 8192, mirostat_tau = nan }"])
def test_nan_and_inf_are_refused_in_prices_and_passed_through_options(llmchat, config_file, line) -> None:
    write_profile(config_file, line)
    run = llmchat("ask", "hi")
    assert run.code == 2 and "line 4: profiles.local." in run.stderr, run.output
    assert "not valid" in run.stderr or "not a finite number" in run.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "0", "1e300"])
def test_llmchat_timeout_out_of_range_is_a_usage_error(llmchat, config_file, fake_server, value) -> None:
    run = llmchat("ask", "hi", LLMCHAT_TIMEOUT=value)
    assert run.code == 2, run.output
    assert f"LLMCHAT_TIMEOUT='{value}' is out of range: expected seconds, a number above 0, up to 86400." in run.stderr
    assert not fake_server.requests


def test_the_temperature_flag_and_the_file_share_one_table(llmchat, config_file) -> None:
    import typer.main

    from llmchat.cli.app import app
    from llmchat.config.profile import BUILTIN_PROFILES, LIMITS, apply_overrides
    from llmchat.core.errors import ConfigError

    for command in ("ask", "chat", "batch"):
        flag = next(p for p in typer.main.get_command(app).commands[command].params if p.name == "temperature")
        assert (flag.min, flag.max) == (LIMITS["temperature"].low, LIMITS["temperature"].high)
    for value in ("nan", "inf", "2.5", "-0.1"):
        run = llmchat("ask", "-t", value, "hi")
        assert run.code == 2 and "--temperature" in run.stderr, run.output
    with pytest.raises(ConfigError, match="temperature = nan is out of range: expected a number from 0 to 2"):
        apply_overrides(BUILTIN_PROFILES["local"], temperature=float("nan"))


# ------------------------------------------------------------------------------------ argv and schemas


def test_argv_that_is_not_utf8_is_a_usage_error(env, config_file, fake_server, tmp_path) -> None:
    # What a GBK or Latin-1 terminal passes for "café": the bytes reach Python as lone surrogates.
    run = forkserver.run([sys.executable.encode(), b"-m", b"llmchat", b"ask", b"caf\xe9 au lait"],
                         env={**env, "LLMCHAT_CONFIG": str(config_file)}, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=30)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 2, stderr
    assert "Argument 2 of the command line is not UTF-8 text ('caf\\xe9 au lait')." in stderr
    assert "Traceback" not in stderr and not fake_server.requests


DEEP = '{"type": "array", "items": ' * 3000 + '{"type": "string"}' + "}" * 3000


@pytest.mark.parametrize(("schema", "said"), [
    ('{"$ref": "#"}', "$ leads back to itself through $ref"),
    ('{"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/b"}, '
     '"b": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}}}', "(a $ref loop)"),
    ('{"allOf": [{"$ref": "#"}]}', "(a $ref loop)"),
    ('{"$ref": "#/$defs/a", "$defs": {"a": {"type": "object"}}, "allOf": [{"$ref": "#"}]}', "(a $ref loop)"),
    ('{"not": {"$ref": "#"}}', "(a $ref loop)"),
    ('{"if": {"type": "object"}, "then": {"$ref": "#"}}', "(a $ref loop)"),
    ('{"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}', 'points to nothing in the schema'),
    (DEEP, "is nested more than 100 levels deep"),
    ('{"type": "object", ' + '"properties": {"a": {"type": "object", ' * 60 + '"x": 1' + "}}" * 60 + "}",
     "is nested more than 100 levels deep"),
])
def test_a_schema_that_never_ends_is_refused_before_any_request(
        llmchat, config_file, fake_server, tmp_path, schema, said) -> None:
    path = tmp_path / "schema.json"
    path.write_text(schema, encoding="utf-8")
    run = llmchat("ask", "--schema", str(path), "give me JSON")
    assert run.code == 2, run.output
    assert f"Schema file {path}" in run.stderr and said in run.stderr
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr
    assert not fake_server.requests


def test_a_recursive_schema_through_items_is_fine_and_a_too_deep_answer_is_exit_1(
        llmchat, config_file, fake_server, tmp_path) -> None:
    from fakeserver import Stream

    tree = {"$defs": {"node": {"type": "object", "required": ["children"], "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}
    path = tmp_path / "tree.json"
    path.write_text(__import__("json").dumps(tree), encoding="utf-8")
    fake_server.enqueue(Stream(answer='{"children": [{"children": []}]}'))
    ok = llmchat("ask", "--schema", str(path), "a tree")
    assert ok.code == 0 and '"children"' in ok.stdout, ok.output
    fake_server.enqueue(Stream(answer='{"children": [' * 2000 + "]}" * 2000, piece_size=4000))
    deep = llmchat("ask", "--schema", str(path), "a deep tree")
    assert deep.code == 1 and "Traceback" not in deep.stderr and "internal error" not in deep.stderr, deep.output
    assert "nested too deeply" in deep.stderr


# ------------------------------------------------------------------------ proxies and odd server bodies

NGINX_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             "</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n")


@pytest.mark.parametrize("profile", ["local", "vllm"])
def test_a_proxys_html_error_page_is_one_short_message_printed_once(
        llmchat, config_file, fake_server, profile) -> None:
    from fakeserver import Raw

    for _ in range(3):  # the first try and both retries
        fake_server.enqueue(Raw(502, NGINX_502, content_type="text/html", headers={"Retry-After": "0"}))
    run = llmchat("-p", profile, "ask", "hi")
    assert run.code == 1, run.output
    assert "<html" not in run.output and "nginx" not in run.output and "Traceback" not in run.output
    final = "answered 502 Bad Gateway with an HTML page: a proxy or gateway answered, not the model server."
    assert run.stderr.count(final) == 1, run.stderr
    # short notices: the brief once, then "Failed again." (the same failure is not repeated word for word)
    assert run.stderr.count("502 Bad Gateway from a proxy or gateway.\nRetrying in 0.0s (1/2)") == 1
    assert run.stderr.count("Failed again. Retrying in 0.0s (2/2)") == 1
    assert len(run.stderr.strip().splitlines()) == 5  # two notices (the first: the error, then the retry), …


@pytest.mark.parametrize("profile", ["local", "vllm"])
@pytest.mark.parametrize(("body", "content_type", "said"), [
    (NGINX_502, "text/html", "with an HTML page"),
    ("", "application/json", "with an empty body"),
])
def test_models_and_doctor_survive_an_html_or_empty_body(
        llmchat, config_file, fake_server, profile, body, content_type, said) -> None:
    from fakeserver import Raw

    for path in ("/api/tags", "/api/version", "/v1/models"):
        fake_server.overrides[path] = Raw(200, body, content_type=content_type)
    models = llmchat("models", "-p", profile)
    assert models.code == 1 and said in models.stderr, models.output
    assert "Traceback" not in models.output and "internal error" not in models.output and "<html" not in models.output
    doctor = llmchat("doctor", "-p", profile)
    assert doctor.code == 1 and said in doctor.stdout and "1 check failed." in doctor.stdout, doctor.output
    assert "Traceback" not in doctor.output and "<html" not in doctor.output


CAPTIVE_PORTAL = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hotel Wi-Fi</title></head>\n"
                  "<body><form action=\"/login\">Room number <input name=\"room\"></form></body></html>\n")


@pytest.mark.parametrize("profile", ["local", "vllm"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"],
                         ids=["html", "unlabelled"])
def test_a_captive_portal_page_with_200_is_named_not_read_as_a_broken_stream(
        llmchat, config_file, fake_server, profile, stream, content_type) -> None:
    from fakeserver import Raw

    fake_server.enqueue(*[Raw(200, CAPTIVE_PORTAL, content_type=content_type)] * 3)
    run = llmchat("-p", profile, "ask", "hi", *([] if stream else ["--no-stream"]))
    assert run.code == 1, run.output
    api = "Ollama's API" if profile == "local" else "an OpenAI-compatible API"
    assert f"answered with an HTML page, not {api}: is base_url right?" in run.stderr, run.stderr
    assert "captive portal" in run.stderr and "base_url" in run.stderr
    assert run.stderr.count("Error: ") == 1 and "Retrying" not in run.stderr  # the same page would come back
    for noise in ("<html", "Hotel", "malformed", "Traceback", "internal error"):
        assert noise not in run.output, run.output


@pytest.mark.parametrize("profile", ["local", "vllm"])
def test_batch_rows_name_the_captive_portal_too(llmchat, config_file, fake_server, profile, tmp_path) -> None:
    """The asyncio side (`astream`) checks the same way."""
    from fakeserver import Raw

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n", encoding="utf-8")
    fake_server.enqueue(*[Raw(200, CAPTIVE_PORTAL, content_type="application/octet-stream")] * 3)
    run = llmchat("-p", profile, "batch", str(prompts))
    assert run.code == 1, run.output
    [row] = [json.loads(line) for line in run.stdout.splitlines()]
    assert "answered with an HTML page" in row["error"] and "Hotel" not in row["error"], row


def test_a_200_with_plain_text_on_an_openai_endpoint_is_an_error_not_a_crash(llmchat, config_file, fake_server):
    from fakeserver import Raw

    fake_server.enqueue(*[Raw(200, "It works!\n", content_type="text/plain")] * 3)  # a default web server page
    run = llmchat("-p", "vllm", "ask", "hi")
    assert run.code == 1 and "answered with something that is not JSON" in run.stderr, run.output
    assert "internal error" not in run.output and "Traceback" not in run.output


# ------------------------------------------------------------------------------------------- Retry-After


def test_retry_after_is_read_in_both_forms() -> None:
    from email.utils import formatdate

    from llmchat.providers import parse_retry_after

    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # already past: no wait
    assert parse_retry_after("-4", now) == 0.0
    for junk in (None, "", "soon", "inf", "nan", "Wed, 99 Foo 2026 25:00:00 GMT"):
        assert parse_retry_after(junk, now) is None


@pytest.mark.parametrize(("profile", "body"), [
    ("local", '{"error":"server busy"}'),
    ("vllm", '{"error":{"message":"Requests rate limit exceeded","type":"limit_requests",'
             '"code":"limit_requests"},"request_id":"r-1"}'),
])
@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_honoured_by_both_providers(llmchat, config_file, fake_server, profile, body, form) -> None:
    import time
    from email.utils import formatdate

    from fakeserver import Raw, Stream

    value = "1" if form == "seconds" else formatdate(time.time() + 3, usegmt=True)
    fake_server.enqueue(Raw(429, body, content_type="application/json", headers={"Retry-After": value}),
                        Stream(answer="fine now"))
    started = time.monotonic()
    run = llmchat("-p", profile, "ask", "hi")
    assert run.code == 0 and run.stdout.strip() == "fine now", run.output
    if form == "seconds":
        assert "Retrying in 1.0s (1/2)" in run.stderr, run.stderr
    else:  # an HTTP-date 3 s ahead, sent a moment ago: 1.0-3.0 s are left by the time it is read
        assert any(f"Retrying in {s / 10:.1f}s (1/2)" in run.stderr for s in range(10, 31)), run.stderr
        assert time.monotonic() - started >= 1.0


# ------------------------------------------------------------------------------- secrets outside api_key_env

URL_PASSWORD = "hunter2-url-secret"


def test_a_password_in_base_url_is_masked_everywhere_it_is_shown(llmchat, env, tmp_path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the connection error names the URL
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "config.toml"
    path.write_text(f'''default_profile = "proxied"
[profiles.proxied]
provider = "ollama"
model = "qwen3:0.6b"
base_url = "http://alice:{URL_PASSWORD}@127.0.0.1:{port}"
retries = 0
[profiles.cloud]
provider = "openai"
model = "qwen-plus"
base_url = "http://bob:{URL_PASSWORD}@127.0.0.1:{port}/v1"
retries = 0
''', encoding="utf-8")
    runs = {
        "ask": llmchat("ask", "hi", "--no-save", LLMCHAT_CONFIG=str(path)),
        "ask cloud": llmchat("-p", "cloud", "ask", "hi", "--no-save", LLMCHAT_CONFIG=str(path)),
        "models": llmchat("models", "-p", "cloud", LLMCHAT_CONFIG=str(path)),
        "doctor": llmchat("doctor", LLMCHAT_CONFIG=str(path)),
        "config show": llmchat("config", "show", LLMCHAT_CONFIG=str(path)),
        "profiles": llmchat("profiles", LLMCHAT_CONFIG=str(path)),
        "OLLAMA_HOST": llmchat("-p", "local", "ask", "hi", "--no-save", LLMCHAT_CONFIG=str(path),
                               OLLAMA_HOST=f"http://carol:{URL_PASSWORD}@127.0.0.1:{port}"),
    }
    for name, run in runs.items():
        assert URL_PASSWORD not in run.output, (name, run.output)
    assert f"Cannot reach Ollama at http://alice:***@127.0.0.1:{port}" in runs["ask"].stderr
    assert f"Cannot reach http://bob:***@127.0.0.1:{port}/v1." in runs["ask cloud"].stderr
    assert f"http://carol:***@127.0.0.1:{port}" in runs["OLLAMA_HOST"].stderr
    assert f'base_url = "http://alice:***@127.0.0.1:{port}"' in runs["config show"].stdout
    assert f"http://bob:***@127.0.0.1:{port}/v1" in runs["profiles"].stdout
    assert "alice:***@" in runs["doctor"].stdout


@pytest.mark.parametrize("line", [
    'options = { api_key = "sk-in-options-0000" }',
    'options = { num_ctx = 4096, headers = { Authorization = "Bearer sk-in-options-0000" } }',
    'options = { "X-Api-Key" = "sk-in-options-0000" }',
    'access_token = "sk-in-options-0000"',
    'password = "sk-in-options-0000"',
])
def test_secret_looking_keys_are_refused_and_never_echoed(llmchat, config_file, line) -> None:
    write_profile(config_file, line)
    for args in (("ask", "hi"), ("config", "show"), ("profiles",)):
        run = llmchat(*args)
        assert run.code == 2, run.output
        assert "sk-in-options-0000" not in run.output
        assert "api_key_env" in run.stderr and "line 4" in run.stderr


def test_options_that_merely_mention_tokens_still_pass(llmchat, config_file, fake_server) -> None:
    write_profile(config_file, "options = { num_keep = 4, stop_token_ids = [1, 2], keep_alive = \"5m\" }")
    run = llmchat("ask", "hi")
    assert run.code == 0, run.output
    assert fake_server.last("/api/chat").body["options"]["num_keep"] == 4


def test_a_key_written_as_api_key_env_is_refused_without_echoing_it(llmchat, config_file) -> None:
    text = config_file.read_text(encoding="utf-8").replace('api_key_env = "DASHSCOPE_API_KEY"',
                                                          'api_key_env = "sk-0123456789abcdef"')
    config_file.write_text(text, encoding="utf-8")
    for args in (("ask", "hi"), ("profiles",), ("config", "show")):
        run = llmchat(*args)
        assert run.code == 2 and "must be the NAME of an environment variable" in run.stderr, run.output
        assert "sk-0123456789abcdef" not in run.output


def test_the_chat_banner_profile_and_save_mask_a_url_password(repl, repl_config, fake_server, tmp_path) -> None:
    text = repl_config.read_text(encoding="utf-8")
    masked_url = fake_server.url.replace("http://", f"http://alice:{URL_PASSWORD}@")
    repl_config.write_text(text.replace(f'base_url = "{fake_server.url}"\n', f'base_url = "{masked_url}"\n', 1),
                           encoding="utf-8")
    chat = repl()
    assert "alice:***@127.0.0.1" in chat.text()  # the banner names the endpoint
    assert "alice:***@127.0.0.1" in chat.command("/profile")
    chat.ask("hello")
    export = tmp_path / "chat.json"
    chat.command(f"/save {export}")
    assert json.loads(export.read_text(encoding="utf-8"))["messages"][0]["content"] == "hello"  # no endpoint in it
    chat.enter("/exit")
    assert chat.wait_exit() == 0
    assert URL_PASSWORD not in chat.raw and URL_PASSWORD not in export.read_text(encoding="utf-8")
