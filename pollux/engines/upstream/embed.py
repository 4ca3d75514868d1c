"""Embeddings from an OpenAI-compatible server's `/v1/embeddings` (vLLM, SGLang, llama.cpp with --embeddings,
Ollama), for embedContent, batchEmbedContents and OpenAI's embeddings alike."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import orjson

from ..errors import Failure
from .pool import Pool, Server, Unreachable, UpstreamOptions

T = TypeVar("T")


class UpstreamEmbedder:
    name = "openai"

    def __init__(self, options: UpstreamOptions, input_token_limit: int) -> None:
        self.options = options
        self.pool = Pool(options)
        self.input_token_limit = input_token_limit
        self.dimension: int | None = None  # known from the server's first vectors

    async def dimensions(self) -> int:
        """The size of the server's vectors: asked once, with a one-word text."""
        if self.dimension is None:
            self.dimension = int((await self.embed(["dimension"])).shape[1])
        return self.dimension

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's tokens by the server's tokenizer (vLLM's and llama.cpp's /tokenize); servers without one
        report them as the usage of embedding each text."""
        async def count(server: Server) -> list[int]:
            assert server.flavor is not None
            counts = []
            for text in texts:
                if server.flavor.tokenize == "vllm":
                    data = await self._post(server, f"{server.root}/tokenize", {"model": server.model, "prompt": text})
                    counts.append(int(data["count"]))
                elif server.flavor.tokenize == "llamacpp":
                    data = await self._post(server, f"{server.root}/tokenize", {"content": text, "add_special": True})
                    counts.append(len(data["tokens"]))
                else:
                    data = await self._post(server, f"{server.url}/embeddings",
                                            {"model": server.model, "input": [text]})
                    counts.append(int((data.get("usage") or {}).get("prompt_tokens") or 0))
            return counts

        return await self._on_a_server(count)

    async def embed(self, texts: list[str]) -> np.ndarray:
        async def embed(server: Server) -> np.ndarray:
            data = await self._post(server, f"{server.url}/embeddings", {"model": server.model, "input": texts,
                                                               "encoding_format": "base64"})
            rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
            if len(rows) != len(texts):
                raise Failure(f"The model server answered {len(rows)} embeddings for {len(texts)} texts.")
            return np.stack([_vector(row.get("embedding")) for row in rows])

        matrix = await self._on_a_server(embed)
        self.dimension = int(matrix.shape[1])
        return matrix

    async def _on_a_server(self, work: Callable[[Server], Awaitable[T]]) -> T:
        """`work` on the best server of the pool; on the next when one cannot be reached."""
        tried: set[Server] = set()
        while True:
            server = await self.pool.pick(tried)
            try:
                return await work(server)
            except Unreachable as exc:
                self.pool.take_out(server, f"cannot connect ({exc})")

    async def _post(self, server: Server, url: str, body: dict[str, Any]) -> Any:
        return await self.pool.post_json(server, url, orjson.dumps(body))

    async def close(self) -> None:
        await self.pool.close()


def _vector(value: Any) -> np.ndarray:
    """A float32 row from either encoding: a JSON list, or base64 of little-endian float32."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    raise Failure("The model server's embedding is neither a list nor base64.")
