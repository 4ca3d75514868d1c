"""POST|GET /{v}/openai/batches, GET /{v}/openai/batches/{id}, POST /{v}/openai/batches/{id}/cancel: OpenAI's
Batch API on the same batch jobs as Batch Mode. The input file is uploaded with the genai SDK (the compat layer has no
file upload) and the output and error files are downloaded with it, as the docs' example does. Ids are the native
`batches/{id}` (the openai SDK percent-encodes the slash, the server decodes it) and `files/batch-{id}`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..batches.protocol import CANCELLED, EXPIRED, FAILED, OPENAI_KINDS, SUCCEEDED
from ..batches.service import BatchService, batch_id_of, not_found
from ..errors import ApiError
from ..store.batches import PENDING, RUNNING
from ..store.records import BatchCounts, BatchRecord
from ..wire import JSONResponse, parse
from .protocol import OpenAIModel


class CreateBatch(OpenAIModel):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None = None


def _seconds(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def batch_json(record: BatchRecord, counts: BatchCounts) -> dict[str, Any]:
    """OpenAI's `Batch` object."""
    options = record.options
    state = record.state
    status = {PENDING: "validating", RUNNING: "cancelling" if record.cancel_requested else "in_progress",
              SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "cancelled", EXPIRED: "expired"}[state]
    if record.ending is not None:  # its output files are being written
        status = "cancelling" if record.ending == CANCELLED else "finalizing"
    ended = _seconds(record.end_time)
    errors = None
    if record.error:
        errors = {"object": "list", "data": [{"code": "batch_failed", "message": record.error.get("message"),
                                              "line": None, "param": None}]}
    return {
        "id": f"batches/{record.id}",
        "object": "batch",
        "endpoint": options.get("endpoint"),
        "errors": errors,
        "input_file_id": f"files/{record.input_file}" if record.input_file else None,
        "completion_window": options.get("completion_window", "24h"),
        "status": status,
        "output_file_id": f"files/{record.output_file}" if record.output_file else None,
        "error_file_id": f"files/{options['error_file']}" if options.get("error_file") else None,
        "created_at": _seconds(record.create_time),
        "in_progress_at": None,
        "expires_at": _seconds(record.expire_time) if state in (PENDING, RUNNING) else None,
        "finalizing_at": None,
        "completed_at": ended if state == SUCCEEDED else None,
        "failed_at": ended if state == FAILED else None,
        "expired_at": ended if state == EXPIRED else None,
        "cancelling_at": None,
        "cancelled_at": ended if state == CANCELLED else None,
        "request_counts": {"total": record.request_count, "completed": counts.succeeded, "failed": counts.failed},
        "metadata": options.get("metadata"),
    }


async def _json(service: BatchService, record: BatchRecord) -> dict[str, Any]:
    return batch_json(record, await service.counts(record))


async def create(request: Request, service: BatchService, project_id: str, body: bytes) -> Response:
    req = parse(CreateBatch, body)
    record = await service.create_openai(project_id, req.input_file_id, req.endpoint, req.completion_window,
                                         req.metadata)
    return JSONResponse(await _json(service, record))


async def list_batches(request: Request, service: BatchService, project_id: str) -> Response:
    params = request.query_params
    limit_text = params.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise ApiError.invalid("* limit: must be a whole number from 1 to 100.\n")
    page, more = await service.list_openai(project_id, params.get("after"), int(limit_text))
    data = [batch_json(record, counts) for record, counts in page]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})


async def batch(request: Request, service: BatchService, project_id: str, name: str) -> Response:
    """GET `batches/{id}`; POST `batches/{id}/cancel`."""
    name = name.strip("/")
    if request.method == "POST":
        if not name.endswith("/cancel"):
            raise ApiError.not_found(f"The requested URL {request.url.path} was not found on this server.")
        batch_id = batch_id_of(name.removesuffix("/cancel"))
        record = await service.get(project_id, batch_id)
        if record.kind not in OPENAI_KINDS:
            raise not_found()
        await service.cancel(project_id, batch_id)
        return JSONResponse(await _json(service, await service.get(project_id, batch_id)))
    record = await service.get(project_id, batch_id_of(name))
    if record.kind not in OPENAI_KINDS:
        raise not_found()
    return JSONResponse(await _json(service, record))
