"""The two views: the pipe contract byte for byte, and what the terminal shows once it all settles.

The live view is checked the way a user sees it: its bytes (cursor movement, erased live frames and
all) are replayed through `pyte`, a VT100 emulator with scrollback, and the resulting screen plus
history must read like a one-shot render, every answer line exactly once.
"""

from __future__ import annotations

import io
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyte
import pytest
from rich.console import Console
from rich.markdown import Markdown

from llmchat.core.events import Timing, TurnResult, Usage
from llmchat.core.pricing import Price
from llmchat.render import PlainView, make_view
from llmchat.render.live import LiveView
from llmchat.render.plain import PIPE_FLUSH_S

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

ANSWER = (
    "# Plan\n\nHere is **the** plan, in a paragraph long enough to wrap at sixty columns of width.\n\n"
    "1. Read the docs\n2. Write the code\n   - with tests\n\n"
    "| Step | Time |\n|------|-----:|\n| read | 1h |\n| write | 3h |\n\n"
    "```python\ndef main():\n\n    return 0\n```\n\n"
    "> 注意：中文也要正确换行，不能重复显示任何一行内容。\n\nDone 🎉.\n"
)
REASONING = "The user wants a plan.\nLet me think step by step about what matters most.\nOK, write it."


class Tty(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def result(**changes) -> TurnResult:
    base = TurnResult(
        model="m",
        answer=ANSWER,
        reasoning=REASONING,
        usage=Usage(prompt=22, completion=382, total=404, reasoning=210, cached=0),
        timing=Timing(ttft_s=0.41, total_s=8.1, thinking_s=2.0, tokens_per_s=48.3),
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def pieces(text: str, seed: int = 0, largest: int = 9) -> list[str]:
    rnd = random.Random(seed)
    out, index = [], 0
    while index < len(text):
        size = rnd.randint(1, largest)
        out.append(text[index : index + size])
        index += size
    return out


def run(view, *, reasoning: str = REASONING, answer: str = ANSWER, seed: int = 0, largest: int = 9, **close):
    for piece in pieces(reasoning, seed):
        view.reasoning(piece)
    for piece in pieces(answer, seed + 1, largest):
        view.answer(piece)
    view.close(result(answer=answer, reasoning=reasoning, **close))


# -- plain view: the pipe contract ------------------------------------------------------------


def test_plain_stdout_is_the_answer_exactly_and_stderr_is_quiet_for_a_pipe() -> None:
    out, err = io.StringIO(), io.StringIO()
    run(PlainView(out, err))
    assert out.getvalue() == ANSWER
    assert err.getvalue() == ""


@pytest.mark.parametrize(
    ("answer", "expected"), [("no newline", "no newline\n"), ("", ""), ("a\n\n", "a\n\n")]
)
def test_plain_stdout_ends_with_one_newline_only_when_missing(answer: str, expected: str) -> None:
    out = io.StringIO()
    run(PlainView(out, io.StringIO()), answer=answer)
    assert out.getvalue() == expected


class Flushes(io.StringIO):
    """Records what had been written at each flush."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty
        self.flushed: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        self.flushed.append(self.getvalue())


def test_plain_flushes_each_piece_on_a_terminal() -> None:
    out = Flushes(tty=True)
    view = PlainView(out, io.StringIO(), clock=lambda: 0.0)  # the clock never moves: it must not matter here
    view.answer("Hel")
    view.answer("lo")
    assert out.flushed[-2:] == ["Hel", "Hello"]


def test_plain_pipe_sends_a_held_burst_when_no_piece_follows_it() -> None:
    """A server that sends a burst and then stalls (a tool call, a slow model): what the pipe view held
    goes out when its timer comes, not when the next piece does, which may be seconds later."""
    out = Flushes()
    due: list[tuple[float, Any]] = []  # the view's timers, run when this test says
    view = PlainView(out, io.StringIO(), clock=lambda: 0.0, later=lambda seconds, send: due.append((seconds, send)))
    view.answer("a")
    view.answer("b")
    view.answer("c")
    assert out.flushed == ["a"] and [seconds for seconds, _ in due] == [PIPE_FLUSH_S]  # one timer, not one a piece
    due.pop()[1]()
    assert out.flushed == ["a", "abc"]
    view.answer("d")
    assert out.flushed == ["a", "abc"] and len(due) == 1  # held again, a new timer
    view.close(TurnResult(model="m", answer="abcd"))
    due.pop()[1]()  # a timer that comes after the end finds nothing to send
    assert out.getvalue() == "abcd\n"


def test_plain_pipe_timer_is_a_real_one_by_default() -> None:
    out = Flushes()
    view = PlainView(out, io.StringIO(), clock=lambda: 0.0)
    view.answer("first ")
    view.answer("held")
    deadline = time.monotonic() + 10
    while "held" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert out.getvalue() == "first held"  # sent by the timer: no further piece, no flush, no close


def test_plain_pipe_timer_that_meets_a_closed_pipe_raises_in_the_turn() -> None:
    """The timer's write fails (the reader left): the error is raised by the view's next flush, in the
    turn's thread, so the turn ends as an interruption by the closed pipe, as if it had written itself."""

    class ClosedAfterOne(Flushes):
        def flush(self) -> None:
            if self.getvalue() != "one ":
                raise BrokenPipeError(32, "Broken pipe")

    due: list[tuple[float, Any]] = []
    view = PlainView(ClosedAfterOne(), io.StringIO(), clock=lambda: 0.0,
                     later=lambda seconds, send: due.append((seconds, send)))
    view.answer("one ")
    view.answer("two")
    due.pop()[1]()  # no exception escapes the timer's thread
    with pytest.raises(BrokenPipeError):
        view.flush()


def test_plain_pipe_gets_the_first_piece_at_once_and_the_rest_within_the_interval() -> None:
    """A pipe is flushed at most every PIPE_FLUSH_S: the first piece at once, pieces arriving sooner wait for
    the next piece after the interval, the view's `flush` (before progress is saved), or the turn's end."""
    now = [100.0]
    out = Flushes()
    view = PlainView(out, io.StringIO(), clock=lambda: now[0], later=lambda seconds, send: None)  # no timer runs
    view.answer("a")
    assert out.flushed == ["a"]
    view.answer("b")
    view.answer("c")
    assert out.getvalue() == "a" and out.flushed == ["a"]  # held back: no write, no flush
    now[0] += PIPE_FLUSH_S
    view.answer("d")
    assert out.flushed == ["a", "abcd"]
    view.answer("e")
    view.flush()
    assert out.flushed[-1] == "abcde"
    view.answer("f")
    view.notice("a notice")  # stderr: the answer so far goes out first, so the two keep their order
    assert out.flushed[-1] == "abcdef"
    view.answer("g")
    view.close(TurnResult(model="m", answer="abcdefg"))
    assert out.getvalue() == "abcdefg\n" and out.flushed[-1] == "abcdefg\n"


def test_plain_usage_flag_sends_reasoning_and_usage_to_stderr_without_colour() -> None:
    out, err = io.StringIO(), io.StringIO()
    run(PlainView(out, err, show_usage=True, price=Price(input=1, output=2, currency="CNY")))
    assert out.getvalue() == ANSWER
    text = err.getvalue()
    assert not ANSI.search(text)
    assert text.startswith(REASONING + "\n")  # a newline separates reasoning from the rest
    assert text.endswith("0.7860 CNY\n")
    assert text.count("\n") == REASONING.count("\n") + 2


def test_plain_stderr_terminal_gets_dim_reasoning_and_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, err = io.StringIO(), Tty()
    run(PlainView(out, err))
    assert out.getvalue() == ANSWER
    assert "\x1b[2m" in err.getvalue()
    # a person reads this stderr: the reasoning is framed (issue 17), a blank line before the answer
    assert ANSI.sub("", err.getvalue()).startswith(f"Thinking…\n{REASONING}\n…done thinking.\n\n")
    assert "22 in · 382 out (210 reasoning)" in err.getvalue()


def test_plain_no_color_keeps_stderr_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    err = Tty()
    run(PlainView(io.StringIO(), err))
    assert not ANSI.search(err.getvalue())
    assert REASONING in err.getvalue()


def test_plain_hide_thinking_and_no_usage() -> None:
    err = Tty()
    run(PlainView(io.StringIO(), err, thinking="hide", show_usage=False))
    assert err.getvalue() == ""


def test_plain_interrupted_marker_and_notices_go_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err)
    view.notice("retrying in 2s…")
    view.answer("partial")
    view.close(result(answer="partial", interrupted=True))
    assert out.getvalue() == "partial\n"
    assert err.getvalue() == "retrying in 2s…\n[interrupted]\n"


# -- choosing a view ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "stdout", "env", "expected"),
    [
        (False, Tty(), {}, LiveView),
        (True, Tty(), {}, PlainView),
        (False, io.StringIO(), {}, PlainView),
        (False, Tty(), {"NO_COLOR": "1"}, PlainView),
        (False, Tty(), {"NO_COLOR": ""}, LiveView),
        (False, Tty(), {"TERM": "dumb"}, PlainView),
    ],
)
def test_make_view_picks_by_terminal_and_environment(
    monkeypatch: pytest.MonkeyPatch, plain: bool, stdout: io.StringIO, env: dict, expected: type
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    view = make_view(
        plain=plain, thinking="collapse", show_usage=None, price=None, stdout=stdout, stderr=Tty()
    )
    assert isinstance(view, expected)


# -- live view -----------------------------------------------------------------------------------

W, H = 60, 20


def live_console(width: int = W, height: int = H, color: str | None = None) -> Console:
    return Console(
        file=io.StringIO(), force_terminal=True, width=width, height=height, color_system=color, _environ={}
    )


def transcript(data: str, width: int = W, height: int = H) -> tuple[list[str], pyte.HistoryScreen]:
    """What the terminal shows at the end, scrollback first; "\\n" becomes CRLF as a tty's ONLCR does."""
    screen = pyte.HistoryScreen(width, height, history=100_000)
    pyte.Stream(screen).feed(data.replace("\n", "\r\n"))
    rows = [row for row in screen.history.top] + [screen.buffer[y] for y in range(height)]
    lines = ["".join(row[x].data for x in range(width)).rstrip() for row in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines, screen


def one_shot_lines(text: str, width: int = W) -> list[str]:
    console = live_console(width)
    console.print(Markdown(text))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # as `transcript` does: a trailing blank line is invisible
    return lines


@pytest.mark.parametrize(("width", "height"), [(40, 12), (60, 20), (120, 40)])
@pytest.mark.parametrize("seed", [0, 1])
def test_live_answer_settles_to_a_one_shot_render_each_line_once(width: int, height: int, seed: int) -> None:
    long_answer = ANSWER + "\n\n" + "\n\n".join(f"Paragraph {i}: " + "words " * 30 for i in range(12))
    long_answer += "\n\n```\n" + "".join(f"code line {i}\n" for i in range(3 * height)) + "```\n"
    console = live_console(width, height, color="truecolor")
    view = LiveView(console, thinking="hide", show_usage=False, refresh_per_second=0)
    run(view, answer=long_answer, seed=seed, largest=40)  # every piece is a frame: keep pyte's work small
    lines, screen = transcript(console.file.getvalue(), width, height)
    assert lines == one_shot_lines(long_answer, width)
    assert not screen.cursor.hidden


def test_live_region_never_outgrows_the_screen() -> None:
    console = live_console(40, 10)
    view = LiveView(console, thinking="collapse", show_usage=False, refresh_per_second=0)
    view.reasoning("thought " * 500)
    view.answer("```\n" + "x\n" * 100)
    assert view._live is not None
    assert view._live._live_render.last_render_height <= 8
    view.close(result())


def test_live_collapse_replaces_reasoning_with_a_summary() -> None:
    console = live_console()
    run(LiveView(console, thinking="collapse", refresh_per_second=0))
    raw = console.file.getvalue()
    assert "thinking…" in raw  # the live panel was drawn...
    lines, _ = transcript(raw)
    text = "\n".join(lines)
    assert "step by step" not in text  # ...and is gone from the final screen
    assert lines[0].startswith("▸ thought for ") and "tokens" not in lines[0]
    answer = one_shot_lines(ANSWER)
    assert lines[2 : 2 + len(answer)] == answer
    assert lines[2 + len(answer)] == ""
    assert " · ".join(lines[3 + len(answer) :]) == (
        "22 in · 382 out (210 reasoning) · 0 cached · first token 0.41s · 48.3 tok/s · 8.1s"
    )


def test_live_collapse_summary_has_reasoning_tokens_when_the_answer_never_came() -> None:
    console = live_console()
    view = LiveView(console, refresh_per_second=0)
    view.reasoning("hmm, let me think")
    view.close(result(answer="", interrupted=True))
    lines, _ = transcript(console.file.getvalue())
    assert lines[0].startswith("▸ thought for ") and lines[0].endswith(" · 210 tokens")
    assert "[interrupted]" in lines


def test_live_show_keeps_the_reasoning_dim() -> None:
    console = live_console(color="truecolor")
    run(LiveView(console, thinking="show", refresh_per_second=0))
    lines, _ = transcript(console.file.getvalue())
    assert lines[:3] == REASONING.splitlines()
    assert "\x1b[2mLet me think step by step" in console.file.getvalue()
    assert lines[3].startswith("▸ thought for ")


def test_live_hide_shows_no_reasoning_at_all() -> None:
    console = live_console()
    run(LiveView(console, thinking="hide", refresh_per_second=0))
    raw = console.file.getvalue()
    assert "step by step" not in raw and "thought for" not in raw and "thinking…" not in raw
    lines, _ = transcript(raw)
    assert lines[: len(one_shot_lines(ANSWER))] == one_shot_lines(ANSWER)


def test_live_interrupt_commits_partial_answer_marks_it_and_restores_the_cursor() -> None:
    console = live_console()
    view = LiveView(console, thinking="collapse", show_usage=False, refresh_per_second=0)
    view.reasoning("thinking")
    partial = ANSWER[: ANSWER.index("def main")]  # inside an open code fence
    for piece in pieces(partial):
        view.answer(piece)
    view.close(result(answer=partial, usage=None, interrupted=True))
    view.close(result(answer=partial, usage=None, interrupted=True))  # a second close is harmless
    lines, screen = transcript(console.file.getvalue())
    answer = one_shot_lines(partial)
    assert lines[2 : 2 + len(answer)] == answer
    assert lines[-1] == "[interrupted]" and not "".join(lines[2 + len(answer) : -1])
    assert not screen.cursor.hidden


def test_live_notice_is_printed_once() -> None:
    console = live_console()
    view = LiveView(console, show_usage=False, refresh_per_second=0)
    view.notice("thinking not supported, retried without")
    view.answer("Hi.")
    view.close(result(answer="Hi."))
    lines, _ = transcript(console.file.getvalue())
    assert lines == ["thinking not supported, retried without", "Hi."]


def test_live_usage_line_wraps_between_fields_and_shows_cost() -> None:
    console = live_console(40)
    view = LiveView(console, thinking="hide", price=Price(input=0.0008, output=0.002, currency="CNY"))
    view.answer("Hi.")
    view.close(result(answer="Hi."))
    lines, _ = transcript(console.file.getvalue(), 40)
    usage = lines[2:]
    assert all(len(line) <= 40 for line in usage)
    assert " · ".join(usage) == (
        "22 in · 382 out (210 reasoning) · 0 cached · first token 0.41s · 48.3 tok/s · 8.1s · 0.0008 CNY"
    )


def test_live_throttled_frames_still_show_the_last_change() -> None:
    """At 20 fps the second piece lands inside the interval; the catch-up timer must draw it."""
    console = live_console()
    view = LiveView(console, thinking="hide", show_usage=False, refresh_per_second=20)
    view.answer("first ")
    view.answer("second")
    assert "second" not in console.file.getvalue()
    deadline = time.monotonic() + 5
    while "second" not in console.file.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "first second" in console.file.getvalue()
    view.close(result(answer="first second"))
    assert transcript(console.file.getvalue())[0] == ["first second"]


def test_live_view_writes_nothing_extra_for_an_empty_turn() -> None:
    console = live_console()
    view = LiveView(console, show_usage=False, refresh_per_second=0)
    view.close(TurnResult(model="m"))
    assert transcript(console.file.getvalue())[0] == []


@pytest.mark.parametrize("new_width", [50, 120])
def test_live_resize_mid_answer_duplicates_nothing(new_width: int) -> None:
    """pyte, like xterm, does not reflow on resize, so the live region's line count stays right."""
    answer = "\n\n".join(f"Paragraph {i}: " + "words " * 25 for i in range(10))
    console = live_console(80, 16)
    screen = pyte.HistoryScreen(80, 16, history=10_000)
    terminal = pyte.Stream(screen)
    view = LiveView(console, thinking="hide", show_usage=False, refresh_per_second=0)
    chunks = pieces(answer, 5, largest=20)
    half = len(chunks) // 2
    for piece in chunks[:half]:
        view.answer(piece)
    terminal.feed(console.file.getvalue().replace("\n", "\r\n"))
    sent = console.file.tell()
    screen.resize(16, new_width)
    console.width = new_width
    for piece in chunks[half:]:
        view.answer(piece)
    view.close(result(answer=answer))
    terminal.feed(console.file.getvalue()[sent:].replace("\n", "\r\n"))
    rows = [*screen.history.top, *(screen.buffer[y] for y in range(16))]
    text = "\n".join("".join(row[x].data for x in range(new_width)) for row in rows)
    for i in range(10):
        assert text.count(f"Paragraph {i}:") == 1
    assert text.rstrip().endswith("words")


def test_live_show_mode_bounds_a_reasoning_line_that_never_ends() -> None:
    console = live_console(40, 10)
    view = LiveView(console, thinking="show", show_usage=False, refresh_per_second=0)
    for _ in range(300):
        view.reasoning("and so on ")
    assert view._live is not None and view._live._live_render.last_render_height <= 8
    view.answer("Fine.")
    view.close(result(answer="Fine."))
    lines, _ = transcript(console.file.getvalue(), 40, 10)
    assert " ".join(lines[:-3]).split() == ("and so on " * 300).split()
    assert lines[-3].startswith("▸ thought for ") and lines[-1] == "Fine."


def test_make_view_defaults_to_a_usage_line_in_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = Tty()
    view = make_view(plain=False, thinking="collapse", show_usage=None, price=None, stdout=out)
    view.answer("Hi.")
    view.close(result(answer="Hi."))
    assert "22 in · 382 out" in out.getvalue()
    out = Tty()
    view = make_view(plain=False, thinking="collapse", show_usage=False, price=None, stdout=out)
    view.close(result(answer=""))
    assert "22 in" not in out.getvalue()


def test_rendering_loads_no_http_client_and_rich_only_for_the_terminal() -> None:
    code = (
        "import sys, io\n"
        "import llmchat.render as r\n"
        "assert 'rich' not in sys.modules, 'rich imported for the plain path'\n"
        "v = r.make_view(plain=True, thinking='show', show_usage=None, price=None, stdout=io.StringIO())\n"
        "assert 'rich' not in sys.modules\n"
        "import llmchat.render.live\n"
        "print(sorted(m for m in ('openai', 'ollama', 'httpx') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- plain modes on a terminal are readable (issue 17) ---------------------------------------------


def test_word_wrap_breaks_at_spaces_however_the_stream_is_split() -> None:
    import pyte

    from llmchat.render.plain import WordWrap

    text = "The reasoning will run on past the edge of a narrow terminal and words stay whole. " * 3
    for seed in range(5):
        wrap = WordWrap(24)
        out = "".join(wrap.feed(piece) for piece in pieces(text, seed))
        screen = pyte.Screen(24, 12)
        pyte.Stream(screen).feed(out.replace("\n", "\r\n"))
        lines = [line.rstrip() for line in screen.display if line.strip()]
        assert " ".join(lines).split() == text.split()  # every word whole, none cut at the edge
        assert all(len(line) <= 24 for line in lines)


@pytest.mark.parametrize("variables", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_color_and_dumb_terminal_frame_the_reasoning_without_any_escape(variables) -> None:
    from llmchat.core.environment import Environment

    out, err = Tty(), Tty()
    environment = Environment(stdin=None, stdout=out, stderr=err, variables={"TERM": "xterm", **variables})
    view = make_view(plain=False, thinking="collapse", show_usage=None, price=None, stdout=out, stderr=err,
                     environment=environment)
    run(view)
    assert "\x1b" not in err.getvalue() and "\x1b" not in out.getvalue()
    assert err.getvalue().startswith(f"Thinking…\n{REASONING}\n…done thinking.\n\n")
    assert "22 in · 382 out" in err.getvalue()


class _CtrlCMidWrite(io.StringIO):
    """A terminal whose write of the next frame is cut in two by a Ctrl-C, as a slow pty write can be."""

    armed = False

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self.armed or len(text) < 2:
            return super().write(text)
        self.armed = False
        half = len(text) // 2
        super().write(text[:half])
        signal.raise_signal(signal.SIGINT)  # Python runs the SIGINT handler before this returns
        return half + super().write(text[half:])


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_in_the_middle_of_a_frame_leaves_no_panel_behind() -> None:
    """The frame is written whole, then the KeyboardInterrupt surfaces: the turn's close finds the screen
    as Rich believes it is, and erases the thinking panel whole (a pty test caught one left behind)."""
    terminal = _CtrlCMidWrite()
    console = Console(file=terminal, force_terminal=True, width=W, height=H, _environ={})
    console.print("> think hard")
    view = LiveView(console, show_usage=False, refresh_per_second=0)
    for word in ("weighing ", "this ", "and\n", "that\n"):
        view.reasoning(word)
    terminal.armed = True
    with pytest.raises(KeyboardInterrupt):
        view.reasoning("and more\n" * 3)
    assert not terminal.armed  # the Ctrl-C did land inside a frame's write
    view.close(result(answer="", interrupted=True))
    lines, screen = transcript(terminal.getvalue())
    assert lines[0] == "> think hard" and lines[1].startswith("▸ thought for "), lines
    assert not any("╭" in line or "thinking…" in line or "weighing" in line for line in lines), lines
    assert lines[-1] == "[interrupted]" and not screen.cursor.hidden


def test_plain_pipe_flush_raises_what_the_timer_met_while_it_waited_for_the_timers_write() -> None:
    """The timer is writing (a full pipe: it can take long) when the turn's thread flushes at the answer's end:
    the flush waits for the timer's write, which then fails (the reader left). That failure is the flush's:
    the answer did not all reach the pipe, so the turn must end as interrupted by it, inside the turn,
    not find out at `close`, after the answer was saved as complete. The interleaving is made exact by
    running the timer just as the flush takes the view's lock, the moment a real timer's write ends in."""

    class ClosedAfterOne(Flushes):
        def flush(self) -> None:
            if self.getvalue() != "one ":
                raise BrokenPipeError(32, "Broken pipe")

    due: list[Any] = []
    view = PlainView(ClosedAfterOne(), io.StringIO(), clock=lambda: 0.0, later=lambda seconds, send: due.append(send))
    view.answer("one ")
    view.answer("two")

    class TimerEndsAsTheFlushWaits:
        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            if due:
                due.pop()()  # the timer's write, finishing (and failing) while the flush waits for the lock
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    view._held_lock = TimerEndsAsTheFlushWaits(view._held_lock)  # type: ignore[assignment]
    with pytest.raises(BrokenPipeError):
        view.flush()
