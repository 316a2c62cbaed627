"""The `[tools.NAME]` tables of the config file: command tools, and settings for the built-ins.

A table with a `command` defines a command tool: an argv template whose `{param}` placeholders are
filled with the model's arguments (never through a shell). A table named like a built-in (`time`,
`read_file`, `fetch`, `shell`) without a `command` only changes that built-in's `trust` or `timeout`
(so `[tools.read_file] trust = true` is how the config "says so"); with a `command` it clashes with the
built-in and is refused, naming both. Checked here, with the file and line of the problem, because a
config file is edited by hand; running a tool is `llmchat.tools`' job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmchat.config.profile import LIMITS
from llmchat.core.suggest import did_you_mean

if TYPE_CHECKING:
    from llmchat.core.errors import ConfigError

#: The tools llmchat itself provides, in the order listings show them (`llmchat.tools.builtins` runs them).
BUILTIN_TOOLS: tuple[str, ...] = ("time", "read_file", "fetch", "shell")
#: Built-ins that run without asking unless the config says otherwise: reading the clock harms nothing.
TRUSTED_BY_DEFAULT = frozenset({"time"})
DEFAULT_TOOL_TIMEOUT = 30.0  # seconds
#: What both protocols accept as a function name (OpenAI's rule; DashScope and Ollama follow it).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: `{city}` in an argv item: an identifier in braces (so JSON such as `{"a": 1}` in an item is left alone).
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

COMMAND_KEYS = ("description", "command", "parameters", "required", "trust", "timeout", "pass_env")
BUILTIN_KEYS = ("trust", "timeout")


@dataclass(frozen=True)
class ToolConfig:
    """One `[tools.NAME]` table as checked: a command tool (`command` set) or a built-in's settings."""

    name: str
    description: str = ""
    command: tuple[str, ...] = ()  # empty: the settings of the built-in of this name
    parameters: Mapping[str, Any] = field(default_factory=dict)  # JSON Schema properties
    required: tuple[str, ...] = ()
    trust: bool | None = None  # None: the default (true only for `time`)
    timeout: float = DEFAULT_TOOL_TIMEOUT
    #: Variables handed to the command although they look like secrets (the user named them on purpose).
    pass_env: tuple[str, ...] = ()

    @property
    def is_command(self) -> bool:
        return bool(self.command)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema object the model is offered: the properties as written, and `required`."""
        return {"type": "object", "properties": {k: dict(v) for k, v in self.parameters.items()},
                "required": list(self.required)}


def tool_names(tools: Mapping[str, ToolConfig]) -> tuple[str, ...]:
    """Every tool a config defines, as listings show them: the built-ins, then command tools in file order."""
    return BUILTIN_TOOLS + tuple(name for name, tool in tools.items() if tool.is_command)


def build_tools(tables: Any, locate: Any) -> dict[str, ToolConfig]:
    """The checked `[tools.*]` tables; `locate` is config.load's _Locator (file and line for messages)."""
    if not isinstance(tables, dict):
        raise locate.error(None, "tools", "'tools' must be a table of [tools.NAME] sections.")
    return {name: _build_tool(name, table, locate) for name, table in tables.items()}


def _build_tool(name: str, table: Any, locate: Any) -> ToolConfig:
    def error(key: str | None, message: str, hint: str | None = None) -> ConfigError:
        return locate.error(name, key, message, hint, table="tools")

    if not isinstance(table, dict):
        raise error(None, f"tools.{name} must be a table ([tools.{name}]).")
    if not TOOL_NAME.match(name):
        raise error(None, f"tools.{name}: a tool name may hold only letters, digits, _ and - (at most 64).",
                    "Models are offered tools by name, and both APIs refuse other names.")
    builtin = name in BUILTIN_TOOLS
    if builtin and "command" in table:
        raise error("command", f"[tools.{name}] defines a command, but '{name}' is a built-in tool.",
                    f"Rename the command tool (e.g. [tools.my_{name}]); a [tools.{name}] table without a "
                    f"command may only set {' and '.join(BUILTIN_KEYS)} for the built-in.")
    allowed = BUILTIN_KEYS if builtin else COMMAND_KEYS
    for key in table:
        if key not in allowed:
            what = f"the built-in tool '{name}'" if builtin else f"tools.{name}"
            raise error(key, f"Unknown key '{key}' in {what}.{did_you_mean(key, allowed)}",
                        f"Allowed keys: {', '.join(allowed)}.")
    trust = table.get("trust")
    if trust is not None and not isinstance(trust, bool):
        raise error("trust", f"tools.{name}.trust = {trust!r} is not valid: expected true or false.")
    timeout = table.get("timeout", DEFAULT_TOOL_TIMEOUT)
    if not LIMITS["timeout"].allows(timeout):
        raise error("timeout", f"tools.{name}.timeout = {timeout!r} is out of range: expected seconds, "
                    f"{LIMITS['timeout'].describe()}.")
    if builtin:
        return ToolConfig(name=name, trust=trust, timeout=float(timeout))
    command = table.get("command")
    if command is None:
        raise error(None, f"tools.{name} has no command.",
                    'Add e.g. command = ["curl", "-s", "wttr.in/{city}?format=3"] (an argv list, no shell).')
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) \
            or not command[0].strip():
        raise error("command", f"tools.{name}.command must be a non-empty list of strings (the argv).",
                    'e.g. command = ["curl", "-s", "wttr.in/{city}?format=3"]; it is run without a shell.')
    if PLACEHOLDER.search(command[0]):
        raise error("command", f"tools.{name}.command starts with a placeholder ({command[0]}): the model "
                    "would choose the program to run.", "Name the program in the template; for any command, "
                    "offer the built-in `shell` (every call asks first).")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise error("description", f"tools.{name}.description must be a string.")
    parameters = table.get("parameters", {})
    if not isinstance(parameters, dict) or not all(isinstance(v, dict) for v in parameters.values()):
        raise error("parameters", f"tools.{name}.parameters must be a table of JSON Schema properties.",
                    'e.g. parameters = { city = { type = "string", description = "City name" } }')
    for param in parameters:
        if not PLACEHOLDER.fullmatch("{" + param + "}"):
            raise error("parameters", f"tools.{name}.parameters: '{param}' is not a valid parameter name "
                        "(letters, digits and _, not starting with a digit).")
    required = table.get("required", list(parameters))
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise error("required", f"tools.{name}.required must be a list of parameter names.")
    for param in required:
        if param not in parameters:
            raise error("required", f"tools.{name}.required names '{param}', which is not a parameter."
                        f"{did_you_mean(param, parameters)}", f"Parameters: {', '.join(parameters) or 'none'}.")
    for item in command:
        for param in PLACEHOLDER.findall(item):
            if param not in parameters:
                raise error("command", f"tools.{name}.command uses {{{param}}}, which is not a parameter."
                            f"{did_you_mean(param, parameters)}",
                            f"Declare it: parameters = {{ {param} = {{ type = \"string\" }} }}.")
    pass_env = table.get("pass_env", [])
    if not isinstance(pass_env, list) or not all(isinstance(v, str) and _ENV_NAME.match(v) for v in pass_env):
        raise error("pass_env", f"tools.{name}.pass_env must be a list of environment variable names.")
    return ToolConfig(name=name, description=description, command=tuple(command), parameters=parameters,
                      required=tuple(required), trust=trust, timeout=float(timeout), pass_env=tuple(pass_env))
