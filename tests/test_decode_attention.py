"""The shared batch's decode steps attending request by request (`pollux/engines/decode_attention.py`), driven through
the engine on tiny models built offline: the same tokens and log probabilities as the library's attention over the
whole step's keys, for requests of different lengths decoded together (so rows are padded), on a model with grouped
keys (Llama, 4 heads on 2) and one with its own head size and query/key norms (Qwen3); models with sliding-window
layers keep the library's path.
"""

from __future__ import annotations

import asyncio

import pytest
import tiny_models
import torch
from test_continuous_batching import ask, collect, held, run, same, vision_engine

from pollux.engines import decode_attention
from pollux.engines.base import Finish
from pollux.engines.hf import HFOptions, TransformersEngine


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    root = tiny_models.models_root()
    return {"llama": str(tiny_models.build_llama(root)), "qwen3": str(tiny_models.build_qwen3(root)),
            "vision": str(tiny_models.build_gemma3_mm(root))}


REQUESTS = [ask("Hi", temperature=0, tokens=20, logprobs=3),
            ask("A much longer question than the first one, with many more words in it " * 3, seed=7, tokens=24),
            ask("Tell me a story", seed=2, top_k=40, tokens=12, logprobs=2),
            ask("Hello there", temperature=0, tokens=30)]


def answers(models: dict[str, str], name: str, attention: str, monkeypatch) -> tuple[list, int]:
    """The requests decoded together (their steps shared), and how many decode steps took the per-request path."""
    steps = 0
    rows = decode_attention.Rows

    class Counted(rows):
        def __init__(self, *args) -> None:
            nonlocal steps
            steps += 1
            super().__init__(*args)

    monkeypatch.setattr(decode_attention, "Rows", Counted)
    engine = TransformersEngine(HFOptions(source=models[name], threads=1, decode_attention=attention))

    async def together():
        async with held(engine, len(REQUESTS)):
            tasks = [asyncio.create_task(collect(engine, r)) for r in REQUESTS]
        return await asyncio.gather(*tasks)

    return run(engine, together), steps


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_per_request_attention_answers_as_the_librarys(models, name, monkeypatch):
    ours, steps = answers(models, name, "per-request", monkeypatch)
    theirs, library_steps = answers(models, name, "library", monkeypatch)
    assert steps > 0 and library_steps == 0, (steps, library_steps)
    for request, a, b in zip(REQUESTS, ours, theirs, strict=True):
        assert isinstance(a[-1], Finish), a
        assert same(a, b), (request.sampling, a, b)


def test_rows_read_each_requests_keys_padded_to_the_longest():
    # Three requests with 3, 1 and 2 keys, read from cache slots 10-12, 40 and 20-21.
    read_index = torch.tensor([10, 11, 12, 40, 20, 21])
    rows = decode_attention.Rows(read_index, torch.tensor([0, 3, 4, 6], dtype=torch.int32))
    assert (rows.requests, rows.width) == (3, 3)
    assert rows.index.tolist() == [10, 11, 12, 40, 40, 40, 20, 21, 20]
    assert rows.mask.shape == (3, 1, 1, 3)
    assert rows.mask[:, 0, 0].tolist() == [[True, True, True], [True, False, False], [True, True, False]]


def test_models_with_sliding_window_layers_keep_the_librarys_attention(models):
    engine = vision_engine(models, "vision")  # Gemma 3: sliding-window layers between full ones
    try:
        cache = engine._batch._manager.batch_processor.cache
        assert not decode_attention.supported(engine.model, cache)
        assert "update" not in vars(cache)  # not wrapped
    finally:
        asyncio.run(engine.close())
    engine = TransformersEngine(HFOptions(source=models["llama"], threads=1))
    try:
        cache = engine._batch._manager.batch_processor.cache
        assert decode_attention.supported(engine.model, cache) and "update" in vars(cache)
    finally:
        asyncio.run(engine.close())
