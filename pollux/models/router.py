"""GET /{version}/models and /{version}/models/{id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..wire import JSONResponse, page_params
from .service import ModelService


async def list_models(request: Request, service: ModelService) -> Response:
    return JSONResponse(service.list(*page_params(request)))


async def get_model(request: Request, service: ModelService, name: str) -> Response:
    return JSONResponse(service.get(name, request.path_params["version"]))
