"""One exception family for everything the user must be told about, with the exit code it maps to.

Each error carries a message (what happened) and a hint (what to do). The CLI prints both and exits
with `exit_code`; it never shows a traceback unless LLMCHAT_DEBUG=1.
"""

from __future__ import annotations


class LlmchatError(Exception):
    """Base of every error the user sees; exit code 1 unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class ConfigError(LlmchatError):
    """Bad configuration or usage: invalid TOML, unknown profile, bad option value (exit 2)."""

    exit_code = 2


class MissingApiKey(ConfigError):
    """The profile's API-key variable is not set; detected before any request (exit 2)."""


class ProviderError(LlmchatError):
    """The model call failed (exit 1)."""

    #: Worth retrying with backoff when no output was shown yet.
    retryable = False
    #: Seconds the server asked us to wait (Retry-After), if it said.
    retry_after: float | None = None
    #: A few words for a retry notice when the message is long: the full message is printed once, at the end.
    brief: str | None = None
    #: The answer did not come from the API at all (a proxy's HTML page, an empty or non-JSON body).
    not_the_api: bool = False


class Unreachable(ProviderError):
    """The server could not be reached (refused, DNS, connect timeout)."""


class AuthFailed(ProviderError):
    """The server rejected the credentials (401/403)."""


class ModelNotFound(ProviderError):
    """The server does not know the model."""


class RateLimited(ProviderError):
    """429: too many requests or tokens per minute."""

    retryable = True


class ContextTooLong(ProviderError):
    """The conversation no longer fits the model's context window."""


class BadRequest(ProviderError):
    """The server refused the request for a reason the user must fix (400)."""


class ServerError(ProviderError):
    """The server failed (5xx)."""

    retryable = True


class ThinkingUnsupported(BadRequest):
    """The model cannot think; the caller may retry without thinking."""


class ToolsUnsupported(BadRequest):
    """The model or server cannot call tools; the turn loop asks again without offering any."""


class StreamBroken(ProviderError):
    """The answer stream ended before the server said it was complete."""


class StreamUnfinished(StreamBroken):
    """The server closed the stream properly ([DONE]) but without a finish_reason: it stopped the answer
    itself (llama.cpp cuts a running stream when another request arrives). Worth retrying like a 5xx:
    the chat and `ask` while nothing was shown, batch always (a row is done only when its answer is whole)."""

    retryable = True


class Timeout(ProviderError):
    """The server stopped sending for longer than the read timeout."""
