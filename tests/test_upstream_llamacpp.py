"""Engine `openai` on a real OpenAI-compatible server: llama.cpp's `llama-server` (built by .ci/run) on the tiny
scripted model, whose greedy answers are known (tiny_models.SCRIPTED_CHATS). Pollux detects the flavor itself; the
official SDK drives text, streaming, schemas, tool calls, thinking, countTokens and embeddings through it.
"""

from __future__ import annotations

import json

import llama_server
import pytest
import tiny_models
from conftest import start_server
from google import genai
from google.genai import types

MODEL = "gemini-2.5-flash"
GREEDY = types.GenerateContentConfig(temperature=0)
WEATHER = tiny_models.WEATHER_TOOL["function"]


@pytest.fixture(scope="module")
def llama():
    llama_server.require_llama_server()
    gguf = llama_server.tiny_gguf(tiny_models.models_root(), "scripted")
    with llama_server.LlamaServer(gguf, embeddings=True) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llama):
    config = f"""
[models."{MODEL}"]
engine = "openai"
engine_options = {{ base_url = "{llama.base_url}" }}
cache_min_tokens = 16

[models."gemini-embedding-001"]
engine = "openai"
engine_options = {{ base_url = "{llama.base_url}" }}
"""
    with start_server(tmp_path_factory.mktemp("llamacpp") / "data", config=config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


def test_text_usage_and_count_tokens_agree(client, server):
    question = "What is the capital of France?"
    response = client.models.generate_content(model=MODEL, contents=question, config=GREEDY)
    assert response.text == "The capital of France is Paris."
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    counted = client.models.count_tokens(model=MODEL, contents=question).total_tokens
    assert response.usage_metadata.prompt_token_count == counted > 5
    assert response.usage_metadata.candidates_token_count > 0
    assert server.logged("flavor llamacpp")
    # The same prompt again: llama.cpp's prompt cache reuses it, and says so.
    again = client.models.generate_content(model=MODEL, contents=question, config=GREEDY)
    assert again.usage_metadata.cached_content_token_count > 0


def test_a_context_cache_is_sent_ahead_and_answers_as_the_written_out_request(client, server):
    """A context cache on a real server: its prompt goes to llama.cpp once when it is made (so the slot's prompt
    cache holds it), and a request naming it answers as the same request with the cached parts written out."""
    document = "The museum opens at nine and closes at five. Its garden has three fountains and a maze. " * 4
    cache = client.caches.create(model=MODEL, config=types.CreateCachedContentConfig(
        system_instruction="Answer from the notes.", contents=[document], ttl="300s"))
    cache_id = cache.name.rsplit("/", 1)[-1]
    assert server.logged(f"context cache {cache_id}:"), server.log()[-2000:]
    warmed = int(server.log().split(f"context cache {cache_id}: ")[1].split(" tokens")[0])
    assert warmed >= cache.usage_metadata.total_token_count  # the server's count of the cache's prompt
    with_cache = client.models.generate_content(
        model=MODEL, contents="When does it open?",
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=16, cached_content=cache.name))
    written_out = client.models.generate_content(
        model=MODEL, contents=[types.Content(role="user", parts=[types.Part(text=document)]),
                               types.Content(role="user", parts=[types.Part(text="When does it open?")])],
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=16,
                                           system_instruction="Answer from the notes."))
    assert with_cache.text == written_out.text
    usage = with_cache.usage_metadata
    assert usage.prompt_token_count == written_out.usage_metadata.prompt_token_count
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count < usage.prompt_token_count
    client.caches.delete(name=cache.name)


def test_stream(client):
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Say hello in Japanese.",
                                                        config=GREEDY))
    assert "".join(c.text or "" for c in chunks) == "こんにちは、世界！"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.prompt_token_count > 0


def test_response_schema(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    response = client.models.generate_content(
        model=MODEL, contents="Give me a JSON object describing a cat.",
        config=types.GenerateContentConfig(temperature=0, response_mime_type="application/json",
                                           response_json_schema=schema))
    assert json.loads(response.text) == {"name": "Tom", "age": 3}


@pytest.mark.parametrize("mode", ["AUTO", "ANY"])
def test_tool_call(client, mode):
    response = client.models.generate_content(
        model=MODEL, contents="What's the weather in Boston?",
        config=types.GenerateContentConfig(
            temperature=0, tools=[types.Tool(function_declarations=[WEATHER])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode=mode))))
    [call] = response.function_calls
    assert (call.name, call.args) == ("get_weather", {"location": "Boston"}) and call.id


def test_thinking_as_thought_parts_and_switched_off(client):
    sky = "Why is the sky blue?"
    thinking = client.models.generate_content(model=MODEL, contents=sky, config=types.GenerateContentConfig(
        temperature=0, thinking_config=types.ThinkingConfig(include_thoughts=True)))
    parts = thinking.candidates[0].content.parts
    assert parts[0].thought and parts[0].text.strip() == "Light scatters."
    assert thinking.text == "Because of Rayleigh scattering."
    assert thinking.usage_metadata.thoughts_token_count > 0
    off = client.models.generate_content(model=MODEL, contents=sky, config=types.GenerateContentConfig(
        temperature=0, thinking_config=types.ThinkingConfig(thinking_budget=0)))
    assert off.text == "Because of Rayleigh scattering." and not off.usage_metadata.thoughts_token_count
    assert not any(p.thought for p in off.candidates[0].content.parts)


def test_embeddings(client, server):
    one = client.models.embed_content(model="gemini-embedding-001", contents=["hello world", "goodbye"])
    assert [len(e.values) for e in one.embeddings] == [64, 64]
    counted = client.models.count_tokens(model="gemini-embedding-001", contents="hello world").total_tokens
    assert counted > 0
    from openai import OpenAI

    oa = OpenAI(api_key=server.api_key, base_url=f"{server.base_url}/v1beta/openai/")
    same = oa.embeddings.create(model="gemini-embedding-001", input="hello world")
    assert same.data[0].embedding == pytest.approx(one.embeddings[0].values, abs=1e-5)


def test_openai_surface_through_llama_cpp(server):
    from openai import OpenAI

    oa = OpenAI(api_key=server.api_key, base_url=f"{server.base_url}/v1beta/openai/")
    answer = oa.chat.completions.create(model=MODEL, temperature=0,
                                        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert answer.choices[0].message.content == "The capital of France is Paris."


def test_candidates_as_one_request_each(client, llama):
    # llama.cpp's `n` counts one choice's usage only, so Pollux asks once per candidate, side by side.
    response = client.models.generate_content(model=MODEL, contents="What is the capital of France?",
                                              config=types.GenerateContentConfig(temperature=0, candidate_count=2))
    assert [c.content.parts[-1].text for c in response.candidates] == ["The capital of France is Paris."] * 2
    assert response.usage_metadata.candidates_token_count >= 2 * 7
