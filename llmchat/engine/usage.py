"""Adding up tokens and money: the REPL's `/usage` totals, batch's summary and `llmchat usage` over the
saved history.

All three count with `Tally`, so a turn costs the same in each place: `Price.cost` of the usage the
server reported. The REPL prices a turn with the profile it used; the store saved each answer's cost
when it was written (store.py), so `llmchat usage` keeps reporting what a turn cost at the time, even
after the price in the config changes. Summary calls (context.py) are billed calls too: they are
counted, separately from turns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmchat.core.errors import ConfigError
from llmchat.core.events import Usage
from llmchat.core.pricing import Price
from llmchat.core.safe_text import json_for, text_for
from llmchat.core.suggest import did_you_mean

if TYPE_CHECKING:
    from llmchat.core.environment import Environment
    from llmchat.store.records import UsageRow

GROUPINGS = ("profile", "model", "day")


@dataclass
class Tally:
    """Token counts and money of a set of calls; money is kept per currency, never converted."""

    turns: int = 0
    summaries: int = 0  # summary calls (context.py), counted apart from turns but in every sum
    prompt: int = 0
    completion: int = 0
    reasoning: int = 0
    cached: int = 0
    unreported: int = 0  # calls whose server reported no usage: the totals are a lower bound then
    unpriced: int = 0  # calls with usage but no price (none configured, or saved before costs were)
    costs: dict[str, float] = field(default_factory=dict)  # currency -> amount

    def count(self, usage: Usage | None, cost: float | None, currency: str | None, *, summary: bool = False,
              calls: int = 1) -> None:
        """`calls`: a fetched remote batch job is saved as one row for all its answered rows (store schema 5)."""
        if summary:
            self.summaries += calls
        else:
            self.turns += calls
        if usage is None or (usage.prompt is None and usage.completion is None):
            self.unreported += calls
            return
        self.prompt += usage.prompt or 0
        self.completion += usage.completion or 0
        self.reasoning += usage.reasoning or 0
        self.cached += usage.cached or 0
        if cost is None:
            self.unpriced += calls
        else:
            key = currency or ""
            self.costs[key] = self.costs.get(key, 0.0) + cost

    def add(self, usage: Usage | None, price: Price | None) -> None:
        """One call, priced now with the profile it was made with (the REPL, batch)."""
        cost = price.cost(usage) if price is not None and usage is not None else None
        self.count(usage, cost, price.currency if price is not None else None)

    @property
    def reported(self) -> int:
        """Calls whose usage the server reported."""
        return self.turns + self.summaries - self.unreported

    def merge(self, other: Tally) -> None:
        for name in ("turns", "summaries", "prompt", "completion", "reasoning", "cached", "unreported", "unpriced"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for currency, amount in other.costs.items():
            self.costs[currency] = self.costs.get(currency, 0.0) + amount

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def cost_text(self) -> str:
        """e.g. `0.0123 CNY + 0.0040 USD`; "" when nothing was priced."""
        return " + ".join(Price(0, 0, currency=c).format(v) for c, v in sorted(self.costs.items()))

    def as_json(self) -> dict[str, Any]:
        return {"turns": self.turns, "summaries": self.summaries, "prompt_tokens": self.prompt,
                "completion_tokens": self.completion, "reasoning_tokens": self.reasoning,
                "cached_tokens": self.cached, "total_tokens": self.total,
                "cost": {c: round(v, 10) for c, v in sorted(self.costs.items())},
                "unreported": self.unreported, "unpriced": self.unpriced}


# ------------------------------------------------------------------------------------ llmchat usage


def parse_since(text: str) -> str:
    """`--since` as the store's UTC timestamps: a date means local midnight; a time without a zone is local."""
    value = text.strip()
    try:
        moment = datetime.combine(date.fromisoformat(value), time())
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"--since '{text}' is not a date.",
                hint="Use YYYY-MM-DD (local midnight) or an ISO 8601 time, e.g. 2025-06-01T09:00.",
            ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local zone
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def group_key(row: UsageRow, by: str) -> str:
    if by == "day":
        try:
            return datetime.fromisoformat(row.created).astimezone().date().isoformat()
        except ValueError:  # an imported file with an odd time
            return row.created[:10]
    value = row.profile if by == "profile" else row.model
    return value or "-"


def tally_rows(rows: Iterable[UsageRow], by: str) -> tuple[dict[str, Tally], Tally]:
    """The rows added up per group (in key order) and overall."""
    groups: dict[str, Tally] = {}
    total = Tally()
    for row in rows:
        tally = groups.setdefault(group_key(row, by), Tally())
        for target in (tally, total):
            target.count(row.usage, row.cost, row.currency, summary=row.kind == "summary", calls=row.calls)
    return dict(sorted(groups.items())), total


def check_by(by: str) -> str:
    word = by.strip().lower()
    if word not in GROUPINGS:
        raise ConfigError(f"--by '{by}' is not a grouping.{did_you_mean(word, GROUPINGS)}",
                          hint=f"Use one of: {', '.join(GROUPINGS)}.")
    return word


def print_usage(since: str | None, by: str, *, as_json: bool, plain: bool = False, path: Path | None = None,
                environment: Environment | None = None) -> None:
    """`llmchat usage`: totals from the store as a table (Rich in a terminal) or one JSON object.

    Streams and colour come from `environment`; None (a caller without one) falls back to the process's."""
    from llmchat.render import wants_plain
    from llmchat.store.db import existing_store

    out = environment.stdout if environment is not None else sys.stdout
    err = environment.stderr if environment is not None else sys.stderr
    by = check_by(by)
    since_utc = parse_since(since) if since else None
    store = existing_store(path)  # reading never creates the database
    rows: list[UsageRow] = []
    if store is not None:
        with store:
            rows = store.usage_rows(since_utc)
    groups, total = tally_rows(rows, by)
    if as_json:
        record = {"since": since_utc, "by": by, "groups": [{by: key, **t.as_json()} for key, t in groups.items()],
                  "total": total.as_json()}
        out.write(json_for(out, json.dumps(record, ensure_ascii=False, indent=2)) + "\n")
        return
    if not groups:
        print("No usage saved" + (" since then." if since else " yet."), file=err)
        return
    cells = table_cells(groups, total, by)
    if plain or wants_plain(out, environment):
        out.write(text_for(out, plain_table(cells)))
    else:
        from llmchat.render.terminal import terminal_console

        console = (terminal_console() if environment is None
                   else terminal_console(out, _environ=dict(environment.variables)))
        console.print(rich_table(cells))
    for note in notes(total):
        print(note, file=err)


def table_cells(groups: dict[str, Tally], total: Tally, by: str) -> list[list[str]]:
    """Header, one line per group, and a total line when there are several groups."""
    summaries = total.summaries > 0
    header = [by, "turns", *(["summaries"] if summaries else []), "prompt", "completion", "total", "cost"]
    lines = [header]
    shown = list(groups.items()) + ([("total", total)] if len(groups) > 1 else [])
    for key, t in shown:
        lines.append([key, f"{t.turns:,}", *([f"{t.summaries:,}"] if summaries else []), f"{t.prompt:,}",
                      f"{t.completion:,}", f"{t.total:,}", t.cost_text() or "-"])
    return lines


def plain_table(cells: list[list[str]]) -> str:
    """Aligned columns (numbers to the right): stable, greppable text for pipes."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    out = []
    for line in cells:
        pairs = enumerate(zip(line, widths, strict=True))
        padded = [text.ljust(width) if i == 0 else text.rjust(width) for i, (text, width) in pairs]
        out.append("  ".join(padded).rstrip())
    return "\n".join(out) + "\n"


def rich_table(cells: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, column in enumerate(cells[0]):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    for n, line in enumerate(cells[1:], 1):
        table.add_row(*line, style="bold" if n == len(cells) - 1 and line[0] == "total" else None)
    return table


def notes(total: Tally) -> list[str]:
    """What the figures leave out, said once under the table."""
    found = []
    if total.unpriced:
        found.append(f"{total.unpriced:,} call{'s' * (total.unpriced != 1)} had no price (none set in the profile "
                     "then, or saved before costs were kept): not in the cost.")
    if total.unreported:
        found.append(f"{total.unreported:,} call{'s' * (total.unreported != 1)} had no usage report: not counted.")
    return found
