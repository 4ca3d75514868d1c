"""POST /{version}/models/{imagen}:predict: Imagen's native request and response shape."""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse, parse
from .service import ASPECT_SIZES, ImageService


class _Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="allow")  # personGeneration, safetySetting, ...: accepted, no effect here
    sampleCount: int = 4  # noqa: N815 - Imagen's wire name
    aspectRatio: str = "1:1"  # noqa: N815


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[_Instance]
    parameters: _Parameters = _Parameters()


async def predict(request: Request, service: ImageService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"])
    req = parse(PredictRequest, body)
    if len(req.instances) != 1:
        raise ApiError.invalid("Exactly one instance (one prompt) is supported per request.")
    size = ASPECT_SIZES.get(req.parameters.aspectRatio)
    if size is None:
        raise ApiError.invalid(f"Unsupported aspect ratio \"{req.parameters.aspectRatio}\": use one of "
                               f"{', '.join(ASPECT_SIZES)}.")
    images = await service.generate(model, req.instances[0].prompt, req.parameters.sampleCount, size)
    return JSONResponse({"predictions": [{"bytesBase64Encoded": base64.b64encode(png).decode(), "mimeType": "image/png"}
                                         for png in images]})
