"""Engine `openai` on vLLM's wire: the official SDKs → Pollux → a fake vLLM (`fake_vllm.py`) that answers exactly as
vLLM 0.33's OpenAI server does. These tests pin the mapping of Gemini's semantics onto vLLM's fields (what Pollux
sends is read back from the fake's records) and the translation of its answers (reasoning, tool-call deltas, usage
details, errors), with failures in Gemini's shape.
"""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import eventually, free_port, start_server
from fake_vllm import CONTENT_PREFIX, REASONING_PREFIX, FakeVLLM
from google import genai
from google.genai import errors, types

MODEL = "gemini-2.5-flash"
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "description": "The time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def fake():
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def slow():
    """A second upstream for timeouts and outages, so the main one stays well."""
    with FakeVLLM() as slow:
        yield slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake, slow):
    config = f"""
[models."{MODEL}"]
engine = "openai"
engine_options = {{ base_url = "{fake.base_url}", model = "Qwen/Qwen3-0.6B" }}

[models."gemini-2.0-flash"]
engine = "openai"
engine_options = {{ base_url = "{slow.base_url}", timeout = 2, retry_after = 1 }}

[models."gemini-embedding-001"]
engine = "openai"
engine_options = {{ base_url = "{fake.base_url}" }}
"""
    with start_server(tmp_path_factory.mktemp("vllm") / "data", config=config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


@pytest.fixture(autouse=True)
def _fresh(fake, slow):
    fake.clear()
    slow.clear()
    slow.down = False
    slow.delay = 0.0
    yield


def chat_bodies(fake) -> list[dict]:
    return fake.bodies("/v1/chat/completions")


def test_text_reasoning_and_usage(client, fake):
    response = client.models.generate_content(model=MODEL, contents="Hi there")
    assert response.text == CONTENT_PREFIX + "Hi there"
    usage = response.usage_metadata
    upstream = fake.requests[-1]
    assert upstream["path"] == "/v1/chat/completions" and upstream["body"]["messages"] == [
        {"role": "user", "content": "Hi there"}]
    # The server's own count: 9 prompt tokens, 14 generated of which 7 reasoning (fake_vllm's docstring).
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (9, 7, 7)
    assert usage.total_token_count == 23
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert len(chat_bodies(fake)) == 1  # one round trip: no separate count before the generation


def test_thoughts_are_parts_when_asked(client):
    response = client.models.generate_content(
        model=MODEL, contents="Hi there",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True)))
    parts = response.candidates[0].content.parts
    assert parts[0].thought and parts[0].text == REASONING_PREFIX + "Hi there"
    assert parts[-1].text == CONTENT_PREFIX + "Hi there" and not parts[-1].thought


def test_thinking_budget_zero_switches_thinking_off_and_a_budget_is_sent(client, fake):
    off = client.models.generate_content(
        model=MODEL, contents="Hi there",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)))
    assert chat_bodies(fake)[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert not off.usage_metadata.thoughts_token_count
    budget = client.models.generate_content(
        model=MODEL, contents="Hi there now please",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=3,
                                                                                include_thoughts=True)))
    assert chat_bodies(fake)[-1]["thinking_token_budget"] == 3
    thought = next(p.text for p in budget.candidates[0].content.parts if p.thought)
    assert len(thought.split()) <= 3  # the server cut its reasoning at the budget


def test_stream_translates_chunk_by_chunk(client, fake):
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Tell me a story"))
    assert len(chunks) > 2  # the deltas as they came, not one buffered answer
    assert "".join(c.text or "" for c in chunks) == CONTENT_PREFIX + "Tell me a story"
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.prompt_token_count == client.models.count_tokens(
        model=MODEL, contents="Tell me a story").total_tokens
    body = chat_bodies(fake)[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_count_tokens_uses_the_servers_tokenizer_on_the_rendered_chat(client, fake):
    contents = [types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])]
    config = types.GenerateContentConfig(system_instruction="Answer briefly.",
                                         tools=[types.Tool(function_declarations=[WEATHER])])
    counted = client.models.count_tokens(model=MODEL, contents=contents).total_tokens
    tokenized = fake.bodies("/tokenize")[-1]
    assert tokenized["add_generation_prompt"] is True and tokenized["messages"][-1]["role"] == "user"
    generated = client.models.generate_content(model=MODEL, contents=contents)
    assert generated.usage_metadata.prompt_token_count == counted
    # With a system instruction and tools the count still agrees with the generation's.
    with_tools = client.models.generate_content(model=MODEL, contents=contents, config=config)
    assert with_tools.usage_metadata.prompt_token_count > counted


def test_count_tokens_with_tools_agrees_with_usage(server, fake):
    request = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
               "systemInstruction": {"parts": [{"text": "Be brief."}]},
               "tools": [{"functionDeclarations": [WEATHER]}]}
    headers = {"x-goog-api-key": server.api_key}
    base = f"{server.base_url}/v1beta/models/{MODEL}"
    counted = httpx.post(f"{base}:countTokens", json={"generateContentRequest": {"model": f"models/{MODEL}",
                                                                                 **request}},
                         headers=headers).json()
    generated = httpx.post(f"{base}:generateContent", json=request, headers=headers).json()
    assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"]
    assert fake.bodies("/tokenize")[-1]["tools"][0]["function"]["name"] == "get_weather"


def test_response_schema_is_the_servers_structured_output(client, fake):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    response = client.models.generate_content(
        model=MODEL, contents="A person",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema))
    assert json.loads(response.text) == {"name": "x", "age": 0}
    assert chat_bodies(fake)[-1]["structured_outputs"] == {"json": schema}


def test_enum_is_a_choice(client, fake):
    response = client.models.generate_content(
        model=MODEL, contents="Pick one",
        config=types.GenerateContentConfig(response_mime_type="text/x.enum",
                                           response_schema={"type": "STRING", "enum": ["red", "green"]}))
    assert response.text == "red"
    assert chat_bodies(fake)[-1]["structured_outputs"] == {"choice": ["red", "green"]}


def test_function_calls_and_their_results_keep_ids(client, fake):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER, TIME])])
    first = client.models.generate_content(model=MODEL, contents="Use get_weather and get_time for Paris",
                                           config=config)
    calls = first.function_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"] and calls[0].args == {"city": "x"}
    assert all(c.id and c.id.startswith("chatcmpl-tool-") for c in calls)
    body = chat_bodies(fake)[-1]
    assert body["tool_choice"] == "auto" and [t["function"]["name"] for t in body["tools"]] == ["get_weather",
                                                                                                 "get_time"]
    history = [types.Content(role="user", parts=[types.Part(text="Use get_weather and get_time for Paris")]),
               first.candidates[0].content,
               types.Content(role="user", parts=[
                   types.Part(function_response=types.FunctionResponse(name=c.name, id=c.id,
                                                                       response={"result": "sunny"}))
                   for c in calls])]
    client.models.generate_content(model=MODEL, contents=history, config=config)
    messages = chat_bodies(fake)[-1]["messages"]
    assistant = messages[1]
    assert [c["id"] for c in assistant["tool_calls"]] == [c.id for c in calls]
    tools = [m for m in messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == [c.id for c in calls]
    assert json.loads(tools[0]["content"]) == {"result": "sunny"}


def test_tool_config_modes(client, fake):
    def send(mode, allowed=None):
        client.models.generate_content(model=MODEL, contents="Do something", config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER, TIME])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
                mode=mode, allowed_function_names=allowed))))
        return chat_bodies(fake)[-1]

    assert send("ANY")["tool_choice"] == "required"
    named = send("ANY", ["get_time"])
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert [t["function"]["name"] for t in named["tools"]] == ["get_time"]
    assert send("NONE")["tool_choice"] == "none"


def test_forced_call_streams(client):
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents="Weather please", config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")))))
    calls = [c for chunk in chunks for c in chunk.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "x"})]


def test_sampling_fields(client, fake):
    client.models.generate_content(model=MODEL, contents="Hi", config=types.GenerateContentConfig(
        temperature=0.3, top_p=0.9, top_k=20, seed=7, stop_sequences=["END"], presence_penalty=0.5,
        frequency_penalty=0.25, max_output_tokens=77))
    body = chat_bodies(fake)[-1]
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "seed", "stop", "presence_penalty",
                                 "frequency_penalty", "max_tokens")} == {
        "temperature": 0.3, "top_p": 0.9, "top_k": 20, "seed": 7, "stop": ["END"], "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "max_tokens": 77}


def test_max_output_tokens_counts_the_thinking(client):
    response = client.models.generate_content(model=MODEL, contents="Hi there",
                                              config=types.GenerateContentConfig(max_output_tokens=5))
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    usage = response.usage_metadata
    assert (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) == 5


def test_candidates_and_logprobs(client, fake):
    response = client.models.generate_content(model=MODEL, contents="Hi", config=types.GenerateContentConfig(
        candidate_count=2, seed=3, response_logprobs=True, logprobs=2))
    assert len(response.candidates) == 2
    [body] = chat_bodies(fake)  # one request for both: OpenAI's n
    assert (body["n"], body["seed"]) == (2, 3)
    assert response.candidates[1].content.parts[0].text == CONTENT_PREFIX + "Hi #1"
    chosen = response.candidates[0].logprobs_result.chosen_candidates
    assert chosen and chosen[0].token and chosen[0].log_probability is not None
    assert len(response.candidates[0].logprobs_result.top_candidates[0].candidates) == 2


def test_cache_salt_is_per_project_and_cached_tokens_are_reported(server, fake):
    server.cli("projects", "create", "Another project")
    other = server.new_key("Another project")
    long_text = "Here is a long shared document about rivers and mountains. " * 20

    def ask(key: str, question: str) -> dict:
        return httpx.post(f"{server.base_url}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                          json={"contents": [{"parts": [{"text": long_text + question}]}]}).json()

    ask(server.api_key, "First?")
    again = ask(server.api_key, "Second?")
    foreign = ask(other, "Third?")
    salts = [b["cache_salt"] for b in chat_bodies(fake)]
    assert salts[0] == salts[1] != salts[2] and all(salts)
    assert again["usageMetadata"]["cachedContentTokenCount"] > 100  # the shared prefix, from the server's cache
    assert "cachedContentTokenCount" not in foreign["usageMetadata"]  # never another project's KV state
    # The salt is the server's own: a client cannot choose it.
    httpx.post(f"{server.base_url}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": other},
               json={"contents": [{"parts": [{"text": "x"}]}], "cache_salt": salts[0]})
    assert chat_bodies(fake)[-1].get("cache_salt", salts[2]) == salts[2]


def test_openai_surface_reports_reasoning_and_cached_tokens(server, fake):
    from openai import OpenAI

    oa = OpenAI(api_key=server.api_key, base_url=f"{server.base_url}/v1beta/openai/")
    text = "A long shared prompt about the history of bridges. " * 20
    oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text + "One"}])
    second = oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text + "Two"}])
    assert second.choices[0].message.content.startswith(CONTENT_PREFIX)
    assert second.usage.prompt_tokens_details.cached_tokens > 100
    assert second.usage.completion_tokens_details.reasoning_tokens > 0


def test_embeddings_native_and_openai(server, client, fake):
    one = client.models.embed_content(model="gemini-embedding-001", contents="hello world")
    assert len(one.embeddings[0].values) == 8
    assert fake.bodies("/v1/embeddings")[-1]["input"] == ["hello world"]
    from openai import OpenAI

    oa = OpenAI(api_key=server.api_key, base_url=f"{server.base_url}/v1beta/openai/")
    both = oa.embeddings.create(model="gemini-embedding-001", input=["a", "b"])
    assert [len(d.embedding) for d in both.data] == [8, 8]
    assert both.data[0].embedding == pytest.approx(
        client.models.embed_content(model="gemini-embedding-001", contents="a").embeddings[0].values, abs=1e-6)


def test_the_servers_400_is_a_400_with_its_message(client, fake):
    fake.fail_next(1, status=400, path="/v1/chat/completions")
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents="Hi")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "model server refused" in caught.value.message


def test_a_server_that_does_not_answer_in_time_is_504(server, slow):
    slow.delay = 4  # the model's engine_options say timeout = 2
    response = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.0-flash:generateContent",
                          headers={"x-goog-api-key": server.api_key}, json={"contents": [{"parts": [{"text": "x"}]}]},
                          timeout=30)
    assert response.status_code == 504 and response.json()["error"]["status"] == "DEADLINE_EXCEEDED"


def test_a_cut_stream_ends_with_a_gemini_error_event(server, slow):
    slow.cut_stream_after = 4
    try:
        with httpx.stream("POST", f"{server.base_url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                          headers={"x-goog-api-key": server.api_key},
                          json={"contents": [{"parts": [{"text": "a long story please"}]}]}) as response:
            events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    finally:
        slow.cut_stream_after = None
    assert response.status_code == 200 and events[-1]["error"]["status"] == "UNAVAILABLE"
    assert any("candidates" in e for e in events[:-1])


def test_a_client_that_leaves_closes_the_upstream_stream(server, slow):
    slow.chunk_delay = 0.2
    try:
        with httpx.stream("POST", f"{server.base_url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                          headers={"x-goog-api-key": server.api_key},
                          json={"contents": [{"parts": [{"text": "one two three four five six seven"}]}]}
                          ) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break  # the first chunk, then the client goes
        assert server.logged("POST /v1beta/models/gemini-2.0-flash:streamGenerateContent")
        import time
        deadline = time.monotonic() + 20
        while slow.stats["disconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.stats["disconnects"] == 1  # the server saw its client go: it aborts the generation
    finally:
        slow.chunk_delay = 0.0


def test_a_client_that_leaves_a_whole_answer_closes_the_upstream_request(server, slow):
    """Not streamed: the client gives up while the server is still working; Pollux closes its upstream connection,
    which is how vLLM learns to abort the generation."""
    import time
    before = slow.stats["disconnects"]
    slow.delay = 5
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.base_url}/v1beta/models/gemini-2.0-flash:generateContent",
                       headers={"x-goog-api-key": server.api_key},
                       json={"contents": [{"parts": [{"text": "a long answer please"}]}]}, timeout=1)
        deadline = time.monotonic() + 20
        while slow.stats["disconnects"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.stats["disconnects"] == before + 1
    finally:
        slow.delay = 0


def test_an_overloaded_or_down_server_is_503_with_retry_info(server, slow):
    # Last of the tests on `slow`: Pollux takes a server that fails out of its pool for a while.
    slow.down = True
    response = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.0-flash:generateContent",
                          headers={"x-goog-api-key": server.api_key}, json={"contents": [{"parts": [{"text": "x"}]}]})
    error = response.json()["error"]
    assert response.status_code == 503 and error["status"] == "UNAVAILABLE"
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"


def test_pollux_starts_while_its_upstream_is_down_and_detects_it_later(tmp_path):
    port = free_port()
    with start_server(tmp_path / "data", "--model", f"{MODEL}=openai:http://127.0.0.1:{port}/v1") as srv:
        client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
        with pytest.raises(errors.ServerError) as caught:
            client.models.generate_content(model=MODEL, contents="Hi there")
        assert caught.value.code == 503
        with FakeVLLM(port=port):  # the server comes up: the next request after retry_after goes through
            import time
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = client.models.generate_content(model=MODEL, contents="Hi there")
                    break
                except errors.ServerError:
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
            assert answer.text == CONTENT_PREFIX + "Hi there"
        assert srv.logged("flavor vllm")


def test_a_pool_moves_requests_off_a_dead_server(tmp_path):
    with FakeVLLM() as one, FakeVLLM() as two:
        spec = f"{MODEL}=openai:{one.base_url},{two.base_url}#Qwen/Qwen3-0.6B"
        with start_server(tmp_path / "data", "--model", spec) as srv:
            client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
            for _ in range(4):
                assert client.models.generate_content(model=MODEL, contents="Hi there").text
            assert one.stats["requests"] > 0 and two.stats["requests"] > 0  # both take work
            one.down = "refuse"  # killed: its port refuses connections
            before = two.stats["requests"]
            for _ in range(6):
                assert client.models.generate_content(model=MODEL, contents="Hi there").text == \
                    CONTENT_PREFIX + "Hi there"
            assert two.stats["requests"] - before >= 6
            assert srv.logged("taken out")


def test_media_goes_as_the_servers_parts(client, fake):
    import base64

    import media

    pdf = media.text_pdf("Report", "The bridge opened in 1932.")
    contents = [types.Part.from_bytes(data=media.logo_png(), mime_type="image/png"),
                types.Part.from_bytes(data=media.voice_wav(), mime_type="audio/wav"),
                types.Part.from_bytes(data=media.mp4(), mime_type="video/mp4"),
                types.Part.from_bytes(data=pdf, mime_type="application/pdf"),
                "Describe all of it."]
    response = client.models.generate_content(model=MODEL, contents=contents)
    assert response.text.startswith(CONTENT_PREFIX) and response.text.endswith("Describe all of it.")
    parts = chat_bodies(fake)[-1]["messages"][0]["content"]
    kinds = [p["type"] for p in parts]
    assert kinds[:3] == ["image_url", "input_audio", "video_url"]
    assert parts[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(media.logo_png()).decode()
    assert parts[1]["input_audio"]["format"] == "wav"
    assert parts[2]["video_url"]["url"].startswith("data:video/mp4;base64,")
    # A PDF page by page: its text, and its picture.
    assert kinds[3:5] == ["text", "image_url"] and "The bridge opened in 1932." in parts[3]["text"]
    assert parts[-1] == {"type": "text", "text": "Describe all of it."}


def test_a_clipped_video_goes_as_frames(client, fake):
    import media

    video = types.Part(inline_data=types.Blob(data=media.mp4(), mime_type="video/mp4"),
                       video_metadata=types.VideoMetadata(start_offset="0s", end_offset="1s", fps=2))
    client.models.generate_content(model=MODEL, contents=[video, "What happens?"])
    parts = chat_bodies(fake)[-1]["messages"][0]["content"]
    frames = [p for p in parts if p["type"] == "image_url"]
    assert len(frames) == 2 and frames[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_reasoning_before_a_call_is_signed_and_the_signature_comes_back(client, fake):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
    first = client.models.generate_content(model=MODEL, contents="Use get_weather for Paris", config=config)
    call_part = next(p for p in first.candidates[0].content.parts if p.function_call)
    assert call_part.thought_signature  # the server's reasoning, sealed as Gemini does
    history = [types.Content(role="user", parts=[types.Part(text="Use get_weather for Paris")]),
               first.candidates[0].content,
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                   name="get_weather", id=call_part.function_call.id, response={"t": 20}))])]
    assert client.models.generate_content(model=MODEL, contents=history, config=config).candidates
    # The server gets its reasoning back beside its call, restored from the signature.
    assistant = chat_bodies(fake)[-1]["messages"][1]
    assert assistant["reasoning_content"] == REASONING_PREFIX + "Use get_weather for Paris"
    tampered = first.candidates[0].content.model_copy(deep=True)
    next(p for p in tampered.parts if p.function_call).thought_signature = b"not a signature"
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents=[history[0], tampered, history[2]], config=config)
    assert caught.value.code == 400


def test_candidates_stream_from_one_request(client, fake):
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents="Hi", config=types.GenerateContentConfig(candidate_count=2)))
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        for cand in chunk.candidates:
            texts[cand.index or 0] += "".join(p.text or "" for p in cand.content.parts if not p.thought)
            if cand.finish_reason:
                finishes[cand.index or 0] = cand.finish_reason
    assert texts == {0: CONTENT_PREFIX + "Hi", 1: CONTENT_PREFIX + "Hi #1"}
    assert finishes == {0: types.FinishReason.STOP, 1: types.FinishReason.STOP}
    assert len(chat_bodies(fake)) == 1 and chunks[-1].usage_metadata.thoughts_token_count > 0


def test_the_servers_api_key_comes_from_the_environment(tmp_path, monkeypatch):
    with FakeVLLM(api_key="sk-upstream") as guarded:
        config = f"""
[models."{MODEL}"]
engine = "openai"
engine_options = {{ base_url = "{guarded.base_url}", model = "Qwen/Qwen3-0.6B", api_key_env = "UPSTREAM_KEY" }}
"""
        monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream")
        with start_server(tmp_path / "data", config=config) as srv:
            client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
            assert client.models.generate_content(model=MODEL, contents="Hi there").text == CONTENT_PREFIX + "Hi there"
        assert guarded.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream"
        monkeypatch.setenv("UPSTREAM_KEY", "sk-wrong")
        with start_server(tmp_path / "data2", config=config) as srv:
            response = httpx.post(f"{srv.base_url}/v1beta/models/{MODEL}:generateContent",
                                  headers={"x-goog-api-key": srv.api_key},
                                  json={"contents": [{"parts": [{"text": "x"}]}]})
            error = response.json()["error"]
            assert response.status_code == 503 and "credentials" in error["message"]


def test_connections_are_bounded_and_a_full_pool_is_503(tmp_path):
    import threading

    with FakeVLLM(chunk_delay=0.3) as busy:
        config = f"""
[models."{MODEL}"]
engine = "openai"
engine_options = {{ base_url = "{busy.base_url}", model = "Qwen/Qwen3-0.6B", flavor = "vllm", max_connections = 1, connect_timeout = 1 }}
"""
        with start_server(tmp_path / "data", config=config) as srv:
            url = f"{srv.base_url}/v1beta/models/{MODEL}"
            headers = {"x-goog-api-key": srv.api_key}
            first_chunk = threading.Event()

            def hold() -> None:  # a long stream keeps the only connection
                with httpx.stream("POST", f"{url}:streamGenerateContent?alt=sse", headers=headers, timeout=60,
                                  json={"contents": [{"parts": [{"text": "one two three four five six"}]}]}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            first_chunk.set()

            holder = threading.Thread(target=hold)
            holder.start()
            assert first_chunk.wait(30)
            response = httpx.post(f"{url}:generateContent", headers=headers, timeout=30,
                                  json={"contents": [{"parts": [{"text": "x"}]}]})
            holder.join()
            error = response.json()["error"]
            assert response.status_code == 503 and "Too many requests are in flight" in error["message"]
            assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
            # Once the stream ended its connection serves the next request: the server was never taken out.
            assert httpx.post(f"{url}:generateContent", headers=headers, timeout=30,
                              json={"contents": [{"parts": [{"text": "Hi there"}]}]}).status_code == 200


def test_batch_requests_go_at_the_configured_priority(tmp_path):
    """A batch job's requests carry `batch_priority` (for a vLLM with priority scheduling); online ones do not, nor
    does anything when the option is not set. The batch's answers are the server's."""
    with FakeVLLM() as upstream:
        config = f"""
[models."{MODEL}"]
engine = "openai"
engine_options = {{ base_url = "{upstream.base_url}", model = "Qwen/Qwen3-0.6B", batch_priority = 5 }}
"""
        with start_server(tmp_path / "data", config=config) as srv:
            client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
            online = client.models.generate_content(model=MODEL, contents="online question")
            job = client.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": f"batch question {i}"}],
                                                                         "role": "user"}]} for i in range(3)])
            assert eventually(lambda: client.batches.get(name=job.name).state == types.JobState.JOB_STATE_SUCCEEDED)
            answers = [r.response.text for r in client.batches.get(name=job.name).dest.inlined_responses]
            assert answers == [f"{CONTENT_PREFIX}batch question {i}" for i in range(3)]
            assert online.text == f"{CONTENT_PREFIX}online question"
            sent = {body["messages"][-1]["content"]: body.get("priority") for body in upstream.bodies()}
            assert sent["online question"] is None
            assert [sent[f"batch question {i}"] for i in range(3)] == [5, 5, 5]
    with pytest.raises(ValueError, match="batch_priority must be a whole number"):
        from pollux.engines.upstream.pool import UpstreamOptions
        UpstreamOptions.from_dict({"base_url": "http://x/v1", "batch_priority": "high"})
