"""Tools in the config file ([tools.NAME], a profile's tools), the tool flags, and `llmchat tools`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmchat.config.load import load_config
from llmchat.config.profile import LIMITS
from llmchat.config.session import Overrides, resolve
from llmchat.config.tools import BUILTIN_TOOLS
from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError
from llmchat.tools.builtins import BUILTIN_SPECS

WEATHER = '''[tools.weather]
description = "Current weather for a city"
command = ["curl", "-s", "wttr.in/{city}?format=3"]
parameters = { city = { type = "string", description = "City or district, e.g. 杭州" } }
'''
PROFILE = '''[profiles.t]
provider = "ollama"
model = "m"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    return str(info.value)


def test_a_command_tool_and_profile_keys_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, WEATHER + PROFILE + 'tools = ["time", "weather", "time"]\n'
                               "max_tool_rounds = 3\ntool_output_limit = 500\ntrust_tools = true\n"))
    profile = config.profiles["t"]
    assert profile.tools == ("time", "weather")  # listed twice, offered once
    assert (profile.max_tool_rounds, profile.tool_output_limit, profile.trust_tools) == (3, 500, True)
    weather = config.tools["weather"]
    assert weather.command == ("curl", "-s", "wttr.in/{city}?format=3") and weather.required == ("city",)
    assert weather.timeout == 30 and weather.trust is None
    assert weather.schema()["required"] == ["city"] and weather.schema()["properties"]["city"]["type"] == "string"
    assert config.tool_names() == (*BUILTIN_TOOLS, "weather")
    default = config.profiles["local"]
    assert (default.tools, default.max_tool_rounds, default.tool_output_limit, default.trust_tools) == \
        ((), 10, 20_000, False)


def test_the_builtin_names_are_the_ones_that_run() -> None:
    assert tuple(BUILTIN_SPECS) == BUILTIN_TOOLS
    for _description, schema in BUILTIN_SPECS.values():
        assert schema["type"] == "object" and set(schema["required"]) <= set(schema["properties"])


@pytest.mark.parametrize(("text", "line", "words"), [
    (PROFILE + 'tools = ["time", "wether"]\n' + WEATHER, 4, ["'wether'", "Did you mean 'weather'"]),
    (WEATHER + "comand = []\n", 5, ["Unknown key 'comand'", "Did you mean 'command'"]),
    (WEATHER + "timeout = 0\n", 5, ["timeout = 0 is out of range"]),
    (WEATHER + "timeout = nan\n", 5, ["out of range"]),
    (WEATHER + "trust = 1\n", 5, ["true or false"]),
    (WEATHER + 'required = ["town"]\n', 5, ["'town', which is not a parameter"]),
    ('[tools.weather]\ncommand = ["curl", "{town}"]\nparameters = { city = {type = "string"} }\n', 2,
     ["{town}", "not a parameter"]),
    ('\n[tools.weather]\ncommand = "curl wttr.in"\n', 3, ["non-empty list of strings"]),
    ('[tools.weather]\ndescription = "x"\n', 1, ["has no command"]),
    ('[tools.shell]\ncommand = ["bash"]\n', 2, ["[tools.shell] defines a command", "'shell' is a built-in"]),
    ('[tools.read_file]\ndescription = "x"\n', 2, ["Unknown key 'description' in the built-in tool"]),
    ('[tools."two words"]\ncommand = ["x"]\n', 1, ["letters, digits, _ and -"]),
    (PROFILE + "max_tool_rounds = 0\n", 4, ["max_tool_rounds = 0 is out of range", "an integer from 1 to 1000"]),
    (PROFILE + 'tool_output_limit = "big"\n', 4, ["tool_output_limit"]),
    (PROFILE + "trust_tools = 1\n", 4, ["trust_tools"]),
    (PROFILE + 'tools = "time"\n', 4, ["profiles.t.tools"]),
])
def test_config_errors_name_file_line_and_fix(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    message = error_of(tmp_path, text)
    assert f"config.toml, line {line}:" in message, message
    for word in words:
        assert word in message, message


def test_a_builtin_table_without_command_sets_trust_and_timeout(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[tools.read_file]\ntrust = true\n[tools.time]\ntrust = false\n"
                               "[tools.shell]\ntimeout = 2.5\n"))
    assert config.tools["read_file"].trust is True and config.tools["shell"].timeout == 2.5
    assert config.tool_names() == BUILTIN_TOOLS  # settings, not new tools


def test_tool_flags_add_remove_and_trust(tmp_path: Path) -> None:
    path = str(write(tmp_path, WEATHER + PROFILE + 'tools = ["time"]\n'))
    environment = Environment(None, None, None, {})  # type: ignore[arg-type]
    _, profile = resolve(Overrides(config=path, profile="t", tool=("weather", "time")), environment)
    assert profile.tools == ("time", "weather") and not profile.trust_tools
    _, profile = resolve(Overrides(config=path, profile="t", tool=("weather",), no_tools=True), environment)
    assert profile.tools == ()
    _, profile = resolve(Overrides(config=path, profile="t", trust_tools=True), environment)
    assert profile.trust_tools and profile.tools == ("time",)
    with pytest.raises(ConfigError, match="Did you mean 'weather'"):
        resolve(Overrides(config=path, profile="t", tool=("weathr",)), environment)


@pytest.mark.parametrize("command", [["ask", "hi"], ["chat"], [], ["batch", "-"]])
def test_an_unknown_tool_flag_is_exit_2_before_any_request(llmchat, config_file, fake_server, command) -> None:
    result = llmchat(*command, "--tool", "shel", input="hi\n")
    assert result.code == 2, result.output
    assert "--tool shel: no such tool. Did you mean 'shell'?" in result.stderr
    assert not fake_server.requests


def test_tool_flags_are_accepted_by_ask_chat_and_batch(llmchat, config_file) -> None:
    for command in (["ask", "--help"], ["chat", "--help"], ["batch", "--help"], ["--help"]):
        out = llmchat(*command).stdout
        assert "--tool" in out and "--no-tools" in out and "--trust-tools" in out, command
    result = llmchat("ask", "--tool", "time", "--trust-tools", "--no-tools", "hi")
    assert result.code == 0, result.output


def test_llmchat_tools_lists_every_tool(llmchat, tmp_path: Path, env) -> None:
    path = write(tmp_path, 'default_profile = "t"\n' + WEATHER + "trust = true\n" + PROFILE
                 + 'tools = ["weather", "read_file"]\n')
    result = llmchat("tools", "--config", str(path))
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "source", "trust", "offered", "description"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:] if line.strip()}
    assert rows["time"] == ["builtin", "trusted", "no"]
    assert rows["read_file"] == ["builtin", "asks", "yes"]
    assert rows["weather"] == ["command", "trusted", "yes"]
    assert "Current weather for a city" in result.stdout
    as_json = json.loads(llmchat("tools", "--config", str(path), "--json", "--tool", "fetch").stdout)
    assert [t["name"] for t in as_json] == [*BUILTIN_TOOLS, "weather"]
    weather = as_json[-1]
    assert weather["source"] == "command" and weather["trusted"] and weather["offered"]
    assert weather["parameters"]["properties"]["city"]["description"] == "City or district, e.g. 杭州"
    assert {t["name"] for t in as_json if t["offered"]} == {"weather", "read_file", "fetch"}


def test_llmchat_tools_is_exact_in_a_pipe(llmchat, tmp_path: Path) -> None:
    path = write(tmp_path, '[tools.evil]\ndescription = "bad \\u001b[31mred"\ncommand = ["true"]\n')
    assert "bad \x1b[31mred" in llmchat("tools", "--config", str(path)).stdout
    assert "\\u001b[31m" in llmchat("tools", "--config", str(path), "--json").stdout


def test_llmchat_tools_says_how_to_add_one(llmchat, config_file) -> None:
    result = llmchat("tools")
    assert result.code == 0 and "[tools.NAME]" in result.stdout and "No tool is offered" in result.stdout


def test_limits_hold_the_tool_ranges() -> None:
    assert LIMITS["max_tool_rounds"].allows(10) and not LIMITS["max_tool_rounds"].allows(0)
    assert LIMITS["tool_output_limit"].allows(20_000) and not LIMITS["tool_output_limit"].allows(1.5)


def test_no_tools_means_nothing_of_tools_is_imported() -> None:
    import subprocess
    import sys

    script = ("import sys\nfrom llmchat.config.load import load_config\nimport llmchat.repl.state\n"
              "from llmchat.engine.ask import open_tools\n"
              "from llmchat.cli import app\nconfig = load_config(None)\n"
              "assert open_tools(config, config.profile('local', {}), None) is None\n"
              "print(sorted(m for m in sys.modules if m.startswith('llmchat.tools') or m == 'httpx'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


def test_config_show_includes_the_tools(llmchat, tmp_path: Path) -> None:
    import tomllib

    path = write(tmp_path, WEATHER + "[tools.shell]\ntrust = true\n" + PROFILE + 'tools = ["weather"]\n')
    result = llmchat("config", "show", "--config", str(path))
    assert result.code == 0, result.output
    shown = tomllib.loads(result.stdout)
    assert shown["tools"]["weather"]["command"] == ["curl", "-s", "wttr.in/{city}?format=3"]
    assert shown["tools"]["weather"]["required"] == ["city"] and shown["tools"]["shell"] == {"trust": True,
                                                                                             "timeout": 30.0}
    assert shown["profiles"]["t"]["tools"] == ["weather"]
