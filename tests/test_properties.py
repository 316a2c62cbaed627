"""Property tests: however the bytes are cut, the same events; whatever the input, no unhandled exception.

The streams are real recorded shapes served by the fake server with the HTTP chunks cut at
arbitrary byte offsets (inside JSON, inside a UTF-8 character, inside `data:`), read by the real
`ollama` and `openai` clients through llmchat's providers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeserver import FakeServer, Raw, load_fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmchat.config.load import parse_config
from llmchat.core.errors import ConfigError
from llmchat.core.events import Answer, Finish, Reasoning, Usage
from llmchat.providers import ChatOptions
from llmchat.providers.ollama import OllamaProvider
from llmchat.providers.openai_compat import OpenAICompatProvider

FIXTURES = {
    "ollama_chat_stream_thinking.ndjson": "ollama",
    "ollama_inline_think_tags.ndjson": "ollama",
    "ollama_chat_stream_plain.ndjson": "ollama",
    "openai_dashscope_stream_thinking.sse": "openai",
    "openai_dashscope_stream_plain.sse": "openai",
}


@pytest.fixture(scope="module")
def server():
    with FakeServer() as running:
        yield running


def collect(server: FakeServer, protocol: str, reply: Raw) -> tuple[str, str, Usage | None, str | None]:
    server.enqueue(reply)
    if protocol == "ollama":
        provider = OllamaProvider(host=server.url, read_timeout=10)
    else:
        provider = OpenAICompatProvider(base_url=server.url + "/v1", api_key=None, read_timeout=10, bailian=True,
                                        key_variable=None, region=None)
    reasoning, answer, usage, finish = [], [], None, None
    for event in provider.stream([{"role": "user", "content": "hi"}], ChatOptions(model="qwen3:8b")):
        if isinstance(event, Reasoning):
            reasoning.append(event.text)
        elif isinstance(event, Answer):
            answer.append(event.text)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Finish):
            finish = event.reason
    return "".join(reasoning), "".join(answer), usage, finish


@pytest.mark.parametrize("name", sorted(FIXTURES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_chunking_gives_the_same_events(server: FakeServer, name: str, data: st.DataObject) -> None:
    body = load_fixture(name)
    cuts = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=40, unique=True))
    recorded = Raw.fixture(name)
    whole = collect(server, FIXTURES[name], recorded)
    cut = Raw(status=200, body=body, content_type=recorded.content_type, chunked=True, split_at=tuple(cuts))
    pieces = collect(server, FIXTURES[name], cut)
    assert pieces == whole
    assert whole[1] and whole[3] == "stop"


TOML_ISH = st.text(alphabet=st.sampled_from(list('[]=."\' \n#abcdeflmnoprstuvy_0123456789{},-+tT\\')), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=TOML_ISH | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_config_loader_never_raises_anything_but_a_config_error(text: str) -> None:
    try:
        parse_config(text.encode("utf-8", "surrogatepass"), Path("fuzz.toml"))
    except ConfigError as error:
        assert "fuzz.toml" in str(error)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(
    st.sampled_from(["provider", "model", "base_url", "region", "think", "temperature", "stop", "price",
                     "max_tokens", "thinking", "options", "retries", "timeout", "seed"]),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8),
              st.lists(st.text(max_size=3), max_size=2),
              st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
))
def test_profiles_of_any_shape_load_or_fail_cleanly(body: dict) -> None:
    import tomli_w

    table = {k: v for k, v in body.items() if v is not None}
    try:
        text = tomli_w.dumps({"profiles": {"p": table}})
    except (TypeError, ValueError):
        return
    try:
        config = parse_config(text.encode(), Path("fuzz.toml"))
    except ConfigError:
        return
    profile = config.profiles["p"]
    assert profile.provider in ("ollama", "bailian", "openai") and isinstance(profile.model, str)
