"""The transformers engine through the HTTP API and the official SDK, on tiny models the tests build offline.

`gemini-2.5-flash` is the scripted model (a tiny Llama overfit on a few chats, exact answers under greedy decoding),
`gemini-2.0-flash` a tiny random Llama (only validity can be asserted on it), `tiny-vision` a tiny Gemma 3 with a
vision tower. No test depends on how fast anything runs: concurrency is observed through events (a stream's first
chunk, the shared batch's size, a cancelled generation), and waits are bounded waits for an outcome.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import subprocess
import sys

import httpx
import jsonschema
import media
import pytest
import tiny_models
from conftest import start_server
from google import genai
from google.genai import errors, types

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    root = tiny_models.models_root()
    return {"scripted": str(tiny_models.build_scripted(root)), "random": str(tiny_models.build_llama(root)),
            "vision": str(tiny_models.build_gemma3_mm(root)), "mistral": str(tiny_models.build_mistral_format(root)),
            "llama3": str(tiny_models.build_llama3_format(root))}


@pytest.fixture(scope="module")
def hf(tmp_path_factory, models):
    config = f"""
[models."gemini-2.5-flash"]
engine = "transformers"
engine_options = {{ source = "{models['scripted']}", threads = 1 }}

[models."gemini-2.0-flash"]
engine = "transformers"
engine_options = {{ source = "{models['random']}", threads = 1, max_batch_size = 8 }}

[models."gemini-3-pro-preview"]
engine = "transformers"
engine_options = {{ source = "{models['scripted']}", threads = 1 }}

[models."mistral-format"]
base = "gemini-2.0-flash"
engine = "transformers"
engine_options = {{ source = "{models['mistral']}", threads = 1 }}

[models."llama3-format"]
base = "gemini-2.0-flash"
engine = "transformers"
engine_options = {{ source = "{models['llama3']}", threads = 1 }}

[models."tiny-vision"]
base = "gemini-2.5-flash"
engine = "transformers"
engine_options = {{ source = "{models['vision']}", threads = 1 }}
"""
    os.environ["HF_HUB_OFFLINE"] = "1"
    with start_server(tmp_path_factory.mktemp("hf") / "data", "--log-level", "debug", config=config) as srv:
        yield srv


@pytest.fixture
def client(hf):
    return genai.Client(api_key=hf.api_key, http_options=types.HttpOptions(base_url=hf.base_url))


def ask(client, text: str, model: str = "gemini-2.5-flash", **config):
    return client.models.generate_content(model=model, contents=text,
                                          config=types.GenerateContentConfig(**{**GREEDY, **config}))


# The scripted model: exact answers ----------------------------------------------------------------------------------
def test_plain_answer(client):
    response = ask(client, "What is the capital of France?")
    assert response.text == "The capital of France is Paris."
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.candidates_token_count > 0
    assert client.models.count_tokens(model="gemini-2.5-flash",
                                      contents="What is the capital of France?").total_tokens == usage.prompt_token_count


def test_count_tokens_agrees_with_usage_whatever_the_prompt_renders(hf, client):
    """Thinking off and mode NONE change the rendered prompt; countTokens (generateContentRequest form) follows."""
    fn = tiny_models.WEATHER_TOOL["function"]
    config = {"thinkingConfig": {"thinkingBudget": 0}}
    tools = [{"functionDeclarations": [{"name": fn["name"], "description": fn["description"],
                                        "parametersJsonSchema": fn["parameters"]}]}]
    contents = [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}]
    url = f"{hf.base_url}/v1beta/models/gemini-2.5-flash"
    headers = {"x-goog-api-key": hf.api_key}
    for request in ({"contents": contents, "generationConfig": config},
                    {"contents": contents, "tools": tools, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
                    {"contents": contents, "tools": tools}):
        generated = httpx.post(f"{url}:generateContent", json=request, headers=headers, timeout=60).json()
        counted = httpx.post(f"{url}:countTokens", json={"generateContentRequest": {
            "model": "models/gemini-2.5-flash", **request}}, headers=headers, timeout=60).json()
        assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"], request
    plain = client.models.count_tokens(model="gemini-2.5-flash", contents="Why is the sky blue?").total_tokens
    off = httpx.post(f"{url}:countTokens", json={"generateContentRequest": {
        "model": "models/gemini-2.5-flash", "contents": contents, "generationConfig": config}},
        headers=headers, timeout=60).json()["totalTokens"]
    assert off != plain  # the template renders thinking off differently, so the first check means something


def test_stop_sequence_and_max_tokens(client):
    cut = ask(client, "What is the capital of France?", stop_sequences=["Paris"])
    assert cut.text == "The capital of France is " and cut.candidates[0].finish_reason == types.FinishReason.STOP
    short = ask(client, "What is the capital of France?", max_output_tokens=3)
    assert short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert short.usage_metadata.candidates_token_count == 3
    assert "The capital of France is Paris.".startswith(short.text)


def test_tool_call_parsed_into_a_function_call(client):
    fn = tiny_models.WEATHER_TOOL["function"]
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name=fn["name"], description=fn["description"], parameters_json_schema=fn["parameters"])])
    response = ask(client, "What's the weather in Boston?", tools=[tool])
    call = response.function_calls[0]
    assert call.name == "get_weather" and call.args == {"location": "Boston"} and call.id
    assert response.text is None


def test_thinking_is_separated_counted_and_signed(client):
    response = ask(client, "Why is the sky blue?",
                   thinking_config=types.ThinkingConfig(include_thoughts=True))
    parts = response.candidates[0].content.parts
    assert parts[0].thought and parts[0].text.strip() == "Light scatters."
    assert response.text == "Because of Rayleigh scattering."
    assert response.usage_metadata.thoughts_token_count > 0
    hidden = ask(client, "Why is the sky blue?")
    assert hidden.text == "Because of Rayleigh scattering." and not any(p.thought for p in
                                                                        hidden.candidates[0].content.parts)
    assert hidden.usage_metadata.thoughts_token_count == response.usage_metadata.thoughts_token_count


def test_thinking_budget_ends_and_disables_thinking(client):
    off = ask(client, "Why is the sky blue?", thinking_config=types.ThinkingConfig(thinking_budget=0))
    assert off.text == "Because of Rayleigh scattering." and off.usage_metadata.thoughts_token_count is None
    short = ask(client, "Why is the sky blue?", thinking_config=types.ThinkingConfig(thinking_budget=2,
                                                                                     include_thoughts=True))
    assert short.usage_metadata.thoughts_token_count <= 2 + 1  # the budget, then the forced </think>


def test_utf8_is_never_split_across_stream_chunks(hf):
    url = f"{hf.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={hf.api_key}"
    body = {"contents": [{"parts": [{"text": "Say hello in Japanese."}]}], "generationConfig": GREEDY}
    texts = []
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                texts += [p.get("text", "") for p in chunk["candidates"][0]["content"].get("parts", [])]
    assert "".join(texts) == "こんにちは、世界！"
    assert len([t for t in texts if t]) > 3  # token by token
    assert all("\ufffd" not in t for t in texts)


# The random model: validity, batching, limits ------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
    "temperature": {"type": "integer", "minimum": -50, "maximum": 60}, "unit": {"enum": ["C", "F"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}},
    "required": ["city", "zip", "temperature", "unit", "tags"], "additionalProperties": False}


def test_structured_output_from_random_weights_is_valid(client):
    for seed in range(4):
        response = client.models.generate_content(
            model="gemini-2.0-flash", contents="Weather report",
            config=types.GenerateContentConfig(seed=seed, max_output_tokens=200, response_mime_type="application/json",
                                               response_json_schema=SCHEMA))
        jsonschema.validate(json.loads(response.text), SCHEMA)


def test_enum_output(client):
    response = client.models.generate_content(
        model="gemini-2.0-flash", contents="Pick one",
        config=types.GenerateContentConfig(response_mime_type="text/x.enum",
                                           response_json_schema={"type": "string", "enum": ["red", "green", "blue"]}))
    assert response.text in ("red", "green", "blue")


def test_mode_any_forces_a_valid_call_to_an_allowed_function(client):
    tools = [types.Tool(function_declarations=[
        types.FunctionDeclaration(name="get_weather", parameters_json_schema={
            "type": "object", "properties": {"location": {"type": "string", "maxLength": 10}}, "required": ["location"]}),
        types.FunctionDeclaration(name="get_time", parameters_json_schema={
            "type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}},
            "required": ["hour"]})])]
    for seed in range(3):
        response = client.models.generate_content(
            model="gemini-2.0-flash", contents="Anything",
            config=types.GenerateContentConfig(seed=seed, max_output_tokens=120, tools=tools,
                                               tool_config=types.ToolConfig(function_calling_config=types.
                                                                            FunctionCallingConfig(
                                                                                mode="ANY",
                                                                                allowed_function_names=["get_time"]))))
        calls = response.function_calls
        assert calls and all(c.name == "get_time" and 0 <= c.args["hour"] <= 23 for c in calls), response
        assert response.candidates[0].finish_reason == types.FinishReason.STOP, response


@pytest.mark.parametrize("model", ["mistral-format", "llama3-format"])
def test_mistral_and_llama3_call_formats(client, model):
    """Calls forced in each family's own format parse into functionCall parts, and the call and its result (no id,
    as the SDK's helper sends it) go back through the family's template on the next turn."""
    tools = [types.Tool(function_declarations=[
        types.FunctionDeclaration(name="get_weather", parameters_json_schema={
            "type": "object", "properties": {"location": {"type": "string", "maxLength": 10}}, "required": ["location"]}),
        types.FunctionDeclaration(name="get_time", parameters_json_schema={
            "type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}},
            "required": ["hour"], "additionalProperties": False})])]
    forced = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode="ANY", allowed_function_names=["get_time"]))
    question = types.Content(role="user", parts=[types.Part(text="What time is it?")])
    for seed in range(2):
        response = client.models.generate_content(model=model, contents=[question], config=types.GenerateContentConfig(
            seed=seed, max_output_tokens=300, tools=tools, tool_config=forced))
        calls = response.function_calls
        assert calls and all(c.name == "get_time" and 0 <= c.args["hour"] <= 23 for c in calls), response
        assert response.candidates[0].finish_reason == types.FinishReason.STOP, response
    result = types.Content(role="user", parts=[types.Part.from_function_response(name="get_time",
                                                                                   response={"hour": 3})])
    follow = client.models.generate_content(
        model=model, contents=[question, response.candidates[0].content, result],
        config=types.GenerateContentConfig(seed=0, max_output_tokens=4, tools=tools))
    assert follow.candidates[0].finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS)
    assert follow.usage_metadata.prompt_token_count > response.usage_metadata.prompt_token_count


def test_mode_validated_holds_a_call_to_its_schema(client):
    """The scripted model calls get_weather for Boston; with a schema that excludes Boston, AUTO passes the model's
    call through as it is, VALIDATED constrains the arguments while the model writes them."""
    fn = tiny_models.WEATHER_TOOL["function"]
    params = {"type": "object", "properties": {"location": {"type": "string", "enum": ["Paris", "Tokyo"]}},
              "required": ["location"]}
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(
        name=fn["name"], description=fn["description"], parameters_json_schema=params)])]

    def call(mode: str):
        response = ask(client, "What's the weather in Boston?", tools=tools, tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=mode)))
        assert response.function_calls, response
        return response.function_calls[0]

    assert call("AUTO").args == {"location": "Boston"}
    validated = call("VALIDATED")
    assert validated.name == "get_weather" and validated.args["location"] in ("Paris", "Tokyo")


def test_same_seed_same_text(client):
    a = client.models.generate_content(model="gemini-2.0-flash", contents="Hello",
                                       config=types.GenerateContentConfig(seed=5, max_output_tokens=16))
    b = client.models.generate_content(model="gemini-2.0-flash", contents="Hello",
                                       config=types.GenerateContentConfig(seed=5, max_output_tokens=16))
    assert a.text == b.text


def test_logprobs(client):
    response = client.models.generate_content(
        model="gemini-2.0-flash", contents="Hello",
        config=types.GenerateContentConfig(max_output_tokens=8, response_logprobs=True, logprobs=3))
    result = response.candidates[0].logprobs_result
    assert len(result.chosen_candidates) >= 1
    assert all(c.log_probability <= 0 for c in result.chosen_candidates)
    assert all(len(t.candidates) == 3 for t in result.top_candidates)


# Greedy decoding of this prompt on the random model never ends the turn: a stream of it runs to its limit, thousands
# of tokens, which is the clock of the tests below (they end it themselves by going away).
ENDLESS = {"contents": [{"parts": [{"text": "Go on and on"}]}],
           "generationConfig": {"temperature": 0, "maxOutputTokens": 4000}}


def test_a_request_does_not_wait_for_a_running_batch(hf):
    """A short request that arrives while a long generation decodes is answered while that generation goes on. The
    long one is decoding once its first chunk is read; once the short answer is in, the long stream is dropped, and
    the server cancels it: it was still decoding. Had the short request waited for the long one's batch, it would
    have been answered only after the long one's last token, and nothing would be left to cancel."""
    url = f"{hf.base_url}/v1beta/models/gemini-2.0-flash:"
    before = hf.log().count("generation cancelled")
    offset = len(hf.log())
    with httpx.stream("POST", url + f"streamGenerateContent?alt=sse&key={hf.api_key}", json=ENDLESS,
                      timeout=120) as long:
        lines = long.iter_lines()  # held: a line iterator that is dropped closes the stream
        assert next(lines).startswith("data: ")
        short = httpx.post(url + f"generateContent?key={hf.api_key}", timeout=120,
                           json={"contents": [{"parts": [{"text": "Hi"}]}], "generationConfig": {"maxOutputTokens": 4}})
        assert short.status_code == 200
    assert hf.logged("generation cancelled", before + 1), \
        "the long generation had ended before the short request was answered"
    # The two decoded in the same steps of one batch, not side by side.
    sizes = [int(n) for n in re.findall(r"shared batch: (\d+) sequences", hf.log()[offset:])]
    assert max(sizes, default=0) >= 2, sizes


def test_requests_beside_a_running_generation_answer_as_they_do_alone(hf, client):
    """Through the SDK: a seeded sample, a response schema and a stop sequence, sent together while an endless
    generation decodes (they share its steps), each give the response they give alone."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    configs = [types.GenerateContentConfig(temperature=1.0, seed=7, max_output_tokens=16),
               types.GenerateContentConfig(temperature=0.8, seed=8, max_output_tokens=40,
                                           response_mime_type="application/json", response_json_schema=schema),
               types.GenerateContentConfig(temperature=1.0, seed=9, max_output_tokens=24, stop_sequences=["a"])]

    def answer(r):
        return r.text, r.candidates[0].finish_reason, r.usage_metadata.candidates_token_count

    async def together():
        return await asyncio.gather(*(client.aio.models.generate_content(
            model="gemini-2.0-flash", contents=f"Question {i}", config=c) for i, c in enumerate(configs)))

    alone = [answer(client.models.generate_content(model="gemini-2.0-flash", contents=f"Question {i}", config=c))
             for i, c in enumerate(configs)]
    url = f"{hf.base_url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={hf.api_key}"
    before = hf.log().count("generation cancelled")
    with httpx.stream("POST", url, json=ENDLESS, timeout=120) as long:
        lines = long.iter_lines()  # held: a line iterator that is dropped closes the stream
        assert next(lines).startswith("data: ")
        beside = [answer(r) for r in asyncio.run(together())]
    assert hf.logged("generation cancelled", before + 1), "the endless generation had ended before them"
    assert beside == alone
    jsonschema.validate(json.loads(alone[1][0]), schema)
    assert "a" not in alone[2][0]


def test_candidate_count_decodes_together(client):
    response = client.models.generate_content(model="gemini-2.0-flash", contents="Hello",
                                              config=types.GenerateContentConfig(candidate_count=3,
                                                                                 max_output_tokens=8))
    assert [c.index for c in response.candidates] == [0, 1, 2]


def test_stream_disconnect_stops_generation(hf):
    url = f"{hf.base_url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={hf.api_key}"
    before = hf.log().count("generation cancelled")
    with httpx.stream("POST", url, json=ENDLESS, timeout=60) as r:
        assert next(r.iter_lines()).startswith("data: ")
    assert hf.logged("generation cancelled", before + 1)


# Images -------------------------------------------------------------------------------------------------------------
def _png(width: int, height: int) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_image_input_to_a_vision_model(client):
    image = types.Part.from_bytes(data=_png(300, 200), mime_type="image/png")
    response = client.models.generate_content(model="tiny-vision", contents=[image, "What is this?"],
                                              config=types.GenerateContentConfig(max_output_tokens=5))
    details = {d.modality.name: d.token_count for d in response.usage_metadata.prompt_tokens_details}
    assert details["IMAGE"] == 258 and details["TEXT"] > 0
    big = client.models.count_tokens(model="tiny-vision", contents=[
        types.Part.from_bytes(data=_png(960, 540), mime_type="image/png"), "x"])
    assert big.total_tokens > 1548  # 6 tiles of 258, plus the text


def test_image_to_a_text_only_model_is_a_clear_400(client):
    image = types.Part.from_bytes(data=_png(10, 10), mime_type="image/png")
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="gemini-2.0-flash", contents=[image, "What is this?"])
    assert exc.value.code == 400 and "text-only" in exc.value.message


# Loading ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source, message", [("/no/such/dir", "does not exist"),
                                             ("hf:pollux-test/no-such-model", "pollux-test/no-such-model")])
def test_model_that_cannot_load_stops_the_server_with_a_message(tmp_path, source, message):
    result = subprocess.run([sys.executable, "-m", "pollux.cli", "serve", "--data-dir", str(tmp_path),
                             "--model", f"gemini-2.5-flash={source}"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_queue_bound_answers_503_with_retry_info(tmp_path, models):
    """One sequence a batch, one waiting place. While an endless stream holds the batch (it is decoding once its first
    chunk is read), of two more requests one waits and the other is refused at once; the one that waits is answered
    once the stream is dropped: the cancelled stream left the batch and freed its place."""
    config = (f'[models."gemini-2.0-flash"]\nengine = "transformers"\nengine_options = {{ source = '
              f'"{models["random"]}", threads = 1, max_batch_size = 1, max_queue = 1 }}\n')
    with start_server(tmp_path / "data", config=config) as srv:
        base = f"{srv.base_url}/v1beta/models/gemini-2.0-flash:"

        async def scenario():
            async with httpx.AsyncClient(timeout=120) as http:
                body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 8}}
                async with http.stream("POST", base + f"streamGenerateContent?alt=sse&key={srv.api_key}",
                                       json=ENDLESS) as endless:
                    lines = endless.aiter_lines()  # held: a line iterator that is dropped closes the stream
                    assert (await anext(lines)).startswith("data: ")
                    pending = {asyncio.ensure_future(http.post(base + f"generateContent?key={srv.api_key}",
                                                               json=body)) for _ in range(2)}
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    refused = done.pop().result()
                # The stream is gone: the worker takes the request that waited.
                return refused, await pending.pop()

        refused, waited = asyncio.run(scenario())
        assert refused.status_code == 503 and waited.status_code == 200, (refused.text, waited.text)
        error = refused.json()["error"]
        assert error["status"] == "UNAVAILABLE"
        assert any(d["@type"].endswith("RetryInfo") for d in error["details"])


def test_signature_restores_the_reasoning_and_rejects_tampering(hf, client):
    """Gemini 3 signs every answer; sent back in the history, the signature puts the earlier reasoning back into the
    prompt (so the prompt grows by it), and an altered one is refused."""
    first = ask(client, "Why is the sky blue?", model="gemini-3-pro-preview")
    model_turn = first.candidates[0].content
    assert model_turn.parts[-1].thought_signature
    history = [types.Content(role="user", parts=[types.Part(text="Why is the sky blue?")]), model_turn,
               types.Content(role="user", parts=[types.Part(text="What is the capital of France?")])]
    signed = client.models.count_tokens(model="gemini-3-pro-preview", contents=history).total_tokens
    unsigned_turn = types.Content(role="model", parts=[types.Part(text=p.text) for p in model_turn.parts if p.text])
    unsigned = client.models.count_tokens(model="gemini-3-pro-preview",
                                          contents=[history[0], unsigned_turn, history[2]]).total_tokens
    assert signed > unsigned
    tampered = model_turn.model_copy(deep=True)
    sig = bytearray(tampered.parts[-1].thought_signature)
    sig[-1] ^= 1
    tampered.parts[-1].thought_signature = bytes(sig)
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="gemini-3-pro-preview", contents=[history[0], tampered, history[2]])
    assert exc.value.code == 400 and "Corrupted thought signature" in exc.value.message


PDF = media.sample("story.pdf")  # tests/media.py: one page of text, "The Whispering Woods"


def test_video_frames_to_a_vision_model(client, models):
    """A vision model sees a video as frames sampled a second apart; a text-only model cannot read it."""
    video = types.Part.from_bytes(data=media.sample("animal.mp4").read_bytes(), mime_type="video/mp4")
    response = client.models.generate_content(model="tiny-vision", contents=[video, "Describe"],
                                              config=types.GenerateContentConfig(max_output_tokens=2))
    details = {d.modality: d.token_count for d in response.usage_metadata.prompt_tokens_details}
    assert details[types.MediaModality.VIDEO] > 258
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.0-flash", contents=[video, "Describe"])
    assert err.value.code == 400
    from pollux.engines.base import Media, Text, Turn
    from pollux.engines.hf import HFOptions, TransformersEngine
    from pollux.media import inspect_bytes

    data = media.sample("animal.mp4").read_bytes()
    info = inspect_bytes(data, "video/mp4")
    engine = TransformersEngine(HFOptions.from_dict({"source": models["vision"], "threads": 1}))
    try:
        _, frames = engine._messages([Turn("user", [Media("video/mp4", "VIDEO", data=data, info=info), Text("x")])], [])
    finally:
        asyncio.run(engine.close())
    assert len(frames) == math.ceil(info.duration)


def test_pdf_to_a_text_model_and_a_vision_model(client, models):
    """A text model reads a PDF's text, a vision model its text and rendered pages; both are charged 258 a page."""
    part = types.Part.from_bytes(data=PDF.read_bytes(), mime_type="application/pdf")
    for model in ("gemini-2.0-flash", "tiny-vision"):
        response = client.models.generate_content(model=model, contents=[part, "Summarize"],
                                                  config=types.GenerateContentConfig(max_output_tokens=3))
        details = {d.modality: d.token_count for d in response.usage_metadata.prompt_tokens_details}
        assert details[types.MediaModality.DOCUMENT] == 258, (model, details)
    from pollux.engines.base import Media, Text, Turn
    from pollux.engines.hf import HFOptions, TransformersEngine
    from pollux.media import inspect_bytes

    document = Media("application/pdf", "DOCUMENT", data=PDF.read_bytes(),
                     info=inspect_bytes(PDF.read_bytes(), "application/pdf"))
    turns = [Turn("user", [document, Text("Summarize")])]
    for source, images in ((models["random"], 0), (models["vision"], 1)):
        engine = TransformersEngine(HFOptions.from_dict({"source": source, "threads": 1}))
        try:
            messages, pictures = engine._messages(turns, [])
        finally:
            asyncio.run(engine.close())
        content = messages[0]["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        assert "[page 1]\nThe Whispering Woods\nIn the heart of Eldergrove" in text
        assert len(pictures) == images and all(max(p.size) <= 768 for p in pictures)


def test_heic_image(client):
    from PIL import Image
    from pillow_heif import register_heif_opener
    register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(out, format="HEIF")
    image = types.Part.from_bytes(data=out.getvalue(), mime_type="image/heic")
    response = client.models.generate_content(model="tiny-vision", contents=[image, "What is this?"],
                                              config=types.GenerateContentConfig(max_output_tokens=3))
    assert {d.modality.name for d in response.usage_metadata.prompt_tokens_details} == {"TEXT", "IMAGE"}


# One sequence's failure is its request's alone -----------------------------------------------------------------------
def test_a_tiny_temperature_samples_like_greedy(client):
    """logits / 1e-40 overflows to inf, and softmax(inf - inf) is NaN: sampling failed for the whole batch. Shifted by
    the best logit first, a tiny temperature is greedy decoding."""
    greedy = client.models.generate_content(model="gemini-2.0-flash", contents="Hello",
                                            config=types.GenerateContentConfig(temperature=0, max_output_tokens=12))
    for temperature in (1e-40, 1e-30):
        tiny = client.models.generate_content(
            model="gemini-2.0-flash", contents="Hello",
            config=types.GenerateContentConfig(temperature=temperature, max_output_tokens=12))
        assert tiny.text == greedy.text


def test_mode_validated_with_a_response_schema_on_a_format_without_call_markers(client):
    """Llama 3 writes a call as a bare JSON answer: with a response schema too, the call's grammar and the schema's
    left no token at all (a 500 for the whole batch). The JSON answer is the answer, as in the marker formats."""
    schema = {"type": "object", "properties": {"zzz": {"type": "string", "maxLength": 8}}, "required": ["zzz"],
              "additionalProperties": False}
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_time", parameters_json_schema={"type": "object", "properties": {"hour": {"type": "integer"}},
                                                 "required": ["hour"]})])]
    validated = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="VALIDATED"))
    for temperature in (0, 1):
        config = types.GenerateContentConfig(temperature=temperature, max_output_tokens=40, tools=tools,
                                             tool_config=validated, response_mime_type="application/json",
                                             response_json_schema=schema)
        response = client.models.generate_content(model="llama3-format", contents="What time is it?", config=config)
        if response.candidates[0].finish_reason == types.FinishReason.STOP:
            jsonschema.validate(json.loads(response.text), schema)
        else:
            assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS and response.text
