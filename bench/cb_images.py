#!/usr/bin/env python
"""Requests with images inside the shared batch against beside it (issue 14), in-process, in one run.

    taskset -c 0 .venv/bin/python bench/cb_images.py            # 3 alternating rounds per placement

The tiny Gemma 3 of tests/tiny_models.py (`build_gemma3_mm`: 2-layer SigLIP tower, 16 soft tokens per 64x64 image,
2-layer text model), one torch thread. Each round sends at once 8 requests with one picture each ("What is this?",
a different colour each) and 8 text requests, greedy, 32 tokens each, every event consumed on the asyncio loop.
`inside`: the engine's default (images encoded, then decoded in the shared batch beside the text requests);
`beside`: `media_in_batch = false` (each image request through `model.generate` in a media thread, up to
`media_workers` = 4 at once, their forward passes taking turns between the batch's steps). Printed per placement:
tokens/s over the round and the image requests' time to first token (median, max).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tiny_models  # noqa: E402
from PIL import Image  # noqa: E402

from pollux.engines.base import GenerateRequest, Media, Sampling, Text, TextDelta, Turn  # noqa: E402
from pollux.engines.hf import HFOptions, TransformersEngine  # noqa: E402
from pollux.media import inspect_bytes  # noqa: E402

TOKENS, IMAGES, TEXTS = 32, 8, 8


def picture(i: int) -> Media:
    data = io.BytesIO()
    Image.new("RGB", (64, 48), (30 * i % 256, 200 - 20 * i, 90)).save(data, format="PNG")
    return Media("image/png", "IMAGE", data=data.getvalue(), info=inspect_bytes(data.getvalue(), "image/png"))


def requests() -> list[tuple[bool, GenerateRequest]]:
    sampling = Sampling(temperature=0, max_output_tokens=TOKENS)
    images = [(True, GenerateRequest(model="m", turns=[Turn("user", [picture(i), Text("What is this?")])],
                                     sampling=sampling)) for i in range(IMAGES)]
    texts = [(False, GenerateRequest(model="m", turns=[Turn("user", [Text(f"Tell me about {i}")])],
                                     sampling=sampling)) for i in range(TEXTS)]
    return [x for pair in zip(images, texts, strict=True) for x in pair]


async def one_round(engine: TransformersEngine) -> tuple[float, list[float]]:
    start = time.perf_counter()
    firsts: list[float] = []
    tokens = 0

    async def one(image: bool, request: GenerateRequest) -> None:
        nonlocal tokens
        first = True
        async for event in engine.generate(request):
            if isinstance(event, TextDelta):
                tokens += event.tokens
                if first and image:
                    firsts.append(time.perf_counter() - start)
                first = False

    await asyncio.gather(*(one(image, r) for image, r in requests()))
    return tokens / (time.perf_counter() - start), firsts


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    source = str(tiny_models.build_gemma3_mm(tiny_models.models_root()))
    engines = {"inside": TransformersEngine(HFOptions(source=source, threads=1)),
               "beside": TransformersEngine(HFOptions(source=source, threads=1, media_in_batch=False))}
    results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in engines}
    try:
        for engine in engines.values():
            await one_round(engine)  # warm-up
        for _ in range(args.rounds):
            for name, engine in engines.items():
                results[name].append(await one_round(engine))
    finally:
        for engine in engines.values():
            await engine.close()
    for name, rounds in results.items():
        rates = [rate for rate, _ in rounds]
        firsts = [f * 1000 for _, fs in rounds for f in fs]
        print(f"{name:7} {statistics.median(rates):6.0f} tok/s (rounds {[round(r) for r in rates]}); image requests' "
              f"TTFT p50 {statistics.median(firsts):5.0f} ms, max {max(firsts):5.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
