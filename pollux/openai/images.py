"""POST /v1beta/openai/images/generations: OpenAI's request and response on the image service."""

from __future__ import annotations

import base64
import re
import time

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..images.service import ASPECT_SIZES, ImageService
from ..wire import JSONResponse, payload_error
from .protocol import OpenAIModel


class ImagesRequest(OpenAIModel):
    model: str = "imagen-3.0-generate-002"
    prompt: str
    n: int = 1
    size: str | None = None
    response_format: str = "b64_json"


def lenient_json(body: bytes) -> bytes:
    """The docs' curl example ends its object with a trailing comma, which the real API accepts."""
    return re.sub(rb",(\s*[}\]])", rb"\1", body)


async def generations(request: Request, service: ImageService, body: bytes) -> Response:
    try:
        req = ImagesRequest.model_validate_json(body or b"{}")
    except ValidationError:
        try:
            req = ImagesRequest.model_validate_json(lenient_json(body))
        except ValidationError as exc:
            raise payload_error(exc) from None
    if req.response_format != "b64_json":
        raise ApiError.invalid("Only response_format \"b64_json\" is supported: Pollux hosts no image URLs.")
    model = service.resolve(req.model, request.path_params["version"])
    images = await service.generate(model, req.prompt, req.n, parse_size(req.size))
    return JSONResponse({"created": int(time.time()),
                         "data": [{"b64_json": base64.b64encode(png).decode()} for png in images]})


def parse_size(size: str | None) -> tuple[int, int]:
    """OpenAI's `size` ("1024x1024"); absent means 1024x1024."""
    if not size or size == "auto":
        return ASPECT_SIZES["1:1"]
    width, sep, height = size.lower().partition("x")
    if not sep or not (width.isascii() and width.isdigit() and height.isascii() and height.isdigit()) \
            or len(width) > 6 or len(height) > 6:  # the service bounds the size; int() of 5000 digits raises
        raise ApiError.invalid(f"Invalid size \"{size[:40]}\": use WIDTHxHEIGHT, e.g. 1024x1024.")
    return int(width), int(height)
