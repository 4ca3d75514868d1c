"""The transformers engine's shared batch (continuous batching), driven through the engine on tiny models built
offline: requests decoded in the same steps give exactly the answers they give alone, whatever runs beside them;
the KV cache's budget holds requests back instead of failing them; a cancelled request leaves the batch and frees
its blocks; a failing sequence fails alone.

Which requests share a step is made certain, not left to timing: while the batch's loop is paused (`held`), the
requests are submitted, so that its next step takes them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import jsonschema
import pytest
import tiny_models
from conftest import eventually

from pollux.engines.base import Finish, GenerateRequest, ResponseFormat, Sampling, Text, TextDelta, Thinking, Turn
from pollux.engines.errors import EngineError, Failure, InvalidInput
from pollux.engines.hf import HFOptions, TransformersEngine

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"}},
          "required": ["name", "n"]}


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    root = tiny_models.models_root()
    return {"random": str(tiny_models.build_llama(root)), "thinking": str(tiny_models.build_qwen3_thinking(root)),
            "vision": str(tiny_models.build_gemma3_mm(root)), "qwen2-vl": str(tiny_models.build_qwen2_vl(root)),
            "qwen2.5-vl": str(tiny_models.build_qwen2_5_vl(root)), "llava": str(tiny_models.build_llava(root))}


def vision_engine(models: dict[str, str], name: str, **options: Any) -> TransformersEngine:
    """The engine on a vision model: Gemma 3 loads with its processor; Qwen2-VL's and Qwen2.5-VL's processors need
    torchvision (no wheel for this CPU torch), so their parts are put together by `tiny_models.Qwen2VLProcessorDouble`."""
    if not name.startswith("qwen2"):
        return TransformersEngine(HFOptions(source=models[name], threads=1, **options))
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(models[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(models[name])
    tokenizer.padding_side = "left"
    return TransformersEngine(HFOptions(source=models[name], threads=1, **options), model, tokenizer,
                              tiny_models.Qwen2VLProcessorDouble(tokenizer))


@contextlib.asynccontextmanager
async def held(engine: TransformersEngine, count: int):
    """Pause the batch's loop while `count` requests get submitted: its next step then takes them all together."""
    with engine._batch._manager.pause():
        yield
        assert await asyncio.to_thread(eventually, lambda: engine.stats()["in_flight"] >= count), engine.stats()


def run(engine: TransformersEngine, scenario) -> Any:
    """`scenario()` on a loop of its own, then the engine closed, whatever happened."""
    async def then_close():
        try:
            return await scenario()
        finally:
            await engine.close()

    return asyncio.run(then_close())


def ask(text: str, *, seed: int = 0, temperature: float | None = 1.0, tokens: int = 24, **more) -> GenerateRequest:
    thinking = more.pop("thinking", Thinking())
    fmt = more.pop("response_format", ResponseFormat())
    return GenerateRequest(model="m", turns=[Turn("user", [Text(text)])], thinking=thinking, response_format=fmt,
                           sampling=Sampling(temperature=temperature, seed=seed, max_output_tokens=tokens, **more))


async def collect(engine: TransformersEngine, request: GenerateRequest) -> list:
    """The request's events (what the service turns into the response), or the error it ended with."""
    events: list = []
    try:
        async for event in engine.generate(request):
            events.append(event)
    except EngineError as exc:
        events.append(exc)
    return events


def same(alone: list, together: list) -> bool:
    """The same text, thoughts, token counts, chosen tokens and end; log probabilities equal to float32 rounding
    (a batch's matrix products may sum in another order)."""
    if len(alone) != len(together):
        return False
    for a, b in zip(alone, together, strict=True):
        if type(a) is not type(b):
            return False
        if isinstance(a, TextDelta):
            if (a.text, a.thought, a.tokens) != (b.text, b.thought, b.tokens) or len(a.logprobs) != len(b.logprobs):
                return False
            for x, y in zip(a.logprobs, b.logprobs, strict=True):
                if x.token_id != y.token_id or abs(x.logprob - y.logprob) > 1e-4 or \
                        [t[1] for t in x.top] != [t[1] for t in y.top]:
                    return False
        elif isinstance(a, Finish):
            if a.reason != b.reason:  # a prompt run again reads its prefix from the cache (`cached_tokens`)
                return False
        elif a != b:
            return False
    return True


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and not e.thought)


async def alone_and_together(engine: TransformersEngine, requests: list[GenerateRequest]):
    alone = [await collect(engine, r) for r in requests]
    async with held(engine, len(requests)):
        tasks = [asyncio.create_task(collect(engine, r)) for r in requests]
    return alone, await asyncio.gather(*tasks)


def test_requests_in_one_batch_answer_as_they_do_alone(models, caplog):
    """Seeds, temperatures, topK/topP, penalties, a response schema, a stop sequence and log probabilities, decoded in
    the same steps of one batch, give token for token what each gives alone."""
    requests = [ask("Hello", seed=1), ask("Hello", seed=2, top_k=40, top_p=0.9), ask("Hello", temperature=0),
                ask("A name and a number", seed=3, tokens=60, response_format=ResponseFormat("json", SCHEMA)),
                ask("Tell me more", seed=4, stop_sequences=["e"]),
                ask("Hello", seed=5, presence_penalty=1.5, frequency_penalty=0.5, logprobs=3),
                ask("Hello", seed=1, tokens=5)]
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1))

    with caplog.at_level("DEBUG", logger="pollux.engines.batching"):
        alone, together = run(engine, lambda: alone_and_together(engine, requests))
    sizes = [int(n) for n in re.findall(r"shared batch: (\d+) sequences", caplog.text)]
    assert len(requests) in sizes, sizes  # they did decode side by side
    for request, a, b in zip(requests, alone, together, strict=True):
        assert isinstance(a[-1], Finish), a
        assert same(a, b), (request.sampling, a, b)
    assert text_of(alone[0]) != text_of(alone[1])  # different seeds, different text: the seeds are the requests' own
    jsonschema.validate(json.loads(text_of(alone[3])), SCHEMA)
    assert "e" not in text_of(alone[4]) and alone[4][-1].reason == "STOP"
    assert any(d.logprobs for d in alone[5] if isinstance(d, TextDelta))
    assert sum(e.tokens for e in alone[6] if isinstance(e, TextDelta)) == 5 and alone[6][-1].reason == "MAX_TOKENS"


def test_thinking_budgets_hold_in_a_shared_batch(models):
    """On a model whose prompt opens <think>, budgets of 0 (no thinking), 3 and 12 tokens and dynamic thinking end
    their thoughts where they end alone."""
    budgets = [0, 3, 12, None]
    requests = [ask("Why?", seed=i, tokens=30, thinking=Thinking(enabled=True, budget=b, include_thoughts=True))
                for i, b in enumerate(budgets)]
    engine = TransformersEngine(HFOptions(source=models["thinking"], threads=1))

    alone, together = run(engine, lambda: alone_and_together(engine, requests))
    for budget, a, b in zip(budgets, alone, together, strict=True):
        assert same(a, b), (budget, a, b)
        thought = sum(e.tokens for e in a if isinstance(e, TextDelta) and e.thought)
        if budget is not None:
            assert thought <= budget + 1, (budget, thought)  # the budget, then the token that closes the thoughts


def test_a_full_kv_cache_holds_requests_back_and_all_finish(models, caplog):
    """A 1 MiB cache holds 2048 tokens of the tiny Llama: three greedy answers of 1000 tokens cannot all be in it at
    once. The batch holds one back (or sets one aside and recomputes it) instead of failing it, and each answer is
    the one it gives alone. A prompt longer than the whole cache is the request's 400."""
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1, kv_cache_mb=1))
    assert engine.context_length == 2048
    requests = [ask(f"Go on and on {i}", temperature=0, tokens=1000) for i in range(3)]

    async def scenario():
        too_long = await collect(engine, ask("word " * 2100))
        return too_long, *await alone_and_together(engine, requests)

    with caplog.at_level("INFO", logger="ContinuousBatchingLogger"):
        too_long, alone, together = run(engine, scenario)
    assert "Offloaded 1 requests" in caplog.text  # the cache did fill: one request was set aside, then recomputed
    assert len(too_long) == 1 and isinstance(too_long[0], InvalidInput), too_long
    assert "exceeds the maximum number of tokens allowed (2048)" in too_long[0].message
    for a, b in zip(alone, together, strict=True):
        assert isinstance(a[-1], Finish) and same(a, b), (a[-3:], b[-3:])
        assert sum(e.tokens for e in a if isinstance(e, TextDelta)) > 600  # long enough to crowd the cache


def test_a_cancelled_request_leaves_the_batch_and_frees_its_blocks(models):
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1))

    async def scenario():
        stream = engine.generate(ask("Go on and on", temperature=0, tokens=3000))
        await anext(stream)  # decoding
        busy = engine.stats()
        await stream.aclose()  # the client went away
        # Its blocks are no request's any more: free, or kept cached for the prefix they hold (evictable).
        freed = await asyncio.to_thread(eventually, lambda: (s := engine.stats())["in_flight"] == 0 and
                                        s["running"] == s["waiting"] == s["pinned_blocks"] == 0 and
                                        s["free_kv"] + s["cached_kv"] == 1.0)
        # The batch goes on serving.
        after = await collect(engine, ask("Hello", tokens=4))
        return busy, freed, after

    busy, freed, after = run(engine, scenario)
    assert busy["in_flight"] == 1 and busy["free_kv"] < 1.0, busy
    assert freed, engine.stats()
    assert isinstance(after[-1], Finish)


@pytest.mark.parametrize("where", ["choose", "accept"])
def test_a_failing_sequence_fails_its_request_alone(models, where):
    """A fault injected into one sequence of a batch (in choosing its token, or in folding it in: sampling, grammar,
    stops, detokenizing) ends that request with an error; the others in the same steps decode to their end."""
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1))
    make_job = engine._job

    def job(request, emit):
        made = make_job(request, emit)
        if request.turns[0].segments[0].text == "poison":
            def broken(*args):
                raise RuntimeError("injected fault")

            setattr(made.sequence, where, broken)
        return made

    engine._job = job
    requests = [ask("poison", temperature=0, tokens=12)] + [ask(f"Request {i}", tokens=12) for i in range(3)]

    async def scenario():
        async with held(engine, len(requests)):
            tasks = [asyncio.create_task(collect(engine, r)) for r in requests]
        return await asyncio.gather(*tasks)

    poisoned, *good = run(engine, scenario)
    assert isinstance(poisoned[-1], Failure) and "injected fault" in poisoned[-1].message, poisoned
    assert not any(isinstance(e, Finish) for e in poisoned)
    for events in good:
        assert isinstance(events[-1], Finish) and events[-1].reason in ("STOP", "MAX_TOKENS"), events
        assert sum(e.tokens for e in events if isinstance(e, TextDelta)) >= 1


def test_a_failed_forward_pass_fails_the_requests_it_held_and_the_next_one_starts_a_new_loop(models, caplog):
    """The model itself fails in the middle of a step (every request in it had a share): those requests end with the
    error, none hangs, and the next request is served by a new loop."""
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1))
    forward = engine.model.forward

    def broken(*args, **kwargs):
        engine.model.forward = forward  # once
        raise RuntimeError("injected forward failure")

    async def scenario():
        async with held(engine, 2):
            engine.model.forward = broken
            tasks = [asyncio.create_task(collect(engine, ask(f"Request {i}", tokens=12))) for i in range(2)]
        failed = await asyncio.gather(*tasks)
        after = await collect(engine, ask("Hello", tokens=4))
        return failed, after

    with caplog.at_level("ERROR"):
        failed, after = run(engine, scenario)
    for events in failed:
        assert isinstance(events[-1], Failure) and "injected forward failure" in events[-1].message, events
    assert isinstance(after[-1], Finish), after
    assert "starting a new one" in caplog.text


def test_a_long_prompt_is_prefilled_in_chunks_between_the_others_tokens(models):
    """With 64 tokens a step, a 400-token prompt that arrives while another request decodes is prefilled in chunks
    over several steps, and the running request gets a token in each of them: it is not stalled for the prefill."""
    engine = TransformersEngine(HFOptions(source=models["random"], threads=1, max_batch_tokens=64))
    steps: list[dict[str, tuple[int, bool]]] = []  # per step: request -> (tokens it holds, whether it gets one)
    processors = engine._batch._manager.logit_processor
    prepare = processors.prepare_tensor_args

    def recording(requests_in_batch, arg_storage):
        steps.append({r.state.request_id: (r.query_length, r.has_new_token) for r in requests_in_batch})
        return prepare(requests_in_batch, arg_storage)

    processors.prepare_tensor_args = recording

    async def scenario():
        running = engine.generate(ask("Go on and on", temperature=0, tokens=3000))
        await anext(running)
        events = await collect(engine, ask("word " * 400, tokens=2))
        await running.aclose()
        return events

    events = run(engine, scenario)
    assert isinstance(events[-1], Finish), events
    first = next(iter(steps[0]))
    chunks = [step for step in steps if any(rid != first and not new for rid, (_, new) in step.items())]
    assert len(chunks) >= 6, len(chunks)  # 400 tokens in steps of 64
    assert all(step.get(first) == (1, True) for step in chunks), chunks


def picture(color: tuple[int, int, int]):
    import io

    from PIL import Image

    from pollux.engines.base import Media
    from pollux.media import inspect_bytes

    data = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(data, format="PNG")
    return Media("image/png", "IMAGE", data=data.getvalue(), info=inspect_bytes(data.getvalue(), "image/png"))


def with_images(*parts, tokens: int = 12, **sampling) -> GenerateRequest:
    return GenerateRequest(model="m", turns=[Turn("user", [Text(p) if isinstance(p, str) else p for p in parts])],
                           sampling=Sampling(max_output_tokens=tokens, logprobs=1, **sampling))


@pytest.mark.parametrize("name", ["vision", "qwen2-vl", "qwen2.5-vl", "llava"])
def test_requests_with_images_join_the_batch_of_a_vision_model(models, name):
    """A vision model's requests with images decode in the same steps as its text requests, and each answers as it
    does alone and as `generate` answers it, token for token and to float rounding in log probabilities: the images'
    embeddings in place, and on Gemma 3 attention within each image both ways (with 1-D masks, the log probabilities
    move by 2e-3), on Qwen2-VL and Qwen2.5-VL the 3-D positions (with 1-D ones, they move by 1.5e-3 or more). With 20 tokens a step, prompts are
    prefilled in chunks that end before an image, never inside one (cut inside, Gemma 3's move by 2e-3)."""
    images = [with_images("Look:", picture((200, 30, 30)), "What is this?", picture((10, 100, 30)), temperature=0),
              with_images(picture((0, 0, 200)), "Describe it", seed=3),
              with_images("Look:", picture((200, 200, 30)), "What is this?", picture((10, 100, 230)), temperature=0)]
    texts = [ask("Tell me about the sea and the sky and the birds", temperature=0, tokens=12, logprobs=1),
             ask("Tell me a story", seed=2, tokens=12)]
    requests = [images[0], texts[0], images[1], texts[1], images[2]]
    engine = vision_engine(models, name, max_batch_tokens=20, max_batch_size=4)
    steps: list[list[bool]] = []  # per step: whether each request in it has images
    processors = engine._batch._manager.logit_processor
    prepare = processors.prepare_tensor_args

    def recording(requests_in_batch, arg_storage):
        steps.append([r.state.request_id in engine._batch._blocks for r in requests_in_batch])
        return prepare(requests_in_batch, arg_storage)

    processors.prepare_tensor_args = recording
    beside = vision_engine(models, name, media_in_batch=False)

    async def scenario():
        try:
            reference = [await collect(beside, r) for r in images]
        finally:
            await beside.close()
        steps.clear()
        alone, together = await alone_and_together(engine, requests)
        # The batch forgets each request's images once it has let the request go (a step after its last token).
        forgotten = await asyncio.to_thread(eventually, lambda: not engine._batch._blocks)
        return reference, alone, together, forgotten

    reference, alone, together, forgotten = run(engine, scenario)
    for request, a, b in zip(requests, alone, together, strict=True):
        assert isinstance(a[-1], Finish) and same(a, b), (request, a, b)
    for r, a in zip(reference, alone[::2], strict=True):
        assert isinstance(r[-1], Finish) and same(r, a), (r, a)
    # The pictures are all that differs between these two; the random model's text may not show it, its numbers do.
    chosen = [[p.logprob for e in events if isinstance(e, TextDelta) for p in e.logprobs] for events in alone[::4]]
    assert max(abs(x - y) for x, y in zip(*chosen)) > 1e-3, chosen
    # Together, steps held requests with images and text requests side by side.
    assert any(len(set(step)) == 2 for step in steps), steps
    assert forgotten


def test_an_image_too_large_for_a_step_decodes_beside_the_batch(models):
    """With 20 tokens a step beside up to 8 decoding sequences, a 16-token image could never be whole in one step: its
    request decodes beside the batch instead of waiting for ever, and answers as there."""
    request = with_images(picture((200, 30, 30)), "What is this?", temperature=0)
    small = vision_engine(models, "vision", max_batch_tokens=20, max_batch_size=8)
    beside = vision_engine(models, "vision", media_in_batch=False)

    async def scenario():
        try:
            reference = await collect(beside, request)
        finally:
            await beside.close()
        return reference, await collect(small, request), small._turns.given

    reference, events, turns = run(small, scenario)
    assert isinstance(events[-1], Finish) and same(reference, events), (reference, events)
    assert turns >= 12  # a turn for each of its 12 tokens beside the batch (inside it: one, to encode the image)


def test_image_requests_take_turns_instead_of_waiting_for_each_other(models):
    """Beside the batch (`media_in_batch = false`, as on vision models the batch cannot hold), several requests with
    images decode at once, their forward passes taking turns: a short one sent beside a long one ends first, and each
    answers as it does alone."""
    long = with_images(picture((200, 30, 30)), "What is this?", tokens=300, temperature=0)
    short = with_images(picture((30, 200, 30)), "What is this?", tokens=4, temperature=0)
    engine = TransformersEngine(HFOptions(source=models["vision"], threads=1, media_workers=2, media_in_batch=False))
    ended: list[str] = []

    async def timed(name: str, request: GenerateRequest) -> list:
        events = await collect(engine, request)
        ended.append(name)
        return events

    async def scenario():
        alone = [await collect(engine, r) for r in (long, short)]
        ended.clear()
        turns = engine._turns.given
        first = asyncio.create_task(timed("long", long))
        # Once the long one is generating (it has had a turn), the short one comes.
        assert await asyncio.to_thread(eventually, lambda: engine._turns.given > turns or bool(ended))
        second = await timed("short", short)
        return alone, [await first, second]

    alone, together = run(engine, scenario)
    for a, b in zip(alone, together, strict=True):
        assert isinstance(a[-1], Finish) and same(a, b), (a, b)
    assert sum(1 for e in alone[0] if isinstance(e, TextDelta)) > 4  # the long one really is long
    assert ended == ["short", "long"], ended
