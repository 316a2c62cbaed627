"""Streaming Markdown that commits finished blocks to scrollback once (rendering.md §1.7).

Rich's `Markdown` re-parses and re-renders the whole document on every update, which is quadratic in
the answer's length, and a `Live` taller than the screen duplicates or hides text. A Markdown
document splits into top-level blocks, and once a later block has started only the last one can
still change. So this class prints every finished block with `console.print` exactly once (into
ordinary scrollback, above any `Live`) and offers the still-open tail as a small renderable for a
live region. Each parse covers only the uncommitted tail, so work per chunk is O(open block).

The committed output plus `finish()` is byte-identical to `console.print(Markdown(full_text))`
as long as the console's width does not change mid-answer. Known exception: a reference-style link
(`[text][ref]`) printed before its definition arrived stays unresolved (a one-shot render resolves
it); definitions that come first are carried forward to every later block.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from markdown_it import MarkdownIt
from rich.markdown import Markdown, UnknownElement
from rich.segment import Segment

if TYPE_CHECKING:
    from markdown_it.token import Token
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult

# An HTML block renders nothing in Rich but sets its "blank line before the next block" flag, which
# a fresh `Markdown` starts with False. Prefixing it reproduces the separator Rich puts between a
# block and the one before it, whatever shape the block has (lists and tables already open with a
# blank line of their own, paragraphs do not), without copying Rich's rendering loop.
_SEPARATED = "<!---->\n\n"
_NEWLINES = re.compile(r"\r\n?")

_parser: MarkdownIt | None = None
_block_parser: MarkdownIt | None = None


def _shared_parser() -> MarkdownIt:
    """One parser with the configuration Rich's `Markdown` uses, so block boundaries agree with it."""
    global _parser
    if _parser is None:
        _parser = MarkdownIt().enable("strikethrough").enable("table")
    return _parser


def _parse(text: str, env: dict[str, Any] | None = None) -> list[Token]:
    """Where blocks start and end in `text` (what is committed, what stays open): the block tokens only.

    The inline content (emphasis, code spans, links) cannot move a block boundary, and parsing it was
    half the cost of every look, so the core `inline` rule is off; link reference definitions are block
    rules and still land in `env`.
    """
    global _block_parser
    if _block_parser is None:
        _block_parser = MarkdownIt().enable("strikethrough").enable("table").disable("inline")
    return _block_parser.parse(text, env)


class _Markdown(Markdown):
    """Rich's `Markdown`, parsed with the one shared parser.

    Rich builds a new `MarkdownIt` for every instance (as long as parsing a block), and a streamed
    answer makes one per committed block and per live frame: a tenth of the terminal's cost. Every
    other attribute is copied from a real instance made once per set of options, so this stays what
    Rich's constructor makes, whatever attributes a Rich version adds.
    """

    _templates: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def __init__(self, markup: str, **options: Any) -> None:  # noqa: D107 (see the class)
        key = tuple(sorted(options.items()))
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = dict(Markdown("", **options).__dict__)
        self.__dict__.update(template)
        self.markup = markup
        self.parsed = _shared_parser().parse(markup)


def _definitions(env: dict[str, Any], before_line: int) -> str:
    """Link reference definitions found above `before_line`, rewritten as top-level Markdown.

    Rewritten from the parsed values rather than copied, because a definition may sit inside a
    quote or list item whose markers must not come along.
    """
    lines = []
    for label, ref in env.get("references", {}).items():
        if ref["map"][1] <= before_line:
            title = ref["title"].replace("\\", "\\\\").replace('"', '\\"')
            label = re.sub(r"([\\\[\]])", r"\\\1", label)
            href = re.sub(r"([<>\\])", r"\\\1", ref["href"])
            lines.append(f'[{label}]: <{href}> "{title}"\n' if title else f"[{label}]: <{href}>\n")
    return "".join(lines)


def _separated_after(token: Token) -> bool:
    """Whether Rich puts a blank line after this top-level block (a horizontal rule draws its own)."""
    return Markdown.elements.get(token.type, UnknownElement).new_line


def _is_blank(line: str) -> bool:
    return not line.strip(" \t\n")


#: How answers are drawn as Markdown: a link shows its target after its text, `text (url)`, instead of
#: becoming a terminal hyperlink (OSC 8). The text of a link is the model's, so a hyperlink could read
#: "https://bank/" and open somewhere else; a visible target cannot lie (DESIGN §4).
ANSWER_MARKDOWN: dict[str, bool] = {"hyperlinks": False}


class MarkdownStream:
    """Markdown fed in pieces: finished blocks go to `console.print`, the open tail to `tail`.

    Args:
        console: Where committed blocks are printed. When a `Live` runs on this console the prints
            land above it; without one (tests) the console receives exactly the committed text.
        max_lines: Most lines the tail renderable shows (its last ones); None means the console
            height minus two, so a live region can never outgrow the screen.
        printer: Called instead of `console.print` to commit (a view wraps it in one frame).
        commit_every: Seconds (by `clock`) between two commits outside an open fence; 0 commits at
            every finished block. Each commit also repaints the live region below it, so a view
            streaming faster than it draws commits at its frame rate: blocks finished in between go out
            together, in the same bytes.
        markdown_options: Passed to every `Markdown` (e.g. `code_theme`), the same for all blocks.
    """

    def __init__(
        self,
        console: Console,
        *,
        max_lines: int | None = None,
        printer: Callable[[RenderableType], None] | None = None,
        commit_every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        **markdown_options: Any,
    ) -> None:
        self.console = console
        self._print = printer or console.print
        self._commit_every = commit_every
        self._clock = clock
        self._committed_at = float("-inf")
        self._unlooked = False  # lines completed since the last look, left for the next commit
        self.max_lines = max_lines
        self._options = markdown_options
        self._tail = ""  # uncommitted text, from the start of the first uncommitted block
        self._separated = False  # Rich's "blank line before the next block" state after the committed part
        self._references = ""  # link definitions already committed, prepended to what is rendered later
        self._version = 0
        # A top-level fence open at the end of the tail: only a closing line can change anything, so
        # lines are merely scanned for one instead of re-parsing a long code block on every line.
        self._fence: str | None = None  # its opening markup (``` or ~~~, maybe longer)
        self._fence_at = 0  # where its opening line starts in `_tail`
        self._scanned = 0  # `_tail` up to here has been parsed or scanned
        self.tail = OpenTail(self)
        self.finished = False

    @property
    def pending(self) -> str:
        """The text not yet committed to scrollback."""
        return self._tail

    @property
    def version(self) -> int:
        """Changes whenever the tail does, so renderers can skip identical frames."""
        return self._version

    def feed(self, text: str) -> None:
        """Add a streamed piece; commits whatever blocks it finished."""
        if not text or self.finished:
            return
        self._tail += text
        self._version += 1
        if "\n" in text:
            if self._fence is not None:  # inside a fence only a closing line matters: looked at at once
                if self._fence_may_close():
                    self._commit()
                return
            self._unlooked = True
        if self._unlooked and (not self._commit_every
                               or self._clock() - self._committed_at >= self._commit_every):
            self._commit()

    def _commit(self) -> None:
        self._unlooked = False
        self._committed_at = self._clock() if self._commit_every else 0.0
        self._commit_finished()

    def finish(self) -> None:
        """Print the rest as it would appear in a one-shot render (an unclosed fence included)."""
        if self.finished:
            return
        self.finished = True
        rest = _NEWLINES.sub("\n", self._tail)
        self._tail = ""
        self._version += 1
        if any(token.level == 0 and token.map for token in _parse(rest)):
            self._print(self._markdown(rest))

    def markdown(self, rows: int | None = None) -> Markdown | None:
        """The open tail as one `Markdown`, with the separator Rich would put before it.

        With `rows`, a long open code fence is cut to its opening line and last lines: only its end
        is visible in a live region, and highlighting all of it on every frame would be quadratic.
        """
        text = self._tail
        if rows is not None and self._fence is not None:
            body = text[self._fence_at :]
            opening_end = body.find("\n")
            cut = len(body)
            for _ in range(rows + 2):
                cut = body.rfind("\n", 0, cut)
                if cut <= opening_end:
                    break
            if cut > opening_end:
                text = body[: opening_end + 1] + body[cut + 1 :]
        return self._markdown(text) if text.strip() else None

    def _markdown(self, text: str) -> Markdown:
        # Definitions render nothing and leave Rich's separator state alone, so they can go first.
        prefix = (self._references + "\n" if self._references else "") + (
            _SEPARATED if self._separated else ""
        )
        return _Markdown(prefix + text, **self._options)

    def _commit_finished(self) -> None:
        """Print each block that a later block, begun after a blank line, has closed for good.

        Only complete lines are parsed: a partial line could still turn a paragraph into a setext
        heading or a table. Requiring a blank line before the next block keeps lazy continuation
        lines, list items and table rows from ever reaching a block already printed; an ATX
        heading or a rule is one line that nothing can extend, so it may go as soon as a line follows.
        """
        end = self._tail.rfind("\n") + 1
        complete = self._tail[:end]
        if "\r" in complete:
            complete = _NEWLINES.sub("\n", complete)
            self._tail = complete + self._tail[end:]
            end = len(complete)
        lines = complete.split("\n")
        env: dict[str, Any] = {}
        blocks = [token for token in _parse(complete, env) if token.level == 0 and token.map]
        cut = 0  # index of the first block that stays open
        for index in range(len(blocks) - 1):
            block, following = blocks[index], blocks[index + 1]
            start = following.map[0]  # type: ignore[index]
            atx_heading = block.type == "heading_open" and block.markup.startswith("#")
            single_line = block.type == "hr" or atx_heading
            if not (_is_blank(lines[start - 1]) or single_line):
                continue  # commit later together with the block that follows
            cut = index + 1
        offsets = _line_offsets(lines)
        offset = offsets[blocks[cut].map[0]] if cut else 0  # type: ignore[index]
        self._track_fence(blocks[-1] if blocks else None, lines, offsets, offset, end)
        if not cut:
            return
        finished = self._markdown(complete[:offset])
        # State first: printing repaints a live region above which the blocks land, from this tail.
        self._references += _definitions(env, blocks[cut].map[0])  # type: ignore[index]
        self._tail = self._tail[offset:]
        self._separated = _separated_after(blocks[cut - 1])
        self._version += 1
        self._print(finished)

    def _track_fence(
        self, last: Token | None, lines: list[str], offsets: list[int], shift: int, end: int
    ) -> None:
        """Note whether the tail ends inside a top-level fence (positions relative to after the commit)."""
        self._fence = None
        if last is None or last.type != "fence" or not last.map:
            return
        first, stop = last.map
        if stop == len(lines) - 1 and (stop - first == 1 or not _closes_fence(lines[stop - 1], last.markup)):
            self._fence = last.markup
            self._fence_at = offsets[first] - shift
            self._scanned = end - shift

    def _fence_may_close(self) -> bool:
        """Whether the lines completed since the last look include one that could close the fence."""
        end = self._tail.rfind("\n") + 1
        new_lines = self._tail[self._scanned : end].split("\n")
        self._scanned = end
        return any(_closes_fence(line, self._fence or "") for line in new_lines)


def _line_offsets(lines: list[str]) -> list[int]:
    """Where each line starts in the text they were split from."""
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets


def _closes_fence(line: str, markup: str) -> bool:
    """CommonMark's closing fence: up to 3 spaces, at least as many of the same character, nothing else."""
    stripped = line.lstrip(" ")
    run = stripped.rstrip()
    return (
        bool(markup)
        and len(line) - len(stripped) <= 3
        and len(run) >= len(markup)
        and run == markup[0] * len(run)
    )


class OpenTail:
    """The uncommitted part of a `MarkdownStream`, cropped to its last lines for a live region.

    Rendering is cached per (version, width, height), so an idle refresh costs no Markdown work.
    Trailing padding is dropped from each line: if the terminal narrows and reflows, shorter lines
    wrap less, so the live region's own cursor arithmetic stays closer to the truth.
    """

    def __init__(self, stream: MarkdownStream) -> None:
        self._stream = stream
        self._key: tuple[int, int, int] | None = None
        self._lines: list[list[Segment]] = []

    def lines(self, console: Console, options: ConsoleOptions) -> list[list[Segment]]:
        stream = self._stream
        height = stream.max_lines or max(1, options.size.height - 2)
        key = (stream.version, options.max_width, height)
        if key != self._key:
            markdown = stream.markdown(height)
            rendered = (
                console.render_lines(markdown, options.update(height=None), pad=False) if markdown else []
            )
            self._lines = [_rstrip(line) for line in rendered[-height:]]
            self._key = key
        return self._lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = self.lines(console, options)
        new_line = Segment.line()
        for index, line in enumerate(lines):
            if index:
                yield new_line
            yield from line


def _rstrip(line: list[Segment]) -> list[Segment]:
    """Drop trailing spaces that carry no visible style (code blocks keep their background)."""
    line = list(line)
    while line:
        text, style, control = line[-1]
        if control or (style is not None and (style.bgcolor or style.reverse or style.underline)):
            break
        stripped = text.rstrip(" ")
        if stripped:
            line[-1] = Segment(stripped, style)
            break
        line.pop()
    return line
