"""POST /{version}/models/{model}:generateContent | :streamGenerateContent | :countTokens."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..disconnect import ClientGone, StreamingResponse, until_disconnected
from ..errors import ApiError
from ..wire import JSONResponse, dumps, parse, sse_event
from .protocol import CountTokensRequest, GenerateContentRequest, count_tokens_json, reply_json
from .results import Reply
from .service import GenerateService

log = logging.getLogger("pollux.generate")


async def generate_content(request: Request, service: GenerateService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "generateContent")
    try:
        reply = await until_disconnected(request, service.generate(model, parse(GenerateContentRequest, body),
                                                                   request.state.project_id))
    except ClientGone:
        return Response(status_code=499)  # never read: the connection is closed
    return JSONResponse(reply_json(reply))


async def count_tokens(request: Request, service: GenerateService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "countTokens")
    count, cached = await service.count_tokens(model, parse(CountTokensRequest, body), request.state.project_id)
    return JSONResponse(count_tokens_json(count, cached))


async def stream_generate_content(request: Request, service: GenerateService, model_name: str,
                                  body: bytes) -> Response:
    """`?alt=sse`: one `data:` event per chunk (the SDKs). Otherwise a JSON array, streamed (the REST default)."""
    model = service.resolve(model_name, request.path_params["version"], "generateContent")
    chunks = await service.stream(model, parse(GenerateContentRequest, body), request.state.project_id)
    try:
        first = await anext(chunks, None)  # an error before any output is still a plain HTTP error
    except BaseException:
        await chunks.aclose()
        raise
    sse = request.query_params.get("alt") == "sse"
    return StreamingResponse(_frames(chunks, first, sse),
                             media_type="text/event-stream" if sse else "application/json; charset=UTF-8")


async def _frames(replies: AsyncIterator[Reply], first: Reply | None, sse: bool) -> AsyncIterator[bytes]:
    count = 0

    def frame(obj: dict[str, Any]) -> bytes:
        nonlocal count
        count += 1
        if sse:
            return sse_event(obj)
        return (b"[" if count == 1 else b"\n,\r\n") + dumps(obj)

    try:
        if first is not None:
            yield frame(reply_json(first))
        async for reply in replies:
            yield frame(reply_json(reply))
    except ApiError as err:
        yield frame(err.body())
    except Exception:
        log.exception("stream failed after %d chunks", count)
        yield frame(ApiError("INTERNAL", "An internal error has occurred. Please retry or report in "
                             "https://developers.generativeai.google/guide/troubleshooting").body())
    except BaseException:  # the client's disconnect arrives as a cancellation
        log.info("stream cancelled after %d chunks: the client went away", count)
        raise
    finally:
        await replies.aclose()
    if not sse:
        yield b"]" if count else b"[]"


VERBS = {
    "generateContent": generate_content,
    "streamGenerateContent": stream_generate_content,
    "countTokens": count_tokens,
}
