"""Embeddings with Gemini's semantics, for both wire formats (native embedContent/batchEmbedContents and OpenAI's
`embeddings`): model checks, batch size, task types and titles, input limits, and output dimensionality.

Gemini truncates a vector to `outputDimensionality` by dropping values from the end and normalises only the
full-size vector ("For other dimensions … you need to normalize"), so truncated vectors are returned as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ModelSpec, Settings, find_model, lookup_model
from ..errors import ApiError, from_engine, model_not_found
from ..engines.base import TokenCount
from ..engines.errors import EngineError
from ..generate.protocol import Content, CountTokensRequest
from .engines import Embedder, is_embedding

MAX_BATCH = 100


@dataclass(frozen=True)
class EmbedInput:
    """One text to embed. Error messages name its fields `{where}{text_field}` etc., in the caller's wire format
    (`BatchEmbedContentsRequest.requests[3].content`, or OpenAI's `input[3]` and `dimensions`)."""

    text: str
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None
    where: str = ""
    text_field: str = "content"
    dims_field: str = "output_dimensionality"


@dataclass(frozen=True)
class Embeddings:
    vectors: list[np.ndarray]  # float32, each truncated to its request's dimensionality
    tokens: list[int]          # input tokens of each text, as the engine counted them


def content_text(content: Content | None, where: str = "") -> str:
    """The text of `content`: its text parts, joined into one. Other parts are refused rather than dropped, so that
    nobody believes an image was embedded."""
    if content is None or not content.parts:
        raise ApiError.invalid(f"* {where}content: content must have at least one part with text.\n")
    texts: list[str] = []
    for i, part in enumerate(content.parts):
        kinds = part.data_fields()
        if kinds and kinds != ["text"]:
            raise ApiError.invalid(f"* {where}content.parts[{i}]: only text can be embedded by this model; "
                                   f"the part has {kinds[0]}.\n")
        if part.text is not None:
            texts.append(part.text)
    return "\n".join(texts)


class EmbedService:
    def __init__(self, settings: Settings, engines: dict[str, Embedder]) -> None:
        self.settings = settings
        self.engines = engines

    def resolve(self, name: str, version: str, verb: str) -> ModelSpec:
        """The embedding model a path or body names; else the real API's 404 for `verb`. batchEmbedContents (and
        OpenAI's embeddings) come with embedContent, as on the real API, whose model lists only the latter."""
        try:
            return find_model(self.settings, name, version, "embedContent")
        except ApiError:
            raise model_not_found(name.removeprefix("models/"), version, verb) from None

    def engine(self, model: ModelSpec) -> Embedder:
        engine = self.engines.get(model.engine_key)
        if engine is None:
            raise ApiError("UNAVAILABLE", f"The engine {model.engine!r} for {model.name} is not running.")
        return engine

    def counts_tokens(self, name: str) -> bool:
        """Whether countTokens on this model is for this service: an embedding model on an engine of its own
        (the emulator's count is the generation service's, and the same)."""
        model = lookup_model(self.settings, name.removeprefix("models/"))
        return model is not None and is_embedding(model) and model.engine != "emulator"

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()

    async def count_tokens(self, model: ModelSpec, req: CountTokensRequest) -> TokenCount:
        """The model's tokenizer's count of the texts (either form of the request)."""
        if req.contents and req.generate_content_request:
            raise ApiError.invalid("* CountTokensRequest: contents and generate_content_request are mutually "
                                   "exclusive.\n")
        contents = req.contents or (req.generate_content_request.contents if req.generate_content_request else None)
        texts = [content_text(c, f"CountTokensRequest.contents[{i}].") for i, c in enumerate(contents or [])]
        if not texts:
            return TokenCount({})
        engine = self.engine(model)
        try:
            return TokenCount({"TEXT": sum(await engine.count_tokens(texts))})
        except EngineError as exc:
            raise from_engine(exc) from None

    async def embed(self, model: ModelSpec, inputs: list[EmbedInput], field: str) -> Embeddings:
        """Vectors for `inputs`, in order, after Gemini's checks (`field` names the list in messages)."""
        if not inputs:
            raise ApiError.invalid(f"* {field}: at least one text to embed is required.\n")
        if len(inputs) > MAX_BATCH:
            raise ApiError.invalid(f"* {field}: at most {MAX_BATCH} requests can be in one batch\n")
        engine = self.engine(model)
        texts = []
        try:
            dimension = await engine.dimensions()
            for item in inputs:
                self._check(item, dimension)
                texts.append(f"{item.title}\n{item.text}" if item.title else item.text)
            tokens = await engine.count_tokens(texts)
        except EngineError as exc:
            raise from_engine(exc) from None
        for item, count in zip(inputs, tokens):
            if count > model.input_token_limit:
                raise ApiError.invalid(f"* {item.where}{item.text_field}: The input token count ({count}) exceeds "
                                       f"the maximum number of tokens allowed ({model.input_token_limit}).\n")
        try:
            matrix = await engine.embed(texts)
        except EngineError as exc:  # the engine's words, in Gemini's error
            raise from_engine(exc) from None
        vectors = [row[:item.output_dimensionality] if item.output_dimensionality else row
                   for row, item in zip(matrix, inputs)]
        return Embeddings(vectors, tokens)

    @staticmethod
    def _check(item: EmbedInput, dimension: int) -> None:
        where = item.where
        if not item.text.strip():
            raise ApiError.invalid(f"* {where}{item.text_field}: the text to embed is empty.\n")
        if item.title and item.task_type != "RETRIEVAL_DOCUMENT":
            raise ApiError.invalid(f"* {where}title: a title is only allowed with task type RETRIEVAL_DOCUMENT "
                                   f"(the task type is {item.task_type or 'not set'}).\n")
        dims = item.output_dimensionality
        if dims is not None and not 1 <= dims <= dimension:
            raise ApiError.invalid(f"* {where}{item.dims_field}: must be between 1 and {dimension} "
                                   f"(the model's dimension), got {dims}.\n")
