"""Errors on the OpenAI-compatible surface: the real compat layer wraps Google's error in a JSON array, with the same
HTTP status, which the openai SDKs turn into their `APIStatusError` subclasses by status."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse


def error_response(err: ApiError) -> Response:
    return JSONResponse([err.body()], status_code=err.code)


def openai_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Route decorator: any `ApiError` (auth included) leaves in the array shape."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err)

    return wrapper
