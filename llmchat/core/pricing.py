"""Turning reported token counts into money, from a profile's `price` table."""

from __future__ import annotations

from dataclasses import dataclass

from llmchat.core.events import Usage


@dataclass(frozen=True, slots=True)
class Price:
    """Prices per 1,000 tokens, as the provider's price list gives them."""

    input: float
    output: float
    cached_input: float | None = None  # defaults to `input` when the provider has no discount
    currency: str = ""

    def cost(self, usage: Usage) -> float | None:
        """The turn's cost, or None when the server did not report the counts it depends on.

        Cached prompt tokens are billed at `cached_input` when given; reasoning tokens are part of
        the completion count on every server we support, so they are billed as output.
        """
        if usage.prompt is None or usage.completion is None:
            return None
        cached = usage.cached or 0
        cached_rate = self.input if self.cached_input is None else self.cached_input
        fresh_prompt = max(usage.prompt - cached, 0)
        return (fresh_prompt * self.input + cached * cached_rate + usage.completion * self.output) / 1000

    def format(self, amount: float) -> str:
        """Money with enough digits to show sub-cent turns, and the currency when known."""
        text = f"{amount:.4f}" if amount < 1 else f"{amount:.2f}"
        return f"{text} {self.currency}".strip()
