"""The block-incremental Markdown stream must print exactly what a one-shot render prints.

Everything `MarkdownStream` commits goes straight to the console (no `Live` here), so the console's
text is the scrollback; after `finish()` it must equal `console.print(Markdown(full))`, and at every
moment before that it must be a prefix of it (a printed line can never be taken back).
"""

from __future__ import annotations

import io
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.markdown import Markdown

from llmchat.render import markdown_stream
from llmchat.render.markdown_stream import MarkdownStream

CORPUS = {
    "headings": "# Title\n\nIntro with *emphasis*, **bold**, `code` and ~~strike~~.\n\n## Section\n\n"
    "Text under the section.\n### Sub\nNo blank line before this paragraph.\n#### Deep\n",
    "nested_lists": "Steps:\n\n1. First\n   - nested a\n   - nested b\n     1. deeper\n2. Second\n"
    "3. Third with a long line that will certainly need to wrap at forty columns of width\n\n"
    "- tight\n- list\n\nAfter.\n",
    "loose_list": "- item one\n\n- item two\n\n  continued paragraph in item two\n\n- item three\n\n"
    "Paragraph after the loose list.\n\n* another\n* list\n",
    "table": "Compare:\n\n| Option | Default | Meaning |\n|:-------|:-------:|--------:|\n"
    "| `--plain` | off | plain text |\n| `--think` | model | reasoning on |\n"
    "| `--a-much-longer-option-name` | 1 | widens the first column late |\n\nAfter the table.\n",
    "fences": "Code:\n\n```python\ndef f(x):\n\n    return x * 2\n\n\nprint(f(2))\n```\n\n"
    "~~~\ntilde fence\n~~~\n\n    indented code\n\n    more indented\n\nDone.\n",
    "unterminated_fence": "Start:\n\n```bash\necho one\n\necho two\n",
    "setext": "Big Title\n=========\n\nA paragraph\nthat continues\n---\n\n"
    "plain paragraph\n\n---\n\nafter rule\n",
    "quotes": "> a quote\n> over lines\n\n> second quote\n>\n> > nested\n\n"
    "lazy\n> quote\ncontinuation\n\nend\n",
    "html": "<div>\nraw html\n</div>\n\nparagraph\n\n<!-- comment -->\n\n<details>\n<summary>x</summary>\n\n"
    "inside\n\n</details>\n\nlast\n",
    "cjk_emoji": "## 总结\n\n"
    + "这是一个很长的中文段落，用来测试宽字符在窄终端里的换行是否正确，而且不应该重复。" * 2
    + "\n\n- 😀 emoji item\n- 👍 another 🎉 one\n\n"
    + "| 名称 | 值 |\n|---|---|\n| 中文 | 😀 |\n\n日本語のテキスト。\n",
    "long_paragraph": " ".join(f"word{i}" for i in range(400)) + "\n\nshort\n\n" + "x" * 300 + "\n",
    "rules_and_breaks": "line one  \nhard break\n\n***\n___\n\n- - -\n\ntext\n* * *\n# heading\nafter\n",
    "crlf": "# Windows\r\n\r\nline one\r\nline two\r\n\r\n- a\r\n- b\r\n",
    "no_trailing_newline": "# H\n\nlast paragraph without newline",
    "links_images": "See [the docs](https://example.com/docs) and ![logo](https://example.com/logo.png).\n\n"
    "![alone](https://example.com/a.png)\n\nText.\n",
    "reference_links": '[docs]: https://example.com/docs "The \\"docs\\""\n\n'
    "> [q]: <https://example.com/a b>\n\n"
    "Intro.\n\nSee [the docs][docs], [q][] and [docs].\n\n- item with [docs]\n",
}
WIDTHS = (40, 80, 120)
_LINK_ID = re.compile(r"\x1b]8;id=[^;]*;")


def make_console(width: int, color: str | None = None) -> Console:
    return Console(
        file=io.StringIO(), force_terminal=True, width=width, height=40, color_system=color, _environ={}
    )


def one_shot(text: str, width: int, color: str | None = None) -> str:
    console = make_console(width, color)
    console.print(Markdown(text))
    return _normalise(console.file.getvalue())


def _normalise(output: str) -> str:
    """Rich gives every hyperlink a random id; the rest must match byte for byte."""
    return _LINK_ID.sub("\x1b]8;id=0;", output)


def stream(pieces: list[str], width: int, color: str | None = None, *, check_prefix: str | None = None):
    console = make_console(width, color)
    md = MarkdownStream(console)
    commits = 0
    for piece in pieces:
        before = console.file.tell()
        md.feed(piece)
        commits += console.file.tell() != before
        if check_prefix is not None:
            assert check_prefix.startswith(_normalise(console.file.getvalue())), "printed a line too early"
    md.finish()
    return _normalise(console.file.getvalue()), commits


def random_pieces(text: str, seed: int, largest: int = 16) -> list[str]:
    rnd = random.Random(seed)
    pieces, index = [], 0
    while index < len(text):
        size = rnd.randint(1, largest)
        pieces.append(text[index : index + size])
        index += size
    return pieces


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_streamed_equals_one_shot(name: str, width: int) -> None:
    text = CORPUS[name]
    expected = one_shot(text, width)
    for seed in range(8):
        got, _ = stream(random_pieces(text, seed), width, check_prefix=expected)
        assert got == expected, f"seed {seed}"


@pytest.mark.parametrize("width", WIDTHS)
def test_whole_corpus_in_colour_and_in_one_piece(width: int) -> None:
    text = "\n\n".join(CORPUS[name] for name in sorted(CORPUS) if name != "unterminated_fence")
    text += "\n\n" + CORPUS["unterminated_fence"]
    expected = one_shot(text, width, "truecolor")
    assert stream(random_pieces(text, width), width, "truecolor", check_prefix=expected)[0] == expected
    assert stream([text], width, "truecolor")[0] == expected
    assert stream(list(text), width, "truecolor")[0] == expected  # one character at a time


def test_blocks_are_committed_while_streaming() -> None:
    """The point of the exercise: finished blocks leave the live region before the answer ends."""
    text = "\n\n".join(CORPUS[name] for name in ("headings", "nested_lists", "table", "fences"))
    _, commits = stream(random_pieces(text, 1), 80)
    assert commits >= 8


def test_no_line_is_printed_twice() -> None:
    text = "\n\n".join(CORPUS.values())
    expected = one_shot(text, 80)
    got, _ = stream(random_pieces(text, 3), 80)
    assert got == expected
    for line in set(expected.splitlines()):
        if line.strip():
            assert got.splitlines().count(line) == expected.splitlines().count(line)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("A paragraph\n", "---\n\nnext\n"),  # setext heading: the paragraph must not be printed yet
        ("| a | b |\n", "|---|---|\n| 1 | 2 |\n\nnext\n"),  # a table header row looks like a paragraph
        ("- one\n\n", "- two\n\nnext\n"),  # a loose list goes on after a blank line
        ("```\ncode\n\n", "more\n```\n\nnext\n"),  # blank line inside a fence
        ("> quote\n", "lazy continuation\n\nnext\n"),
        ("para\n\n[ref]", ": https://example.com\n\nnext\n"),
    ],
)
def test_block_is_not_committed_while_it_can_still_change(first: str, then: str) -> None:
    text = first + then
    expected = one_shot(text, 60)
    console = make_console(60)
    md = MarkdownStream(console)
    md.feed(first)
    assert expected.startswith(console.file.getvalue())
    md.feed(then)
    md.finish()
    assert console.file.getvalue() == expected


def test_parsing_is_linear_in_answer_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the uncommitted tail is ever parsed, so a 50× longer answer costs about 50× more."""
    parsed = 0
    real_parse = markdown_stream._parse

    def counting_parse(text: str, env=None):
        nonlocal parsed
        parsed += len(text)
        return real_parse(text, env)

    monkeypatch.setattr(markdown_stream, "_parse", counting_parse)
    unit = "\n\n".join(CORPUS[name] for name in ("headings", "loose_list", "table", "fences", "quotes"))
    ratios = []
    for copies in (2, 50):
        parsed = 0
        text = "\n\n".join([unit] * copies)
        stream(random_pieces(text, copies, largest=12), 80)
        ratios.append(parsed / len(text))
    assert ratios[1] < ratios[0] * 1.5
    assert ratios[1] < 10  # characters parsed per character of answer (about 3), whatever its length


def test_tail_is_bounded_by_the_screen() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=50, height=12, _environ={})
    md = MarkdownStream(console)
    md.feed("```python\n" + "".join(f"line_{i} = {i}\n" for i in range(100)))
    lines = md.tail.lines(console, console.options)
    assert 0 < len(lines) <= 10
    assert "line_99" in "".join(segment.text for segment in lines[-2])  # the code block pads one line
    md.max_lines = 4
    assert len(md.tail.lines(console, console.options)) == 4


def test_tail_shows_the_separator_rich_would_print() -> None:
    console = make_console(40)
    md = MarkdownStream(console)
    md.feed("first\n\nsecond paragraph\n")
    assert console.file.getvalue() == "first" + " " * 35 + "\n"
    lines = md.tail.lines(console, console.options)
    assert [segment.text for segment in lines[0]] == []
    assert "second paragraph" in "".join(segment.text for segment in lines[1])


def test_width_change_mid_answer_keeps_going() -> None:
    """Committed blocks keep their width; the rest follows the new one (rendering.md §1.7)."""
    console = make_console(80)
    md = MarkdownStream(console)
    md.feed("# Title\n\nfirst paragraph\n\n")
    console.width = 40
    md.feed("second " * 20 + "\n\nthird\n")
    md.finish()
    out = console.file.getvalue()
    assert out.count("Title") == 1 and out.count("third") == 1
    assert max(len(line) for line in out.splitlines()[-4:]) <= 40


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CORPUS)),
    width=st.sampled_from(WIDTHS),
    cuts=st.lists(st.integers(min_value=0, max_value=2_000), max_size=40),
)
def test_any_chunking_gives_the_one_shot_render(name: str, width: int, cuts: list[int]) -> None:
    text = CORPUS[name]
    bounds = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    expected = one_shot(text, width)
    assert stream(pieces, width, check_prefix=expected)[0] == expected


def test_a_long_open_code_fence_is_scanned_not_reparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a top-level fence only a closing line can change anything; parse work stays linear."""
    parsed = 0
    real_parse = markdown_stream._parse

    def counting_parse(text: str, env=None):
        nonlocal parsed
        parsed += len(text)
        return real_parse(text, env)

    monkeypatch.setattr(markdown_stream, "_parse", counting_parse)
    code = "".join(
        f"    value_{i} = compute({i})  # ``` inside a line is not a fence\n" for i in range(2_000)
    )
    text = "Intro.\n\n````python\n" + code + "   ```\n````\n\nAfter.\n"
    expected = one_shot(text, 80)
    assert stream(random_pieces(text, 9, largest=30), 80)[0] == expected
    assert parsed < 3 * len(text)
