"""llama.cpp's `llama-server` on the tiny GGUF models behaves as the engine tests assume: OpenAI chat (plain and
streamed, with usage), the exact prompt through /apply-template + /tokenize, JSON schemas, tool calls, thoughts as
`reasoning_content`, embeddings, and its errors. Skipped without a llama-server binary (see tests/llama_server.py)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import llama_server  # noqa: E402
import tiny_models  # noqa: E402

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = [{"role": "user", "content": "What's the weather in Boston?"}]
SKY = [{"role": "user", "content": "Why is the sky blue?"}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "enum": [1, 2, 3]}},
          "required": ["ok", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def binary() -> Path:
    return llama_server.require_llama_server()


def _serve(binary: Path, model: str, **kwargs: Any) -> Iterator[llama_server.LlamaServer]:
    gguf = llama_server.tiny_gguf(tiny_models.models_root(), model)
    with llama_server.LlamaServer(gguf, binary=binary, alias=f"tiny-{model}", **kwargs) as server:
        yield server


@pytest.fixture(scope="module")
def scripted(binary: Path) -> Iterator[llama_server.LlamaServer]:
    yield from _serve(binary, "scripted")


@pytest.fixture(scope="module")
def qwen3(binary: Path) -> Iterator[llama_server.LlamaServer]:
    # A small context, so that a too-long prompt is cheap to make.
    yield from _serve(binary, "qwen3", embeddings=True, ctx_size=2048, parallel=2)


@pytest.fixture(scope="module")
def qwen3_thinking(binary: Path) -> Iterator[llama_server.LlamaServer]:
    yield from _serve(binary, "qwen3-thinking")


def chat(server: llama_server.LlamaServer, **body: Any) -> dict[str, Any]:
    body = {"temperature": 0, "max_tokens": 64, **body}
    r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def stream(server: llama_server.LlamaServer, **body: Any) -> list[dict[str, Any]]:
    body = {"temperature": 0, "max_tokens": 64, "stream": True, **body}
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(json.loads(line[len("data: "):]))
    return chunks


def prompt_tokens(server: llama_server.LlamaServer, body: dict[str, Any]) -> tuple[str, int]:
    """The prompt the server renders for a chat body, and its token count, from its own template and tokenizer."""
    prompt = httpx.post(f"{server.root}/apply-template", json=body, timeout=30).json()["prompt"]
    tokens = httpx.post(f"{server.root}/tokenize", json={"content": prompt, "add_special": True},
                        timeout=30).json()["tokens"]
    return prompt, len(tokens)


# --------------------------------------------------------------------------------------------------------------------


def test_identifies_as_llama_cpp(scripted: llama_server.LlamaServer) -> None:
    health = httpx.get(f"{scripted.root}/health")
    assert health.json() == {"status": "ok"}
    assert health.headers["server"] == "llama.cpp"
    models = httpx.get(f"{scripted.base_url}/models").json()
    assert [(m["id"], m["owned_by"]) for m in models["data"]] == [("tiny-scripted", "llamacpp")]
    assert models["data"][0]["meta"]["n_ctx_train"] == 4096
    props = httpx.get(f"{scripted.root}/props").json()
    assert props["model_alias"] == "tiny-scripted"
    assert props["build_info"].startswith("b")
    assert props["chat_template"] == tiny_models.CHATML_TEMPLATE
    assert props["chat_template_caps"]["supports_tool_calls"] is True
    assert props["eos_token"] == "<|im_end|>"
    assert props["total_slots"] == 2


def test_chat(scripted: llama_server.LlamaServer) -> None:
    answer = chat(scripted, messages=CAPITAL)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "tiny-scripted"
    assert answer["choices"] == [{"finish_reason": "stop", "index": 0,
                                  "message": {"role": "assistant", "content": "The capital of France is Paris."}}]
    usage = answer["usage"]
    assert usage["completion_tokens"] == 13  # 12 tokens of text and <|im_end|>
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(usage["prompt_tokens_details"]["cached_tokens"], int)
    assert answer["timings"]["predicted_n"] == 13
    # Greedy decoding is deterministic, and a repeated prompt is served from the prompt cache.
    again = chat(scripted, messages=CAPITAL)
    assert again["choices"] == answer["choices"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    # max_tokens cuts it short.
    short = chat(scripted, messages=CAPITAL, max_tokens=3)
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3


def test_stream_with_usage(scripted: llama_server.LlamaServer) -> None:
    chunks = stream(scripted, messages=CAPITAL, stream_options={"include_usage": True})
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The capital of France is Paris."
    assert chunks[-2]["choices"] == [{"finish_reason": "stop", "index": 0, "delta": {}}]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 13
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    # Without include_usage there is no usage chunk.
    assert all("usage" not in c for c in stream(scripted, messages=CAPITAL))


@pytest.mark.parametrize("body", [
    {"messages": CAPITAL},
    {"messages": [{"role": "system", "content": "Be brief."}, *SKY],
     "chat_template_kwargs": {"enable_thinking": False}},
    {"messages": WEATHER, "tools": [tiny_models.WEATHER_TOOL]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "héllo 😀 世界"}], "tools": [tiny_models.WEATHER_TOOL]},
], ids=["plain", "system-no-thinking", "tools", "multi-turn-utf8"])
@pytest.mark.parametrize("model", ["scripted", "qwen3"])
def test_prompt_tokens_are_the_rendered_template(model: str, body: dict[str, Any], request: pytest.FixtureRequest
                                                 ) -> None:
    server: llama_server.LlamaServer = request.getfixturevalue(model)
    prompt, count = prompt_tokens(server, body)
    assert chat(server, **body, max_tokens=1)["usage"]["prompt_tokens"] == count
    # The server renders and tokenizes exactly as the Hugging Face model it was converted from.
    from transformers import AutoTokenizer

    hf_dir = llama_server.GGUF_SOURCES[model](tiny_models.models_root())
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    kwargs = body.get("chat_template_kwargs", {})
    expected = tokenizer.apply_chat_template(body["messages"], tools=body.get("tools"), add_generation_prompt=True,
                                             tokenize=False, **kwargs)
    assert prompt == expected
    assert count == len(tokenizer(expected, add_special_tokens=False)["input_ids"])


def test_json_schema(qwen3: llama_server.LlamaServer) -> None:
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    for body in ({"response_format": fmt}, {"json_schema": SCHEMA}):
        answer = chat(qwen3, messages=CAPITAL, max_tokens=200, **body)
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_tool_call(scripted: llama_server.LlamaServer) -> None:
    for tool_choice in ("auto", "required"):
        answer = chat(scripted, messages=WEATHER, tools=[tiny_models.WEATHER_TOOL], tool_choice=tool_choice)
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == ""
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"location": "Boston"}
    # Streamed: the first delta names the call, the rest append to its arguments.
    chunks = stream(scripted, messages=WEATHER, tools=[tiny_models.WEATHER_TOOL], tool_choice="required")
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["id"] and deltas[0]["index"] == 0
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"location": "Boston"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # With tool_choice "none" the same prompt answers in text: the call is not parsed out.
    text = chat(scripted, messages=WEATHER, tools=[tiny_models.WEATHER_TOOL], tool_choice="none")
    assert "tool_calls" not in text["choices"][0]["message"]


def test_reasoning(scripted: llama_server.LlamaServer, qwen3: llama_server.LlamaServer,
                   qwen3_thinking: llama_server.LlamaServer) -> None:
    thought = chat(scripted, messages=SKY)["choices"][0]["message"]
    assert thought == {"role": "assistant", "content": "Because of Rayleigh scattering.",
                       "reasoning_content": "Light scatters.\n"}
    off = chat(scripted, messages=SKY, chat_template_kwargs={"enable_thinking": False})["choices"][0]["message"]
    assert off == {"role": "assistant", "content": "Because of Rayleigh scattering."}
    chunks = stream(scripted, messages=SKY)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Light scatters.\n"
    assert "".join(d.get("content") or "" for d in deltas) == "Because of Rayleigh scattering."
    # Qwen3's thinking-only template opens <think> in the prompt: all a random model says is reasoning.
    forced = chat(qwen3_thinking, messages=SKY, max_tokens=8)["choices"][0]["message"]
    assert forced["content"] == "" and forced["reasoning_content"]
    # Qwen3's hybrid template with thinking off pre-fills an empty think block, and no reasoning comes back.
    body = {"messages": SKY, "chat_template_kwargs": {"enable_thinking": False}}
    assert prompt_tokens(qwen3, body)[0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "reasoning_content" not in chat(qwen3, **body, max_tokens=8)["choices"][0]["message"]


def test_embeddings(qwen3: llama_server.LlamaServer) -> None:
    r = httpx.post(f"{qwen3.base_url}/embeddings", json={"input": ["Hello", "world, again"]}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny-qwen3"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in body["data"]] == [("embedding", 0, 64),
                                                                                      ("embedding", 1, 64)]
    assert all(math.isclose(math.hypot(*d["embedding"]), 1.0, rel_tol=1e-4) for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 2
    # An input longer than the default 512-token batch works (LlamaServer raises the batch size).
    long = httpx.post(f"{qwen3.base_url}/embeddings", json={"input": "word " * 600}, timeout=30)
    assert long.status_code == 200, long.text
    # The same process still chats.
    assert chat(qwen3, messages=CAPITAL, max_tokens=4)["usage"]["completion_tokens"] == 4


def test_sampling_and_errors(scripted: llama_server.LlamaServer, qwen3: llama_server.LlamaServer) -> None:
    # A seed makes sampling repeatable; temperature 0 is greedy whatever the seed.
    sampled = [chat(qwen3, messages=CAPITAL, temperature=1.0, seed=s, max_tokens=8)["choices"][0]["message"]["content"]
               for s in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]
    # n up to --parallel gives that many choices; above it is a 400.
    assert [c["index"] for c in chat(scripted, messages=CAPITAL, n=2)["choices"]] == [0, 1]
    too_many = httpx.post(f"{scripted.base_url}/chat/completions", json={"messages": CAPITAL, "n": 3})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["type"] == "invalid_request_error"
    # stop strings end the answer before them.
    stopped = chat(scripted, messages=CAPITAL, stop=["Paris"])["choices"][0]
    assert stopped == {"finish_reason": "stop", "index": 0,
                       "message": {"role": "assistant", "content": "The capital of France is "}}
    # logprobs with top_logprobs.
    lp = chat(scripted, messages=CAPITAL, max_tokens=2, logprobs=True, top_logprobs=2)["choices"][0]["logprobs"]
    assert [t["token"] for t in lp["content"]] == ["The", " cap"]
    assert len(lp["content"][0]["top_logprobs"]) == 2
    # A prompt longer than a slot's context (2048 / 2 slots) is refused before any generation.
    long = httpx.post(f"{qwen3.base_url}/chat/completions",
                      json={"messages": [{"role": "user", "content": "word " * 1100}], "stream": True})
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["type"] == "exceed_context_size_error" and error["n_ctx"] == 1024
    assert error["n_prompt_tokens"] > 1024
