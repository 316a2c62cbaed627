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


def test_profile_keeps_the_tool_flags_of_the_command_line(tmp_path: Path) -> None:
    """`llmchat --tool weather --trust-tools`, then `/profile b`: the flags hold for the whole chat."""
    import io

    from llmchat.config.load import load_config
    from llmchat.config.session import Overrides, with_flags
    from llmchat.repl.commands import COMMANDS
    from llmchat.repl.state import ReplState

    path = tmp_path / "config.toml"
    path.write_text(WEATHER + '[profiles.a]\nprovider = "ollama"\nmodel = "m"\n'
                    '[profiles.b]\nprovider = "ollama"\nmodel = "m"\ntools = ["shell"]\n', encoding="utf-8")
    config = load_config(path)
    flags = Overrides(tool=("weather",), trust_tools=True)
    state = ReplState.start(config, with_flags(config.profiles["a"], flags), flags=flags, out=io.StringIO(),
                            connector=lambda profile: object())  # type: ignore[arg-type,return-value]
    assert [s.name for s in state.toolbox.offered()] == ["weather"]
    COMMANDS.dispatch(state, "/profile b")
    assert state.profile.name == "b"
    assert [s.name for s in state.toolbox.offered()] == ["shell", "weather"]
    assert not state.toolbox.needs_approval("shell")  # --trust-tools still holds
