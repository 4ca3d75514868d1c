"""The pure parts of engine `openai`: a Gemini request as a chat completion per flavor, answers as events."""

from __future__ import annotations

import pytest

from pollux.engines.base import (CallEvent, Finish, FunctionSpec, GenerateRequest, ResponseFormat, Sampling, Text,
                                 TextDelta, Thinking, ToolCall, ToolResult, Turn, Usage)
from pollux.engines.upstream.flavors import flavor, vllm_flavor
from pollux.engines.upstream.pool import UpstreamOptions
from pollux.engines.upstream.translate import Answer, body, messages, usage, whole

VLLM, LLAMA, GENERIC = flavor("vllm"), flavor("llamacpp"), flavor("generic")
WEATHER = FunctionSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})


def request(**kw) -> GenerateRequest:
    kw.setdefault("turns", [Turn("user", [Text("Hi")])])
    return GenerateRequest(model="m", **kw)


def test_calls_without_ids_get_ids_their_results_match_by_name_in_order():
    turns = [Turn("user", [Text("go")]),
             Turn("model", [Text("thinking", thought=True), ToolCall("f", {"a": 1}), ToolCall("f", {"a": 2})]),
             Turn("user", [ToolResult("f", {"r": 1}), ToolResult("f", {"r": 2}), Text("and?")])]
    out = messages(request(turns=turns, system=[Text("Be brief.")]), VLLM)
    assert out[0] == {"role": "system", "content": "Be brief."}
    assistant = out[2]
    assert assistant["content"] is None and [c["id"] for c in assistant["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert [(m["role"], m.get("tool_call_id")) for m in out[3:]] == [("tool", "call_1_0"), ("tool", "call_1_1"),
                                                                    ("user", None)]
    assert out[-1]["content"] == "and?"
    assert assistant["reasoning_content"] == "thinking"  # the reasoning goes back as reasoning, not as text
    assert "reasoning_content" not in messages(request(turns=turns), GENERIC)[1]


def test_schema_enum_and_thinking_per_flavor():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    json_req = request(response_format=ResponseFormat("json", schema))
    assert body(json_req, VLLM, "m", stream=False)["structured_outputs"] == {"json": schema}
    assert body(json_req, vllm_flavor("0.9.1"), "m", stream=False)["guided_json"] == schema
    assert body(json_req, LLAMA, "m", stream=False)["json_schema"] == schema
    assert body(json_req, GENERIC, "m", stream=False)["response_format"]["json_schema"]["schema"] == schema
    enum = request(response_format=ResponseFormat("enum", {"enum": ["a", "b"]}))
    assert body(enum, VLLM, "m", stream=False)["structured_outputs"] == {"choice": ["a", "b"]}
    assert body(enum, LLAMA, "m", stream=False)["json_schema"] == {"type": "string", "enum": ["a", "b"]}
    off = request(thinking=Thinking(enabled=False))
    assert body(off, VLLM, "m", stream=False)["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in body(off, GENERIC, "m", stream=False)
    budget = request(thinking=Thinking(enabled=True, budget=64))
    assert body(budget, VLLM, "m", stream=False)["thinking_token_budget"] == 64
    assert body(budget, LLAMA, "m", stream=False)["thinking_budget_tokens"] == 64


def test_tool_modes_sampling_and_tenant():
    forced = request(functions=[WEATHER], tool_mode="ANY")
    assert body(forced, VLLM, "m", stream=False)["tool_choice"] == {"type": "function",
                                                                   "function": {"name": "get_weather"}}
    assert body(forced, LLAMA, "m", stream=False)["tool_choice"] == "required"
    sampled = body(request(sampling=Sampling(temperature=0.5, top_k=4, seed=9, max_output_tokens=100),
                           candidate_index=2, tenant="salt"), VLLM, "m", stream=True, context_length=4096)
    assert (sampled["top_k"], sampled["seed"], sampled["max_tokens"], sampled["cache_salt"]) == (4, 11, 100, "salt")
    assert sampled["stream_options"] == {"include_usage": True}
    generic = body(request(sampling=Sampling(top_k=4, max_output_tokens=65536), tenant="salt"), GENERIC, "m",
                   stream=False, context_length=32768)
    assert "top_k" not in generic and "cache_salt" not in generic and "max_tokens" not in generic


def test_stream_deltas_become_events_with_calls_whole_and_usage():
    answer = Answer()
    events = answer.delta({"reasoning": "hmm"}) + answer.delta({"content": "Hi"})
    events += answer.delta({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]})
    events += answer.delta({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
    events += answer.end("tool_calls")
    assert events == [TextDelta("hmm", thought=True), TextDelta("Hi"), CallEvent(ToolCall("f", {"a": 1}, "c1"))]
    assert answer.finished() == Finish("STOP")
    counted = usage({"prompt_tokens": 9, "completion_tokens": 14, "prompt_tokens_details": {"cached_tokens": 3}},
                    [answer])
    assert counted == Usage(9, 14, 8, 3)  # no reasoning_tokens: shared out by characters (3 of 5 → 8 of 14)


def test_bad_call_arguments_and_enum_answers():
    broken = Answer()
    assert whole({"message": {"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{oops"}}]},
                  "finish_reason": "tool_calls"}, broken) == []
    assert broken.finished() == Finish("MALFORMED_FUNCTION_CALL")
    enum = Answer(enum=True)
    assert whole({"message": {"content": "\"red\""}, "finish_reason": "stop"}, enum) == [TextDelta("red")]
    cut = Answer()
    assert cut.end("length") == [] and cut.finished() == Finish("MAX_TOKENS")


def test_options_are_checked():
    with pytest.raises(ValueError, match="base_url"):
        UpstreamOptions.from_dict({})
    with pytest.raises(ValueError, match="flavor"):
        UpstreamOptions.from_dict({"base_url": "http://x/v1", "flavor": "tgi"})
    with pytest.raises(ValueError, match="unknown openai engine option"):
        UpstreamOptions.from_dict({"base_url": "http://x/v1", "modle": "typo"})
    assert UpstreamOptions.from_dict({"base_url": ["http://a/v1/", "http://b/v1"]}).urls == ["http://a/v1",
                                                                                             "http://b/v1"]
