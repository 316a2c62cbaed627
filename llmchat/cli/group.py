"""The root command group: `llmchat "why is the sky blue"` asks, as `llm "…"` does.

A first word that names no command is the start of a question, so the words go to `ask` whole.
A single word close to a command's name (`llmchat hsitory`) is more likely a typo than a question:
that stays Typer's usage error with its did-you-mean (exit 2), and nothing is sent to a model.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

from llmchat.core.suggest import closest


class QuestionGroup(TyperGroup):
    """A TyperGroup whose unknown first word begins a question for `ask` (see the module doc)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        word = args[0] if args else ""
        if word and not word.startswith("-") and self.get_command(ctx, word) is None:
            typo = len(args) == 1 and " " not in word and closest(word, self.commands) is not None
            if not typo:
                return "ask", self.get_command(ctx, "ask"), list(args)
        return super().resolve_command(ctx, args)
