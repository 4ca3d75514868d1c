"""Prefix reuse in the transformers engine's shared batch (`pollux/engines/prefixes.py`), driven through the engine on
tiny models built offline: a prompt that starts like an earlier one of the same tenant reads those KV blocks instead
of computing them (and reports how many tokens it read), with the same answer; another tenant's never does; a
request with images shares nothing; a context cache's prefix is computed ahead and kept (pinned) while asked, within
its budget, and let go on request.

Blocks are the library's pages (`batching.PAGE_SIZE` = 16 tokens): only whole pages are shared; the prompts here are a
few thousand tokens long, so that most of each is shared.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import tiny_models
from conftest import eventually
from test_continuous_batching import ask, collect, picture, run, same, vision_engine, with_images

from pollux.engines.base import Finish, GenerateRequest, Sampling, Text, Turn
from pollux.engines.batching import PAGE_SIZE
from pollux.engines.hf import HFOptions, TransformersEngine

BOOK = " ".join(f"page{i % 97} line{i % 13}" for i in range(500))  # about 2,500 tokens of the tiny tokenizer


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    root = tiny_models.models_root()
    return {"random": str(tiny_models.build_llama(root)), "llava": str(tiny_models.build_llava(root))}


def engine_on(models: dict[str, str], **options) -> TransformersEngine:
    return TransformersEngine(HFOptions(source=models["random"], threads=1, **options))


def question(text: str, tenant: str | None = "project-a", tokens: int = 12) -> GenerateRequest:
    return replace(ask(BOOK + " " + text, temperature=0, tokens=tokens, logprobs=2), tenant=tenant)


def cached_tokens(events: list) -> int:
    assert isinstance(events[-1], Finish), events
    return events[-1].cached_tokens


def shared_pages(engine: TransformersEngine, earlier: GenerateRequest, later: GenerateRequest) -> int:
    """The tokens `later` can read from `earlier`'s pages: the whole pages of their common prefix of token ids (never
    a prompt's last token, which is always computed, so its page is not registered either)."""
    a, b = engine._text_prompt_ids(earlier), engine._text_prompt_ids(later)
    common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return min(common, len(a) - 1, len(b) - 1) // PAGE_SIZE * PAGE_SIZE


def chat(tenant: str, *turns: str, tokens: int = 8) -> GenerateRequest:
    """A conversation whose turns alternate user, model, user, ...: the first turns are a context cache's contents."""
    return GenerateRequest(model="m", tenant=tenant, sampling=Sampling(temperature=0, max_output_tokens=tokens,
                                                                         logprobs=1),
                           turns=[Turn("user" if i % 2 == 0 else "model", [Text(t)]) for i, t in enumerate(turns)])


def test_a_prompt_that_starts_like_an_earlier_one_reads_its_blocks_and_answers_the_same(models):
    engine = engine_on(models)

    async def scenario():
        first = await collect(engine, question("Which page comes first?"))
        again = await collect(engine, question("Which page comes first?"))
        other_question = await collect(engine, question("And which line?"))
        expected["again"] = shared_pages(engine, question("Which page comes first?"), question("Which page comes first?"))
        expected["other"] = shared_pages(engine, question("Which page comes first?"), question("And which line?"))
        await asyncio.to_thread(eventually, lambda: engine.stats()["in_flight"] == 0)
        return first, again, other_question, engine.stats()

    expected: dict[str, int] = {}
    first, again, other_question, stats = run(engine, scenario)
    assert cached_tokens(first) == 0
    # Every whole page of the prompt but the last, which always keeps a token to compute.
    assert cached_tokens(again) == expected["again"] > 100 * PAGE_SIZE
    assert same(first, again)
    assert cached_tokens(other_question) == expected["other"] > 100 * PAGE_SIZE  # the book, another question after it
    assert stats["cached_kv"] > 0 and stats["in_flight"] == 0, stats  # no request holds them: kept for reuse


def test_another_tenant_never_reads_the_blocks_of_a_prompt(models):
    """Projects never share KV state, even for the very same prompt; requests with no tenant share only with each
    other."""
    engine = engine_on(models)

    async def scenario():
        a = await collect(engine, question("Where?", tenant="project-a"))
        b = await collect(engine, question("Where?", tenant="project-b"))
        b_again = await collect(engine, question("Where?", tenant="project-b"))
        nobody = await collect(engine, question("Where?", tenant=None))
        return a, b, b_again, nobody

    a, b, b_again, nobody = run(engine, scenario)
    assert cached_tokens(a) == 0 and cached_tokens(b) == 0 and cached_tokens(nobody) == 0
    assert cached_tokens(b_again) > 0  # b's own blocks are reused: sharing is on
    assert same(a, b) and same(a, b_again)


def test_prefix_reuse_can_be_turned_off(models):
    engine = engine_on(models, prefix_cache=False)

    async def scenario():
        return [await collect(engine, question("Twice?")) for _ in range(2)]

    first, again = run(engine, scenario)
    assert cached_tokens(first) == cached_tokens(again) == 0
    assert same(first, again)
    assert not engine.capabilities.keeps_prefixes


def test_requests_with_images_share_no_blocks(models):
    """Image placeholders are the same token ids whatever the picture, so a request with images must never take
    another's blocks: the same picture twice computes twice (text requests on the same engine do share)."""
    engine = vision_engine(models, "llava")
    long_text = " ".join(f"word{i % 50}" for i in range(700))

    async def scenario():
        red = [await collect(engine, with_images(long_text, picture((200, 30, 30)), "What is it?", temperature=0))
               for _ in range(2)]
        blue = await collect(engine, with_images(long_text, picture((20, 30, 200)), "What is it?", temperature=0))
        text = [await collect(engine, ask(long_text, temperature=0, tokens=4)) for _ in range(2)]
        return red, blue, text

    red, blue, text = run(engine, scenario)
    assert [cached_tokens(e) for e in red] == [0, 0] and cached_tokens(blue) == 0
    assert same(red[0], red[1])
    assert cached_tokens(text[1]) > 0


def test_a_kept_prefix_is_read_by_the_requests_that_start_with_it_until_it_is_dropped(models):
    """`keep_prefix` computes a context cache's turns ahead and pins their blocks; a request whose turns start with
    them reads them (answering as an engine without any reuse does), and `drop_prefix` lets them go."""
    engine = engine_on(models)
    plain = engine_on(models, prefix_cache=False)
    cache = chat("project-c", BOOK)
    asked = chat("project-c", BOOK, "I have read it.", "Which page comes first?")

    async def scenario():
        kept = await engine.keep_prefix(cache, "project-c/cache-1")
        expected.append(shared_pages(engine, cache, asked))
        pinned = engine.stats()["pinned_blocks"]
        used = await collect(engine, asked)
        foreign = await collect(engine, replace(asked, tenant="project-d"))
        await engine.drop_prefix("project-c/cache-1")
        return kept, pinned, used, foreign, engine.keeps_prefix("project-c/cache-1"), engine.stats()

    async def without_reuse():
        return await collect(plain, asked)

    expected: list[int] = []
    kept, pinned, used, foreign, still_kept, after = run(engine, scenario)
    reference = run(plain, without_reuse)
    assert kept >= 2 * PAGE_SIZE and pinned == kept // PAGE_SIZE, (kept, pinned)
    # The kept pages it shares: all but the page where the cache's prompt (ending in the generation prompt) and the
    # conversation part ways.
    assert cached_tokens(used) == expected[0] > kept - 2 * PAGE_SIZE
    assert cached_tokens(foreign) == 0
    assert same(used, reference) and same(foreign, reference)
    assert not still_kept and after["pinned_blocks"] == 0


def test_kept_prefixes_stay_within_their_share_of_the_cache(models):
    """Pins hold at most half of the KV blocks: keeping one more prefix than fits lets the least recently used one
    go (its blocks stay cached, evictable), and a prefix larger than the share is not kept at all."""
    engine = engine_on(models, kv_cache_mb=2)  # 16 pages of this model
    budget = engine._batch._pins.budget

    def of_pages(name: str, pages: float) -> GenerateRequest:
        """A one-turn chat of about `pages` pages of tokens."""
        text = ""
        while len(engine._text_prompt_ids(chat("p", text))) < pages * PAGE_SIZE:
            text += " ".join(f"{name}{i % 31}" for i in range(100)) + " "
        return chat("p", text)

    first_chat, second_chat = of_pages("alpha", budget * 0.6), of_pages("beta", budget * 0.6)
    large_chat = of_pages("gamma", budget + 2)

    async def scenario():
        first = await engine.keep_prefix(first_chat, "p/1")
        second = await engine.keep_prefix(second_chat, "p/2")
        held = engine.keeps_prefix("p/1"), engine.keeps_prefix("p/2")
        too_large = await engine.keep_prefix(large_chat, "p/3")
        return first, second, held, too_large, engine.keeps_prefix("p/3"), engine.stats()

    first, second, held, too_large, kept_large, stats = run(engine, scenario)
    assert budget >= 4 and first > 0 and second > 0, (first, second, budget)
    assert held == (False, True)  # both did not fit: the older went
    assert too_large == 0 and not kept_large
    assert second // PAGE_SIZE == stats["pinned_blocks"] <= budget, stats


def test_cancelling_while_a_prefix_is_computed_leaves_nothing_pinned(models):
    engine = engine_on(models)

    async def scenario():
        task = asyncio.create_task(engine.keep_prefix(chat("p", BOOK), "p/big"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await collect(engine, ask("Hello", tokens=4))
        return engine.keeps_prefix("p/big"), after

    kept, after = run(engine, scenario)
    assert not kept
    assert isinstance(after[-1], Finish)
