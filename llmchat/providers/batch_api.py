"""The OpenAI-compatible Batch API (Bailian/DashScope, OpenAI, others): files and batches, on the wire.

Why here: providers/ is the only layer that does HTTP (DESIGN §1), so `batch/remote*.py` plans, follows
and writes, and this module only talks: `files.create(purpose="batch")`, `batches.create(completion_window=
"24h")`, `retrieve`, `cancel`, `list`, `files.content`, all through the `openai` client of the profile's
provider (same base URL, key, timeouts, no silent SDK retries). A request line's `body` is built by the
provider's own request builder (`_body`), so a remote row asks exactly what a local row asks, minus the
streaming keys, with the SDK-only `extra_body` merged in as the raw HTTP body carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai

from llmchat.core.errors import BadRequest, ConfigError, ProviderError
from llmchat.providers import ChatOptions, Message, connect

if TYPE_CHECKING:
    from llmchat.config.profile import Profile
    from llmchat.core.environment import Environment
    from llmchat.providers.openai_compat import OpenAICompatProvider

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"


@dataclass(frozen=True)
class RemoteJob:
    """What the server says about a job; counts are None until the server reports them."""

    id: str
    status: str
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    errors: tuple[str, ...] = field(default_factory=tuple)


class BatchApi:
    """One profile's Batch API. Every failure is a ProviderError (exit 1) that says what to do."""

    def __init__(self, profile: Profile, environment: Environment | None = None) -> None:
        if profile.provider == "ollama":
            raise ConfigError(f"Profile '{profile.name}' is an Ollama profile, which has no Batch API.",
                              hint='Use a profile with provider = "bailian" or "openai" for --remote, '
                                   "or drop --remote to run the rows from here.")
        provider = connect(profile, environment=environment)
        self._provider: OpenAICompatProvider = provider  # type: ignore[assignment]
        self.bailian = self._provider.bailian
        self._client: openai.OpenAI = self._provider._client

    # -- request lines -------------------------------------------------------------------------------

    def request_body(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        """The `body` of one request line: the provider's request without streaming, `extra_body` inlined."""
        body = self._provider._body(messages, options)
        body.pop("stream", None)
        body.pop("stream_options", None)
        body.update(body.pop("extra_body", None) or {})
        return body

    # -- calls -----------------------------------------------------------------------------------------

    def upload(self, data: bytes, filename: str) -> str:
        """Upload the request lines (`purpose="batch"`); returns the file id."""
        created = self._call(lambda: self._client.files.create(file=(filename, data, "application/jsonl"),
                                                               purpose="batch"), "upload the requests")
        return str(created.id)

    def create(self, input_file_id: str, metadata: dict[str, str] | None = None) -> RemoteJob:
        job = self._call(lambda: self._client.batches.create(
            input_file_id=input_file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
            **({"metadata": metadata} if metadata else {})), "create the batch job")
        return _job(job)

    def retrieve(self, job_id: str) -> RemoteJob:
        return _job(self._call(lambda: self._client.batches.retrieve(job_id), f"read job {job_id}", job_id))

    def cancel(self, job_id: str) -> RemoteJob:
        return _job(self._call(lambda: self._client.batches.cancel(job_id), f"cancel job {job_id}", job_id))

    def list(self, limit: int = 20) -> list[RemoteJob]:
        page = self._call(lambda: self._client.batches.list(limit=limit), "list the batch jobs")
        return [_job(job) for job in page.data]

    def content(self, file_id: str) -> bytes:
        """A result file's bytes (the output or the error file)."""
        return bytes(self._call(lambda: self._client.files.content(file_id), f"download file {file_id}",
                                file_id).content)

    def _call(self, action: Any, what: str, thing: str | None = None) -> Any:
        try:
            return action()
        except openai.NotFoundError:
            if thing is None:  # the endpoint itself is missing: a server without a Batch API
                raise BadRequest(f"{self._provider.base_url} has no Batch API (404 on {what}).",
                                 hint="Use a provider whose OpenAI-compatible API has /files and /batches, "
                                      "or drop --remote.") from None
            raise BadRequest(f"The server knows no '{thing}' (404): it could not {what}.",
                             hint="Check the id with `llmchat batch list`; result files are kept for a "
                                  "limited time.") from None
        except Exception as exc:
            error = self._provider._translate(exc, "", output=False)
            if error is None:
                raise
            error.message = f"Could not {what}: {error.message}"
            raise error from None


def _job(job: Any) -> RemoteJob:
    counts = getattr(job, "request_counts", None)
    errors = getattr(getattr(job, "errors", None), "data", None) or []
    return RemoteJob(
        id=str(job.id), status=str(job.status),
        total=getattr(counts, "total", None), completed=getattr(counts, "completed", None),
        failed=getattr(counts, "failed", None), input_file_id=job.input_file_id,
        output_file_id=job.output_file_id, error_file_id=job.error_file_id, created_at=job.created_at,
        errors=tuple(str(getattr(e, "message", None) or getattr(e, "code", None) or e) for e in errors),
    )


__all__ = ["BatchApi", "RemoteJob", "ProviderError"]
