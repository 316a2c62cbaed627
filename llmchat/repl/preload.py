"""The chat's first question does not wait for imports: the provider is made while the person types.

`import openai` alone takes longer than most people need to start typing, so the chat shows its prompt
first and makes the provider (client library, HTTP client) and loads what the first answer is drawn
with on a background thread. Whatever is cheap and can fail (a missing API key, a bad OLLAMA_HOST)
is still checked before the prompt (`providers.prepare`), so those errors end the start as before.
The first use of the provider waits for the thread, if it is still running, and re-raises what it
raised. No request is sent ahead: the first one the server sees is the question.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmchat.providers import connect, prepare

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.core.environment import Environment
    from llmchat.providers import Provider

#: What the first turn imports besides the provider: the turn view and its Markdown renderer.
WARM = ("llmchat.render", "llmchat.render.live", "llmchat.render.markdown_stream", "rich.markdown")


class Preloading:
    """A provider still being made on a background thread; any attribute waits for it (`ready`)."""

    def __init__(self, build: Callable[[], Provider], warm: tuple[str, ...] = WARM) -> None:
        self._provider: Provider | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._make, args=(build, warm), name="llmchat-preload", daemon=True).start()

    def _make(self, build: Callable[[], Provider], warm: tuple[str, ...]) -> None:
        try:
            self._provider = build()
            for name in warm:
                importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 (handed to the first use, on the main thread)
            self._error = exc
        finally:
            self._done.set()

    def ready(self) -> Provider:
        """The provider, once made; what making it raised, raised here."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._provider is not None
        return self._provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ready(), name)


def early_connector(environment: Environment | None) -> Callable[[Profile], Provider]:
    """`connect` for the chat: the first call (the chat's start) returns at once with a `Preloading`
    provider; later ones (/profile, a summary profile) connect as usual, the library being loaded."""
    first = True

    def connector(profile: Profile) -> Provider:
        nonlocal first
        if not first:
            return connect(profile, environment=environment)
        first = False
        return Preloading(prepare(profile, environment=environment))  # type: ignore[return-value]

    return connector
