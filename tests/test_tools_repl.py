"""`/tools` in the chat, in a pseudo-terminal: listing, on/off for the session, did-you-mean, completion."""

from __future__ import annotations

import re
import time
from pathlib import Path

pytest_plugins = ("conftest_repl",)  # the `repl` fixture

WEATHER = '''
[tools.weather]
description = "Current weather for a city"
command = ["curl", "-s", "wttr.in/{city}?format=3"]
parameters = { city = { type = "string", description = "City or district" } }
'''


def row(output: str, name: str) -> list[str]:
    match = re.search(rf"^\s*{name}\s+(.*)$", output, re.MULTILINE)
    assert match, output
    return match.group(1).split()


def test_tools_without_any_says_how_to_add_one(repl) -> None:
    chat = repl()
    out = chat.command("/tools")
    assert row(out, "shell")[:3] == ["off", "builtin", "asks"]
    assert row(out, "time")[:3] == ["off", "builtin", "trusted"]
    assert "No tool is on" in out and "[tools.NAME]" in out


def test_tools_on_off_and_completion(repl, repl_config: Path) -> None:
    with repl_config.open("a", encoding="utf-8") as file:
        file.write(WEATHER)
    chat = repl("--tool", "time")
    out = chat.command("/tools")
    assert row(out, "time")[:3] == ["on", "builtin", "trusted"]
    assert row(out, "weather")[:4] == ["off", "command", "asks", "first"]
    assert "Offered now: time, weather." in chat.command("/tools on weather")
    assert "Offered now: weather." in chat.command("/tools off time")
    assert row(chat.command("/tools"), "time")[0] == "off"
    out = chat.command("/tools on wether")
    assert "No tool 'wether'. Did you mean 'weather'?" in out and "Usage: /tools" in out
    chat.send("/tools on ti")
    chat.wait_for(lambda: ">>> /tools on ti" in chat.display(), "the typed line")
    time.sleep(0.5)  # let the threaded completer settle, as a person's pause before Tab does
    chat.send("\t")
    chat.wait_for(lambda: ">>> /tools on time" in chat.display(), "the completed tool name")
    assert "Offered now: weather, time." in chat.command("")


def test_the_toolbox_follows_the_profile_and_keeps_session_trust(tmp_path: Path) -> None:
    from llmchat.config.load import load_config
    from llmchat.repl.state import ReplState

    path = tmp_path / "config.toml"
    path.write_text(WEATHER + '[profiles.a]\nprovider = "ollama"\nmodel = "m"\ntools = ["shell", "weather"]\n'
                    '[profiles.b]\nprovider = "ollama"\nmodel = "m"\ntools = ["shell"]\n', encoding="utf-8")
    config = load_config(path)
    state = ReplState.start(config, config.profiles["local"], connector=lambda profile: object())  # type: ignore
    assert state.toolbox is None
    state.switch_profile(config.profiles["a"])
    assert state.toolbox is not None and [s.name for s in state.toolbox.offered()] == ["shell", "weather"]
    state.toolbox.trust("shell")
    state.switch_profile(config.profiles["b"])
    assert [s.name for s in state.toolbox.offered()] == ["shell"] and not state.toolbox.needs_approval("shell")
    state.switch_profile(config.profiles["local"])
    assert state.toolbox is None
