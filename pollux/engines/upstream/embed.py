"""Embeddings from an OpenAI-compatible server's `/v1/embeddings` (vLLM, SGLang, llama.cpp with --embeddings,
Ollama), for embedContent, batchEmbedContents and OpenAI's embeddings alike."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import numpy as np
import orjson

from ..errors import Failure, Unavailable
from .pool import Pool, Server, Unreachable, UpstreamOptions, http_error

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
        async with aclosing(self._servers()) as servers:
            async for server in servers:
                assert server.flavor is not None
                if server.flavor.tokenize == "vllm":
                    return [int((await self._post(f"{server.root}/tokenize",
                                                  {"model": server.model, "prompt": t}, server))["count"])
                            for t in texts]
                if server.flavor.tokenize == "llamacpp":
                    return [len((await self._post(f"{server.root}/tokenize",
                                                  {"content": t, "add_special": True}, server))["tokens"])
                            for t in texts]
                counts = []
                for text in texts:
                    data = await self._post(f"{server.url}/embeddings", {"model": server.model, "input": [text]},
                                            server)
                    counts.append(int((data.get("usage") or {}).get("prompt_tokens") or 0))
                return counts
        raise Unavailable("No model server is available.")

    async def embed(self, texts: list[str]) -> np.ndarray:
        async with aclosing(self._servers()) as servers:
            async for server in servers:
                data = await self._post(f"{server.url}/embeddings", {"model": server.model, "input": texts,
                                                                      "encoding_format": "base64"}, server)
                rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
                if len(rows) != len(texts):
                    raise Failure(f"The model server answered {len(rows)} embeddings for {len(texts)} texts.")
                matrix = np.stack([_vector(row.get("embedding")) for row in rows])
                self.dimension = int(matrix.shape[1])
                return matrix
        raise Unavailable("No model server is available.")

    async def _servers(self) -> AsyncIterator[Server]:
        async with aclosing(self.pool.attempts()) as attempts:
            async for server in attempts:
                yield server

    async def _post(self, url: str, body: dict[str, Any], server: Server) -> Any:
        try:
            async with self.pool.send(server, url, orjson.dumps(body)) as response:
                raw = await response.read()
        except Unreachable as exc:
            self.pool.take_out(server, f"cannot connect ({exc})")
            raise Unavailable(f"The model server is unavailable ({server.url}).",
                              retry_after=self.options.retry_after) from None
        if response.status != 200:
            raise http_error(response, raw, server)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Failure("The model server's answer is not JSON.") from None

    async def close(self) -> None:
        await self.pool.close()


def _vector(value: Any) -> np.ndarray:
    """A float32 row from either encoding: a JSON list, or base64 of little-endian float32."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    raise Failure("The model server's embedding is neither a list nor base64.")
