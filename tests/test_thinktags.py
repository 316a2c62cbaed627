"""The inline <think> splitter: same result however the stream is cut, as Ollama's parser does it."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from llmchat.core.events import Answer, Reasoning
from llmchat.providers.thinktags import ThinkTagSplitter

WIRE = Path(__file__).parent / "wire"


def split(pieces: list[str]) -> tuple[str, str]:
    splitter = ThinkTagSplitter()
    reasoning, answer = [], []
    events = [e for piece in pieces for e in splitter.feed(piece)] + list(splitter.flush())
    for event in events:
        (reasoning if isinstance(event, Reasoning) else answer).append(event.text)
        assert isinstance(event, Reasoning | Answer) and event.text
    return "".join(reasoning), "".join(answer)


def test_tags_as_single_pieces_like_qwen3_on_old_ollama() -> None:
    assert split(["<think>", "\n", "Okay", ",", " so", ".\n", "</think>", "\n\n", "The", " answer"]) == (
        "Okay, so.\n",
        "The answer",
    )


def test_no_think_tag_means_everything_is_answer_even_a_leading_angle_bracket() -> None:
    assert split(["<", "div>", " hi"]) == ("", "<div> hi")
    assert split(["Hello ", "<think>not a tag here</think>"]) == ("", "Hello <think>not a tag here</think>")


def test_empty_think_block_is_dropped_with_the_whitespace_after_it() -> None:
    assert split(["<think>", "\n\n", "</think>", "\n\n", "Answer"]) == ("", "Answer")


def test_unclosed_think_stays_reasoning() -> None:
    assert split(["<think>", "still thinking </thi"]) == ("still thinking </thi", "")


def test_partial_close_tag_that_is_not_a_tag_is_kept_in_reasoning() -> None:
    assert split(["<think>a </th", "ing> b</think>c"]) == ("a </thing> b", "c")


def test_recorded_inline_think_stream_from_an_old_ollama_server() -> None:
    pieces = [json.loads(line)["message"]["content"]
              for line in (WIRE / "ollama_inline_think_tags.ndjson").read_text(encoding="utf-8").splitlines()]
    reasoning, answer = split(pieces)
    assert reasoning.startswith("Okay") and reasoning.endswith(".\n")
    assert "<think>" not in answer and "</think>" not in answer
    assert answer and not answer[0].isspace()


TEXT = st.text(alphabet=st.sampled_from(list("ab <>/thinkT\n 中😊")), max_size=40)


@given(prefix=st.sampled_from(["", "  ", "\n"]), reasoning=TEXT, answer=TEXT, cuts=st.lists(st.integers(0, 200)))
def test_any_chunking_gives_the_unchunked_result(prefix: str, reasoning: str, answer: str, cuts: list[int]) -> None:
    text = f"{prefix}<think>{reasoning}</think>{answer}"
    whole = split([text])
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert split(pieces) == whole
