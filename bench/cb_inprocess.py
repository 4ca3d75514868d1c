#!/usr/bin/env python
"""The continuous-batching engine in-process against transformers' own manager alone, in one run (a diagnostic).

    taskset -c 0 .venv/bin/python bench/cb_inprocess.py            # 6 alternating rounds of 16 x 64 tokens
    taskset -c 0 .venv/bin/python bench/cb_inprocess.py --requests 2  # small batches: the step's fixed cost

Same model (`build_small_llama` of tests/tiny_models.py), same 16 prompts (the chat template's rendering of
"Request <i>: tell me a story about the sea."), greedy, 64 tokens each, one torch thread. `pollux`: 16 concurrent
`TransformersEngine.generate` calls, every event consumed on the asyncio loop (what the service reads), each token
chosen by the request's own `decoding.Sequence` inside the shared batch. `library`: the same prompts through a
`ContinuousBatchingManager` on the same model with no logits processor (its own argmax), results read from its
queue. The difference is what Pollux's per-sequence choice and event delivery cost the decode loop, without HTTP.
Tokens per CPU-second (the process's CPU time) moves less than tokens per second on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tiny_models  # noqa: E402
import torch  # noqa: E402
from transformers import GenerationConfig  # noqa: E402
from transformers.generation.configuration_utils import ContinuousBatchingConfig  # noqa: E402

from pollux.engines.base import GenerateRequest, Sampling, Text, Turn  # noqa: E402
from pollux.engines.hf import HFOptions, TransformersEngine  # noqa: E402

TOKENS = 64
REQUESTS = 16


def request(i: int) -> GenerateRequest:
    return GenerateRequest(model="m", turns=[Turn("user", [Text(f"Request {i}: tell me a story about the sea.")])],
                           sampling=Sampling(temperature=0, max_output_tokens=TOKENS))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=REQUESTS, help="requests a round (all at once)")
    args = ap.parse_args()
    n = args.requests
    source = tiny_models.build_small_llama(tiny_models.models_root())
    engine = TransformersEngine(HFOptions(source=str(source), threads=1))
    manager = engine.model.init_continuous_batching(
        generation_config=GenerationConfig(do_sample=False, eos_token_id=[-5], max_new_tokens=TOKENS),
        continuous_batching_config=ContinuousBatchingConfig(
            num_blocks=64, max_batch_tokens=512, use_async_batching=False, use_cuda_graph=False,
            allow_block_sharing=False))
    with torch.inference_mode():
        manager.start()
    prompts = [engine._job(request(i), lambda event: None).prompt_ids for i in range(n)]

    async def one(i: int) -> None:
        async for _ in engine.generate(request(i)):
            pass

    async def pollux() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n * TOKENS / (time.perf_counter() - start), n * TOKENS / (time.process_time() - cpu)

    def library(round_: int) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for i, ids in enumerate(prompts):
            manager.add_request(ids, request_id=f"r{round_}-{i}", max_new_tokens=TOKENS)
        finished = 0
        while finished < n:
            if manager.get_result(timeout=120).is_finished():
                finished += 1
        return n * TOKENS / (time.perf_counter() - start), n * TOKENS / (time.process_time() - cpu)

    results: dict[str, list[tuple[float, float]]] = {"pollux": [], "library": []}
    try:
        await pollux()  # warm-up
        for round_ in range(args.rounds):
            results["pollux"].append(await pollux())
            results["library"].append(library(round_))
    finally:
        await engine.close()
        manager.stop(block=True)
    medians = {}
    for name, values in results.items():
        wall, cpu = (statistics.median(v[k] for v in values) for k in (0, 1))
        medians[name] = wall, cpu
        print(f"{name:8} {wall:5.0f} tok/s, {cpu:5.0f} tok per CPU-second (medians; wall rounds: "
              f"{[round(v[0]) for v in values]})")
    print(f"pollux / library: {medians['pollux'][0] / medians['library'][0]:.2f} (wall), "
          f"{medians['pollux'][1] / medians['library'][1]:.2f} (CPU)")


if __name__ == "__main__":
    asyncio.run(main())
