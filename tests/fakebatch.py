"""The fake server's Batch File API: `/v1/files` and `/v1/batches` with DashScope's shapes.

DashScope's OpenAI-compatible batch interface (help.aliyun.com "OpenAI Batch接口兼容"): a JSONL file is
uploaded with `purpose=batch` (ids `file-batch-…`), a job is created on it (`batch_<uuid>`,
`completion_window` "24h" only, at most 50,000 requests and 100 MB a file, one model a file) and moves
through validating → in_progress → finalizing → completed (or failed, expired, cancelling → cancelled).
Results are files: the output file has one line per answered request, `{"id", "custom_id", "response":
{"status_code": 200, "request_id", "body": <chat.completion>}, "error": null}`; the error file one per
failed request, with the error both in `response.body` and in `error`. `batch-test-model` answers
without inference.

Here a job advances one step per `retrieve` (the way a client sees it: one poll, one change), per
`BatchState.plan`; `hold` freezes jobs (a process can be killed while following), `fail_ids` sends
rows to the error file, `outcome` ends new jobs as "expired" (half the rows answered, the rest in the
error file as `batch_expired`) or "failed" (validation errors, no result files). State lives on the
FakeServer instance (`state(fake)`), created on first use, so fakeserver.py only routes here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from fakeserver import OPENAI_JSON, dashscope_json

PLAN = ("validating", "in_progress", "in_progress", "finalizing", "completed")
MAX_LINES = 50_000
MAX_BYTES = 100 * 1024 * 1024
TEST_MODEL = "batch-test-model"


@dataclass
class FakeFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass
class FakeJob:
    id: str
    input_file_id: str
    lines: list[dict[str, Any]]
    outcome: str
    metadata: dict[str, str] | None
    created_at: int
    polls: int = 0
    status: str = "validating"
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    stamps: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        stamp = self.stamps.get
        return {
            "id": self.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": "24h", "status": self.status,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, "in_progress_at": stamp("in_progress"),
            "expires_at": self.created_at + 86_400, "finalizing_at": stamp("finalizing"),
            "completed_at": stamp("completed"), "failed_at": stamp("failed"), "expired_at": stamp("expired"),
            "cancelling_at": stamp("cancelling"), "cancelled_at": stamp("cancelled"),
            "request_counts": {"total": len(self.lines), "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


@dataclass
class BatchState:
    """The knobs (plain attributes, read on every request) and what was uploaded and created."""

    plan: tuple[str, ...] = PLAN
    hold: bool = False
    fail_ids: set[str] = field(default_factory=set)
    outcome: str = "completed"  # or "expired", "failed"
    files: dict[str, FakeFile] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    retrieves: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def state(fake: Any) -> BatchState:
    """The Batch API state of one FakeServer (made on first use)."""
    found = getattr(fake, "batch_state", None)
    if found is None:
        found = fake.batch_state = BatchState()
    return found


def route(handler: Any, method: str, path: str, rec: Any) -> None:
    """Serve one `/files…` or `/batches…` request (called from fakeserver's `_route`)."""
    if not handler._authorised(rec):
        return
    batch = state(handler.server.fake)
    parts = path.rstrip("/").split("/")
    with batch.lock:
        if parts[-1] == "files" and method == "POST":
            _upload(handler, batch, rec)
        elif len(parts) >= 3 and parts[-3] == "files" and parts[-1] == "content" and method == "GET":
            found = batch.files.get(parts[-2])
            if found is None:
                _not_found(handler, f"file {parts[-2]}")
            else:
                handler._send(200, found.data, "application/octet-stream")
        elif parts[-2:-1] == ["files"] and method == "GET":
            found = batch.files.get(parts[-1])
            _send_json(handler, found.as_json()) if found else _not_found(handler, f"file {parts[-1]}")
        elif parts[-1] == "batches" and method == "POST":
            _create(handler, batch, rec.body or {})
        elif parts[-1] == "batches" and method == "GET":
            jobs = sorted(batch.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
            data = [j.as_json() for j in jobs[:_limit(rec.query)]]
            _send_json(handler, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None, "has_more": len(jobs) > len(data)})
        elif parts[-2:-1] == ["batches"] and method == "GET":
            job = batch.jobs.get(parts[-1])
            if job is None:
                _not_found(handler, f"batch {parts[-1]}")
                return
            batch.retrieves += 1
            if not batch.hold:
                _advance(batch, job)
            _send_json(handler, job.as_json())
        elif len(parts) >= 3 and parts[-3] == "batches" and parts[-1] == "cancel" and method == "POST":
            job = batch.jobs.get(parts[-2])
            if job is None:
                _not_found(handler, f"batch {parts[-2]}")
                return
            if job.status in ("validating", "in_progress", "finalizing"):
                job.status = "cancelling"
                job.stamps["cancelling"] = int(time.time())
            _send_json(handler, job.as_json())
        else:
            handler._send(404, b"404 page not found", "text/plain")


# -------------------------------------------------------------------------------------------- requests


def _upload(handler: Any, batch: BatchState, rec: Any) -> None:
    content_type = rec.headers.get("content-type", "")
    message = BytesParser(policy=email_policy).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + rec.raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    purpose = fields.get("purpose", (None, b""))[1].decode()
    if "file" not in fields or purpose != "batch":
        _error(handler, 400, "invalid_parameter_error", "A file and purpose=batch are required.")
        return
    if len(fields["file"][1]) > MAX_BYTES:
        _error(handler, 400, "invalid_parameter_error", "The file is larger than 100MB.")
        return
    file = FakeFile(id=f"file-batch-{uuid.uuid4().hex[:24]}", filename=fields["file"][0] or "upload.jsonl",
                    purpose=purpose, data=fields["file"][1], created_at=int(time.time()))
    batch.files[file.id] = file
    _send_json(handler, file.as_json())


def _create(handler: Any, batch: BatchState, body: dict[str, Any]) -> None:
    file = batch.files.get(str(body.get("input_file_id")))
    if file is None:
        _not_found(handler, f"file {body.get('input_file_id')}")
        return
    if body.get("completion_window") != "24h" or body.get("endpoint") != "/v1/chat/completions":
        _error(handler, 400, "invalid_parameter_error", "completion_window must be 24h and endpoint "
               "/v1/chat/completions.")
        return
    lines = [json.loads(line) for line in file.data.decode("utf-8").splitlines() if line.strip()]
    created = int(time.time())
    job = FakeJob(id=f"batch_{uuid.uuid4()}", input_file_id=file.id, lines=lines, outcome=batch.outcome,
                  metadata=body.get("metadata"), created_at=created)
    models = {line.get("body", {}).get("model") for line in lines}
    if len(lines) > MAX_LINES or len(models) > 1:
        job.outcome = "failed"
        job.errors = [{"code": "invalid_file", "line": None, "param": None,
                       "message": "The file has more than 50000 requests or more than one model."}]
    batch.jobs[job.id] = job
    _send_json(handler, job.as_json())


def _advance(batch: BatchState, job: FakeJob) -> None:
    """One poll, one step along the plan (or towards the job's end state)."""
    now = int(time.time())
    if job.status in ("completed", "failed", "expired", "cancelled"):
        return
    if job.status == "cancelling":
        _finish(batch, job, "cancelled", answered=job.completed)
        return
    job.polls += 1
    status = batch.plan[min(job.polls, len(batch.plan) - 1)]
    if job.outcome == "failed" and status != "validating":
        job.errors = job.errors or [{"code": "invalid_request", "line": 1, "param": None,
                                     "message": "Line 1: the request body is not valid JSON."}]
        job.status = "failed"
        job.stamps["failed"] = now
        return
    if status == "in_progress":  # a share of the rows answered per in_progress poll
        seen = batch.plan[: job.polls + 1].count("in_progress")
        share = len(job.lines) * seen // (batch.plan.count("in_progress") + 1)
        job.completed = len([line for line in job.lines[:share] if line["custom_id"] not in batch.fail_ids])
        job.failed = share - job.completed
    if status in ("completed", "finalizing") and job.outcome == "expired":
        _finish(batch, job, "expired", answered=len(job.lines) // 2)
        return
    if status == "completed":
        _finish(batch, job, "completed", answered=len(job.lines))
        return
    job.status = status
    job.stamps.setdefault(status, now)


def _finish(batch: BatchState, job: FakeJob, status: str, answered: int) -> None:
    """Write the result files: answered rows in the output file, failures (and, when expired, the rows
    never run) in the error file; a cancelled job keeps only what was answered."""
    output, errors = [], []
    for index, line in enumerate(job.lines):
        custom_id = line["custom_id"]
        if custom_id in batch.fail_ids and index < answered:
            errors.append(_error_line(custom_id, 400, "invalid_parameter_error",
                                      "Range of max_tokens should be [1, 8192]"))
        elif index < answered:
            output.append(_answer_line(custom_id, line.get("body") or {}))
        elif status == "expired":
            errors.append(_error_line(custom_id, 400, "batch_expired",
                                      "This request could not be executed before the completion window expired."))
    job.completed, job.failed = len(output), len(errors)
    if output:
        job.output_file_id = _result_file(batch, job, "output", output)
    if errors:
        job.error_file_id = _result_file(batch, job, "error", errors)
    job.status = status
    job.stamps[status] = int(time.time())


def _result_file(batch: BatchState, job: FakeJob, kind: str, lines: list[dict[str, Any]]) -> str:
    data = "".join(dashscope_json(line) + "\n" for line in lines).encode("utf-8")
    file = FakeFile(id=f"file-batch_output-{uuid.uuid4().hex[:20]}", filename=f"{job.id}_{kind}.jsonl",
                    purpose="batch_output", data=data, created_at=int(time.time()))
    batch.files[file.id] = file
    return file.id


def _answer_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    model = body.get("model")
    if model == TEST_MODEL:
        answer, prompt_tokens, completion_tokens = "This is a test result.", 0, 0
    else:
        question = users[-1] if users and isinstance(users[-1], str) else json.dumps(users[-1:])
        answer = f"Answer to: {question}"
        prompt_tokens = 10 + sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4
        completion_tokens = len(answer) // 4 + 1
    request_id = str(uuid.uuid4())
    completion = {
        "choices": [{"finish_reason": "stop", "index": 0, "logprobs": None,
                     "message": {"content": answer, "role": "assistant"}}],
        "object": "chat.completion",
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "created": int(time.time()), "system_fingerprint": None, "model": model,
        "id": f"chatcmpl-{request_id}",
    }
    return {"id": request_id, "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": completion}, "error": None}


def _error_line(custom_id: str, status: int, code: str, message: str) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    error = {"code": code, "param": None, "message": message, "type": "invalid_request_error"}
    return {"id": request_id, "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": {"error": error}},
            "error": {"code": code, "message": message}}


# -------------------------------------------------------------------------------------------- replies


def _send_json(handler: Any, obj: dict[str, Any]) -> None:
    handler._send(200, dashscope_json(obj).encode(), OPENAI_JSON)


def _error(handler: Any, status: int, code: str, message: str) -> None:
    handler._dashscope_error(status, {"code": code, "param": None, "message": message,
                                      "type": "invalid_request_error"})


def _not_found(handler: Any, what: str) -> None:
    _error(handler, 404, "NotFound", f"The {what} does not exist.")


def _limit(query: str) -> int:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "limit" and value.isdigit():
            return int(value)
    return 20
