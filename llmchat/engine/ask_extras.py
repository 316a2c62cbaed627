"""What `ask` adds to a plain question: attached images and a required output format.

Gathered in one object so `run_ask` needs three calls and no knowledge of either feature:
`options(...)` before the turn (checks, then the request options), `view(...)` around the turn's
view, and `finish(...)` for the exit code. Everything that can be wrong with the flags is found in
`from_flags`, before any profile is resolved or any request is sent (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmchat.core.images import Image, load
from llmchat.engine.structured import OutputFormat
from llmchat.providers import check_images

if TYPE_CHECKING:
    from llmchat.core.environment import Environment
    from llmchat.core.events import TurnResult
    from llmchat.engine.chat import TurnView
    from llmchat.providers import ChatOptions, Provider


@dataclass(frozen=True)
class AskExtras:
    images: tuple[Image, ...] = ()
    output: OutputFormat | None = None

    @classmethod
    def from_flags(cls, images: Sequence[str] = (), fmt: str | None = None,
                   schema: str | Path | None = None) -> AskExtras:
        """Load the images and the schema now: a bad file is a usage error before anything else runs."""
        return cls(images=tuple(load(spec) for spec in images), output=OutputFormat.from_flags(fmt, schema))

    def __bool__(self) -> bool:
        return bool(self.images) or self.output is not None

    def options(self, options: ChatOptions, provider: Provider) -> ChatOptions:
        """The request options for this turn. Checks first that the model can take the images (Ollama's
        `/api/show`), raising ImageError (exit 2) with the fix when it cannot.

        Only the turn's own request gets these: a summary call made for the context window must not
        carry the images or be forced into JSON, so callers keep the plain options for that.
        """
        check_images(provider, options.model, self.images)
        if self.images:
            options = replace(options, images=self.images)
        return self.output.apply(options) if self.output is not None else options

    def view(self, view: TurnView, *, as_json: bool, plain: bool, environment: Environment | None = None) -> TurnView:
        """The turn's view: unchanged unless the answer must be checked JSON (and `--json` is not
        printing the whole record anyway)."""
        if self.output is None or as_json:
            return view
        from llmchat.render import wants_plain

        out = environment.stdout if environment else sys.stdout
        return self.output.view(view, fenced=not (plain or wants_plain(out, environment)))

    def finish(self, result: TurnResult) -> int:
        """The exit code once the turn finished: 0, or StructuredOutputError (exit 1) for a bad answer."""
        return self.output.check(result) if self.output is not None else 0
