"""Where the google-genai SDK (3.6.1) and its own test suite expect what Gemini does: the last streamed chunk holds
text with finishReason and usage, a streamed function call shows on its chunk, the request fields the current SDK
sends are accepted, and logprobs, signature-only history parts and thinkingLevel behave as Gemini's."""

from __future__ import annotations

import json

import httpx
import media
import pydantic
import pytest
from google.genai import errors, types

STORY = "Tell me a story in 300 words."


# Streams: the last chunk ------------------------------------------------------------------------------------------
def test_models_stream_with_non_empty_last_chunk(client):
    # python-genai's own test of the same name, plus the rest of what Gemini's last chunk holds.
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=STORY))
    whole = client.models.generate_content(model="gemini-2.5-flash", contents=STORY)
    assert len(chunks) > 2
    assert chunks[-1].text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
    assert all(c.text for c in chunks)  # no empty chunk, first to last


def test_every_sse_event_has_parts_and_only_the_last_finishes(server):
    r = httpx.post(f"{server.base_url}/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse",
                   headers={"x-goog-api-key": server.api_key}, timeout=60,
                   json={"contents": [{"role": "user", "parts": [{"text": STORY}]}]})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    candidates = [e["candidates"][0] for e in events]
    assert len(events) > 2
    assert all(c["content"]["parts"] and all(p.get("text") for p in c["content"]["parts"]) for c in candidates)
    assert [("finishReason" in c) for c in candidates] == [False] * (len(events) - 1) + [True]
    # Gemini 3's signature rides on the last text part, in the last chunk, as in a whole answer.
    assert "thoughtSignature" in candidates[-1]["content"]["parts"][-1]


class Recipe(pydantic.BaseModel):
    recipe_name: str
    ingredients: list[str]


def test_a_streamed_schema_answer_parses_whole(client):
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=list[Recipe])
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                        contents="List a few cookie recipes.", config=config))
    assert len(chunks) > 1 and chunks[-1].text
    recipes = pydantic.TypeAdapter(list[Recipe]).validate_json("".join(c.text for c in chunks))
    assert recipes
    whole = client.models.generate_content(model="gemini-2.5-flash", contents="List a few cookie recipes.",
                                           config=config)
    assert whole.parsed == recipes


def test_a_streamed_chat_turn_keeps_its_history(client):
    chat = client.chats.create(model="gemini-3-pro-preview",
                               config=types.GenerateContentConfig(
                                   thinking_config=types.ThinkingConfig(include_thoughts=True)))
    streamed = "".join(c.text or "" for c in chat.send_message_stream("I have 2 dogs."))
    assert streamed
    history = chat.get_history()  # the SDK keeps each streamed chunk as a model content of its own
    assert history[0].role == "user" and {c.role for c in history[1:]} == {"model"}
    assert "".join(p.text or "" for c in history[1:] for p in c.parts if not p.thought) == streamed
    # The streamed turn, signature included, is taken back.
    assert chat.send_message("How many paws?").text


# Streams: function calls ------------------------------------------------------------------------------------------
def get_weather(location: str) -> dict:
    """Get the current weather in a given location."""
    return {"temp_c": 19, "location": location}


def get_time(city: str) -> dict:
    """Get the current time in a city."""
    return {"time": "10:30", "city": city}


def test_a_streamed_function_call_is_on_its_chunk(client):
    config = types.GenerateContentConfig(
        tools=[get_weather], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                        contents="What's the weather in Boston?", config=config))
    with_calls = [c for c in chunks if c.function_calls]
    assert len(with_calls) == 1 and with_calls[0] is chunks[-1]  # the call, with the finish, last
    assert [c.name for c in with_calls[0].function_calls] == ["get_weather"]
    assert with_calls[0].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].content.parts for c in chunks)


def test_streamed_parallel_calls_share_one_chunk(client):
    config = types.GenerateContentConfig(
        tools=[get_weather, get_time], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    chunks = list(client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="What is the weather and the time in Paris?", config=config))
    with_calls = [c for c in chunks if c.function_calls]
    assert len(with_calls) == 1
    assert sorted(c.name for c in with_calls[0].function_calls) == ["get_time", "get_weather"]


def test_automatic_function_calling_over_a_stream(client):
    seen = []

    def get_current_temperature(location: str) -> dict:
        """Gets the current temperature for a location."""
        seen.append(location)
        return {"temperature_c": 17, "location": location}

    chunks = list(client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="What is the current temperature in Oslo?",
        config=types.GenerateContentConfig(tools=[get_current_temperature])))
    assert seen
    assert "17" in "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP and chunks[-1].text


# Request fields of the current SDK ---------------------------------------------------------------------------------
def test_the_sdks_newer_part_fields_are_accepted(client, server):
    image = types.Part(inline_data=types.Blob(data=media.logo_png(), mime_type="image/png", display_name="logo.png"),
                       media_resolution=types.PartMediaResolution(level="MEDIA_RESOLUTION_LOW", num_tokens=70),
                       media_processing=types.MediaProcessing.AGENTIC)
    pdf = types.Part(inline_data=types.Blob(data=media.story_pdf(), mime_type="application/pdf"),
                     document_metadata=types.DocumentMetadata(start_page=1, end_page=1))
    text = types.Part(text="Describe these.", speech_metadata=types.SpeechMetadata(speaker="Ada", style="calm"),
                      spreadsheet_metadata=types.SpreadsheetMetadata(visible_cells="A1:B2", sheet_index=0),
                      audio_transcription=types.Transcription(text="describe these", finished=True),
                      part_metadata={"source": "test"})
    history = [
        types.Content(role="user", parts=[types.Part(text="Run some code.")]),
        types.Content(role="model", parts=[
            types.Part(executable_code=types.ExecutableCode(code="print(1)", language="PYTHON", id="run-1")),
            types.Part(code_execution_result=types.CodeExecutionResult(outcome="OUTCOME_OK", output="1", id="run-1"))]),
        types.Content(role="user", parts=[image, pdf, text]),
    ]
    for _ in range(2):
        assert client.models.generate_content(model="gemini-2.5-flash", contents=history).text
    assert client.models.count_tokens(model="gemini-2.5-flash", contents=history).total_tokens > 0
    log = server.log()
    # What has no effect here is noted, by name only and once however often it comes.
    assert log.count("mediaProcessing has no effect") == 1
    assert "speechMetadata" in log and "Describe these" not in log


def test_server_side_tool_turns_in_history_are_accepted(server):
    url = f"{server.base_url}/v1beta/models/gemini-3-pro-preview:generateContent?key={server.api_key}"
    history = [{"role": "user", "parts": [{"text": "Search the news"}]},
               {"role": "model", "parts": [{"toolCall": {"id": "t1", "toolType": "GOOGLE_SEARCH_WEB",
                                                         "args": {"queries": ["news"]}},
                                            "thoughtSignature": "skip_thought_signature_validator"}]},
               {"role": "user", "parts": [{"toolResponse": {"id": "t1", "toolType": "GOOGLE_SEARCH_WEB",
                                                            "response": {"results": []}}}]}]
    r = httpx.post(url, json={"contents": history})
    assert r.status_code == 200, r.text


def test_audio_metadata_clips_the_audio_read(client):
    def audio_tokens(**clip) -> int:
        part = types.Part(inline_data=types.Blob(data=media.voice_wav(), mime_type="audio/wav"),
                          audio_metadata=types.AudioMetadata(**clip) if clip else None)
        usage = client.models.generate_content(model="gemini-2.0-flash", contents=[part]).usage_metadata
        return {d.modality.name: d.token_count for d in usage.prompt_tokens_details}["AUDIO"]

    whole = audio_tokens()
    assert whole == audio_tokens(start_offset="0s", end_offset=f"{media.WAV_SECONDS}s")
    assert audio_tokens(start_offset="0s", end_offset="1s") == 32 < whole  # 32 tokens a second, as Gemini counts


def test_newer_built_in_tool_fields_get_the_built_in_tools_answer(client):
    # The SDK sends googleSearch.searchTypes now: the request is read, and refused for what it asks (a search), not
    # for a field name.
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-flash", contents="news?", config=types.GenerateContentConfig(
            tools=[types.Tool(google_search=types.GoogleSearch(search_types=types.SearchTypes(
                web_search=types.WebSearch())))]))
    assert err.value.code == 400 and "google_search is not available" in err.value.message


def test_a_continuation_token_no_answer_issued_is_refused(server):
    r = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:generateContent?key={server.api_key}",
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "continuationToken": "YWJj"})
    assert r.status_code == 400 and "continuation_token" in r.json()["error"]["message"]


# logprobs, history parts, thinking levels ---------------------------------------------------------------------------
def test_logprobs_zero_is_refused_and_one_to_twenty_taken(client):
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.0-flash", contents="hi", config=types.GenerateContentConfig(
            response_logprobs=True, logprobs=0))
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
    assert err.value.message == "Logprobs is not enabled for models/gemini-2.0-flash"
    for n in (1, 20):
        response = client.models.generate_content(model="gemini-2.0-flash", contents="hi",
                                                  config=types.GenerateContentConfig(response_logprobs=True,
                                                                                     logprobs=n))
        result = response.candidates[0].logprobs_result
        assert result.chosen_candidates
        # At most n alternatives a token (the emulator, being certain, has one).
        assert all(1 <= len(t.candidates) <= n for t in result.top_candidates)
    # Without a count, the chosen tokens alone.
    plain = client.models.generate_content(model="gemini-2.0-flash", contents="hi",
                                           config=types.GenerateContentConfig(response_logprobs=True))
    assert plain.candidates[0].logprobs_result.chosen_candidates


def test_signature_only_and_empty_thought_parts_in_history(client):
    first = client.models.generate_content(model="gemini-3-pro-preview", contents="hi")
    signature = next(p.thought_signature for p in first.candidates[0].content.parts if p.thought_signature)
    for model_parts in ([types.Part(thought_signature=signature)],
                        [types.Part(text="", thought=True), types.Part(text="Hello.", thought_signature=signature)],
                        [types.Part(text="", thought=True, thought_signature=signature)],
                        # A thought mark with no text at all (python-genai's test_chat_tools_empty_thoughts).
                        [types.Part(thought=True), types.Part(text="Hello.", thought_signature=signature)]):
        history = [types.Content(role="user", parts=[types.Part(text="hi")]),
                   types.Content(role="model", parts=model_parts),
                   types.Content(role="user", parts=[types.Part(text="and then?")])]
        assert client.models.generate_content(model="gemini-3-pro-preview", contents=history).text
        assert client.models.count_tokens(model="gemini-3-pro-preview", contents=history).total_tokens > 0


def test_thinking_level_where_it_is_taken(client, server):
    for level in ("LOW", "HIGH"):
        response = client.models.generate_content(
            model="gemini-3-pro-preview", contents="hi", config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_level=level, include_thoughts=True)))
        assert response.candidates[0].content.parts[0].thought and response.usage_metadata.thoughts_token_count
    # REST samples write the level in lower case.
    r = httpx.post(f"{server.base_url}/v1beta/models/gemini-3-pro-preview:generateContent?key={server.api_key}",
                   json={"contents": [{"parts": [{"text": "hi"}]}],
                         "generationConfig": {"thinkingConfig": {"thinkingLevel": "low"}}})
    assert r.status_code == 200, r.text

    def refused(model: str, level: str) -> str:
        with pytest.raises(errors.ClientError) as err:
            client.models.generate_content(model=model, contents="hi", config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_level=level)))
        assert err.value.code == 400
        return err.value.message

    # 2.5 takes a level as the live API does (python-genai's suite asks gemini-2.5-flash for LOW and gets an answer).
    for level, budget in (("MINIMAL", 128), ("LOW", 1024)):  # a level is the budget it stands for
        response = client.models.generate_content(
            model="gemini-2.5-flash", contents="Explain the Monty Hall problem in detail.",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_level=level)))
        assert 0 < response.usage_metadata.thoughts_token_count <= budget and response.text
    assert "MINIMAL" in refused("gemini-3-pro-preview", "MINIMAL")  # Gemini 3 Pro takes low and high
    assert refused("gemini-2.0-flash", "LOW")  # no thinking at all


def test_gemini_2_0_lists_its_output_by_modality(client):
    # python-genai's test_usage_metadata_part_types: 2.0 reports candidatesTokensDetails on every answer; later
    # models only with a picture in the answer.
    contents = ["Hello world.", types.Part.from_bytes(data=media.logo_png(), mime_type="image/png")]
    usage = client.models.generate_content(model="gemini-2.0-flash", contents=contents).usage_metadata
    assert [(d.modality, d.token_count) for d in usage.candidates_tokens_details] == [
        (types.MediaModality.TEXT, usage.candidates_token_count)]
    assert sorted(d.modality.name for d in usage.prompt_tokens_details) == ["IMAGE", "TEXT"]
    later = client.models.generate_content(model="gemini-2.5-flash", contents=contents).usage_metadata
    assert later.candidates_token_count and later.candidates_tokens_details is None
