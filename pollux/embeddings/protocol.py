"""Wire types of embedContent and batchEmbedContents, and of the OpenAI-compatible `embeddings` route."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..generate.protocol import Content
from ..wire import ProtoModel, enum

TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
TaskType = enum("TaskType", *TASK_TYPES)


class EmbedContentRequest(ProtoModel):
    model: str | None = None
    content: Content | None = None
    task_type: TaskType | None = None
    title: str | None = None
    output_dimensionality: int | None = None


class BatchEmbedContentsRequest(ProtoModel):
    requests: list[EmbedContentRequest] | None = None


class OpenAIEmbeddingsRequest(BaseModel):
    """OpenAI's body is snake_case only; fields it does not know (`user`, client extras) are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    input: Any = None  # a string, a list of strings (or token arrays, refused with a clear message)
    model: str | None = None
    dimensions: int | None = None
    encoding_format: str | None = None


def embedding_json(vector: np.ndarray) -> dict[str, Any]:
    return {"values": np.ascontiguousarray(vector)}  # orjson writes only C-contiguous arrays
