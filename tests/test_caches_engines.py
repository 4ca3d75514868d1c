"""Context caches on real engines, through a running server and the official SDK: on the transformers engine (a tiny
random Llama built offline) a cache's prefix is computed when the cache is made and read by the requests that name
it, which answer exactly as the same request with the cached parts written out; repeated prompts of one project
reuse their prefix (implicit caching), another project's never do; a deleted or expired cache's prefix is let go. On
an upstream server (the fake vLLM, with vLLM's prefix cache salted per `cache_salt`), the cache's prompt is sent
ahead at creation and every request naming the cache sends it first.

Outcomes the server logs (a prefix kept, let go) are awaited with bounded waits, never timed.
"""

from __future__ import annotations

import os
import re

import pytest
import tiny_models
from conftest import eventually, start_server
from fake_vllm import FakeVLLM
from google import genai
from google.genai import types

from pollux.engines.batching import PAGE_SIZE

TINY = "tiny-cache"
UPSTREAM = "gemini-2.5-flash"
PAGE = PAGE_SIZE  # tokens per KV page of the transformers engine: prefixes are shared by whole pages
BOOK = " ".join(f"chapter{i % 41} verse{i % 17}" for i in range(400))
GREEDY = {"temperature": 0, "max_output_tokens": 12, "seed": 7}


def client_for(server, key: str | None = None) -> genai.Client:
    return genai.Client(api_key=key or server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    model = tiny_models.build_llama(tiny_models.models_root())
    config = f"""
[limits]
housekeeping_seconds = 1

[models."{TINY}"]
base = "gemini-2.0-flash"
engine = "transformers"
engine_options = {{ source = "{model}", threads = 1 }}
cache_min_tokens = {PAGE}
"""
    os.environ["HF_HUB_OFFLINE"] = "1"
    with start_server(tmp_path_factory.mktemp("hf-caches") / "data", config=config) as srv:
        yield srv


def kept_tokens(server, cache_name: str) -> int:
    """The tokens the engine kept for a cache, once it has logged them."""
    cache_id = cache_name.rsplit("/", 1)[-1]
    pattern = re.compile(rf"context cache {cache_id}: (\d+) tokens kept by the engine")
    assert eventually(lambda: pattern.search(server.log()) is not None), server.log()[-3000:]
    return int(pattern.search(server.log()).group(1))


def test_a_cache_on_the_transformers_engine_is_computed_ahead_and_answers_as_the_written_out_request(hf):
    client = client_for(hf)
    cache = client.caches.create(model=TINY, config=types.CreateCachedContentConfig(
        system_instruction="You answer questions about the book.",
        contents=[types.Content(role="user", parts=[types.Part(text=BOOK)]),
                  types.Content(role="model", parts=[types.Part(text="I have read it.")])], ttl="600s"))
    kept = kept_tokens(hf, cache.name)
    assert kept >= PAGE and kept % PAGE == 0, kept  # whole pages of the cache's prompt

    with_cache = client.models.generate_content(model=TINY, contents="Which chapter comes first?",
                                                config=types.GenerateContentConfig(cached_content=cache.name, **GREEDY))
    written_out = client.models.generate_content(
        model=TINY, contents=[types.Content(role="user", parts=[types.Part(text=BOOK)]),
                              types.Content(role="model", parts=[types.Part(text="I have read it.")]),
                              types.Content(role="user", parts=[types.Part(text="Which chapter comes first?")])],
        config=types.GenerateContentConfig(system_instruction="You answer questions about the book.", **GREEDY))
    assert with_cache.text == written_out.text and with_cache.text
    usage = with_cache.usage_metadata
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count
    assert usage.prompt_token_count == written_out.usage_metadata.prompt_token_count > usage.cached_content_token_count

    client.caches.delete(name=cache.name)
    assert hf.logged(f"context cache {cache.name.rsplit('/', 1)[-1]}: the engine lets its prefix go")


def test_an_expired_cache_prefix_is_let_go_without_a_request(hf):
    client = client_for(hf)
    cache = client.caches.create(model=TINY, config=types.CreateCachedContentConfig(contents=[BOOK], ttl="3s"))
    kept_tokens(hf, cache.name)
    assert hf.logged(f"context cache {cache.name.rsplit('/', 1)[-1]}: the engine lets its prefix go")


def test_repeated_prompts_of_one_project_reuse_their_prefix_and_no_other_project_does(hf):
    """Implicit caching: no cache is made, the second request reads the first one's pages."""
    hf.cli("projects", "create", "Implicit other")
    mine, theirs = client_for(hf), client_for(hf, hf.new_key("Implicit other"))
    prompt = "Remember the verses. " + BOOK

    def ask(client: genai.Client, question: str) -> types.GenerateContentResponse:
        return client.models.generate_content(model=TINY, contents=prompt + question,
                                              config=types.GenerateContentConfig(**GREEDY))

    first = ask(mine, " First?")
    again = ask(mine, " Second?")
    foreign = ask(theirs, " First?")
    assert not first.usage_metadata.cached_content_token_count
    reused = again.usage_metadata.cached_content_token_count
    assert reused and reused % PAGE == 0 and reused < again.usage_metadata.prompt_token_count, again.usage_metadata
    assert not foreign.usage_metadata.cached_content_token_count  # never another project's KV state
    assert foreign.text == first.text  # and the same answer to the same prompt


# An upstream server --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake():
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, fake):
    config = f"""
[models."{UPSTREAM}"]
engine = "openai"
engine_options = {{ base_url = "{fake.base_url}", model = "Qwen/Qwen3-0.6B" }}
cache_min_tokens = 64
"""
    with start_server(tmp_path_factory.mktemp("vllm-caches") / "data", config=config) as srv:
        yield srv


def test_an_upstream_cache_is_sent_ahead_and_before_each_request(upstream, fake):
    client = client_for(upstream)
    document = "A long shared document about rivers and mountains. " * 30
    fake.clear()
    cache = client.caches.create(model=UPSTREAM, config=types.CreateCachedContentConfig(
        system_instruction="Answer briefly.", contents=[document], ttl="600s"))
    kept_tokens(upstream, cache.name)
    warm = fake.bodies("/v1/chat/completions")
    assert len(warm) == 1 and warm[0]["max_tokens"] == 1, warm  # the prompt alone, for the server's prefix cache
    assert [m["role"] for m in warm[0]["messages"]] == ["system", "user"]
    assert document in str(warm[0]["messages"][1]["content"])

    response = client.models.generate_content(model=UPSTREAM, contents="Which rivers?",
                                              config=types.GenerateContentConfig(cached_content=cache.name))
    sent = fake.bodies("/v1/chat/completions")[-1]
    assert sent["messages"][:2] == warm[0]["messages"]  # the cached parts first, as the warm-up sent them
    assert sent["messages"][2]["role"] == "user" and "Which rivers?" in str(sent["messages"][2]["content"])
    assert sent["cache_salt"] == warm[0]["cache_salt"]
    usage = response.usage_metadata
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count
    assert usage.prompt_token_count > usage.cached_content_token_count
