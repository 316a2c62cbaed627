"""A deterministic Markdown answer of a given length, shaped like what chat models write.

Headings, paragraphs with inline code and emphasis, bullet and numbered lists, fenced code, tables
and block quotes, in a fixed rotation: the same input every run, so benchmark runs compare.
"""

from __future__ import annotations

import itertools
import re

WORDS = ("the model streams tokens into the terminal while the renderer keeps only the open block live "  # noqa: SIM905
         "and commits finished blocks to scrollback once so the cost stays linear").split()


def _sentence(n: int, offset: int) -> str:
    words = [WORDS[(offset + i) % len(WORDS)] for i in range(max(n, 6))]
    words[2] = f"`{words[2]}`"
    words[5] = f"**{words[5]}**"
    return " ".join(words).capitalize() + "."


def _blocks() -> itertools.cycle:
    blocks = []
    kinds = ("heading", "para", "bullets", "para", "code", "numbered", "table", "quote", "para")
    for section, kind in enumerate(kinds, start=1):
        if kind == "heading":
            blocks.append("## Section {n}: how streaming works")
        elif kind == "para":
            blocks.append(" ".join(_sentence(12, section * 3 + i) for i in range(4)))
        elif kind == "bullets":
            blocks.append("\n".join(f"- {_sentence(8, section + i)}" for i in range(4)))
        elif kind == "numbered":
            blocks.append("\n".join(f"{i + 1}. {_sentence(7, section + i)}" for i in range(3)))
        elif kind == "code":
            blocks.append("```python\n" + "\n".join(
                f"def step_{i}(tokens):\n    return [t.upper() for t in tokens if t]  # {i}" for i in range(4)
            ) + "\n```")
        elif kind == "table":
            rows = "\n".join(f"| option {i} | {i * 10} | {_sentence(5, i)} |" for i in range(4))
            blocks.append("| Option | Default | Meaning |\n|---|---:|---|\n" + rows)
        else:
            blocks.append("> " + _sentence(14, section))
    return itertools.cycle(blocks)


def markdown_answer(tokens: int) -> str:
    """About `tokens` tokens of Markdown (a token ~ a word or a punctuation mark)."""
    parts: list[str] = []
    count = 0
    for section, block in enumerate(_blocks(), start=1):
        if count >= tokens:
            break
        block = block.replace("{n}", str(section))
        parts.append(block)
        count += len(re.findall(r"\w+|[^\w\s]", block))
    return "\n\n".join(parts) + "\n"


def pieces(text: str) -> list[str]:
    """Token-sized pieces (a word with its leading space, or a punctuation run), as servers stream."""
    return re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text)
