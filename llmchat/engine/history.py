"""`llmchat history list | show | export | import | rm`: what the user sees of the saved conversations.

The Typer commands in cli.py only parse and call these. Terminals get Rich tables and a transcript
drawn like the live view (prompt, dim reasoning, Markdown answer, usage line); pipes get stable plain
text with no ANSI codes (`list` as aligned columns, `show` as the Markdown export), and `--json` is for
scripts. Read-only commands never create the database: with no history, there is simply nothing.
Titles and messages are untrusted (a model wrote them): on a terminal they are sanitized (DESIGN §4),
in a pipe they are written exactly as stored.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmchat.core.environment import Environment
from llmchat.core.errors import ConfigError
from llmchat.core.safe_text import json_for, sanitize, text_for
from llmchat.render import wants_plain
from llmchat.render.usage import format_usage, usage_parts, wrap_fields
from llmchat.store.db import Store, existing_store, open_store
from llmchat.store.export import record_parts
from llmchat.store.records import ImportFormatError, NotFound, StoredMessage, Summary

if TYPE_CHECKING:
    from rich.console import Console

EXPORT_FORMATS = ("md", "json")
LIST_COLUMNS = ("id", "updated", "profile/model", "turns", "title")


# ------------------------------------------------------------------------------------------ list


def history_list(limit: int | None = 20, search: str | None = None, as_json: bool = False, *,
                 plain: bool = False, path: Path | None = None, environment: Environment | None = None) -> None:
    """Print saved conversations, newest first (`limit` None or 0: all)."""
    store = existing_store(path)
    rows: list[Summary] = []
    if store is not None:
        with store:
            rows = store.list_conversations(limit, search)
    out, err = _out(environment), _err(environment)
    if as_json:
        out.write(json_for(out, json.dumps([row.as_json() for row in rows], ensure_ascii=False, indent=2)) + "\n")
        return
    if not rows:
        found = f"No saved conversation contains '{search}'." if search else "No saved conversations yet."
        print(sanitize(found), file=err)
        return
    if plain or wants_plain(out, environment):
        out.write(text_for(out, plain_table(rows)))
    else:
        _console(environment).print(_rich_table(rows))


def list_cells(row: Summary) -> tuple[str, str, str, str, str]:
    """One row of the table, as text; shared by the Rich and the plain tables."""
    where = "/".join(part for part in (row.profile, row.model) if part) or "-"
    return row.id, local_time(row.updated), where, str(row.turns), row.title


def plain_table(rows: list[Summary]) -> str:
    """Aligned columns, the title last and whole: greppable, and the same in every pipe."""
    cells = [LIST_COLUMNS, *(list_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(LIST_COLUMNS) - 1)]
    lines = []
    for line in cells:
        columns = enumerate(zip(line[:-1], widths, strict=True))
        padded = [text.rjust(width) if i == 3 else text.ljust(width) for i, (text, width) in columns]
        lines.append("  ".join([*padded, line[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _rich_table(rows: list[Summary]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in LIST_COLUMNS:
        table.add_column(column, justify="right" if column == "turns" else "left",
                         no_wrap=column != "title", style="cyan" if column == "id" else None)
    for row in rows:
        table.add_row(*list_cells(row))
    return table


def local_time(stamp: str) -> str:
    """A stored UTC time as the user's local wall-clock time, to the minute."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:  # an imported file with an odd time: show it as it is
        return stamp


# ------------------------------------------------------------------------------------------ show


def history_show(ref: str = "last", *, thinking: str = "collapse", plain: bool = False,
                 path: Path | None = None, environment: Environment | None = None) -> None:
    """Print one conversation: drawn like the live chat in a terminal, as Markdown in a pipe."""
    with _existing(path) as store:
        summary, messages = store.messages(ref)
    out = _out(environment)
    if plain or wants_plain(out, environment):
        out.write(text_for(out, markdown_transcript(summary, messages)))
        return
    draw_transcript(_console(environment), summary, messages, thinking=thinking)


def pairs(messages: list[StoredMessage]) -> list[tuple[StoredMessage, StoredMessage | None]]:
    """Each question with its answer, or None when the answer never came (the process died)."""
    result: list[tuple[StoredMessage, StoredMessage | None]] = []
    for message in messages:
        if message.role == "user":
            result.append((message, None))
        elif result:
            result[-1] = (result[-1][0], message)
    return result


def draw_transcript(console: Console, summary: Summary, messages: list[StoredMessage], *,
                    thinking: str = "collapse") -> None:
    """The transcript as the live view drew it: `>>>` prompt, reasoning dim, answer Markdown, usage dim."""
    from rich.markdown import Markdown
    from rich.text import Text

    from llmchat.render.markdown_stream import ANSWER_MARKDOWN

    console.print(Text(summary.title, style="bold"))
    turns = f"{summary.turns} turn{'s' * (summary.turns != 1)}"
    console.print(Text(" · ".join([summary.id, list_cells(summary)[2], turns, local_time(summary.updated)]),
                       style="dim"))
    if summary.system:
        console.print(Text(f"System: {summary.system}", style="dim"))
    for question, answer in pairs(messages):
        console.print()
        console.print(_prompt_text(question.content))
        if answer is None:
            console.print(Text("(no answer was saved: the chat ended before it came)", style="dim"))
            continue
        _draw_rounds(console, answer, thinking)
        _draw_reasoning(console, answer, thinking)
        if answer.content:
            console.print(Markdown(sanitize(answer.content), **ANSWER_MARKDOWN))
        elif not answer.interrupted:
            why = "no answer after the tool calls" if answer.rounds else "no answer: the request failed"
            console.print(Text(f"({why})", style="dim"))
        if answer.interrupted:
            console.print(Text("[interrupted]", style="bold red"))
        parts = usage_parts(answer.result(), None, unreported=False)
        if parts:
            console.print()
            console.print(Text(wrap_fields(parts, console.width), style="dim"))


def _prompt_text(question: str) -> Any:
    from rich.text import Text

    text = Text()
    for n, line in enumerate(question.split("\n")):
        text.append("\n" if n else "")
        text.append(">>> " if n == 0 else "... ", style="dim")
        text.append(line, style="bold")
    return text


def _draw_rounds(console: Console, answer: StoredMessage, thinking: str) -> None:
    """The tool calls before the answer, as the live view drew them: what the model said with them, then
    per call `⚙ name(args)` and its outcome dim (render/tools.py has the words), all sanitized."""
    from rich.markdown import Markdown
    from rich.text import Text

    from llmchat.render.markdown_stream import ANSWER_MARKDOWN
    from llmchat.render.tools import call_line, outcome_line

    for tool_round in answer.rounds:
        if tool_round.reasoning and thinking == "show":
            console.print(Text(sanitize(tool_round.reasoning.rstrip("\n")), style="dim"))
        if tool_round.content.strip():
            console.print(Markdown(sanitize(tool_round.content), **ANSWER_MARKDOWN))
        for record in tool_round.calls:
            console.print(Text(sanitize(call_line(record.call))))
            console.print(Text(sanitize(outcome_line(record)), style="dim"))
    if answer.rounds:
        console.print()


def _draw_reasoning(console: Console, answer: StoredMessage, thinking: str) -> None:
    """"collapse" (the live default) leaves the one-line summary the live view leaves; "show" all of it."""
    from rich.text import Text

    from llmchat.render.usage import format_seconds

    if not answer.reasoning or thinking == "hide":
        return
    if thinking == "show":
        console.print(Text(answer.reasoning.rstrip("\n"), style="dim"))
        console.print()
        return
    seconds = answer.timing.thinking_s if answer.timing else None
    summary = f"▸ thought for {format_seconds(seconds)}" if seconds is not None else "▸ thought"
    tokens = answer.usage.reasoning if answer.usage else None
    if tokens is not None:
        summary += f" · {tokens:,} tokens"
    console.print(Text(summary, style="dim"))
    console.print()


def markdown_transcript(summary: Summary, messages: list[StoredMessage]) -> str:
    """The conversation as a Markdown document: `export --format md`, and `show` in a pipe."""
    lines = [f"# {summary.title or summary.id}", "", f"- id: {summary.id}"]
    if summary.profile or summary.model:
        lines.append(f"- profile: {summary.profile or '-'} ({summary.provider or '-'}), model: {summary.model or '-'}")
    lines += [f"- created: {summary.created}", f"- updated: {summary.updated}", ""]
    if summary.system:
        lines += ["## System", "", summary.system, ""]
    for question, answer in pairs(messages):
        lines += ["## You", "", question.content, ""]
        if answer is None:
            lines += ["*(no answer was saved)*", ""]
            continue
        lines += [f"## Assistant ({answer.model})" if answer.model else "## Assistant", ""]
        lines += _markdown_rounds(answer)
        if answer.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", answer.reasoning.rstrip("\n"), "", "</details>", ""]
        none = "*(no answer after the tool calls)*" if answer.rounds else "*(no answer)*"
        lines += [answer.content, ""] if answer.content else ([] if answer.interrupted else [none, ""])
        if answer.interrupted:
            lines += ["*(interrupted)*", ""]
        usage = format_usage(answer.result(), None, unreported=False)
        if usage:
            lines += [f"*{usage}*", ""]
    return "\n".join(lines)


def _markdown_rounds(answer: StoredMessage) -> list[str]:
    """The tool calls before an answer, for the Markdown transcript: the model's words with them, then each
    call and its outcome as one paragraph (`⚙ weather(city="Paris")` / `→ 1 line, 4 chars in 0.40s`).
    The results themselves are in the JSON export."""
    from llmchat.render.tools import call_line, outcome_line

    lines: list[str] = []
    for tool_round in answer.rounds:
        if tool_round.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", tool_round.reasoning.rstrip("\n"), "",
                      "</details>", ""]
        if tool_round.content.strip():
            lines += [tool_round.content, ""]
        for record in tool_round.calls:
            lines += [call_line(record.call), outcome_line(record), ""]
    return lines


# ---------------------------------------------------------------------------------- export, import, rm


def transcript_text(record: dict[str, Any], fmt: str) -> str:
    """An export record as a file: the one place `history export` and the chat's /save turn it into text."""
    if fmt == "json":
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    return markdown_transcript(*record_parts(record))


def history_export(ref: str, fmt: str = "md", out: Path | str | None = None, *, path: Path | None = None,
                   environment: Environment | None = None) -> None:
    """Write one conversation as Markdown or as JSON (which `history import` restores exactly)."""
    fmt = {"markdown": "md"}.get(fmt.lower(), fmt.lower())
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'.", hint="Use --format md or --format json.")
    with _existing(path) as store:
        record = store.export_record(ref)  # the one format; the REPL's /save writes the same (DESIGN §2)
    turns = sum(message["role"] == "user" for message in record["messages"])
    text = transcript_text(record, fmt)
    stdout = _out(environment)
    if out is None or str(out) == "-":
        stdout.write(json_for(stdout, text) if fmt == "json" else text_for(stdout, text))
        return
    target = Path(out).expanduser()
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write {target}: {exc.strerror}.") from None
    print(text_for(stdout, f"Wrote {turns} turn{'s' * (turns != 1)} to {target}"), file=stdout)


def history_import(source: Path | str, *, path: Path | None = None, environment: Environment | None = None) -> None:
    """Save a conversation exported as JSON (or by an older /save); says what it did when the id was taken."""
    stdin = str(source) == "-"
    name = "stdin" if stdin else str(source)
    record = _read_json(None if stdin else Path(source).expanduser(), name, environment)
    with open_store(path) as store:
        result = store.import_record(record, name)
        summary = store.summary(result.id)
    if result.duplicate:
        said = f"{result.id} is already in the history, unchanged; nothing imported."
    elif result.renamed:
        said = (f"The id {result.original_id} belongs to another saved conversation; "
                f"imported as {result.id} ({_describe(summary)}).")
    else:
        said = f"Imported {result.id} ({_describe(summary)})."
    out = _out(environment)
    print(text_for(out, said), file=out)


def history_rm(ref: str, *, path: Path | None = None, environment: Environment | None = None) -> None:
    """Delete one conversation for good."""
    with _existing(path) as store:
        summary = store.remove(ref)
    out = _out(environment)
    print(text_for(out, f"Deleted {summary.id} ({_describe(summary)})."), file=out)


def _read_json(source: Path | None, name: str, environment: Environment | None = None) -> Any:
    """The parsed file (None: stdin), or an error that says which file and where it stops being JSON."""
    try:
        raw = _stdin(environment).buffer.read() if source is None else source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {name}: {exc.strerror}.") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ImportFormatError(f"{name} is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
                                hint="Give a file written by `llmchat history export ID --format json` "
                                     "or by the chat's /save FILE.json.") from None


def _describe(summary: Summary) -> str:
    return f"\"{summary.title}\", {summary.turns} turn{'s' * (summary.turns != 1)}"


def _existing(path: Path | None) -> Store:
    store = existing_store(path)
    if store is None:
        raise NotFound("There is no saved conversation yet.", hint="Chat first; every turn is saved.")
    return store


def _out(environment: Environment | None) -> TextIO:
    """The run's stdout; None (a caller without an Environment, e.g. a library user) falls back to the process's."""
    return environment.stdout if environment is not None else sys.stdout


def _err(environment: Environment | None) -> TextIO:
    return environment.stderr if environment is not None else sys.stderr


def _stdin(environment: Environment | None) -> Any:
    """The run's stdin (`history import -`); a run with no stdin at all reads nothing, as a closed one would."""
    if environment is None:
        return sys.stdin
    if environment.stdin is None:
        raise ConfigError("Cannot read stdin: it is closed.")
    return environment.stdin


def _console(environment: Environment | None = None) -> Console:
    """Rich on the run's stdout, reading NO_COLOR/TERM/COLUMNS from the run's variables, not the process's."""
    from llmchat.render.terminal import terminal_console

    if environment is None:
        return terminal_console()
    return terminal_console(environment.stdout, _environ=dict(environment.variables))
