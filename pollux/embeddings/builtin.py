"""The built-in embedder (engine `emulator`): deterministic vectors in which texts that share words are close.

A text's vector is the sum of its words' pseudo-random vectors (the hashing trick: each lower-cased word seeds a
generator through a stable hash, so the same word gives the same vector in every process), weighted by
1 + log(count) and with common function words damped, plus a small component seeded by the whole text, so that
different texts never coincide. Random vectors in 3072 dimensions are nearly orthogonal, so the cosine of two texts
approximates the weighted share of words they have in common. The result is normalised, as Gemini's full-size
vectors are.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
from collections import Counter
from typing import Any

import numpy as np

from ..engines.emulator import count_text

DEFAULT_DIMENSION = 3072
_WORD = re.compile(r"\w+")
_TEXT_WEIGHT = 0.15   # the text's own component, against a unit of word weight
_STOP_WEIGHT = 0.25   # "the", "of", ...: shared by unrelated texts, so they should not bring them together
_STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me him her us them my your his our their what which who whom how why when "
    "where do does did not no so than then there here can could will would shall should may might must".split())
_INLINE_CHARS = 20_000  # larger requests are embedded off the event loop


def _random_unit(token: str, dimension: int) -> np.ndarray:
    """A unit vector that depends only on `token` (blake2b, not `hash()`, which changes from process to process)."""
    seed = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(dimension, dtype=np.float32)
    vector /= np.linalg.norm(vector)
    return vector


@functools.lru_cache(maxsize=4096)  # 12 KB a word at 3072 dimensions: at most ~50 MB
def _word_unit(word: str, dimension: int) -> np.ndarray:
    vector = _random_unit(word, dimension)
    vector.flags.writeable = False  # shared through the cache
    return vector


class BuiltinEmbedder:
    name = "emulator"

    def __init__(self, dimension: int = DEFAULT_DIMENSION, input_token_limit: int = 2048) -> None:
        self.dimension = dimension
        self.input_token_limit = input_token_limit

    @classmethod
    def from_options(cls, options: dict[str, Any], input_token_limit: int) -> BuiltinEmbedder:
        unknown = set(options) - {"dimension"}
        if unknown:
            raise ValueError(f"unknown emulator embedding option(s) {sorted(unknown)} (known: dimension)")
        dimension = options.get("dimension", DEFAULT_DIMENSION)
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
            raise ValueError("the emulator embedding option dimension must be a positive whole number")
        return cls(dimension, input_token_limit)

    async def dimensions(self) -> int:
        return self.dimension

    async def count_tokens(self, texts: list[str]) -> list[int]:
        if sum(len(t) for t in texts) > _INLINE_CHARS:  # long texts take seconds: not on the event loop
            return await asyncio.to_thread(self.count_now, texts)
        return self.count_now(texts)

    def count_now(self, texts: list[str]) -> list[int]:
        # The emulator's tokenizer, so that countTokens and the input limit agree with generation's.
        return [count_text(text) for text in texts]

    async def embed(self, texts: list[str]) -> np.ndarray:
        if sum(len(t) for t in texts) > _INLINE_CHARS:
            return await asyncio.to_thread(self.embed_now, texts)
        return self.embed_now(texts)

    def embed_now(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._one(text)
        return out

    def _one(self, text: str) -> np.ndarray:
        words = Counter(w.lower() for w in _WORD.findall(text))
        vector = np.zeros(self.dimension, dtype=np.float64)
        for word, count in words.items():
            weight = (1.0 + math.log(count)) * (_STOP_WEIGHT if word in _STOP_WORDS else 1.0)
            vector += weight * _word_unit(word, self.dimension)
        words_norm = float(np.linalg.norm(vector)) or 1.0
        # The text's own component is seeded by its normalised form, apart from the words' ("\0" never is a word);
        # it is not cached, as texts rarely repeat.
        own = _random_unit("\0" + " ".join(text.lower().split()), self.dimension)
        vector += _TEXT_WEIGHT * words_norm * own
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    async def close(self) -> None:
        pass
