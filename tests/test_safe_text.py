"""The sanitizer (`llmchat.core.safe_text`) and the safe console every command draws with (DESIGN §4).

The end-to-end cases (every writer, in a pseudo-terminal) are in test_terminal_safety.py; these pin
the mapping itself: per character and so chunk-safe, nothing harmful left, ordinary text untouched,
and llmchat's own Rich styling kept while untrusted text loses its markup and controls.
"""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from rich.table import Table
from rich.text import Text

from llmchat.core.safe_text import json_for, sanitize, sanitize_json, text_for
from llmchat.engine.pull import PlainPullView, RichPullView, follow
from llmchat.providers import PullProgress
from llmchat.render.terminal import terminal_console

HARMFUL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
ATTACKS = "\x1b]52;c;aGVsbG8=\x1b\\\x1b]0;pwned\x1b\\\x1b[2J\x1b]8;;http://evil/\x1b\\https://bank/\x1b]8;;\x1b\\\x9b31m\u202e"
# Text drawn heavily from the characters that matter, plus anything else Unicode has.
hostile = st.text(st.one_of(st.sampled_from(list("\x1b\x9b\u202e\u2066\r\n\t\x07\x00\x7f\\[]^")),
                            st.characters(codec="utf-8")))


class Tty(io.StringIO):
    """A StringIO that says it is a terminal (what `isatty` decides everywhere)."""

    def isatty(self) -> bool:
        return True


@given(hostile, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_sanitizing_pieces_gives_the_same_as_the_whole(text: str, cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert "".join(sanitize(piece) for piece in pieces) == sanitize(text)


@given(hostile)
def test_nothing_harmful_is_left_and_newlines_and_tabs_stay(text: str) -> None:
    clean = sanitize(text)
    assert not HARMFUL.search(clean) and "\r" not in clean
    assert clean.count("\n") == text.count("\n") and clean.count("\t") == text.count("\t")
    assert sanitize(clean) == clean  # a second pass changes nothing: callers may sanitize twice


BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cc",), exclude_characters=BIDI_CONTROLS)))
def test_ordinary_text_is_untouched(text: str) -> None:
    assert sanitize(text) == text


def test_the_visible_forms() -> None:
    assert sanitize("a\x1b[2Jb\x07\x00\x7f") == "a^[[2Jb^G^@^?"
    assert sanitize("\x9b31m\u202eabc\u2066") == "<U+009B>31m<U+202E>abc<U+2066>"
    assert sanitize("one\r\ntwo\rthree") == "one\ntwothree"
    assert sanitize("中文 😀 ‏עברית\u200f \t\n") == "中文 😀 ‏עברית\u200f \t\n"  # CJK, emoji, RTL with a mark


@given(hostile)
def test_json_for_a_terminal_stays_valid_and_decodes_to_the_same(text: str) -> None:
    document = json.dumps({"answer": text}, ensure_ascii=False)
    escaped = sanitize_json(document)
    assert json.loads(escaped) == {"answer": text}
    assert not HARMFUL.search(escaped)


def test_pipes_get_the_text_exactly() -> None:
    assert text_for(io.StringIO(), ATTACKS) == ATTACKS and json_for(io.StringIO(), ATTACKS) == ATTACKS
    assert text_for(Tty(), ATTACKS) == sanitize(ATTACKS) and text_for(None, ATTACKS) == ATTACKS


# -------------------------------------------------------------------------------------- the console


def drawn(*renderables: object, width: int = 80) -> str:
    out = Tty()
    console = terminal_console(out, width=width, color_system="truecolor")
    for renderable in renderables:
        console.print(renderable)
    return out.getvalue()


def assert_no_injection(raw: str) -> None:
    assert "\x1b]" not in raw and "\x1b[2J" not in raw and "\x9b" not in raw and "\u202e" not in raw


def test_strings_and_table_cells_are_neither_markup_nor_controls() -> None:
    table = Table()
    table.add_column("name")
    table.add_row(f"[link=http://evil/]bank[/link] {ATTACKS}")
    raw = drawn(f"[bold red]x[/] {ATTACKS}", table, width=200)
    assert_no_injection(raw)
    assert "[link=http://evil/]bank[/link]" in raw and "[bold red]x[/]" in raw and "^[]0;pwned^[\\" in raw


def test_text_keeps_llmchats_styles_around_sanitized_characters() -> None:
    text = Text("ok ", style="green")
    text.append(ATTACKS, style="bold")
    text.append(" end", style="red")
    raw = drawn(text, width=400)
    assert_no_injection(raw)
    # the attack bold on the base green, the red after it still red
    assert "\x1b[1;32m^[]52;c;aGVsbG8=" in raw and "\x1b[31m end" in raw


def test_layout_counts_the_visible_forms() -> None:
    """Sanitized before layout: a line of escapes wraps where its visible form does, not later."""
    raw = drawn(Text("\x1b" * 30), width=20)
    assert raw.splitlines() == ["^[" * 10, "^[" * 10, "^[" * 10]


def test_pull_status_lines_from_the_server() -> None:
    lines = [PullProgress(f"pulling manifest {ATTACKS}"),
             PullProgress(f"pulling [link=http://evil/]x[/link]{ATTACKS}", digest="sha256:1", total=10, completed=10),
             PullProgress("success")]
    plain, rich = Tty(), Tty()
    follow(iter(lines), PlainPullView(plain))
    follow(iter(lines), RichPullView(rich))
    for raw in (plain.getvalue(), rich.getvalue()):
        assert_no_injection(raw)
        assert "pulling manifest" in raw and "^[]52;c;aGVsbG8=" in raw
    assert "[link=http://evil/]x[/link]" in rich.getvalue()


def test_repl_toolbar_shows_a_hostile_model_name_visibly() -> None:
    from llmchat.core.files import PendingFiles
    from llmchat.repl.app import toolbar

    state = SimpleNamespace(
        profile=SimpleNamespace(name="p"), options=SimpleNamespace(model=f"m{ATTACKS}"),
        thinking_label=lambda: "auto", context_tokens=lambda: (0, True), pending_images=[],
        pending_files=PendingFiles())
    bar = toolbar(state)  # type: ignore[arg-type]
    assert not HARMFUL.search(bar) and "m^[]52;c;aGVsbG8=" in bar and "<U+202E>" in bar


def test_views_sanitize_notices_and_keep_a_piped_answer_exact() -> None:
    from llmchat.core.events import TurnResult
    from llmchat.render.live import LiveView
    from llmchat.render.plain import PlainView

    piped, err = io.StringIO(), Tty()
    view = PlainView(piped, err, show_usage=False)
    view.answer(ATTACKS)
    view.notice(f"Retrying: {ATTACKS}")
    view.close(TurnResult(model="m", answer=ATTACKS))
    assert piped.getvalue() == ATTACKS + "\n"
    assert_no_injection(err.getvalue())
    assert "Retrying: ^[]52" in err.getvalue()
    out = Tty()
    live = LiveView(terminal_console(out, width=300, force_terminal=True), refresh_per_second=0, show_usage=False)
    live.notice(f"Retrying: {ATTACKS}")
    live.answer(f"Answer {ATTACKS}\n\n")
    live.close(TurnResult(model="m", answer=""))
    assert_no_injection(out.getvalue())
    assert "Retrying: ^[]52" in out.getvalue() and "Answer ^[]52" in out.getvalue()
