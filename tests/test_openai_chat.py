"""The OpenAI-compatible chat surface through the openai SDK (and the docs' curl bodies): the same service as the
native routes, in OpenAI's wire format."""

from __future__ import annotations

import base64
import json

import httpx
import media
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

TIMEOUT = 60


def message(err: openai.APIStatusError) -> str:
    """The Google error inside the compat layer's array body."""
    assert isinstance(err.body, list), err.body
    return err.body[0]["error"]["message"]


@pytest.fixture
def oai(server) -> OpenAI:
    return OpenAI(api_key=server.api_key, base_url=server.base_url + "/v1beta/openai/", max_retries=0)


def test_docs_quickstart(oai):
    response = oai.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "Explain to me how AI works"}])
    choice = response.choices[0]
    assert choice.message.role == "assistant" and "Explain to me how AI works" in choice.message.content
    assert choice.finish_reason == "stop" and response.object == "chat.completion"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.completion_tokens_details.reasoning_tokens > 0  # 2.5 Flash thinks by default
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_same_answer_as_the_native_route(oai, server):
    native = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:generateContent",
                        headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT,
                        json={"contents": [{"role": "user", "parts": [{"text": "Say something"}]}],
                              "generationConfig": {"seed": 7, "maxOutputTokens": 500}}).json()
    compat = oai.chat.completions.create(model="gemini-2.5-flash", seed=7, max_tokens=500,
                                         messages=[{"role": "user", "content": "Say something"}])
    assert compat.choices[0].message.content == native["candidates"][0]["content"]["parts"][-1]["text"]
    assert compat.usage.prompt_tokens == native["usageMetadata"]["promptTokenCount"]


def test_reasoning_effort_and_thinking_config(oai):
    def thoughts(**kw) -> int:
        r = oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Think"}], **kw)
        return r.usage.completion_tokens_details.reasoning_tokens

    assert thoughts(reasoning_effort="none") == 0
    assert thoughts(reasoning_effort="low") > 0
    shown = oai.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "Explain to me how AI works"}],
        extra_body={"extra_body": {"google": {"thinking_config": {"thinking_budget": "low", "include_thoughts": True}}}})
    assert shown.choices[0].message.content.startswith("<thought>")
    flat = oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"google": {"thinking_config": {"include_thoughts": True}}})
    assert "<thought>" in flat.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}],
                                    reasoning_effort="low",
                                    extra_body={"google": {"thinking_config": {"thinking_budget": 10}}})
    assert "cannot both be set" in message(err.value)
    with pytest.raises(openai.BadRequestError):  # 2.5 Pro cannot stop thinking
        oai.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "Hi"}],
                                    reasoning_effort="none")


def test_stream_with_usage_ends_with_done(oai, server):
    chunks = list(oai.chat.completions.create(model="gemini-2.5-flash", stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "Tell me a story"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Tell me a story" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    with httpx.stream("POST", f"{server.base_url}/v1beta/openai/chat/completions", timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {server.api_key}"},
                      json={"model": "gemini-2.5-flash", "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. Chicago, IL"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}


def test_tools_round_trip(oai):
    messages = [{"role": "user", "content": "What's the weather like in Chicago today?"}]
    first = oai.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER],
                                        tool_choice="auto")
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["location"] == "Chicago"
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    second = oai.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER])
    assert "temperature 21" in second.choices[0].message.content
    forced = oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hello"}],
                                         tools=[WEATHER], tool_choice={"type": "function",
                                                                       "function": {"name": "get_weather"}})
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    none = oai.chat.completions.create(model="gemini-2.5-flash", tools=[WEATHER], tool_choice="none",
                                       messages=[{"role": "user", "content": "Weather in Chicago?"}])
    assert not none.choices[0].message.tool_calls


def test_gemini_3_signatures_travel_in_extra_content(oai):
    messages = [{"role": "user", "content": "Check the weather in Chicago."}]
    first = oai.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert call.model_extra["extra_content"]["google"]["thought_signature"]
    answer = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    ok = oai.chat.completions.create(model="gemini-3-pro-preview", tools=[WEATHER],
                                     messages=messages + [first.choices[0].message.model_dump(exclude_none=True), answer])
    assert ok.choices[0].message.content
    stripped = first.choices[0].message.model_dump(exclude_none=True)
    for tc in stripped["tool_calls"]:
        tc.pop("extra_content", None)
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gemini-3-pro-preview", tools=[WEATHER], messages=messages + [stripped, answer])
    assert "thought_signature" in message(err.value)


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


def test_structured_output_parse(oai):
    completion = oai.beta.chat.completions.parse(
        model="gemini-2.5-flash",
        messages=[{"role": "system", "content": "Extract the event information."},
                  {"role": "user", "content": "John and Susan are going to an AI conference on Friday."}],
        response_format=CalendarEvent)
    event = completion.choices[0].message.parsed
    assert isinstance(event, CalendarEvent) and isinstance(event.participants, list)
    plain = oai.chat.completions.create(model="gemini-2.5-flash", response_format={"type": "json_object"},
                                        messages=[{"role": "user", "content": "A JSON object, please"}])
    assert isinstance(json.loads(plain.choices[0].message.content), dict)


def test_image_and_audio_parts(oai):
    image = base64.b64encode(media.sample("google.png").read_bytes()).decode()
    audio = base64.b64encode(media.sample("voice_sample.wav").read_bytes()).decode()
    response = oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image and this audio?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}])
    assert "image/png" in response.choices[0].message.content and "audio/wav" in response.choices[0].message.content


def test_n_stop_and_max_tokens(oai):
    many = oai.chat.completions.create(model="gemini-2.0-flash", n=2, messages=[{"role": "user", "content": "Hi"}])
    assert [c.index for c in many.choices] == [0, 1]
    short = oai.chat.completions.create(model="gemini-2.0-flash", max_completion_tokens=3,
                                        messages=[{"role": "user", "content": "Hi"}])
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    stopped = oai.chat.completions.create(model="gemini-2.0-flash", stop=["emulator"],
                                          messages=[{"role": "user", "content": "Hi"}])
    assert "emulator" not in stopped.choices[0].message.content


def test_errors_arrive_as_the_sdk_expects(server, oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gemini-2.5-flash", temperature=5,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert isinstance(err.value.body, list) and err.value.body[0]["error"]["status"] == "INVALID_ARGUMENT"
    bad = OpenAI(api_key="AIza" + "x" * 35, base_url=server.base_url + "/v1beta/openai/", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        bad.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}])
    assert "API key not valid" in message(err.value)


def test_models_and_other_base_urls(oai, server):
    ids = [m.id for m in oai.models.list()]
    assert "models/gemini-2.5-flash" in ids
    assert oai.models.retrieve("gemini-2.0-flash").id == "models/gemini-2.0-flash"
    assert oai.models.retrieve("models/gemini-2.0-flash").id == "models/gemini-2.0-flash"  # sent as models%2F...
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")
    for base in ("/v1beta/", "/v1/openai/"):  # the docs' cached_content example uses .../v1beta/ as its base URL
        other = OpenAI(api_key=server.api_key, base_url=server.base_url + base, max_retries=0)
        assert other.chat.completions.create(model="gemini-2.5-flash",
                                             messages=[{"role": "user", "content": "Hi"}]).choices[0].message.content


def test_thoughts_stream_in_one_block_and_logprobs(oai):
    extra = {"extra_body": {"google": {"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}}}
    whole = oai.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}],
                                        extra_body=extra).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}], extra_body=extra, stream=True)
        if c.choices)
    assert streamed == whole and whole.count("<think>") == 1 and whole.count("</think>") == 1
    with_logprobs = oai.chat.completions.create(model="gemini-2.0-flash", logprobs=True, top_logprobs=2,
                                                messages=[{"role": "user", "content": "Hi"}])
    content = with_logprobs.choices[0].logprobs.content
    assert "".join(t.token for t in content) == with_logprobs.choices[0].message.content
    assert all(len(t.top_logprobs) == 1 for t in content)  # a deterministic model has no alternatives to offer


@pytest.mark.parametrize("patch", [
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}]},
    {"tool_choice": {"type": "function", "function": "f"}, "tools": [WEATHER]},
    {"response_format": {"type": "json_schema", "json_schema": "x"}},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"},
         "extra_content": {"google": "x"}}]}, {"role": "tool", "tool_call_id": "a", "content": "ok"}]},
    {"google": {"thinking_config": {"thinking_budget": 0}},
     "extra_body": {"google": {"thinking_config": {"include_thoughts": True}}}},
    {"max_tokens": 50, "max_completion_tokens": 4000},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "m4a"}}]}]},
    {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]},
                  {"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": {"a": 1}}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 7}]}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": 7}}]},
    {"web_search_options": {}},
])
def test_bad_input_is_a_400_array(server, patch):
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}], **patch}
    r = httpx.post(f"{server.base_url}/v1beta/openai/chat/completions", json=body, timeout=TIMEOUT,
                   headers={"Authorization": f"Bearer {server.api_key}"})
    assert r.status_code == 400 and r.json()[0]["error"]["status"] == "INVALID_ARGUMENT", r.text


def test_a_missing_field_is_named_not_echoed(server):
    r = httpx.post(f"{server.base_url}/v1beta/openai/chat/completions", timeout=TIMEOUT,
                   json={"messages": [{"role": "user", "content": "a secret prompt"}]},
                   headers={"Authorization": f"Bearer {server.api_key}"})
    assert r.status_code == 400 and r.json()[0]["error"]["message"] == "Missing required field 'model'.", r.text


def test_unknown_openai_paths_answer_arrays(server):
    for method, path in (("GET", "/v1beta/openai/chat/completions"), ("POST", "/v1beta/openai/chat/completion")):
        r = httpx.request(method, server.base_url + path, headers={"Authorization": f"Bearer {server.api_key}"},
                          timeout=TIMEOUT)
        assert r.status_code == 404 and isinstance(r.json(), list), (path, r.text)
