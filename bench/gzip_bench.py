"""What gzip costs on Pollux's JSON answers: MB/s and ratio per zlib level, on bodies built like real ones.

    .venv/bin/python bench/gzip_bench.py

Reference in the same run: orjson serialising the same body (the work a response does anyway). Bodies: a
models.list page (the catalogue), 100 embeddings of 3072 floats (a batchEmbedContents answer), and a 1 MB inline PNG
in base64 (an image answer: already compressed, the worst case)."""

from __future__ import annotations

import base64
import os
import random
import time
import zlib

import orjson

from pollux.compression import gzip_bytes
from pollux.config import Settings
from pollux.models.protocol import model_json


def bodies() -> dict[str, object]:
    rng = random.Random(0)
    catalogue = {"models": [model_json(m) for m in Settings(data_dir=".").models.values()]}
    embeddings = {"embeddings": [{"values": [rng.uniform(-0.1, 0.1) for _ in range(3072)]} for _ in range(100)]}
    image = {"candidates": [{"content": {"parts": [{"inlineData": {
        "mimeType": "image/png", "data": base64.b64encode(os.urandom(1 << 20)).decode()}}]}}]}
    return {"models.list": catalogue, "100 embeddings": embeddings, "1 MB image": image}


def rate(fn, size: int) -> float:
    """MB/s of `fn` over at least half a second."""
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 0.5:
        fn()
        runs += 1
    return size * runs / elapsed / 1e6


def main() -> None:
    print(f"{'body':<16}{'bytes':>10}{'orjson MB/s':>13}" + "".join(f"{f'L{lv} MB/s':>11}{f'L{lv} ratio':>10}"
                                                               for lv in (1, 4, 6, 9)))
    for name, value in bodies().items():
        raw = orjson.dumps(value)
        row = f"{name:<16}{len(raw):>10}{rate(lambda: orjson.dumps(value), len(raw)):>13.0f}"
        for level in (1, 4, 6, 9):
            packed = gzip_bytes(raw, level)
            assert zlib.decompress(packed, 16 + zlib.MAX_WBITS) == raw
            row += f"{rate(lambda: gzip_bytes(raw, level), len(raw)):>11.0f}{len(raw) / len(packed):>10.2f}"
        print(row)


if __name__ == "__main__":
    main()
