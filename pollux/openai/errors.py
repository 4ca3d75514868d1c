"""Errors on the OpenAI-compatible surface: the real compat layer wraps Google's error in a JSON array, with the same
HTTP status, which the openai SDKs turn into their `APIStatusError` subclasses by status. The app's exception
handlers use this for every path of that surface."""

from __future__ import annotations

from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse


def error_response(err: ApiError) -> Response:
    return JSONResponse([err.body()], status_code=err.code)
