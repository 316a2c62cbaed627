"""`llmchat ask` in a real pseudo-terminal: what a person sees once the answer has streamed.

The child's bytes are replayed through a `pyte` terminal with scrollback, so the assertions are
about the screen and its history (rendered Markdown, the collapsed reasoning, the usage line,
every line exactly once), not about escape codes.
"""

from __future__ import annotations

import sys

import forkserver
import pexpect
import pyte
from fakeserver import Stream

ANSWER = """## Plan

Rendering keeps **one block** live and commits the rest.

- first point
- second point

```python
print("hello")
```

| name | value |
|------|------:|
| alpha | 1 |
| beta | 22 |

Done.
"""


def screen_lines(raw: str, columns: int = 90, rows: int = 30) -> list[str]:
    screen = pyte.HistoryScreen(columns, rows, history=1000)
    pyte.Stream(screen).feed(raw)
    history = ["".join(char.data for char in line.values()).rstrip() for line in screen.history.top]
    return [line for line in history + [line.rstrip() for line in screen.display] if line.strip()]


def spawn_ask(env: dict[str, str], *args: str) -> pexpect.spawn:
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}  # the pty's own size rules
    return forkserver.spawn(sys.executable, ["-m", "llmchat", "ask", *args], env=env, encoding="utf-8",
                         dimensions=(30, 90), timeout=30)


def run_in_terminal(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    child = spawn_ask(env, *args)
    raw = child.read()
    child.close()
    return child.exitstatus, screen_lines(raw)


def test_markdown_answer_with_collapsed_reasoning_and_usage(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer=ANSWER, reasoning="Think line one.\nThink line two.\n", piece_size=7,
                               prompt_tokens=12, completion_tokens=80, reasoning_tokens=20))
    env.pop("NO_COLOR", None)
    code, lines = run_in_terminal(env, "-p", "bailian", "--think", "explain")
    text = "\n".join(lines)
    assert code == 0, text
    assert "## Plan" not in text and "Plan" in text  # the heading is rendered, not raw Markdown
    assert "**one block**" not in text and "Rendering keeps one block live" in text
    assert "```" not in text and 'print("hello")' in text
    assert "| alpha |" not in text and any(line.split() == ["alpha", "1"] for line in lines)  # a drawn table
    assert [line for line in lines if "second point" in line] == [lines[[i for i, line in enumerate(lines)
                                                                          if "second point" in line][0]]]
    assert "thought for" in text and "Think line one" not in text  # reasoning collapsed to one line
    assert "12 in" in text and "80 out (20 reasoning)" in text
    for needle in ("Rendering keeps", "first point", "Done."):
        assert sum(needle in line for line in lines) == 1, needle


def test_show_thinking_keeps_the_reasoning_on_screen(fake_server, config_file, env) -> None:
    fake_server.enqueue(Stream(answer="Short answer.", reasoning="Visible reasoning text.\n"))
    code, lines = run_in_terminal(env, "-p", "bailian", "--think", "--show-thinking", "q")
    assert code == 0
    assert sum("Visible reasoning text." in line for line in lines) == 1
    assert sum("Short answer." in line for line in lines) == 1


def test_unknown_ollama_model_offers_a_pull_and_declining_is_one_paragraph(fake_server, config_file, env) -> None:
    child = spawn_ask(env, "-m", "qwen3:14b", "q")
    child.expect_exact("Pull it now? [y/N]")
    child.sendline("n")
    raw = child.read()
    child.close()
    text = "\n".join(screen_lines(raw))
    assert child.exitstatus == 1 and "Error:" in text and "pull qwen3:14b" in text and "Traceback" not in text
    assert not any(r.path == "/api/pull" for r in fake_server.requests)


def test_accepting_the_pull_offer_downloads_and_answers(fake_server, config_file, env) -> None:
    child = spawn_ask(env, "-m", "qwen3:14b", "q")
    child.expect_exact("Pull it now? [y/N]")
    child.sendline("y")
    raw = child.read()
    child.close()
    assert child.exitstatus == 0, raw
    assert "You said: q" in "\n".join(screen_lines(raw))
    assert "qwen3:14b" in fake_server.models
