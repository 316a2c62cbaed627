"""The chat's first question does not wait for imports: the provider is made while the person types.

End to end, the order is observed rather than timed: with Python's import-time log on (it goes to
stderr, which is the same pty as the prompt), the client library's import finishes after the prompt
is drawn, and the first question still gets its answer. The `Preloading` provider itself is checked
with a build that blocks until the test lets it go.
"""

from __future__ import annotations

import re
import threading

import pytest

from llmchat.core.errors import MissingApiKey
from llmchat.repl.preload import Preloading

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(30)

PROMPT_READY = "\x1b[?2004h"


@pytest.mark.parametrize(("profile", "library"), [("local", "ollama"), ("bailian", "openai")])
def test_the_prompt_comes_before_the_client_library(repl, profile: str, library: str) -> None:
    chat = repl("-p", profile, PYTHONPROFILEIMPORTTIME="1")
    chat.wait_for(lambda: re.search(rf"\|\s+{library}\r?\n", chat.raw) is not None, f"`import {library}` to finish")
    imported = re.search(rf"\|\s+{library}\r?\n", chat.raw)
    assert imported is not None
    assert chat.raw.index(PROMPT_READY) < imported.start(), f"the prompt waited for `import {library}`"
    chat.ask("hello there")
    chat.wait_text("You said: hello there")


def test_a_missing_key_still_stops_the_chat_before_the_prompt(repl) -> None:
    chat = repl("-p", "bailian", ready=False, DASHSCOPE_API_KEY="")
    assert chat.wait_exit() == 2
    assert "needs an API key in the environment variable DASHSCOPE_API_KEY" in chat.text()


def test_a_use_waits_for_the_provider_and_gets_it() -> None:
    release = threading.Event()

    class Made:
        image_urls = False

    def build() -> Made:
        release.wait(10)
        return Made()

    provider = Preloading(build)  # returns while build() is still blocked
    assert not provider._done.is_set()
    threading.Timer(0.05, release.set).start()
    assert provider.image_urls is False  # waited for build(), then read the made provider's attribute
    assert provider._done.is_set()


def test_what_making_it_raised_is_raised_at_the_first_use() -> None:
    def build() -> object:
        raise MissingApiKey("no key", hint="export it")

    provider = Preloading(build)
    with pytest.raises(MissingApiKey):
        _ = provider.stream
