"""Model management and the health check: `llmchat models` with capabilities, `llmchat pull` from a streamed
NDJSON pull (and the offer to pull), and `llmchat doctor`'s table for healthy and broken profiles.
"""

from __future__ import annotations

import json
import socket

import pytest
from test_images import ollama

from llmchat.core.errors import ModelNotFound
from llmchat.engine.pull import PlainPullView, PullTracker, RichPullView, follow, offer_pull
from llmchat.providers import PullProgress


def closed_port_url() -> str:
    """A local URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rows(output: str) -> dict[str, str]:
    """doctor's table rows by check name: {"server": "✓  server    Ollama 0.13.5 at …", …} (last table wins)."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in "✓✗–?!":
            found[parts[1] if parts[1] != "API" else "key"] = line.strip()
    return found


# ---------------------------------------------------------------------------------------------- models


def test_models_show_capabilities_from_show_per_model(fake_server, config_file, llmchat) -> None:
    fake_server.vision_models.add("qwen3:8b")
    run = llmchat("models", "--json")
    assert run.code == 0, run.stderr
    caps = {m["name"]: m["capabilities"] for m in json.loads(run.stdout)}
    assert caps["qwen3:8b"] == ["completion", "vision", "thinking"]
    assert caps["llama3.2:latest"] == ["completion"]
    table = llmchat("models")
    assert "capabilities" in table.stdout and "family" in table.stdout and "size" in table.stdout
    line = next(row for row in table.stdout.splitlines() if row.startswith("qwen3:8b"))
    assert "vision, thinking" in line and "qwen3" in line and "GB" in line
    assert sum(r.path == "/api/show" for r in fake_server.requests) == 2 * len(fake_server.models)


def test_models_use_the_tags_capabilities_of_newer_servers(fake_server, config_file, llmchat) -> None:
    fake_server.tags_capabilities = True
    fake_server.vision_models.add("llama3.2:latest")
    run = llmchat("models", "--json")
    assert {m["name"]: m["capabilities"] for m in json.loads(run.stdout)}["llama3.2:latest"] == ["completion",
                                                                                               "vision"]
    assert not [r for r in fake_server.requests if r.path == "/api/show"]  # v0.30 lists them: no per-model call


def test_openai_compatible_models_have_no_capabilities_column(fake_server, config_file, llmchat) -> None:
    run = llmchat("models", "-p", "bailian")
    assert run.code == 0 and "capabilities" not in run.stdout and "qwen-plus" in run.stdout
    assert json.loads(llmchat("models", "-p", "bailian", "--json").stdout)[0]["capabilities"] is None


# ------------------------------------------------------------------------------------------------ pull


def test_pull_progress_is_parsed_from_the_streamed_ndjson(fake_server) -> None:
    fake_server.registry = {"qwen3:14b": [1000, 30]}
    fake_server.pull_steps = 3
    lines = list(ollama(fake_server).pull("qwen3:14b"))
    assert lines[0] == PullProgress("pulling manifest") and lines[-1] == PullProgress("success")
    first = lines[1]
    assert first.status.startswith("pulling ") and first.digest.startswith("sha256:") and first.total == 1000
    assert first.completed is None  # Go's omitempty: 0 bytes is not sent
    tracker = PullTracker()
    seen = []
    for line in lines:
        tracker.feed(line)
        seen.append((tracker.completed, tracker.total))
    assert (333, 1000) in seen and seen[-1] == (1030, 1030)
    assert tracker.succeeded and tracker.phases == ["pulling manifest", "verifying sha256 digest",
                                                    "writing manifest", "success"]
    assert fake_server.last("/api/pull").body == {"model": "qwen3:14b", "insecure": False, "stream": True}


def test_pull_views_plain_lines_and_rich_bars(fake_server, tmp_path) -> None:
    import io

    fake_server.registry = {"llava:7b": [4_113_289_216]}
    out = io.StringIO()
    tracker = follow(ollama(fake_server).pull("llava:7b"), PlainPullView(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert lines[1].endswith("4.1 GB") and lines[2].endswith("100%") and len(lines) == 6
    assert tracker.total == 4_113_289_216
    rich_out = io.StringIO()
    follow(ollama(fake_server).pull("llava:7b"), RichPullView(rich_out))
    assert "4.1/4.1 GB" in rich_out.getvalue() and "success" in rich_out.getvalue()


def test_cli_pull_downloads_with_plain_progress(fake_server, config_file, llmchat) -> None:
    run = llmchat("pull", "qwen3:14b")
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("Pulled qwen3:14b (9.3 GB) into Ollama at ")
    assert run.stderr.splitlines()[0] == "pulling manifest" and "success" in run.stderr
    assert "\x1b[" not in run.stderr  # not a terminal: plain lines, no bar redraws
    assert "qwen3:14b" in fake_server.models
    assert llmchat("ask", "-m", "qwen3:14b", "hi").code == 0


def test_cli_pull_of_an_unknown_model_or_a_cloud_profile(fake_server, config_file, llmchat) -> None:
    unknown = llmchat("pull", "nosuchmodel:1b")
    assert unknown.code == 1
    assert "registry has no model 'nosuchmodel:1b'" in unknown.stderr and "file does not exist" in unknown.stderr
    cloud = llmchat("pull", "-p", "bailian", "qwen-plus")
    assert cloud.code == 2 and "Ollama profile" in cloud.stderr


def test_the_pull_offer_asks_pulls_and_is_silent_off_a_terminal(fake_server, capsys) -> None:
    provider = ollama(fake_server)
    asked = []
    assert offer_pull(provider, "qwen3:14b", confirm=lambda q: asked.append(q) or False) is False
    assert "qwen3:14b is not on the Ollama server" in asked[0] and "[y/N]" in asked[0]
    assert offer_pull(provider, "qwen3:14b", confirm=lambda q: True) is True
    assert "qwen3:14b" in fake_server.models and "success" in capsys.readouterr().err
    with pytest.raises(ModelNotFound):
        offer_pull(provider, "nosuchmodel:1b", confirm=lambda q: True)
    assert offer_pull(provider, "qwen3:14b") is False  # pytest's stdin is not a terminal: never asks
    from test_images import bailian

    assert offer_pull(bailian(fake_server), "qwen-plus", confirm=lambda q: True) is False


# ---------------------------------------------------------------------------------------------- doctor


def test_doctor_healthy_profile(fake_server, config_file, llmchat) -> None:
    run = llmchat("doctor", "-p", "local")
    assert run.code == 0, run.stdout + run.stderr
    found = rows(run.stdout)
    assert found["config"].startswith("✓") and found["key"].startswith("✓") and "none needed" in found["key"]
    assert found["server"].startswith("✓") and "Ollama 0.13.5" in found["server"]
    assert found["model"].startswith("✓") and "qwen3:0.6b (qwen3, 0.6B, Q4_K_M)" in found["model"]
    assert found["thinking"].startswith("✓") and found["vision"].startswith("–")
    assert found["latency"].startswith("–") and "--probe" in found["latency"]
    assert "All checks passed." in run.stdout
    assert not [r for r in fake_server.requests if r.path == "/api/chat"]  # no model call without --probe


def test_doctor_probe_times_a_one_token_request(fake_server, config_file, llmchat) -> None:
    fake_server.vision_models.add("qwen3:0.6b")
    run = llmchat("doctor", "-p", "local", "--probe")
    assert run.code == 0, run.stdout
    found = rows(run.stdout)
    assert found["latency"].startswith("✓") and "one-token request" in found["latency"]
    assert found["vision"].startswith("✓")
    assert fake_server.last("/api/chat").body["options"]["num_predict"] == 1


def test_doctor_down_server(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text().replace(fake_server.url + '"', closed_port_url() + '"', 1))
    run = llmchat("doctor", "-p", "local", "--probe")
    assert run.code == 1
    found = rows(run.stdout)
    assert found["server"].startswith("✗") and "Cannot reach Ollama" in found["server"]
    assert "ollama serve" in found["server"]  # the fix
    assert all(found[name].startswith("–") for name in ("model", "thinking", "vision", "latency"))
    assert "1 check failed." in run.stdout


def test_doctor_missing_key(fake_server, config_file, llmchat, env) -> None:
    env.pop("DASHSCOPE_API_KEY")
    run = llmchat("doctor", "-p", "bailian")
    assert run.code == 1
    found = rows(run.stdout)
    assert found["key"].startswith("✗") and "DASHSCOPE_API_KEY is not set" in found["key"]
    assert "export DASHSCOPE_API_KEY=" in found["key"]
    assert found["server"].startswith("✓")  # asked without a key: it answers
    assert found["model"].startswith("–")


def test_doctor_rejected_key(fake_server, config_file, llmchat) -> None:
    fake_server.api_key = "sk-another-key"
    run = llmchat("doctor", "-p", "bailian")
    assert run.code == 1
    found = rows(run.stdout)
    assert found["key"].startswith("✗") and "rejected DASHSCOPE_API_KEY" in found["key"]
    assert found["server"].startswith("✓")


def test_doctor_missing_model(fake_server, config_file, llmchat) -> None:
    run = llmchat("doctor", "-p", "local", "-m", "qwen3:14b")
    assert run.code == 1
    found = rows(run.stdout)
    assert found["model"].startswith("✗") and "qwen3:14b is not on this server" in found["model"]
    assert "llmchat pull qwen3:14b" in found["model"]
    openai = llmchat("doctor", "-p", "vllm", "-m", "gpt-9")
    assert openai.code == 1 and "gpt-9 is not among the" in rows(openai.stdout)["model"]


def test_doctor_thinking_required_but_missing(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text().replace('model = "qwen3:0.6b"', 'model = "llama3.2"\nthink = true'))
    run = llmchat("doctor", "-p", "local")
    assert run.code == 1
    found = rows(run.stdout)
    assert found["thinking"].startswith("✗") and "think = false" in found["thinking"]


def test_doctor_checks_every_configured_profile_and_a_broken_config(fake_server, config_file, llmchat) -> None:
    run = llmchat("doctor")
    assert run.code == 0, run.stdout
    assert [line.split()[0] for line in run.stdout.splitlines() if "(" in line and "·" in line
            and not line.startswith(("✓", "✗", "–", "?", "!"))] == ["local", "bailian", "vllm"]
    assert rows(run.stdout)["thinking"].startswith("?")  # vllm: the server does not say
    assert llmchat("doctor", "-p", "nosuch").code == 2  # a usage error, like any command's
    config_file.write_text("[profiles.local\n")
    broken = llmchat("doctor")
    assert broken.code == 1 and "✗" in broken.stdout and "not valid TOML" in broken.stdout
