"""The fake vLLM answers in vLLM 0.33's shapes: streams, usage, tool-call deltas, tokenize, prefix caching, errors."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fake_vllm
from fake_vllm import FakeVLLM

USER = [{"role": "user", "content": "Hi there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer",
                                                                                         "minimum": 1}},
                   "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def fake():
    with FakeVLLM() as server:
        yield server


@pytest.fixture
def client(fake):
    fake.clear()
    with httpx.Client(base_url=fake.url, timeout=10) as c:
        yield c


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"messages": USER, **body})


def events(response) -> list:
    """The SSE data payloads of a stream, parsed; "[DONE]" stays a string."""
    out = []
    for block in response.text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_routes_health_version_models(client):
    assert client.get("/health").status_code == 200 and client.get("/health").content == b""
    assert client.get("/version").json() == {"version": "0.33.0"}
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == card["root"] == "Qwen/Qwen3-0.6B" and card["owned_by"] == "vllm"
    assert card["max_model_len"] == 32768 and card["parent"] is None
    assert card["permission"][0]["object"] == "model_permission"
    assert client.get("/v1/nope").json() == {"detail": "Not Found"}


def test_non_stream_shape(client):
    r = chat(client, model="Qwen/Qwen3-0.6B", max_tokens=100)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 16
    assert body["object"] == "chat.completion" and body["model"] == "Qwen/Qwen3-0.6B"
    choice = body["choices"][0]
    assert list(choice) == ["index", "message", "logprobs", "finish_reason", "stop_reason", "token_ids",
                            "routed_experts", "weight_versions"]
    assert choice["message"] == {"role": "assistant", "content": "Echo: Hi there", "refusal": None,
                                 "annotations": None, "audio": None, "function_call": None,
                                 "reasoning": "Let me think about: Hi there"}
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None
    usage = body["usage"]
    # <think> + 7 reasoning tokens + </think> + 4 content tokens + <|im_end|>
    assert usage == {"prompt_tokens": 9, "total_tokens": 23, "completion_tokens": 14,
                     "prompt_tokens_details": {"cached_tokens": 0, "created_cache_tokens": None,
                                               "multimodal_tokens": None},
                     "completion_tokens_details": {"reasoning_tokens": 7}}
    assert body["system_fingerprint"].startswith("vllm-0.33.0-")


def test_stream_role_reasoning_content_usage_done(client):
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = events(r)
    assert chunks[-1] == "[DONE]"
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}]
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    assert "".join(d.get("reasoning", "") for d in deltas) == "Let me think about: Hi there"
    assert "".join(d.get("content", "") for d in deltas) == "Echo: Hi there"
    assert all("reasoning_content" not in d for d in deltas)
    last = chunks[-3]["choices"][0]
    assert last["finish_reason"] == "stop" and last["delta"] == {"content": ""} and "stop_reason" in last
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["system_fingerprint"].startswith("vllm-")
    assert usage_chunk["usage"] == {"prompt_tokens": 9, "total_tokens": 23, "completion_tokens": 14,
                                    "prompt_tokens_details": {"cached_tokens": 0},
                                    "completion_tokens_details": {"reasoning_tokens": 7}}
    assert len({c["id"] for c in chunks[:-1]}) == 1


def test_stream_without_usage_and_continuous_usage(client):
    chunks = events(chat(client, stream=True))
    assert all(c == "[DONE]" or c["choices"] for c in chunks)  # no usage chunk unless asked
    assert "system_fingerprint" in chunks[-2]  # then the finishing chunk carries it
    chunks = events(chat(client, stream=True, stream_options={"include_usage": True,
                                                              "continuous_usage_stats": True}))
    assert chunks[0]["usage"]["completion_tokens"] == 0
    counts = [c["usage"]["completion_tokens"] for c in chunks[1:-2]]
    assert counts == sorted(counts) and counts[-1] == chunks[-2]["usage"]["completion_tokens"]


def test_reasoning_field_variants():
    with FakeVLLM(reasoning_field="both") as both, httpx.Client(base_url=both.url) as c:
        message = chat(c).json()["choices"][0]["message"]
        assert message["reasoning"] == message["reasoning_content"] == "Let me think about: Hi there"
    with FakeVLLM(reasoning_field="reasoning_content") as old, httpx.Client(base_url=old.url) as c:
        deltas = [ch["choices"][0]["delta"] for ch in events(chat(c, stream=True))[1:-1]]
        assert any("reasoning_content" in d for d in deltas) and not any("reasoning" in d for d in deltas)


def test_thinking_off_budget_and_max_tokens(client):
    off = chat(client, chat_template_kwargs={"enable_thinking": False}).json()
    assert off["choices"][0]["message"]["reasoning"] is None
    assert off["usage"]["completion_tokens"] == 5 and off["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    budget = chat(client, thinking_token_budget=2).json()["choices"][0]["message"]
    assert budget["reasoning"] == "Let me" and budget["content"] == "Echo: Hi there"
    cut = chat(client, max_tokens=3).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["reasoning"] == "Let me" and cut["choices"][0]["message"]["content"] is None
    assert cut["usage"]["completion_tokens"] == 3


def test_stop_n_logprobs(client):
    r = chat(client, stop=[" there"], chat_template_kwargs={"enable_thinking": False}).json()["choices"][0]
    assert r["message"]["content"] == "Echo: Hi" and r["finish_reason"] == "stop" and r["stop_reason"] == " there"
    r = chat(client, stop=" there").json()["choices"][0]  # stop strings apply to reasoning too, as in vLLM
    assert r["message"]["reasoning"] == "Let me think about: Hi" and r["message"]["content"] is None
    many = chat(client, n=3, chat_template_kwargs={"enable_thinking": False}).json()["choices"]
    assert [c["message"]["content"] for c in many] == ["Echo: Hi there", "Echo: Hi there #1", "Echo: Hi there #2"]
    lp = chat(client, logprobs=True, top_logprobs=2, max_tokens=2).json()["choices"][0]["logprobs"]["content"]
    assert lp[1] == {"token": "Let", "logprob": -0.1, "bytes": [76, 101, 116],
                     "top_logprobs": [{"token": "Let", "logprob": -0.1, "bytes": [76, 101, 116]},
                                      {"token": " alt1", "logprob": -2.0, "bytes": list(b" alt1")}]}


def test_tool_call_auto_non_stream_and_stream(client):
    ask = [{"role": "user", "content": "Call get_weather and get_time please"}]
    body = client.post("/v1/chat/completions", json={"messages": ask, "tools": [WEATHER, TIME]}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert calls[0]["id"].startswith("chatcmpl-tool-") and calls[0]["type"] == "function"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "x", "days": 1}
    assert calls[1]["function"]["arguments"] == "{}"

    chunks = events(client.post("/v1/chat/completions", json={"messages": ask, "tools": [WEATHER, TIME],
                                                              "stream": True}))
    tool_deltas = [c["choices"][0]["delta"] for c in chunks[1:-1] if "tool_calls" in c["choices"][0]["delta"]]
    heads = [d["tool_calls"][0] for d in tool_deltas if "id" in d["tool_calls"][0]]
    assert [(h["index"], h["type"], h["function"]) for h in heads] == [
        (0, "function", {"name": "get_weather"}), (1, "function", {"name": "get_time"})]
    assert all(d["content"] is None for d in tool_deltas)  # hermes sets content explicitly to null
    args = {0: "", 1: ""}
    for d in tool_deltas:
        call = d["tool_calls"][0]
        args[call["index"]] += call["function"].get("arguments", "")
    assert args == {0: calls[0]["function"]["arguments"], 1: "{}"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_choice_named_required_none_and_errors(client):
    named = chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = named.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == ""  # vLLM: "stop" for a named tool
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    required = chat(client, tools=[WEATHER, TIME], tool_choice="required").json()["choices"][0]
    assert required["finish_reason"] == "tool_calls" and len(required["message"]["tool_calls"]) == 1
    stream = events(chat(client, tools=[WEATHER], tool_choice="required", stream=True))
    heads = [c["choices"][0]["delta"]["tool_calls"][0] for c in stream[1:-1]
             if "id" in c["choices"][0]["delta"].get("tool_calls", [{}])[0]]
    assert heads[0]["function"]["name"] == "get_weather" and heads[0]["function"]["arguments"] == "{"
    none = chat(client, tools=[WEATHER], tool_choice="none").json()["choices"][0]
    assert "tool_calls" not in none["message"] and none["message"]["content"] == "Echo: Hi there"
    bad = chat(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tool_choice"
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                    "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "call_unknown", "content": "sunny"}]
    assert client.post("/v1/chat/completions", json={"messages": history, "tools": [WEATHER]}).status_code == 200


def test_structured_outputs(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 3},
                                               "tags": {"type": "array", "items": {"type": "string"},
                                                        "minItems": 1}, "kind": {"enum": ["a", "b"]}},
              "required": ["name", "age", "tags", "kind"]}
    for body in ({"structured_outputs": {"json": schema}},
                 {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}}):
        content = chat(client, **body).json()["choices"][0]["message"]["content"]
        assert json.loads(content) == {"name": "x", "age": 3, "tags": ["x"], "kind": "a"}
    assert chat(client, structured_outputs={"choice": ["yes", "no"]}).json()["choices"][0]["message"][
        "content"] == "yes"
    assert chat(client, response_format={"type": "json_object"}).json()["choices"][0]["message"]["content"] == "{}"
    # vLLM 0.33 ignores the removed guided_* fields: the answer is unconstrained
    assert chat(client, guided_choice=["yes"]).json()["choices"][0]["message"]["content"] == "Echo: Hi there"


def test_tokenize_agrees_with_usage(client):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    for extra in ({}, {"tools": [WEATHER]}, {"chat_template_kwargs": {"enable_thinking": False}}):
        tok = client.post("/tokenize", json={"model": "Qwen/Qwen3-0.6B", "messages": messages, **extra}).json()
        assert list(tok) == ["count", "max_model_len", "tokens", "token_strs"] and tok["token_strs"] is None
        usage = client.post("/v1/chat/completions", json={"messages": messages, "tool_choice": "none",
                                                          **extra}).json()["usage"]
        assert tok["count"] == len(tok["tokens"]) == usage["prompt_tokens"]
        assert usage["prompt_tokens_details"]["multimodal_tokens"] == {"image": 10}
    text = client.post("/tokenize", json={"prompt": "Hello, world!"}).json()
    assert text["count"] == 4 and fake_vllm.tokenize("Hello, world!") == ["Hello", ",", " world", "!"]
    assert client.post("/detokenize", json={"tokens": text["tokens"]}).json() == {"prompt": "Hello, world!"}


def test_cache_salt_isolates_prefix_cache(client):
    long_text = " ".join(f"word{i}" for i in range(60))
    messages = [{"role": "user", "content": long_text}]

    def cached(salt=None, content=None):
        body = {"messages": [{"role": "user", "content": content or long_text}]}
        if salt is not None:
            body["cache_salt"] = salt
        return client.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens_details"][
            "cached_tokens"]

    prompt_len = client.post("/tokenize", json={"messages": messages}).json()["count"]
    assert cached("alice") == 0
    assert cached("alice") == (prompt_len - 1) // 16 * 16  # whole blocks, never the last token
    assert cached("bob") == 0  # another salt never shares
    assert cached(None) == 0 and cached(None) > 0  # no salt is one more group of its own
    assert 0 < cached("alice", long_text + " and more") < prompt_len


def test_errors(client):
    r = chat(client, model="gpt-4")
    assert r.status_code == 404 and r.json() == {"error": {
        "message": "The model `gpt-4` does not exist. Valid aliases: Qwen/Qwen3-0.6B.", "type": "NotFoundError",
        "param": "model", "code": 404}}
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a " * 40000}]})
    n = 32769
    assert r.status_code == 400 and r.json() == {"error": {
        "message": f"This model's maximum context length is 32768 tokens. However, your prompt contains at least {n} "
                   f"input tokens, which exceeds this limit even without any output tokens. Please reduce the length"
                   f" of the input prompt. (parameter=input_tokens, value={n})",
        "type": "BadRequestError", "param": "input_tokens", "code": 400}}
    r = chat(client, max_tokens=40000)
    assert r.json()["error"]["message"].startswith("max_tokens=40000 cannot be greater than max_model_len=32768.")
    r = chat(client, temperature=0, n=2)
    assert r.json()["error"]["message"] == "n must be 1 when using greedy sampling, got 2."
    r = client.post("/v1/chat/completions", json={"messages": "hi"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "Bad Request"
    assert r.json()["error"]["param"] == "body.messages"
    r = client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "json_invalid" in r.json()["error"]["message"]
    r = chat(client, cache_salt="")
    assert r.json()["error"]["param"] == "cache_salt"


def test_knobs_fail_next_delay_down_and_api_key():
    with FakeVLLM(api_key="sk-test") as f, httpx.Client(base_url=f.url, timeout=10) as c:
        assert chat(c).status_code == 401 and chat(c).json() == {"error": "Unauthorized"}
        c.headers["authorization"] = "Bearer sk-test"
        f.fail_next(2, 503)
        assert [chat(c).status_code for _ in range(3)] == [503, 503, 200]
        assert chat(c).status_code == 200
        f.fail_next(1, 429, {"error": {"message": "slow down", "type": "RateLimit", "param": None, "code": 429}},
                    path="/v1/embeddings")
        assert chat(c).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "a"}).json()["error"]["message"] == "slow down"
        f.down = True
        assert c.get("/health").status_code == 503 and chat(c).json()["error"]["code"] == 503
        f.down = "refuse"
        with pytest.raises(httpx.ConnectError):
            c.get("/health")
        f.down = False
        assert c.get("/health").status_code == 200
        assert len(f.bodies()) == 8 and f.bodies()[0]["messages"] == USER
        assert f.requests[0]["path"] == "/v1/chat/completions"


def test_cut_stream_and_stream_error():
    with FakeVLLM(cut_stream_after=3) as f, httpx.Client(base_url=f.url, timeout=10) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            chat(c, stream=True)
        f.cut_stream_mode = "eof"
        chunks = events(chat(c, stream=True))
        assert len(chunks) == 3 and "[DONE]" not in chunks
        f.cut_stream_after, f.stream_error_after = None, 2
        chunks = events(chat(c, stream=True))
        assert chunks[2] == {"error": {"message": "Internal server error", "type": "InternalServerError",
                                       "param": None, "code": 500}} and chunks[3] == "[DONE]"


def test_embeddings_float_and_base64(client):
    floats = client.post("/v1/embeddings", json={"input": ["a", "b"], "model": "Qwen/Qwen3-0.6B"}).json()
    assert floats["object"] == "list" and floats["id"].startswith("embd-")
    assert [d["index"] for d in floats["data"]] == [0, 1] and floats["data"][0]["object"] == "embedding"
    vec = np.array(floats["data"][0]["embedding"])
    assert len(vec) == 8 and abs(np.linalg.norm(vec) - 1) < 1e-5
    assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2, "completion_tokens": 0,
                               "prompt_tokens_details": None, "completion_tokens_details": None}
    b64 = client.post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vec)


def test_fixed_mode_answers_the_same_bytes():
    with FakeVLLM(fixed=True) as f, httpx.Client(base_url=f.url, timeout=10) as c:
        one, two = chat(c).content, client_post(c, [{"role": "user", "content": "other"}]).content
        assert one == two and json.loads(one)["choices"][0]["message"]["content"] == "Hello from the fake vLLM."
        stream = events(chat(c, stream=True, stream_options={"include_usage": True}))
        assert stream[-1] == "[DONE]" and stream[-2]["usage"]["completion_tokens"] == 7  # 6 pieces + EOS
        assert f.requests == [] and f.stats["requests"] == 3


def client_post(c, messages):
    return c.post("/v1/chat/completions", json={"messages": messages})


def test_cli_runs_as_a_script():
    proc = subprocess.Popen([sys.executable, str(Path(fake_vllm.__file__)), "--port", "0", "--fixed"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake vLLM listening on http://127.0.0.1:")
        base = line.split()[-1]
        assert httpx.get(base + "/models", timeout=10).json()["data"][0]["id"] == "Qwen/Qwen3-0.6B"
    finally:
        proc.terminate()
        proc.wait(10)
