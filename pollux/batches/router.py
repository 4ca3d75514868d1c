"""POST /{v}/models/{m}:batchGenerateContent | :asyncBatchEmbedContent; GET /{v}/batches[/{id}];
POST /{v}/batches/{id}:cancel; DELETE /{v}/batches/{id}. The docs' curl examples also cancel and delete with a bare
GET of `batches/{id}:cancel` and `batches/{id}:delete`, which work too."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse, parse
from .protocol import EMBED, GENERATE, CreateBatchRequest
from .service import BatchService

_OPERATION = "application/json; charset=UTF-8"


async def batch_generate_content(request: Request, service: BatchService, model_name: str, body: bytes) -> Response:
    model = service.generate.resolve(model_name, request.path_params["version"], "batchGenerateContent")
    record = await service.create(request.state.project_id, GENERATE, model, parse(CreateBatchRequest, body),
                                  len(body))
    return Response(await service.operation(record), media_type=_OPERATION)


async def async_batch_embed_content(request: Request, service: BatchService, model_name: str,
                                    body: bytes) -> Response:
    model = service.embeddings.resolve(model_name, request.path_params["version"], "asyncBatchEmbedContent")
    record = await service.create(request.state.project_id, EMBED, model, parse(CreateBatchRequest, body), len(body))
    return Response(await service.operation(record), media_type=_OPERATION)


VERBS = {
    "batchGenerateContent": batch_generate_content,
    "asyncBatchEmbedContent": async_batch_embed_content,
}


async def list_batches(request: Request, service: BatchService, project_id: str) -> Response:
    params = request.query_params
    size = params.get("pageSize") or params.get("page_size")
    if size is not None and not size.lstrip("-").isdigit():
        raise ApiError.invalid(f"Invalid value at 'page_size' (TYPE_INT32), \"{size}\"")
    operations, token = await service.list(project_id, int(size) if size is not None else None,
                                           params.get("pageToken") or params.get("page_token"))
    if not operations:
        return JSONResponse({})
    body = b'{"operations":[' + b",".join(operations) + b"]"
    if token:
        body += b',"nextPageToken":"' + token.encode() + b'"'
    return Response(body + b"}", media_type=_OPERATION)


async def batch(request: Request, service: BatchService, project_id: str, name: str) -> Response:
    """`batches/{id}` (GET: the operation; DELETE) and `batches/{id}:cancel` | `:delete`."""
    batch_id, _, verb = name.partition(":")
    method = request.method
    if verb == "cancel" and method in ("POST", "GET"):
        await service.cancel(project_id, batch_id)
        return JSONResponse({})
    if (verb == "delete" and method in ("POST", "GET", "DELETE")) or (not verb and method == "DELETE"):
        await service.delete(project_id, batch_id)
        return JSONResponse({})
    if not verb and method == "GET":
        return Response(await service.operation(await service.get(project_id, batch_id)), media_type=_OPERATION)
    raise ApiError.not_found(f"The requested URL {request.url.path} was not found on this server.")
