"""POST /{version}/models/{model}:generateContent | :streamGenerateContent | :countTokens."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import ApiError
from ..wire import JSONResponse, dumps, parse, sse_event
from .protocol import CountTokensRequest, GenerateContentRequest
from .service import GenerateService

log = logging.getLogger("pollux.generate")


async def generate_content(request: Request, service: GenerateService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "generateContent")
    return JSONResponse(await service.generate(model, parse(GenerateContentRequest, body)))


async def count_tokens(request: Request, service: GenerateService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "countTokens")
    return JSONResponse(await service.count_tokens(model, parse(CountTokensRequest, body)))


async def stream_generate_content(request: Request, service: GenerateService, model_name: str,
                                  body: bytes) -> Response:
    """`?alt=sse`: one `data:` event per chunk (the SDKs). Otherwise a JSON array, streamed (the REST default)."""
    model = service.resolve(model_name, request.path_params["version"], "generateContent")
    chunks = await service.stream(model, parse(GenerateContentRequest, body))
    try:
        first = await anext(chunks, None)  # an error before any output is still a plain HTTP error
    except BaseException:
        await chunks.aclose()
        raise
    sse = request.query_params.get("alt") == "sse"
    return StreamingResponse(_frames(chunks, first, sse),
                             media_type="text/event-stream" if sse else "application/json; charset=UTF-8")


async def _frames(chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any] | None, sse: bool) -> AsyncIterator[bytes]:
    def frame(obj: dict[str, Any], index: int) -> bytes:
        if sse:
            return sse_event(obj)
        return (b"[" if index == 0 else b"\n,\r\n") + dumps(obj)

    count = 0
    try:
        if first is not None:
            yield frame(first, 0)
            count = 1
        async for chunk in chunks:
            yield frame(chunk, count)
            count += 1
    except ApiError as err:
        yield frame(err.body(), count)
        count += 1
    except BaseException as exc:  # noqa: BLE001 - the client's disconnect arrives as a cancellation
        if not isinstance(exc, Exception):
            log.info("stream cancelled after %d chunks: the client went away", count)
            raise
        log.exception("stream failed after %d chunks", count)
        yield frame(ApiError("INTERNAL", "An internal error has occurred. Please retry or report in "
                             "https://developers.generativeai.google/guide/troubleshooting").body(), count)
        count += 1
    finally:
        await chunks.aclose()
    if not sse:
        yield b"]" if count else b"[]"


VERBS = {
    "generateContent": generate_content,
    "streamGenerateContent": stream_generate_content,
    "countTokens": count_tokens,
}
