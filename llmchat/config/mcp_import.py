"""`llmchat mcp import FILE`: the `mcpServers` people already have, appended to the config as tables.

Reads Claude Desktop / Cursor (`{"mcpServers": {...}}`), VS Code (`{"servers": {...}}`, or a settings
file's `{"mcp": {"servers": {...}}}`). Each server becomes an `[mcp.servers.NAME]` table appended to
the config file: the file's own text and comments are kept byte for byte (a name replaced with
--force is the one exception: its old table is cut out). What would be written is parsed as a whole
first, so a file that would not load is never written.

Keys stay out of files llmchat writes: a literal value under a secret-looking name (`GITHUB_TOKEN`,
`Authorization`) is replaced by a `${VAR}` reference and the user is told which variable to export.
VS Code's `${env:VAR}` becomes `${VAR}`; its `${input:id}` prompts become variables too (`${ID}`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmchat.core.errors import ConfigError

_NAME = re.compile(r"[^A-Za-z0-9_-]")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class ImportResult:
    """What an import did, for the message: added, replaced, kept, skipped (with why), variables to export."""

    path: Path
    added: list[tuple[str, str]] = field(default_factory=list)  # (name, "stdio: cmd" / "http: url")
    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)  # (server, VAR) to export


def read_servers(source: Path) -> dict[str, Any]:
    """The servers object of a Claude Desktop / Cursor / VS Code JSON file; ConfigError when there is none."""
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source} does not exist.", hint="Give the path of an mcpServers JSON file, e.g. "
                          "~/.config/Claude/claude_desktop_config.json or .vscode/mcp.json.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {source}: {exc}.") from None
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}.") from None
    if isinstance(data, dict):
        for found in (data.get("mcpServers"), data.get("servers"), (data.get("mcp") or {}).get("servers")
                      if isinstance(data.get("mcp"), dict) else None):
            if isinstance(found, dict):
                return found
    raise ConfigError(f"{source} has no MCP servers in it.",
                      hint='Expected {"mcpServers": {...}} (Claude Desktop, Cursor) or {"servers": {...}} (VS Code).')


def table_for(name: str, entry: dict[str, Any], result: ImportResult) -> dict[str, Any]:
    """One server entry as an `[mcp.servers.NAME]` table (secrets replaced by variables, noted in `result`)."""
    kind = str(entry.get("type") or "").lower()
    table: dict[str, Any] = {}
    if entry.get("url") is not None or kind in ("http", "sse", "streamable-http", "streamable_http"):
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError("it has no url")
        table["url"] = _vscode_variables(url)
        headers = _strings(entry.get("headers"), "headers")
        if headers:
            table["headers"] = {k: _secret(name, k, v, result, header=True) for k, v in headers.items()}
        return table
    command = entry.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("it has neither a command nor a url")
    table["command"] = _vscode_variables(command)
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise ValueError("its args are not a list of strings")
    if args:
        table["args"] = [_vscode_variables(str(a)) for a in args]
    env = _strings(entry.get("env"), "env")
    if env:
        table["env"] = {k: _secret(name, k, v, result) for k, v in env.items()}
    if isinstance(entry.get("cwd"), str) and entry["cwd"]:
        table["cwd"] = _vscode_variables(entry["cwd"])
    return table


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"its {what} is not an object")
    return {str(k): str(v) for k, v in value.items()}


def _vscode_variables(text: str) -> str:
    """`${env:VAR}` -> `${VAR}`; `${input:api-key}` -> `${API_KEY}` (VS Code's prompts: a variable here)."""
    text = re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", r"${\1}", text)
    return re.sub(r"\$\{input:([^}]+)\}", lambda m: "${" + _NAME.sub("_", m.group(1)).upper() + "}", text)


def _secret(server: str, key: str, value: str, result: ImportResult, *, header: bool = False) -> str:
    """A literal secret is not copied: it becomes `${VAR}`, and `result` says which VAR to export."""
    from llmchat.config.load import secret_looking

    value = _vscode_variables(value)
    if not secret_looking(key) or "${" in value:
        return value
    variable = _NAME.sub("_", f"{server}_{key}" if header else key).upper()
    result.variables.append((server, variable))
    scheme = re.match(r"^(Bearer|Basic|Token)\s+", value, re.IGNORECASE) if header else None
    return f"{scheme.group(0) if scheme else ''}${{{variable}}}"


def _toml_value(value: Any) -> str:
    import tomli_w

    if isinstance(value, dict):
        inner = ", ".join(f"{k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}"
                          for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def render(name: str, table: dict[str, Any]) -> str:
    lines = [f"[mcp.servers.{name}]"] + [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _without(text: str, name: str) -> str:
    """`text` with the `[mcp.servers.NAME]` table (and its sub-tables) cut out, everything else as it was."""
    header = re.compile(rf"^\s*\[\s*mcp\s*\.\s*servers\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*(\.[^\]]*)?\]\s*(#.*)?$")
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if header.match(line):
            skipping = True
            continue
        if skipping and re.match(r"^\s*\[", line):
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)


def import_servers(source: Path, target: Path, *, force: bool = False) -> ImportResult:
    """Append `source`'s servers to the config file `target` (created when missing); see the module doc."""
    from llmchat.config.load import parse_config
    from llmchat.config.tools import BUILTIN_TOOLS

    servers = read_servers(source)
    result = ImportResult(target)
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    current = parse_config(existing.encode(), target) if existing else None
    known = dict(current.mcp_servers) if current else {}
    tools = set(current.tools) if current else set()
    text, blocks = existing, []
    for raw_name, entry in servers.items():
        name = _NAME.sub("_", str(raw_name))[:64] or "server"
        if not isinstance(entry, dict):
            result.skipped.append((str(raw_name), "its entry is not an object"))
            continue
        if name in BUILTIN_TOOLS or name in tools:
            result.skipped.append((str(raw_name), f"'{name}' is already a tool's name; import it under another name"))
            continue
        if name in known and not force:
            result.kept.append(name)
            continue
        try:
            table = table_for(name, entry, result)
        except ValueError as exc:
            result.skipped.append((str(raw_name), str(exc)))
            continue
        if name in known:
            text = _without(text, name)
            result.replaced.append(name)
        where = f"stdio: {' '.join([table['command'], *table.get('args', [])])}" if "command" in table \
            else f"{'sse' if table['url'].rstrip('/').endswith('/sse') else 'http'}: {table['url']}"
        result.added.append((name, where))
        blocks.append(render(name, table))
    if not blocks:
        return result
    addition = "\n".join(blocks)
    prefix = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    new_text = text + prefix + addition
    parse_config(new_text.encode(), target)  # raises (nothing written) if the result would not load
    _write(target, existing, new_text)
    return result


def _write(target: Path, old: str, new: str) -> None:
    """Append when the old text is a prefix of the new one; otherwise replace the file atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if new.startswith(old) and target.exists():
        with target.open("a", encoding="utf-8") as file:
            file.write(new[len(old):])
        return
    if not target.exists():
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(new)
        return
    temporary = target.with_name(f".{target.name}.llmchat-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, target.stat().st_mode & 0o777)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(new)
    os.replace(temporary, target)
