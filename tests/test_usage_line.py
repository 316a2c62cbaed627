"""The usage line shows what was reported and measured, leaves out what was not, and prices it."""

from __future__ import annotations

import pytest

from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.core.pricing import Price
from llmchat.render.usage import NOT_REPORTED, format_seconds, format_usage, usage_parts

FULL = TurnResult(
    model="qwen-plus",
    usage=Usage(prompt=22, completion=382, total=404, reasoning=210, cached=0),
    timing=Timing(ttft_s=0.41, total_s=8.1, thinking_s=3.2, tokens_per_s=48.3),
)
PRICE = Price(input=0.0008, output=0.002, currency="CNY")


def test_everything_reported() -> None:
    assert format_usage(FULL, PRICE) == (
        "22 in · 382 out (210 reasoning) · 0 cached · first token 0.41s · 48.3 tok/s · 8.1s · 0.0008 CNY"
    )


def test_nothing_reported_gives_an_empty_line() -> None:
    assert format_usage(TurnResult(model="m"), PRICE) == ""


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (Usage(prompt=5), "5 in"),
        (Usage(completion=7), "7 out"),
        (Usage(prompt=5, completion=7), "5 in · 7 out"),
        (Usage(prompt=5, completion=7, reasoning=3), "5 in · 7 out (3 reasoning)"),
        (Usage(reasoning=3), "3 reasoning"),
        (Usage(total=12), "12 tokens"),
        (Usage(prompt=5, total=12), "5 in"),  # the total adds nothing once a part is known
        (Usage(prompt=5, cached=4), "5 in · 4 cached"),
        (Usage(prompt=12_345, completion=1_000_000), "12,345 in · 1,000,000 out"),
    ],
)
def test_token_fields_appear_only_when_reported(usage: Usage, expected: str) -> None:
    assert format_usage(TurnResult(model="m", usage=usage), None) == expected


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        (Timing(ttft_s=0.41), "first token 0.41s"),
        (Timing(tokens_per_s=48.25), "48.2 tok/s"),
        (Timing(total_s=8.14), "8.1s"),
        (Timing(total_s=125), "2m05s"),
        (Timing(thinking_s=3.0), ""),  # shown by the thinking summary, not here
    ],
)
def test_timing_fields_appear_only_when_measured(timing: Timing, expected: str) -> None:
    assert format_usage(TurnResult(model="m", timing=timing), None) == expected


def test_speed_from_the_servers_own_generation_time_when_the_loop_gave_none() -> None:
    result = TurnResult(model="m", usage=Usage(completion=100, eval_seconds=2.0))
    assert format_usage(result, None) == "100 out · 50.0 tok/s"


def test_cost_matches_a_hand_computed_value() -> None:
    # 1,000 prompt tokens of which 400 cached at 0.0002, 2,000 completion tokens at 0.002 per 1k:
    # (600 * 0.0008 + 400 * 0.0002 + 2000 * 0.002) / 1000 = (0.48 + 0.08 + 4.0) / 1000 = 0.00456
    price = Price(input=0.0008, output=0.002, cached_input=0.0002, currency="CNY")
    result = TurnResult(model="m", usage=Usage(prompt=1000, completion=2000, cached=400))
    assert usage_parts(result, price)[-1] == "0.0046 CNY"
    expensive = Price(input=10, output=30, currency="USD")  # 1000 * 10 / 1000 + 2000 * 30 / 1000 = 70
    assert usage_parts(result, expensive)[-1] == "70.00 USD"


def test_cost_left_out_when_counts_or_price_are_missing() -> None:
    only_prompt = TurnResult(model="m", usage=Usage(prompt=10))
    assert format_usage(only_prompt, PRICE) == "10 in"
    assert "CNY" not in format_usage(FULL, None)


def test_truncated_answer_is_flagged() -> None:
    result = TurnResult(model="m", usage=Usage(completion=10), finish_reason="length")
    assert format_usage(result, None) == "10 out · cut off at the token limit"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.05, "0.05s"), (3.21, "3.2s"), (59.4, "59.4s"), (61, "1m01s")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_a_whole_answer_without_usage_says_tokens_were_not_reported() -> None:
    finished = TurnResult(model="m", finish_reason="stop")
    assert NOT_REPORTED in format_usage(finished, None)
    assert format_usage(finished, None, unreported=False) == ""  # a saved transcript leaves it out
    assert NOT_REPORTED not in format_usage(TurnResult(model="m"), None)  # a failed turn: nothing to say
