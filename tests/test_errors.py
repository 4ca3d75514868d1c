"""Bad input gets Gemini's error, never a 500 or a hang; casing rules of proto JSON; errors on every kind of path.

Every error must be `{"error": {"code", "message", "status"}}` with `Content-Type: application/json`
(reference/wire-protocol.md §13, semantics.md §13).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

FLASH = "/v1beta/models/gemini-2.5-flash"
GENERATE = f"{FLASH}:generateContent"
COUNT = f"{FLASH}:countTokens"
STREAM_SSE = f"{FLASH}:streamGenerateContent?alt=sse"
HELLO = [{"role": "user", "parts": [{"text": "hi"}]}]
TIMEOUT = 15  # no request here may hang

NOT_FOUND_MESSAGE = ("models/{model} is not found for API version {version}, or is not supported for generateContent. "
                     "Call ListModels to see the list of available models and their supported methods.")


@pytest.fixture(scope="module")
def log_offset(server) -> int:
    """Where this module's part of the server log starts (other modules share the server)."""
    return len(server.log())


@pytest.fixture(autouse=True)
def _mark_log(log_offset):
    return log_offset


# Helpers -------------------------------------------------------------------------------------------------------------
def post(server, path: str, body: Any = None, *, content: bytes | None = None) -> httpx.Response:
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(server.base_url + path, content=data, timeout=TIMEOUT,
                      headers={"x-goog-api-key": server.api_key, "Content-Type": "application/json"})


def assert_error(r: httpx.Response, code: int, status: str | None = None, *, message: str | None = None,
                 contains: str | None = None, startswith: str | None = None) -> dict:
    """The response is Gemini's JSON error with this HTTP code; returns `error`."""
    where = f"{r.request.method} {r.request.url} -> {r.status_code} {r.headers.get('content-type')}: {r.text[:600]}"
    assert r.status_code == code, where
    assert r.headers.get("content-type", "").split(";")[0].strip() == "application/json", where
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert error["code"] == code, where
    assert isinstance(error["message"], str) and error["message"], where
    assert isinstance(error["status"], str) and error["status"], where
    if status is not None:
        assert error["status"] == status, where
    if message is not None:
        assert error["message"] == message, where
    if contains is not None:
        assert contains in error["message"], where
    if startswith is not None:
        assert error["message"].startswith(startswith), where
    return error


def with_config(**config: Any) -> dict:
    return {"contents": HELLO, "generationConfig": config}


# Malformed bodies and wrong types ------------------------------------------------------------------------------------
def test_malformed_json(server):
    assert_error(post(server, GENERATE, content=b"{bad"), 400, "INVALID_ARGUMENT",
                 startswith="Invalid JSON payload received.")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
@pytest.mark.parametrize("path", [GENERATE, COUNT, "/v1beta/openai/chat/completions"])
def test_non_finite_numbers_are_not_json(server, path, literal):
    """JSON has no NaN or infinity; a lenient parser let them reach schemas and samplers (a 500)."""
    if "openai" in path:
        body = (b'{"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], '
                b'"temperature": ' + literal + b'}')
    else:
        body = (b'{"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"responseMimeType": '
                b'"application/json", "responseJsonSchema": {"type": "number", "minimum": ' + literal + b'}}}')
    r = post(server, path, content=body)
    if "openai" in path:
        assert r.status_code == 400 and r.json()[0]["error"]["message"].startswith("Invalid JSON payload received.")
    else:
        assert_error(r, 400, "INVALID_ARGUMENT", startswith="Invalid JSON payload received.")


def test_json_array_body(server):
    assert_error(post(server, GENERATE, [{"contents": HELLO}]), 400, "INVALID_ARGUMENT",
                 startswith="Invalid JSON payload received.")


@pytest.mark.parametrize("body, field", [
    (with_config(temperature="hot"), "generation_config.temperature"),
    ({"contents": "hi"}, "contents"),
    (with_config(candidateCount="x"), "generation_config.candidate_count"),
], ids=["temperature-hot", "contents-string", "candidateCount-x"])
def test_wrong_types(server, body, field):
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT", contains=f"Invalid value at '{field}'")


def test_unknown_top_level_field(server):
    assert_error(post(server, GENERATE, {"contents": HELLO, "foo": 1}), 400, "INVALID_ARGUMENT",
                 message='Invalid JSON payload received. Unknown name "foo": Cannot find field.')


def test_unknown_nested_field(server):
    assert_error(post(server, GENERATE, with_config(temp=0.5)), 400, "INVALID_ARGUMENT",
                 contains="Unknown name \"temp\" at 'generation_config'")


@pytest.mark.parametrize("body, field, value", [
    (with_config(responseModalities=["FOO"]), "generation_config.response_modalities[0]", "FOO"),
    ({"contents": HELLO, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
     "tool_config.function_calling_config.mode", "SOMETIMES"),
], ids=["responseModalities", "functionCallingConfig.mode"])
def test_unknown_enum_value(server, body, field, value):
    error = assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT", contains=f"Invalid value at '{field}'")
    assert f'"{value}"' in error["message"]


# Contents ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [{"contents": []}, {}, {"generationConfig": {"temperature": 0.5}}],
                         ids=["empty", "missing", "missing-with-config"])
def test_contents_not_specified(server, body):
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT", contains="contents is not specified")


@pytest.mark.parametrize("content", [{"role": "user", "parts": []}, {"role": "user"}], ids=["empty-parts", "no-parts"])
def test_content_without_parts(server, content):
    assert_error(post(server, GENERATE, {"contents": [content]}), 400, "INVALID_ARGUMENT")


def test_system_role_in_contents(server):
    body = {"contents": [{"role": "system", "parts": [{"text": "be terse"}]}, *HELLO]}
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT", message="Please use a valid role: user, model.")


def test_body_over_100_mb_is_refused(server):
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "a" * (101 * 1024 * 1024)}]}]}).encode()
    r = post(server, GENERATE, content=body)
    assert_error(r, 400, "INVALID_ARGUMENT", message="Request payload size exceeds the limit: 104857600 bytes.")


def test_body_over_100_mb_without_content_length(server):
    """A chunked upload has no Content-Length to check up front: the limit must hold while reading."""
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "b" * (101 * 1024 * 1024)}]}]}).encode()

    def chunks():
        for i in range(0, len(body), 1 << 16):
            yield body[i:i + (1 << 16)]

    r = httpx.post(server.base_url + GENERATE, content=chunks(), timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "application/json"})
    assert_error(r, 400, "INVALID_ARGUMENT", message="Request payload size exceeds the limit: 104857600 bytes.")


# Models --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1beta", "v1", "v1alpha"])
def test_unknown_model(server, version):
    r = post(server, f"/{version}/models/gemini-nope:generateContent", {"contents": HELLO})
    assert_error(r, 404, "NOT_FOUND", message=NOT_FOUND_MESSAGE.format(model="gemini-nope", version=version))


def test_embedding_model_cannot_generate(server):
    r = post(server, "/v1beta/models/gemini-embedding-001:generateContent", {"contents": HELLO})
    assert_error(r, 404, "NOT_FOUND",
                 message=NOT_FOUND_MESSAGE.format(model="gemini-embedding-001", version="v1beta"))


# Generation config ranges and combinations ----------------------------------------------------------------------------
SCHEMA = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}
JSON_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


@pytest.mark.parametrize("config", [
    {"temperature": 2.5},
    {"temperature": -1},
    {"topP": 1.5},
    {"candidateCount": 0},
    {"candidateCount": 9},
    {"stopSequences": ["a", "b", "c", "d", "e", "f"]},
    {"maxOutputTokens": 0},
    {"maxOutputTokens": 70000},
    {"logprobs": 3},
    {"responseSchema": SCHEMA},
    {"responseMimeType": "application/json", "responseSchema": SCHEMA, "responseJsonSchema": JSON_SCHEMA},
    {"responseMimeType": "text/html"},
    {"thinkingConfig": {"thinkingBudget": 99999}},
], ids=["temperature-2.5", "temperature--1", "topP-1.5", "candidateCount-0", "candidateCount-9", "6-stopSequences",
        "maxOutputTokens-0", "maxOutputTokens-70000", "logprobs-without-responseLogprobs",
        "responseSchema-without-mime", "responseSchema-and-responseJsonSchema", "mime-text/html",
        "thinkingBudget-99999"])
def test_bad_generation_config(server, config):
    assert_error(post(server, GENERATE, with_config(**config)), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
def test_thinking_budget_and_level_together(server, model):
    body = with_config(thinkingConfig={"thinkingBudget": 1024, "thinkingLevel": "low"})
    assert_error(post(server, f"/v1beta/models/{model}:generateContent", body), 400, "INVALID_ARGUMENT",
                 message="You can only set only one of thinking budget and thinking level.")


def test_thinking_budget_zero_on_pro(server):
    body = with_config(thinkingConfig={"thinkingBudget": 0})
    assert_error(post(server, "/v1beta/models/gemini-2.5-pro:generateContent", body), 400, "INVALID_ARGUMENT",
                 message="Budget 0 is invalid. This model only works in thinking mode.")


# Parts and tools -----------------------------------------------------------------------------------------------------
def test_invalid_base64_inline_data(server):
    body = {"contents": [{"role": "user", "parts": [
        {"text": "what is this?"}, {"inlineData": {"mimeType": "image/png", "data": "!!not base64 at all!!"}}]}]}
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT")


def test_invalid_function_name(server):
    body = {"contents": HELLO, "tools": [{"functionDeclarations": [{"name": "get weather!", "description": "x"}]}]}
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT")


def test_allowed_function_names_with_mode_auto(server):
    body = {"contents": HELLO,
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather in a city"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_weather"]}}}
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT")


# countTokens ---------------------------------------------------------------------------------------------------------
def test_count_tokens_rejects_top_level_system_instruction(server):
    body = {"contents": HELLO, "systemInstruction": {"parts": [{"text": "be terse"}]}}
    r = post(server, COUNT, body)
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code)


def test_count_tokens_with_contents_and_generate_content_request(server):
    body = {"contents": HELLO, "generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": HELLO}}
    assert_error(post(server, COUNT, body), 400, "INVALID_ARGUMENT")


def test_count_tokens_valid_requests_still_work(server):
    for body in ({"contents": HELLO},
                 {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": HELLO,
                                             "systemInstruction": {"parts": [{"text": "be terse"}]}}}):
        r = post(server, COUNT, body)
        assert r.status_code == 200, r.text
        assert r.json()["totalTokens"] > 0


# Through the Python SDK ----------------------------------------------------------------------------------------------
def test_sdk_unknown_model_is_client_error_404(client):
    from google.genai import errors

    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-nope", contents="hi")
    assert info.value.code == 404
    assert info.value.status == "NOT_FOUND"
    assert info.value.message == NOT_FOUND_MESSAGE.format(model="gemini-nope", version="v1")


def test_sdk_temperature_5_is_client_error_400(client):
    from google.genai import errors, types

    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                       config=types.GenerateContentConfig(temperature=5))
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"


def test_sdk_stream_with_bad_config_is_client_error_400(client):
    from google.genai import errors, types

    with pytest.raises(errors.ClientError) as info:
        for _ in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi",
                                                       config=types.GenerateContentConfig(temperature=5)):
            pass
    assert info.value.code == 400


# Casing: camelCase and snake_case in one body; user keys never re-cased -----------------------------------------------
def _casing_variants() -> dict[str, dict]:
    data = base64.b64encode(b"the attached note says hello there").decode()
    camel = {
        "contents": [{"role": "user", "parts": [{"text": "Describe this"},
                                                {"inlineData": {"mimeType": "text/plain", "data": data}}]}],
        "systemInstruction": {"parts": [{"text": "Be brief"}]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
        "generationConfig": {"maxOutputTokens": 6, "candidateCount": 1,
                             "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 256}},
    }
    mixed = {
        "contents": [{"role": "user", "parts": [{"text": "Describe this"},
                                                {"inlineData": {"mime_type": "text/plain", "data": data}}]}],
        "system_instruction": {"parts": [{"text": "Be brief"}]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
        "generation_config": {"max_output_tokens": 6, "candidateCount": 1,
                              "thinkingConfig": {"include_thoughts": True, "thinking_budget": 256}},
    }
    snake = {
        "contents": [{"role": "user", "parts": [{"text": "Describe this"},
                                                {"inline_data": {"mime_type": "text/plain", "data": data}}]}],
        "system_instruction": {"parts": [{"text": "Be brief"}]},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
        "generation_config": {"max_output_tokens": 6, "candidate_count": 1,
                              "thinking_config": {"include_thoughts": True, "thinking_budget": 256}},
    }
    return {"camel": camel, "mixed": mixed, "snake": snake}


def test_snake_and_camel_case_mixed_in_one_body(server):
    answers = {}
    for name, body in _casing_variants().items():
        r = post(server, GENERATE, body)
        assert r.status_code == 200, f"{name}: {r.text}"
        answers[name] = r.json()
    for name, answer in answers.items():
        assert set(answer) >= {"candidates", "usageMetadata"}, answer
        (candidate,) = answer["candidates"]
        # include_thoughts was read: a thought summary comes back.
        assert any(p.get("thought") for p in candidate["content"]["parts"]), f"{name}: {answer}"
        # max_output_tokens was read: thoughts and answer share the 6-token budget.
        usage = answer["usageMetadata"]
        assert candidate["finishReason"] == "MAX_TOKENS", f"{name}: {answer}"
        assert usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0) <= 6, f"{name}: {usage}"
    # The same request in any casing is the same request (the emulator is deterministic for equal requests).
    camel = answers["camel"]
    for name in ("mixed", "snake"):
        assert answers[name]["candidates"] == camel["candidates"], name
        assert answers[name]["usageMetadata"] == camel["usageMetadata"], name


def test_inline_data_snake_case_mime_type_is_read(server):
    data = base64.b64encode(b"zebra crossing").decode()
    body = {"contents": [{"role": "user", "parts": [{"text": "Repeat:"},
                                                    {"inlineData": {"mime_type": "text/plain", "data": data}}]}],
            "generationConfig": {"thinkingConfig": {"thinking_budget": 0}}}
    r = post(server, GENERATE, body)
    assert r.status_code == 200, r.text
    prompt = r.json()["usageMetadata"]["promptTokenCount"]
    body["contents"][0]["parts"] = [{"text": "Repeat:"}]
    r2 = post(server, GENERATE, body)
    assert r2.status_code == 200, r2.text
    assert prompt > r2.json()["usageMetadata"]["promptTokenCount"], "the inline text was not counted"


USER_SCHEMA = {
    "type": "object",
    "properties": {
        "total_area_sq_mi": {"type": "number"},
        "cityObject": {"type": "object",
                       "properties": {"city_name": {"type": "string"}, "zipCode": {"type": "string"}},
                       "required": ["city_name", "zipCode"]},
    },
    "required": ["total_area_sq_mi", "cityObject"],
}


def test_user_schema_keys_are_never_recased(server):
    body = {"contents": [{"role": "user", "parts": [{"text": "Describe a city"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": USER_SCHEMA}}
    r = post(server, GENERATE, body)
    assert r.status_code == 200, r.text
    parts = r.json()["candidates"][0]["content"]["parts"]
    value = json.loads("".join(p.get("text", "") for p in parts if not p.get("thought")))
    assert set(value) == {"total_area_sq_mi", "cityObject"}, value
    assert set(value["cityObject"]) == {"city_name", "zipCode"}, value


def test_user_schema_keys_snake_case_config_keys(server):
    """`response_json_schema` spelled in snake_case, as some SDK paths send it: its contents stay as written."""
    body = {"contents": [{"role": "user", "parts": [{"text": "Describe a city"}]}],
            "generation_config": {"response_mime_type": "application/json", "response_json_schema": USER_SCHEMA}}
    r = post(server, GENERATE, body)
    assert r.status_code == 200, r.text
    parts = r.json()["candidates"][0]["content"]["parts"]
    value = json.loads("".join(p.get("text", "") for p in parts if not p.get("thought")))
    assert set(value) == {"total_area_sq_mi", "cityObject"}, value
    assert set(value["cityObject"]) == {"city_name", "zipCode"}, value


def test_sdk_response_json_schema_keys(client):
    from google.genai import types

    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="Describe a city",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=USER_SCHEMA))
    assert isinstance(response.parsed, dict), response.text
    assert set(response.parsed) == {"total_area_sq_mi", "cityObject"}
    assert set(response.parsed["cityObject"]) == {"city_name", "zipCode"}


# Streaming -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, code", [
    (STREAM_SSE, with_config(temperature=9), 400),
    (STREAM_SSE, {"contents": HELLO, "foo": 1}, 400),
    (STREAM_SSE, {"contents": []}, 400),
    ("/v1beta/models/gemini-nope:streamGenerateContent?alt=sse", {"contents": HELLO}, 404),
    (f"{FLASH}:streamGenerateContent", with_config(temperature=9), 400),
], ids=["sse-temperature", "sse-unknown-field", "sse-no-contents", "sse-unknown-model", "json-array-temperature"])
def test_invalid_stream_request_is_plain_http_error(server, path, body, code):
    r = post(server, path, body)
    assert not r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
    assert not r.text.startswith("data:"), r.text
    assert_error(r, code)


# Paths and methods ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [GENERATE, COUNT, f"{FLASH}:streamGenerateContent"])
def test_get_on_post_only_verb(server, path):
    r = httpx.get(server.base_url + path, headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code)


@pytest.mark.parametrize("method, path", [
    ("GET", "/nope"),
    ("GET", "/v1beta/nope"),
    ("GET", "/v2/models"),
    ("POST", "/v1beta/nope:generateContent"),
    ("POST", f"{FLASH}:noSuchVerb"),
    ("POST", "/v1beta/models"),
    ("DELETE", "/v1beta/models/gemini-2.5-flash"),
])
def test_unknown_paths_and_methods(server, method, path):
    r = httpx.request(method, server.base_url + path, headers={"x-goog-api-key": server.api_key},
                      json={} if method == "POST" else None, timeout=TIMEOUT)
    assert 400 <= r.status_code < 500, r.text
    assert "<html" not in r.text.lower()
    assert_error(r, r.status_code)


# Inputs that once cost a 500 or a hang ------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 30_000_000},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 10**9}}, "required": ["a"]},
    {"type": "array", "minItems": 10**7, "items": {"type": "string"}},
    {"type": "object", "minProperties": 10**9},
    {"type": "array", "minItems": 19_000, "items": {"type": "string", "pattern": "^[a-z]{5,10}@[a-z]+\\.com$"}},
], ids=["huge-string", "huge-nested-string", "huge-array", "huge-object", "many-patterned-strings"])
def test_schema_larger_than_any_answer_is_refused(server, schema):
    # How quickly is measured by bench/stall_bench.py, not here: no test depends on timing.
    r = post(server, GENERATE, with_config(responseMimeType="application/json", responseJsonSchema=schema))
    assert_error(r, 400, "INVALID_ARGUMENT", contains="cannot be satisfied")


def test_huge_string_parameter_in_a_function_declaration(server):
    tools = [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {
        "type": "object", "properties": {"x": {"type": "string", "minLength": 30_000_000}}, "required": ["x"]}}]}]
    body = {"contents": HELLO, "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("where", ["response", "function"])
def test_a_schema_of_over_5000_values_is_refused_up_front(server, where):
    schema = {"type": "string", "enum": [f"v{i}" for i in range(30_000)]}
    if where == "response":
        body, field = with_config(responseMimeType="application/json", responseJsonSchema=schema), \
            "generation_config.response_json_schema"
    else:
        body = {"contents": HELLO, "tools": [{"functionDeclarations": [
            {"name": "f", "parametersJsonSchema": {"type": "object", "properties": {"a": schema}}}]}]}
        field = "tools[0].function_declarations[0].parameters_json_schema"
    assert_error(post(server, GENERATE, body), 400, "INVALID_ARGUMENT",
                 message=f"* GenerateContentRequest.{field}: The schema is too large: it holds more than 5000 values.\n")


def test_a_costly_schema_ends_in_a_400_not_minutes_of_work(server):
    """2,000 oneOf branches that all match: each check validates every branch, and no value can match just one."""
    schema = {"oneOf": [{"type": "string"}] * 2000}
    r = post(server, GENERATE, with_config(responseMimeType="application/json", responseJsonSchema=schema))
    assert_error(r, 400, "INVALID_ARGUMENT", contains="cannot be satisfied")


@pytest.mark.parametrize("levels, nest", [
    (300, lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]}),
    (150, lambda s: {"type": "array", "items": s}),
    (60, lambda s: {"type": "object", "properties": {"a": s}}),
], ids=["objects-300", "arrays-150", "objects-60"])
def test_deeply_nested_schema(server, levels, nest):
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = nest(schema)
    r = post(server, GENERATE, with_config(responseMimeType="application/json", responseJsonSchema=schema))
    assert_error(r, 400, "INVALID_ARGUMENT")
    function = {"name": "f", "parametersJsonSchema": {"type": "object", "properties": {"a": schema}}}
    r = post(server, GENERATE, {"contents": HELLO, "tools": [{"functionDeclarations": [function]}],
                                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}})
    assert_error(r, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("schema", [7, "x", [1]])
def test_function_parameters_must_be_a_schema(server, schema):
    r = post(server, GENERATE, {"contents": HELLO, "tools": [{"functionDeclarations": [
        {"name": "f", "parametersJsonSchema": schema}]}]})
    assert_error(r, 400, "INVALID_ARGUMENT", contains="parameters_json_schema must be a JSON Schema object")


def test_enormous_integer(server):
    r = post(server, GENERATE, content=b'{"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": '
                                         b'{"candidateCount": 1' + b"0" * 400 + b"}}")
    assert_error(r, 400, "INVALID_ARGUMENT")


def test_enum_mime_type_needs_string_values(server):
    r = post(server, GENERATE, with_config(responseMimeType="text/x.enum", responseJsonSchema={"enum": [{"a": 1}]}))
    assert_error(r, 400, "INVALID_ARGUMENT", contains="enum of strings")


@pytest.mark.parametrize("tool", [{"googleSearch": {"bogus": 1}}, {"codeExecution": {"x": 1}},
                                  {"urlContext": {"y": True}}], ids=["googleSearch", "codeExecution", "urlContext"])
def test_unknown_field_inside_a_built_in_tool(server, tool):
    r = post(server, GENERATE, {"contents": HELLO, "tools": [tool]})
    assert_error(r, 400, "INVALID_ARGUMENT", contains="Cannot find field")


@pytest.mark.parametrize("tool, name", [
    ({"google_search": {}}, "google_search"), ({"codeExecution": {}}, "code_execution"),
    ({"url_context": {}}, "url_context"), ({"googleMaps": {}}, "google_maps"),
    ({"functionDeclarations": [{"name": "f"}], "fileSearch": {}}, "file_search"),
])
def test_built_in_tools_are_refused_not_ignored(server, tool, name):
    for path in (GENERATE, STREAM_SSE):
        r = post(server, path, {"contents": HELLO, "tools": [tool]})
        assert_error(r, 400, "INVALID_ARGUMENT", startswith=f"* GenerateContentRequest.tools[0].{name}: {name} is not "
                     "available on Pollux")


def test_sdk_google_search_is_a_client_error(client):
    from google.genai import errors, types

    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="Who won Euro 2024?", config=types.
                                       GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())]))
    assert info.value.code == 400 and "google_search is not available on Pollux" in info.value.message


def test_count_tokens_does_not_need_signatures(server):
    history = [{"role": "user", "parts": [{"text": "weather?"}]},
               {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}}]},
               {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 1}}}]}]
    r = post(server, "/v1beta/models/gemini-3-pro-preview:countTokens", {"contents": history})
    assert r.status_code == 200, r.text


def test_server_still_healthy_after_bad_input(server, log_offset):
    r = post(server, GENERATE, {"contents": HELLO})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"]
    assert server.process.poll() is None
    logged = server.log()[log_offset:]
    assert "Traceback" not in logged, logged
