"""GET /{version}/models and /{version}/models/{id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse
from .service import ModelService


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError.invalid(f"Invalid value at '{name}' (TYPE_INT32), \"{value}\"") from None


async def list_models(request: Request, service: ModelService) -> Response:
    page = service.list(_int_param(request, "pageSize") if "pageSize" in request.query_params
                        else _int_param(request, "page_size"),
                        request.query_params.get("pageToken") or request.query_params.get("page_token"))
    return JSONResponse(page)


async def get_model(request: Request, service: ModelService, name: str) -> Response:
    return JSONResponse(service.get(name, request.path_params["version"]))
