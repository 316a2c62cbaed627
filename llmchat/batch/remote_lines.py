"""Rows to Batch API request lines (checked against the limits, split into jobs) and result lines back
to the output rows of a local batch.

Why `custom_id` is the row's key (its id as JSON): it is unique (rows.py checks), it keeps 3 and "3"
apart, and it maps a result line back to its row without any table kept beside the job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmchat.batch.rows import Row
from llmchat.core.errors import ConfigError
from llmchat.core.events import Usage
from llmchat.core.pricing import Price

if TYPE_CHECKING:
    from llmchat.providers import Message

#: The Batch API's limits per job (DashScope and OpenAI): requests per file, file size, models per file.
MAX_LINES = 50_000
MAX_BYTES = 100 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
#: Bailian's model for checking the chain: no inference, free (`--remote --test`).
TEST_MODEL = "batch-test-model"
#: What the Batch API charges, as a share of the real-time price (Bailian and OpenAI: half).
BATCH_DISCOUNT = 0.5

NO_TIMING = {"ttft_s": None, "total_s": None, "tokens_per_s": None}


@dataclass
class Part:
    """One job's worth of rows: one model, within the limits, and its JSONL bytes."""

    model: str
    rows: list[Row]
    data: bytes

    @property
    def keys(self) -> list[str]:
        return [row.key for row in self.rows]


def plan_parts(rows: list[Row], model_of: Callable[[Row], str], body_of: Callable[[Row, str], dict[str, Any]],
               split: int | None) -> list[Part]:
    """The jobs to submit: rows grouped by model (one model per job), each group cut into contiguous
    parts so that there are `split` jobs in all (at least one per model); every part is checked
    against the limits before anything is uploaded, and a refusal names the `--split` that would fit."""
    by_model: dict[str, list[Row]] = {}
    for row in rows:
        by_model.setdefault(model_of(row), []).append(row)
    if split is None and len(by_model) == 1 and len(rows) > MAX_LINES:  # said before encoding 50,000 bodies
        raise _too_big(f"{len(rows):,} requests (the limit is {MAX_LINES:,})", None, math.ceil(len(rows) / MAX_LINES))
    groups: dict[str, list[tuple[Row, bytes]]] = {}
    for model, model_rows in by_model.items():
        for row in model_rows:
            line = {"custom_id": row.key, "method": "POST", "url": ENDPOINT, "body": body_of(row, model)}
            data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
            groups.setdefault(model, []).append((row, data))
    needed = sum(_needed(items) for items in groups.values())
    if split is None and len(groups) > 1:
        raise ConfigError(f"The rows name {len(groups)} models ({', '.join(groups)}); a Batch API job takes one.",
                          hint=f"Add --split {max(needed, len(groups))} to submit one job per model "
                               "(followed together), or give the rows one model.")
    jobs = split or 1
    if jobs < len(groups):
        raise ConfigError(f"--split {jobs} is fewer jobs than the {len(groups)} models the rows name.",
                          hint=f"Use --split {max(needed, len(groups))} or more.")
    shares = _shares({model: len(items) for model, items in groups.items()}, jobs)
    parts = []
    for model, items in groups.items():
        for chunk in _chunks(items, shares[model]):
            if chunk:
                parts.append(Part(model, [row for row, _ in chunk], b"".join(data for _, data in chunk)))
    for part in parts:
        size = len(part.data)
        if len(part.rows) > MAX_LINES or size > MAX_BYTES:
            what = (f"{len(part.rows):,} requests (the limit is {MAX_LINES:,})" if len(part.rows) > MAX_LINES
                    else f"{size / 1024 / 1024:,.1f} MB of requests (the limit is {MAX_BYTES // 1024 // 1024} MB)")
            raise _too_big(what, split, max(needed, jobs + 1))
    return parts


def _too_big(what: str, split: int | None, suggested: int) -> ConfigError:
    now = f" with --split {split}" if split else ""
    return ConfigError(f"A Batch API job takes at most {MAX_LINES:,} requests and {MAX_BYTES // 1024 // 1024} MB; "
                       f"one job{now} would carry {what}.",
                       hint=f"Add --split {suggested} to submit the rows as that many jobs, followed together.")


def _needed(items: list[tuple[Row, bytes]]) -> int:
    """The fewest jobs a model's rows fit in (by count and by size; a little slack for uneven lines)."""
    size = sum(len(data) for _, data in items)
    return max(1, math.ceil(len(items) / MAX_LINES), math.ceil(size / (MAX_BYTES * 0.98)))


def _shares(sizes: dict[str, int], jobs: int) -> dict[str, int]:
    """Jobs per model: one each, the rest to whichever model has the most rows per job."""
    shares = dict.fromkeys(sizes, 1)
    for _ in range(jobs - len(sizes)):
        model = max(sizes, key=lambda m: sizes[m] / shares[m])
        shares[model] += 1
    return shares


def _chunks(items: list[Any], count: int) -> list[list[Any]]:
    """`items` in `count` contiguous, nearly equal pieces."""
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for n in range(count):
        end = start + size + (1 if n < extra else 0)
        out.append(items[start:end])
        start = end
    return out


# ------------------------------------------------------------------------------------------- results


def parse_results(data: bytes) -> dict[str, Mapping[str, Any]]:
    """A result file (output or error) as custom_id -> line; lines that are not JSON objects are skipped."""
    found: dict[str, Mapping[str, Any]] = {}
    for text in data.decode("utf-8", "replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            found[line["custom_id"]] = line
    return found


def result_record(row: Row, line: Mapping[str, Any] | None, missing: str) -> tuple[dict[str, Any], Usage | None]:
    """The output row of a local batch for one result line (None: the job never ran the row, `missing`
    says why), and its usage."""
    record: dict[str, Any] = {"id": row.id, "prompt": row.prompt, "answer": None, "reasoning": None,
                              "usage": _usage_json(None), "timing": dict(NO_TIMING), "error": None}
    if line is None:
        record["error"] = missing
        return record, None
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    error = _error_text(line.get("error"), body.get("error"), response.get("status_code"))
    usage = _usage(body.get("usage"))
    record["usage"] = _usage_json(usage)
    if error is not None:
        record["error"] = error
        return record, usage
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
    record["answer"] = message.get("content") if isinstance(message.get("content"), str) else ""
    reasoning = message.get("reasoning_content")
    record["reasoning"] = reasoning if isinstance(reasoning, str) and reasoning else None
    return record, usage


def _error_text(error: Any, body_error: Any, status: Any) -> str | None:
    for found in (error, body_error):
        if isinstance(found, dict) and (found.get("message") or found.get("code")):
            code, message = found.get("code"), found.get("message") or ""
            return f"{message} ({code})" if code and message else str(message or code)
    if isinstance(status, int) and status != 200:
        return f"The request failed with HTTP {status}."
    return None


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict) or (data.get("prompt_tokens") is None and data.get("completion_tokens") is None):
        return None
    details = data.get("completion_tokens_details") or {}
    cached = data.get("prompt_tokens_details") or {}
    return Usage(prompt=data.get("prompt_tokens"), completion=data.get("completion_tokens"),
                 total=data.get("total_tokens"), reasoning=details.get("reasoning_tokens"),
                 cached=cached.get("cached_tokens"))


def _usage_json(usage: Usage | None) -> dict[str, Any]:
    """The `usage` of a local batch row (outputs.turn_record's shape)."""
    return {"prompt_tokens": usage.prompt if usage else None, "completion_tokens": usage.completion if usage else None,
            "total_tokens": usage.total if usage else None, "reasoning_tokens": usage.reasoning if usage else None,
            "cached_tokens": usage.cached if usage else None}


# ---------------------------------------------------------------------------------------------- cost


def batch_price(price: Price | None) -> Price | None:
    """The profile's price at the Batch API's rate (half)."""
    if price is None:
        return None
    cached = price.cached_input * BATCH_DISCOUNT if price.cached_input is not None else None
    return Price(price.input * BATCH_DISCOUNT, price.output * BATCH_DISCOUNT, cached, price.currency)


def prompt_tokens(messages_of: Iterable[list[Message]]) -> int:
    """About how many prompt tokens the requests carry (core/tokens' estimate)."""
    from llmchat.core.tokens import estimate_messages

    return sum(estimate_messages(messages) for messages in messages_of)
