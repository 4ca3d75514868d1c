"""The embedding engine interface, and which engine serves each embedding model.

A model is an embedding model when its methods include `embedContent` (gemini-embedding-001, gemini-embedding-2, any
id configured with one of them as `base`, and unlisted ids of their family such as gemini-embedding-3, which
`config.lookup_model` serves as gemini-embedding-2 on its engine). Its `engine` picks the implementation: `emulator`
(the default) is the built-in deterministic embedder, `transformers` a sentence-transformers or transformers encoder
(`hf.py`); `engines/registry.py` holds the table of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from ..config import ModelSpec, Settings
from ..engines import registry


class Embedder(Protocol):
    name: str
    input_token_limit: int  # the longest text it reads, in its own tokens

    async def dimensions(self) -> int:
        """The size of the vectors `embed` returns (an upstream server is asked once)."""
        ...

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's tokens as `embed` would read them."""
        ...

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row of `dimension` values per text, in order; normalised if the model's vectors are."""
        ...

    async def close(self) -> None: ...


def is_embedding(model: ModelSpec) -> bool:
    return "embedContent" in model.methods


def build_embedders(settings: Settings) -> dict[str, Embedder]:
    """One engine per distinct (engine, options) of the embedding models, keyed like `ModelSpec.engine_key`, each
    from the engine registry. The served input limit of a model becomes its engine's."""
    embedders: dict[str, Embedder] = {}
    for model in list(settings.models.values()):
        if not is_embedding(model):
            continue
        if model.engine_key not in embedders:
            embedders[model.engine_key] = registry.build(model, "embedding", settings)
        if model.engine != "emulator":  # the built-in one takes the catalogue's limit
            settings.models[model.id] = replace(model, input_token_limit=embedders[model.engine_key].input_token_limit)
    return embedders
