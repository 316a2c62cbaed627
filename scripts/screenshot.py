"""Regenerate docs/screenshot.svg: one real chat turn, with reasoning, answer and usage line.

The turn runs through the real code path (profile, provider, HTTP, run_turn, the live view) against
the project's fake server. The bytes the live view writes (cursor moves, redraws and all) are played
through a terminal emulator (pyte), and what ends up on its screen is exported with Rich's
`Console.export_svg`: the picture shows what a person sees, not every intermediate frame.
Run: python scripts/screenshot.py
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pyte  # noqa: E402
from fakeserver import FakeServer, Stream  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.style import Style  # noqa: E402
from rich.text import Text  # noqa: E402

from llmchat.config.load import load_config  # noqa: E402
from llmchat.core.conversation import Conversation  # noqa: E402
from llmchat.core.pricing import Price  # noqa: E402
from llmchat.engine.chat import run_turn  # noqa: E402
from llmchat.providers import ChatOptions, connect  # noqa: E402
from llmchat.render.live import LiveView  # noqa: E402

WIDTH, HEIGHT = 88, 60
QUESTION = "How do I reverse a list in Python?"
REASONING = ("The user wants to reverse a list. There are three common ways: slicing, the reverse() "
             "method, and reversed(). I should show each and say which one copies.\n")
ANSWER = """Three idiomatic ways:

| way | copies? | returns |
|-----|---------|---------|
| `items[::-1]` | yes | a new list |
| `items.reverse()` | no | `None` (in place) |
| `reversed(items)` | no | an iterator |

```python
items = [1, 2, 3]
print(items[::-1])   # [3, 2, 1]
items.reverse()      # items is now [3, 2, 1]
```

Use **slicing** when you need a new list, `reverse()` to save memory.
"""


def main() -> None:
    with FakeServer() as server, tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.toml"
        config_path.write_text(
            f'[profiles.qwen]\nprovider = "openai"\nmodel = "qwen-plus"\nbase_url = "{server.url}/v1"\n'
            'price = { input = 0.0008, output = 0.002, currency = "CNY" }\n'
        )
        profile = load_config(config_path).profiles["qwen"]
        server.enqueue(Stream(answer=ANSWER, reasoning=REASONING, piece_size=6, delay=0.002,
                              prompt_tokens=31, completion_tokens=164, reasoning_tokens=38))
        out = io.StringIO()
        console = Console(file=out, width=WIDTH, height=HEIGHT, force_terminal=True, color_system="truecolor",
                          highlight=False)
        console.print("llmchat 0.1.0 · profile qwen · openai · qwen-plus\n/help for commands, Ctrl-D to quit",
                      style="dim")
        console.print(f"[bold]>>>[/bold] {QUESTION}")
        view = LiveView(console, thinking="show", show_usage=True, price=Price(0.0008, 0.002, currency="CNY"))
        run_turn(Conversation(), QUESTION, connect(profile), ChatOptions.from_profile(profile), view)
    picture = Console(record=True, width=WIDTH, file=io.StringIO(), color_system="truecolor")
    for line in screen_lines(out.getvalue()):
        picture.print(line, soft_wrap=True)
    target = ROOT / "docs" / "screenshot.svg"
    target.write_text(picture.export_svg(title="llmchat"), encoding="utf-8")
    print(f"wrote {target}")


def screen_lines(raw: str) -> list[Text]:
    """What a terminal shows after `raw`: scrollback then screen, trailing blank lines dropped."""
    screen = pyte.HistoryScreen(WIDTH, HEIGHT, history=1000)
    screen.set_mode(pyte.modes.LNM)  # a newline returns the carriage too, as a pty's onlcr makes it
    pyte.Stream(screen).feed(raw)
    rows = [*screen.history.top, *(screen.buffer[y] for y in range(screen.lines))]
    lines = [_row_text(row) for row in rows]
    while lines and not lines[-1].plain.strip():
        lines.pop()
    return lines


def _row_text(row) -> Text:
    text = Text()
    for x in range(WIDTH):
        char = row[x]
        text.append(char.data, Style(color=_color(char.fg), bgcolor=_color(char.bg), bold=char.bold,
                                     italic=char.italics, underline=char.underscore, dim=False))
    text.rstrip()
    return text


def _color(name: str) -> str | None:
    if name == "default":
        return None
    return f"#{name}" if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name) else name


if __name__ == "__main__":
    main()
