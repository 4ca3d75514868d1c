"""POST /{version}/models/{model}:embedContent | :batchEmbedContents (and :countTokens for an embedding model on an
engine of its own). The SDKs always send batchEmbedContents, even for one text; the REST docs use embedContent."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..config import ModelSpec
from ..errors import ApiError
from ..generate.protocol import CountTokensRequest, count_tokens_json
from ..wire import JSONResponse, parse
from .protocol import BatchEmbedContentsRequest, EmbedContentRequest, embedding_json
from .service import EmbedInput, EmbedService, content_text


def _input(req: EmbedContentRequest, model: ModelSpec, where: str) -> EmbedInput:
    if req.model and req.model.removeprefix("models/") != model.id:
        raise ApiError.invalid(f"* {where}model: the model of every request must be the one in the URL "
                               f"({model.name}), got {req.model!r}.\n")
    return EmbedInput(content_text(req.content, where), req.task_type, req.title, req.output_dimensionality, where)


async def embed_content(request: Request, service: EmbedService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "embedContent")
    req = parse(EmbedContentRequest, body)
    result = await service.embed(model, [_input(req, model, "EmbedContentRequest.")], "EmbedContentRequest.content")
    return JSONResponse({"embedding": embedding_json(result.vectors[0])})


async def batch_embed_contents(request: Request, service: EmbedService, model_name: str, body: bytes) -> Response:
    model = service.resolve(model_name, request.path_params["version"], "batchEmbedContents")
    req = parse(BatchEmbedContentsRequest, body)
    inputs = [_input(r, model, f"BatchEmbedContentsRequest.requests[{i}].") for i, r in enumerate(req.requests or [])]
    result = await service.embed(model, inputs, "BatchEmbedContentsRequest.requests")
    return JSONResponse({"embeddings": [embedding_json(v) for v in result.vectors]})


async def count_tokens(request: Request, service: EmbedService, model_name: str, body: bytes) -> Response:
    """countTokens on an embedding model served by a model of its own: its tokenizer's count of the text."""
    model = service.resolve(model_name, request.path_params["version"], "countTokens")
    return JSONResponse(count_tokens_json(await service.count_tokens(model, parse(CountTokensRequest, body))))


VERBS = {
    "embedContent": embed_content,
    "batchEmbedContents": batch_embed_contents,
}
