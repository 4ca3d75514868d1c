"""Sampling parameters are checked at the door, on every surface, with Gemini's rules and words: proto JSON types
(int32 and float limits, never a boolean for a number) and each field's range. A value that got past would reach the
sampler, where a NaN or an infinity fails every request decoding in the same batch.

Ranges: temperature [0, maxTemperature] (the real message reads "from 0 (inclusive) to 2.0001 (exclusive)"), topP
[0, 1], candidateCount [1, 8], maxOutputTokens [1, outputTokenLimit], logprobs [0, 20] (semantics.md §3, §8);
presencePenalty and frequencyPenalty from -2.0 "up to, but not including, 2.0" (Vertex AI's GenerationConfig).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from google.genai import errors, types
from openai import OpenAI

FLASH = "/v1beta/models/gemini-2.5-flash"
HELLO = [{"role": "user", "parts": [{"text": "hi"}]}]
CHAT = "/v1beta/openai/chat/completions"
TIMEOUT = 30


def range_message(name: str, value: str, low: str, high: str, high_inclusive: bool) -> str:
    upper = "inclusive" if high_inclusive else "exclusive"
    return (f"Unable to submit request because it has a {name} value of {value} but the supported range is from "
            f"{low} (inclusive) to {high} ({upper}). Update the value and try again.")


def penalty_message(name: str, value: str) -> str:
    return range_message(name, value, "-2", "2", high_inclusive=False)


# Each native surface that takes a generationConfig, as (path, body for a config).
def _generate(config: dict[str, Any]) -> dict[str, Any]:
    return {"contents": HELLO, "generationConfig": config}


def _count(config: dict[str, Any]) -> dict[str, Any]:
    return {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": HELLO,
                                       "generationConfig": config}}


SURFACES = {
    "generateContent": (f"{FLASH}:generateContent", _generate),
    "streamGenerateContent": (f"{FLASH}:streamGenerateContent?alt=sse", _generate),
    "countTokens": (f"{FLASH}:countTokens", _count),
}


def at(surface: str, path: str) -> str:
    """A field's path in parse errors: countTokens holds the config inside its generateContentRequest."""
    return f"generate_content_request.{path}" if surface == "countTokens" else path


def post(server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, content=json.dumps(body, allow_nan=False).encode(), timeout=TIMEOUT,
                      headers={"x-goog-api-key": server.api_key, "Content-Type": "application/json"})


def native(server, surface: str, **config: Any) -> httpx.Response:
    path, body = SURFACES[surface]
    return post(server, path, body(config))


def assert_400(r: httpx.Response, message: str) -> None:
    """Gemini's error, with exactly this message."""
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400, error
    assert error["message"] == message, error["message"]


def assert_ok(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text


# Penalties -----------------------------------------------------------------------------------------------------------
PENALTIES = {"presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty"}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("field", PENALTIES)
@pytest.mark.parametrize("value, shown", [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), (2.0, "2"), (2.5, "2.5"),
    (-2.01, "-2.01"), (1e30, "1e+30"), ("3", "3"),
])
def test_penalty_out_of_range(server, surface, field, value, shown):
    """NaN and the infinities (which proto JSON takes as strings) and finite values outside [-2, 2) are refused."""
    assert_400(native(server, surface, **{field: value}), penalty_message(field, shown))


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("field", PENALTIES)
def test_penalty_beyond_float(server, surface, field):
    """-1e308 is a finite JSON number, but no float32 holds it: the parser refuses it, as the real one does."""
    assert_400(native(server, surface, **{field: -1e308}),
               f"Invalid value at '{at(surface, 'generation_config.' + PENALTIES[field])}' (TYPE_FLOAT), -1e+308")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("value", [-2.0, 1.99, 0, "0.5"])
def test_penalty_in_range(server, surface, value):
    assert_ok(native(server, surface, presencePenalty=value, frequencyPenalty=value, maxOutputTokens=4))


# int32 fields --------------------------------------------------------------------------------------------------------
INT32_FIELDS = {
    "topK": "generation_config.top_k",
    "candidateCount": "generation_config.candidate_count",
    "maxOutputTokens": "generation_config.max_output_tokens",
    "seed": "generation_config.seed",
    "logprobs": "generation_config.logprobs",
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("field", INT32_FIELDS)
@pytest.mark.parametrize("value, shown", [
    (1e23, "1e+23"), (2**31, "2147483648"), (-2**31 - 1, "-2147483649"), (1.5, "1.5"), ("1e3", '"1e3"'),
    ("seven", '"seven"'),
])
def test_int32_fields_refuse_what_int32_cannot_hold(server, surface, field, value, shown):
    config = {field: value, "responseLogprobs": True}
    assert_400(native(server, surface, **config),
               f"Invalid value at '{at(surface, INT32_FIELDS[field])}' (TYPE_INT32), {shown}")


@pytest.mark.parametrize("surface", SURFACES)
def test_thinking_budget_is_int32(server, surface):
    r = native(server, surface, thinkingConfig={"thinkingBudget": 2**31})
    path = at(surface, "generation_config.thinking_config.thinking_budget")
    assert_400(r, f"Invalid value at '{path}' (TYPE_INT32), 2147483648")


@pytest.mark.parametrize("config", [
    {"topK": 40.0}, {"topK": "40"}, {"seed": -2**31}, {"seed": 2**31 - 1}, {"seed": "-7"}, {"candidateCount": 1.0},
], ids=["topK-40.0", "topK-string", "seed-min", "seed-max", "seed-string", "candidateCount-1.0"])
def test_int32_as_proto_json_writes_it(server, config):
    """Proto JSON takes an integer quoted, or written as a float with nothing after the point."""
    assert_ok(native(server, "generateContent", maxOutputTokens=4, **config))


# Booleans are not numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("field, path, type_name", [
    ("temperature", "generation_config.temperature", "TYPE_FLOAT"),
    ("topP", "generation_config.top_p", "TYPE_FLOAT"),
    ("presencePenalty", "generation_config.presence_penalty", "TYPE_FLOAT"),
    ("frequencyPenalty", "generation_config.frequency_penalty", "TYPE_FLOAT"),
    ("topK", "generation_config.top_k", "TYPE_INT32"),
    ("candidateCount", "generation_config.candidate_count", "TYPE_INT32"),
    ("maxOutputTokens", "generation_config.max_output_tokens", "TYPE_INT32"),
    ("seed", "generation_config.seed", "TYPE_INT32"),
])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number(server, surface, field, path, type_name, value):
    shown = "true" if value else "false"
    assert_400(native(server, surface, **{field: value}),
               f"Invalid value at '{at(surface, path)}' ({type_name}), {shown}")


def test_a_boolean_thinking_budget_is_not_a_number(server):
    r = native(server, "generateContent", thinkingConfig={"thinkingBudget": True})
    assert_400(r, "Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), true")


# The other ranges ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("config, message", [
    ({"temperature": "NaN"}, range_message("temperature", "NaN", "0", "2.0001", False)),
    ({"temperature": "Infinity"}, range_message("temperature", "Infinity", "0", "2.0001", False)),
    ({"temperature": 2.0002}, range_message("temperature", "2.0002", "0", "2.0001", False)),
    ({"temperature": -0.5}, range_message("temperature", "-0.5", "0", "2.0001", False)),
    ({"topP": "NaN"}, range_message("topP", "NaN", "0", "1", True)),
    ({"topP": 1.5}, range_message("topP", "1.5", "0", "1", True)),
    ({"candidateCount": 9}, range_message("candidateCount", "9", "1", "8", True)),
    ({"maxOutputTokens": 0}, range_message("maxOutputTokens", "0", "1", "65537", False)),
    ({"maxOutputTokens": 70000}, range_message("maxOutputTokens", "70000", "1", "65537", False)),
    ({"responseLogprobs": True, "logprobs": 21}, range_message("logprobs", "21", "0", "20", True)),
    ({"responseLogprobs": True, "logprobs": -1}, range_message("logprobs", "-1", "0", "20", True)),
], ids=["temperature-NaN", "temperature-Infinity", "temperature-2.0002", "temperature--0.5", "topP-NaN", "topP-1.5",
        "candidateCount-9", "maxOutputTokens-0", "maxOutputTokens-70000", "logprobs-21", "logprobs--1"])
def test_sampling_ranges(server, surface, config, message):
    assert_400(native(server, surface, **config), message)


@pytest.mark.parametrize("config", [
    {"temperature": 0}, {"temperature": 2.0}, {"temperature": "1.5"}, {"topP": 0}, {"topP": 1},
    {"candidateCount": 8}, {"responseLogprobs": True, "logprobs": 20},
], ids=["temperature-0", "temperature-2", "temperature-string", "topP-0", "topP-1", "candidateCount-8", "logprobs-20"])
def test_sampling_range_edges_are_accepted(server, config):
    assert_ok(native(server, "generateContent", maxOutputTokens=4, **config))


# Through the SDKs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, words", [
    ({"presence_penalty": 2.0}, "presencePenalty value of 2 "),
    ({"frequency_penalty": -3.0}, "frequencyPenalty value of -3 "),
])
def test_sdk_penalty_out_of_range_is_a_client_error(client, config, words):
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                       config=types.GenerateContentConfig(**config))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert words in info.value.message


# OpenAI-compatible surface --------------------------------------------------------------------------------------------
@pytest.fixture
def oai(server) -> OpenAI:
    return OpenAI(api_key=server.api_key, base_url=server.base_url + "/v1beta/openai/", max_retries=0)


def chat(server, **fields: Any) -> httpx.Response:
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **fields}
    return httpx.post(server.base_url + CHAT, content=json.dumps(body, allow_nan=False).encode(), timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})


def assert_400_array(r: httpx.Response, message: str) -> None:
    """The compat layer's error: Google's, inside a JSON array."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 1, body
    assert body[0]["error"]["status"] == "INVALID_ARGUMENT" and body[0]["error"]["message"] == message, body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fields, message", [
    ({"presence_penalty": "NaN"}, penalty_message("presence_penalty", "NaN")),
    ({"presence_penalty": 2.0}, penalty_message("presence_penalty", "2")),
    ({"frequency_penalty": "-Infinity"}, penalty_message("frequency_penalty", "-Infinity")),
    ({"frequency_penalty": -2.5}, penalty_message("frequency_penalty", "-2.5")),
    ({"frequency_penalty": -1e308}, "Invalid value at 'frequency_penalty' (TYPE_FLOAT), -1e+308"),
    ({"temperature": "NaN"}, range_message("temperature", "NaN", "0", "2.0001", False)),
    ({"temperature": 3}, range_message("temperature", "3", "0", "2.0001", False)),
    ({"top_p": 1.5}, range_message("top_p", "1.5", "0", "1", True)),
    ({"n": 9}, range_message("n", "9", "1", "8", True)),
    ({"n": 0}, range_message("n", "0", "1", "8", True)),
    ({"max_tokens": 0}, range_message("max_tokens", "0", "1", "65537", False)),
    ({"max_tokens": None, "max_completion_tokens": 70000},
     range_message("max_completion_tokens", "70000", "1", "65537", False)),
    ({"logprobs": True, "top_logprobs": 21}, range_message("top_logprobs", "21", "0", "20", True)),
    ({"top_logprobs": -1}, range_message("top_logprobs", "-1", "0", "20", True)),
    ({"seed": 2**31}, "Invalid value at 'seed' (TYPE_INT32), 2147483648"),
    ({"n": 1e23}, "Invalid value at 'n' (TYPE_INT32), 1e+23"),
    ({"max_tokens": 2.5}, "Invalid value at 'max_tokens' (TYPE_INT32), 2.5"),
    ({"temperature": True}, "Invalid value at 'temperature' (TYPE_FLOAT), true"),
    ({"top_p": False}, "Invalid value at 'top_p' (TYPE_FLOAT), false"),
    ({"n": True}, "Invalid value at 'n' (TYPE_INT32), true"),
    ({"presence_penalty": True}, "Invalid value at 'presence_penalty' (TYPE_FLOAT), true"),
    ({"extra_body": {"google": {"thinking_config": {"thinking_budget": True}}}},
     "Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), true"),
])
def test_openai_sampling_limits(server, fields, message, stream):
    assert_400_array(chat(server, stream=stream, **fields), message)


def test_openai_sampling_in_range(server):
    r = chat(server, temperature=2, top_p=0, n=2, presence_penalty=-2, frequency_penalty=1.99, seed=-2**31,
             logprobs=True, top_logprobs=20)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2


def test_openai_sdk_penalty_out_of_range(oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="gemini-2.5-flash", presence_penalty=2.0,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert err.value.body[0]["error"]["message"] == penalty_message("presence_penalty", "2")
