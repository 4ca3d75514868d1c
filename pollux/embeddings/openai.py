"""POST /{version}/openai/embeddings: OpenAI's embeddings API on the same service as the native routes (errors
leave in the compat layer's array shape through the app's exception handlers)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..wire import JSONResponse, parse
from .protocol import OpenAIEmbeddingsRequest
from .service import EmbedInput, EmbedService


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if value is None:
        raise ApiError.invalid("* input: input is required: a string or a list of strings.\n")
    # Token arrays are ids of OpenAI's tokenizer (tiktoken), which this model does not read.
    raise ApiError.invalid("* input: token arrays are not supported; send the text as a string or a list of "
                           "strings (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False).\n")


def _encode(vector: np.ndarray, encoding: str) -> np.ndarray | str:
    if encoding == "base64":  # little-endian float32, as the openai SDKs decode it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return np.ascontiguousarray(vector)  # orjson writes only C-contiguous arrays


async def embeddings(request: Request, service: EmbedService, body: bytes) -> Response:
    return JSONResponse(await embed(service, parse(OpenAIEmbeddingsRequest, body), request.path_params["version"]))


async def embed(service: EmbedService, req: OpenAIEmbeddingsRequest, version: str) -> dict[str, Any]:
    """OpenAI's embeddings answer: the route's, and a line of an OpenAI batch."""
    if not req.model:
        raise ApiError.invalid("* model: model is required.\n")
    encoding = req.encoding_format or "float"
    if encoding not in ("float", "base64"):
        raise ApiError.invalid(f"* encoding_format: must be \"float\" or \"base64\", got {encoding!r}.\n")
    model = service.resolve(req.model, version, "embedContent")
    texts = _texts(req.input)
    inputs = [EmbedInput(text, output_dimensionality=req.dimensions,
                         text_field=f"input[{i}]" if len(texts) > 1 else "input", dims_field="dimensions")
              for i, text in enumerate(texts)]
    result = await service.embed(model, inputs, "input")
    tokens = sum(result.tokens)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                 for i, v in enumerate(result.vectors)],
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
