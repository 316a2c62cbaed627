"""Python's cyclic garbage collector, held off while the program starts (issue 18).

Starting a command builds a few hundred thousand objects that live until the process ends: modules,
classes, pydantic's validators, Typer's parameters, the client library. The collector cannot free any
of them, yet runs 120-200 times while they are made (once in full on Bailian, whose SDK builds hundreds
of pydantic models): about 40 ms of CPU of a one-shot Ollama question here and 100-140 ms of a Bailian
one, more than all of llmchat's own modules take to import. So the `llmchat` command holds it off
(`hold`) until the provider's client is made, then moves everything made so far out of its sight
(`gc.freeze`) and lets it run as usual (`release`): the streamed answer, the chat and batch are
collected exactly as before.

Only the program's entry point holds it: a process that merely imports llmchat (the tests, which run
the CLI in-process) never has its collector touched, and `release` is then a no-op.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_held = False


def hold() -> None:
    """Turn the collector off until `release`; the first thing the `llmchat` command does."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """Freeze what start-up made and turn the collector back on, if `hold` turned it off. Called once the
    provider's client exists (the last big import of a question or a batch), or as a command starts that
    makes none."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()


@contextmanager
def off_for_import() -> Iterator[None]:
    """The collector off while a big library is imported later on, then what it made frozen, as at start-up.

    For the MCP SDK, imported when the first server starts (in the chat, after the prompt): 0.7 s of CPU
    here, nearly half of it the collector scanning the SDK's new pydantic models, which live until exit.
    Nothing happens when the collector is already off (start-up still holding it)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
