"""generateContent, streaming, chats and countTokens through the google-genai SDK, on /v1 and /v1beta."""

from __future__ import annotations

import enum
import json

import httpx
import pydantic
import pytest
from google import genai
from google.genai import errors, types

PROMPT = "Explain how AI works in a few words"


def test_v1_and_v1beta_answer_alike(client, beta_client):
    a = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    b = beta_client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert a.text == b.text
    assert "pollux" in a.model_version


def test_same_request_same_answer_and_seed_changes_it(client):
    cfg = types.GenerateContentConfig(seed=7)
    first = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=cfg)
    again = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=cfg)
    other = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT,
                                           config=types.GenerateContentConfig(seed=8))
    assert first.text == again.text
    assert first.text != other.text


def test_usage_adds_up_and_agrees_with_count_tokens(client):
    response = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    usage = response.usage_metadata
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT)
    assert counted.total_tokens == usage.prompt_token_count > 0
    assert usage.total_token_count == (usage.prompt_token_count + usage.candidates_token_count
                                       + (usage.thoughts_token_count or 0))
    assert usage.prompt_tokens_details[0].modality.name == "TEXT"


def test_count_tokens_generate_content_request_counts_system_and_tools(server):
    url = f"{server.base_url}/v1beta/models/gemini-2.5-flash:countTokens?key={server.api_key}"
    contents = [{"role": "user", "parts": [{"text": PROMPT}]}]
    plain = httpx.post(url, json={"contents": contents}).json()["totalTokens"]
    full = httpx.post(url, json={"generateContentRequest": {
        "model": "models/gemini-2.5-flash", "contents": contents,
        "systemInstruction": {"parts": [{"text": "You are a cat."}]},
        "tools": [{"functionDeclarations": [{"name": "meow", "description": "Meow loudly"}]}]}}).json()["totalTokens"]
    assert full > plain > 0


def test_stream_chunks_join_to_the_whole_answer(client):
    whole = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert len(chunks) > 2
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    totals = [c.usage_metadata.total_token_count for c in chunks]
    assert totals == sorted(totals)  # cumulative
    assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
    assert len({c.response_id for c in chunks}) == 1


async def test_async_generate_and_stream(client):
    response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    parts = [c.text async for c in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents=PROMPT)]
    assert "".join(p or "" for p in parts) == response.text


def test_chat_keeps_history_and_sends_signatures_back(client):
    chat = client.chats.create(model="gemini-3-pro-preview",
                               config=types.GenerateContentConfig(
                                   thinking_config=types.ThinkingConfig(include_thoughts=True)))
    first = chat.send_message("I have 2 dogs in my house.")
    second = chat.send_message("How many paws are in my house?")
    assert first.text and second.text
    assert "How many paws are in my house?" in second.text
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model", "user", "model"]
    # The model turns carry signatures, which the server verified when the history came back.
    assert any(p.thought_signature for p in history[1].parts)
    streamed = "".join(c.text or "" for c in chat.send_message_stream("And cats?"))
    assert "And cats?" in streamed


async def test_async_chat(client):
    chat = client.aio.chats.create(model="gemini-2.0-flash")
    assert (await chat.send_message("Hello")).text
    assert (await chat.send_message("Again")).text
    assert len(chat.get_history()) == 4


def test_max_output_tokens_truncates(client):
    full = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT)
    cut = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT,
                                         config=types.GenerateContentConfig(max_output_tokens=5))
    assert cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert cut.usage_metadata.candidates_token_count == 5
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


def test_stop_sequence_cuts_before_it(client):
    full = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT).text
    stop = full.split()[3]
    cut = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT,
                                         config=types.GenerateContentConfig(stop_sequences=[stop]))
    assert cut.candidates[0].finish_reason == types.FinishReason.STOP
    assert cut.text == full[:full.index(stop)]


def test_candidate_count(client):
    response = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT,
                                              config=types.GenerateContentConfig(candidate_count=3))
    assert [c.index for c in response.candidates] == [0, 1, 2]
    texts = {c.content.parts[0].text for c in response.candidates}
    assert len(texts) == 3
    streamed = list(client.models.generate_content_stream(
        model="gemini-2.0-flash", contents=PROMPT, config=types.GenerateContentConfig(candidate_count=2)))
    assert {c.candidates[0].index for c in streamed} == {0, 1}


# Thinking -----------------------------------------------------------------------------------------------------------
def test_thoughts_are_summarised_and_counted(client):
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT,
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True)))
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True and parts[0].text
    assert response.text and "Understanding" not in response.text  # thoughts are not in .text
    assert response.usage_metadata.thoughts_token_count > 0
    # Gemini 2.5 returns signatures only when functions are declared; Gemini 3 always.
    assert not any(p.thought_signature for p in parts)
    signed = client.models.generate_content(model="gemini-3-pro-preview", contents=PROMPT)
    assert signed.candidates[0].content.parts[-1].thought_signature
    with_tools = client.models.generate_content(
        model="gemini-2.5-flash", contents="What's the weather in Boston?",
        config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])]))
    assert with_tools.candidates[0].content.parts[0].function_call and \
        with_tools.candidates[0].content.parts[0].thought_signature


def test_signatures_do_not_reveal_the_reasoning(client):
    response = client.models.generate_content(model="gemini-3-pro-preview", contents="A secret plan")
    signature = response.candidates[0].content.parts[-1].thought_signature
    assert b"secret" not in signature and b"Understanding" not in signature


def test_thinking_budget_bounds_thoughts(client):
    small = client.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT,
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=10)))
    assert 0 < small.usage_metadata.thoughts_token_count <= 10
    off = client.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT,
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0,
                                                                                include_thoughts=True)))
    assert off.usage_metadata.thoughts_token_count is None
    assert not any(p.thought for p in off.candidates[0].content.parts)


def test_thoughts_count_against_max_output_tokens(client):
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT,
        config=types.GenerateContentConfig(max_output_tokens=20))
    usage = response.usage_metadata
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert usage.thoughts_token_count == 20 and response.text is None


def test_thinking_level_on_gemini_3(client):
    response = client.models.generate_content(
        model="gemini-3-pro-preview", contents=PROMPT,
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(
            thinking_level=types.ThinkingLevel.LOW, include_thoughts=True)))
    assert response.candidates[0].content.parts[0].thought
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(
            model="gemini-2.5-flash", contents=PROMPT,
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(
                thinking_level=types.ThinkingLevel.LOW, thinking_budget=100)))
    assert exc.value.code == 400


def test_tampered_signature_is_rejected(server):
    url = f"{server.base_url}/v1beta/models/gemini-3-pro-preview:generateContent?key={server.api_key}"
    first = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).json()
    model_turn = first["candidates"][0]["content"]
    signature = next(p["thoughtSignature"] for p in model_turn["parts"] if "thoughtSignature" in p)
    history = [{"role": "user", "parts": [{"text": "hi"}]}, model_turn, {"role": "user", "parts": [{"text": "more"}]}]
    assert httpx.post(url, json={"contents": history}).status_code == 200
    tampered = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    for part in model_turn["parts"]:
        if "thoughtSignature" in part:
            part["thoughtSignature"] = tampered
    response = httpx.post(url, json={"contents": history})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Corrupted thought signature."


# Structured output --------------------------------------------------------------------------------------------------
class Recipe(pydantic.BaseModel):
    recipe_name: str
    ingredients: list[str]
    minutes: int


def test_response_schema_from_pydantic_model(client):
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="List a few popular cookie recipes.",
        config={"response_mime_type": "application/json", "response_schema": list[Recipe]})
    recipes = response.parsed
    assert isinstance(recipes, list) and recipes and all(isinstance(r, Recipe) for r in recipes)
    assert list(json.loads(response.text)[0]) == ["recipe_name", "ingredients", "minutes"]


def test_response_json_schema_with_defs_refs_and_bounds(client):
    schema = {
        "type": "object",
        "$defs": {"city": {"type": "object", "properties": {"name": {"type": "string", "minLength": 2},
                                                           "population": {"type": "integer", "minimum": 1000}},
                           "required": ["name", "population"]}},
        "properties": {
            "cities": {"type": "array", "items": {"$ref": "#/$defs/city"}, "minItems": 2, "maxItems": 4},
            "capital": {"anyOf": [{"$ref": "#/$defs/city"}, {"type": "null"}]},
            "founded": {"type": "string", "format": "date"},
            "rating": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
            "kind": {"enum": ["metro", "town"]},
        },
        "required": ["cities", "capital", "founded", "rating", "kind"],
        "propertyOrdering": ["kind", "cities", "capital", "founded", "rating"],
    }
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="Describe some cities",
        config={"response_mime_type": "application/json", "response_json_schema": schema})
    import jsonschema
    value = json.loads(response.text)
    jsonschema.validate(value, schema)
    assert list(value) == schema["propertyOrdering"]
    assert response.parsed == value


class Instrument(enum.Enum):
    PERCUSSION = "Percussion"
    STRING = "String"
    WOODWIND = "Woodwind"


def test_enum_response(client):
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="What type of instrument is an oboe?",
        config={"response_mime_type": "text/x.enum", "response_schema": Instrument})
    assert isinstance(response.parsed, Instrument)


# Function calling ---------------------------------------------------------------------------------------------------
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Get the current weather in a given location",
    parameters_json_schema={"type": "object", "properties": {
        "location": {"type": "string", "description": "The city, e.g. Boston"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]})
TIME = types.FunctionDeclaration(
    name="get_time", description="Get the current time in a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]))


def test_function_call_then_answer_from_its_result(client):
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    config = types.GenerateContentConfig(tools=tools)
    prompt = types.Content(role="user", parts=[types.Part(text="What's the weather in Boston?")])
    response = client.models.generate_content(model="gemini-2.5-flash", contents=[prompt], config=config)
    calls = response.function_calls
    assert [c.name for c in calls] == ["get_weather"]
    assert calls[0].id and isinstance(calls[0].args["location"], str)
    assert calls[0].args.get("unit") in (None, "celsius", "fahrenheit")
    reply = types.Content(role="user", parts=[types.Part.from_function_response(
        name="get_weather", response={"result": {"temp_c": 21, "sky": "clear"}})])
    answer = client.models.generate_content(model="gemini-2.5-flash",
                                            contents=[prompt, response.candidates[0].content, reply], config=config)
    assert answer.function_calls is None
    assert "21" in answer.text and "clear" in answer.text


def test_parallel_calls_and_modes(client):
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    both = client.models.generate_content(model="gemini-2.5-flash",
                                          contents="What is the weather and the time in Paris?",
                                          config=types.GenerateContentConfig(tools=tools))
    assert sorted(c.name for c in both.function_calls) == ["get_time", "get_weather"]
    assert len({c.id for c in both.function_calls}) == 2

    forced = client.models.generate_content(
        model="gemini-2.5-flash", contents="Tell me a joke",
        config=types.GenerateContentConfig(tools=tools, tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_time"]))))
    assert [c.name for c in forced.function_calls] == ["get_time"]
    assert isinstance(forced.function_calls[0].args["city"], str)

    never = client.models.generate_content(
        model="gemini-2.5-flash", contents="What's the weather in Boston?",
        config=types.GenerateContentConfig(tools=tools, tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="NONE"))))
    assert never.function_calls is None and never.text


def test_automatic_function_calling_with_a_python_function(client):
    seen = []

    def get_current_temperature(location: str) -> dict:
        """Gets the current temperature for a location."""
        seen.append(location)
        return {"temperature_c": 17, "location": location}

    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="What is the current temperature in Oslo?",
        config=types.GenerateContentConfig(tools=[get_current_temperature]))
    assert seen and isinstance(seen[0], str)
    assert "17" in response.text


def test_gemini_3_requires_signatures_on_function_calls(server):
    url = f"{server.base_url}/v1beta/models/gemini-3-pro-preview:generateContent?key={server.api_key}"
    history = [{"role": "user", "parts": [{"text": "weather in Boston?"}]},
               {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Boston"}}}]},
               {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]}]
    tools = [{"functionDeclarations": [{"name": "get_weather"}]}]
    response = httpx.post(url, json={"contents": history, "tools": tools})
    assert response.status_code == 400
    assert "missing a thought_signature" in response.json()["error"]["message"]
    history[1]["parts"][0]["thoughtSignature"] = "skip_thought_signature_validator"
    assert httpx.post(url, json={"contents": history, "tools": tools}).status_code == 200


# Fixtures -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    from conftest import start_server
    root = tmp_path_factory.mktemp("scripted")
    rules = root / "fixtures.yaml"
    rules.write_text("""
- match: {contains: "capital of France"}
  respond: {text: "Paris."}
- match: {model: gemini-2.5-pro, regex: "^book a flight to (\\\\w+)"}
  respond:
    function_calls: [{name: book_flight, args: {destination: "SFO"}}]
- match: {contains: "weather"}
  respond:
    function_calls: [{name: get_weather, args: {location: "Oslo"}}]
- match: {contains: "rate limit me"}
  respond: {error: {code: 429, status: RESOURCE_EXHAUSTED, message: "Quota exceeded."}}
""")
    with start_server(root / "data", "--fixtures", str(rules)) as srv:
        yield srv


def test_fixtures_script_answers(scripted):
    client = genai.Client(api_key=scripted.api_key, http_options=types.HttpOptions(base_url=scripted.base_url))
    assert client.models.generate_content(model="gemini-2.5-flash",
                                          contents="What is the capital of France?").text == "Paris."
    call = client.models.generate_content(model="gemini-2.5-pro", contents="book a flight to Rome").function_calls[0]
    assert call.name == "book_flight" and call.args == {"destination": "SFO"}
    # The regex rule is for gemini-2.5-pro only.
    assert client.models.generate_content(model="gemini-2.5-flash", contents="book a flight to Rome").function_calls is None
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="gemini-2.5-flash", contents="please rate limit me")
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ClientError):
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="please rate limit me"))


def test_logprobs_of_a_deterministic_model(client):
    response = client.models.generate_content(
        model="gemini-2.0-flash", contents=PROMPT,
        config=types.GenerateContentConfig(response_logprobs=True, logprobs=2))
    cand = response.candidates[0]
    chosen = cand.logprobs_result.chosen_candidates
    assert "".join(c.token for c in chosen) == response.text
    assert len(chosen) == response.usage_metadata.candidates_token_count
    assert all(c.log_probability == 0.0 for c in chosen) and cand.avg_logprobs == 0.0
    assert len(cand.logprobs_result.top_candidates) == len(chosen)
    plain = client.models.generate_content(model="gemini-2.0-flash", contents=PROMPT)
    assert plain.candidates[0].logprobs_result is None


def test_free_text_arguments_take_the_names_in_the_prompt(client):
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="What's the weather in New York?",
        config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])]))
    assert response.function_calls[0].args["location"] == "New York"


def test_scripted_calls_follow_the_calling_config(scripted):
    client = genai.Client(api_key=scripted.api_key, http_options=types.HttpOptions(base_url=scripted.base_url))
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    call = client.models.generate_content(model="gemini-2.5-flash", contents="weather please",
                                          config=types.GenerateContentConfig(tools=tools)).function_calls
    assert [c.name for c in call] == ["get_weather"] and call[0].args == {"location": "Oslo"}
    never = client.models.generate_content(
        model="gemini-2.5-flash", contents="weather please",
        config=types.GenerateContentConfig(tools=tools, tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="NONE"))))
    assert never.function_calls is None and never.text

    seen = []

    def get_weather(location: str) -> dict:
        """Get the weather."""
        seen.append(location)
        return {"sky": "grey"}

    # Automatic function calling: the scripted call is made once, then the model answers from its result.
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="weather please",
                                            config=types.GenerateContentConfig(tools=[get_weather]))
    assert seen == ["Oslo"] and "grey" in answer.text
