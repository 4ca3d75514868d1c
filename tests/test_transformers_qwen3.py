"""The transformers engine on Qwen3's own chat template, through the HTTP API and the official SDK (tiny random
models built offline): forced calls written as the template writes them and ended in time, dynamic thinking that
leaves the answer room, and grammars that cannot be built answered with a 400.

`qwen3` serves a random Qwen3ForCausalLM with the stock Qwen 2.5/3 template, whose calls are
`<tool_call>\\n{...}\\n</tool_call>`, without thinking; `qwen3-thinks` the same model with dynamic thinking (its own
choice to think); `qwen3-thinking` the same weights with the thinking-only template, whose prompt opens <think>, so
that the model thinks until something ends its thoughts. Random weights allow only validity to be asserted.
"""

from __future__ import annotations

import asyncio
import json
import os

import jsonschema
import pytest
import tiny_models
from conftest import start_server
from google import genai
from google.genai import errors, types

# The reported function: an enum parameter, and a description with a comma in it.
MODE_PARAMS = {"type": "object", "properties": {
    "mode": {"type": "string", "enum": ["fast", "slow"], "description": "How to run it, fast or slow"}},
    "required": ["mode"]}
MODE_FUNCTION = {"name": "set_mode", "description": "Set the mode, then report it."}
FORCED = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    root = tiny_models.models_root()
    return {"qwen3": str(tiny_models.build_qwen3(root)), "thinking": str(tiny_models.build_qwen3_thinking(root))}


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    config = f"""
[models."qwen3"]
base = "gemini-2.0-flash"
engine = "transformers"
engine_options = {{ source = "{models['qwen3']}", threads = 1 }}

[models."qwen3-thinks"]
base = "gemini-2.5-flash"
engine = "transformers"
engine_options = {{ source = "{models['qwen3']}", threads = 1 }}

[models."qwen3-thinking"]
base = "gemini-2.5-flash"
engine = "transformers"
engine_options = {{ source = "{models['thinking']}", threads = 1 }}
"""
    os.environ["HF_HUB_OFFLINE"] = "1"
    with start_server(tmp_path_factory.mktemp("qwen3") / "data", config=config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


def _tools(declared_as: str) -> list[types.Tool]:
    if declared_as == "json_schema":
        declaration = types.FunctionDeclaration(**MODE_FUNCTION, parameters_json_schema=MODE_PARAMS)
    else:  # Gemini's own Schema, as most SDK users write it
        declaration = types.FunctionDeclaration(**MODE_FUNCTION, parameters=types.Schema(
            type="OBJECT", required=["mode"], properties={"mode": types.Schema(
                type="STRING", enum=["fast", "slow"], description="How to run it, fast or slow")}))
    return [types.Tool(function_declarations=[declaration])]


def _spent(response) -> int:
    usage = response.usage_metadata
    return (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)


@pytest.mark.parametrize("model", ["qwen3", "qwen3-thinks", "qwen3-thinking"])
@pytest.mark.parametrize("declared_as", ["schema", "json_schema"])
@pytest.mark.parametrize("limit", [48, 400])
def test_mode_any_makes_valid_calls_that_stop(client, model, declared_as, limit):
    """Forced calls on the Qwen 2.5/3 template: valid calls, ended with STOP within the limit (the report was
    MAX_TOKENS with no parts and no tokens), whether or not the model thinks first."""
    for seed in range(3):
        response = client.models.generate_content(
            model=model, contents="Run the job", config=types.GenerateContentConfig(
                seed=seed, max_output_tokens=limit, tools=_tools(declared_as), tool_config=FORCED))
        calls = response.function_calls
        assert calls and response.candidates[0].finish_reason == types.FinishReason.STOP, (seed, response)
        for call in calls:
            assert call.name == "set_mode", response
            jsonschema.validate(call.args, MODE_PARAMS)
        assert 0 < response.usage_metadata.candidates_token_count and _spent(response) <= limit, response


def test_forced_calls_are_written_as_the_template_writes_them(models):
    """The forced answer is, token for token, what the chat template renders for the calls it made: the tag and the
    JSON on lines of their own, a newline between calls, the template's JSON separators. (A grammar that wrote calls
    on one line pushed a real model off the only layout it knows.)"""
    from pollux.engines.base import CallEvent, FunctionSpec, GenerateRequest, Sampling, Text, Turn
    from pollux.engines.hf import HFOptions, TransformersEngine

    params = {"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]},
                                               "level": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["mode", "level"], "additionalProperties": False}
    engine = TransformersEngine(HFOptions(source=models["qwen3"], threads=1))
    written: list[int] = []
    make_job = engine._job

    def recording_job(request, emit):
        job = make_job(request, emit)
        accept = job.sequence.accept

        def accept_and_record(token):
            if not job.sequence.done:
                written.append(token)
            accept(token)

        job.sequence.accept = accept_and_record
        return job

    engine._job = recording_job

    async def calls(seed: int):
        request = GenerateRequest(model="qwen3", turns=[Turn("user", [Text("Run the job")])],
                                  functions=[FunctionSpec("set_mode", "Set the mode.", params)], tool_mode="ANY",
                                  sampling=Sampling(seed=seed, max_output_tokens=200))
        return [e.call async for e in engine.generate(request) if isinstance(e, CallEvent)]

    tok = engine.tokenizer
    user = [{"role": "user", "content": "Run the job"}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    several = False
    try:
        for seed in range(4):
            written.clear()
            made = asyncio.run(calls(seed))
            several |= len(made) > 1
            turn = {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": c.name, "arguments": c.args}} for c in made]}
            rendered = tok.apply_chat_template(user + [turn], tokenize=False)
            assert made and rendered.startswith(prompt)
            # The template ends the turn with <|im_end|> and a newline; the model with one of its end-of-turn tokens.
            assert written[-1] in engine.special.eos
            assert rendered[len(prompt):] == tok.decode(written[:-1], skip_special_tokens=False) + "<|im_end|>\n"
    finally:
        asyncio.run(engine.close())
    assert several  # the newline between calls was written at least once


@pytest.mark.parametrize("limit", [40, 120])
def test_dynamic_thinking_leaves_room_for_a_schema_answer(client, limit):
    """A model that would think to the limit (its prompt opens <think>, and random weights seldom close it) answers
    a schema with complete JSON: dynamic thinking stops at half the limit, and the answer, held to the grammar,
    closes within the rest. The schema bounds nothing, so the answer has to close itself in time."""
    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "count": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "count", "tags"]}
    for seed in range(3):
        response = client.models.generate_content(
            model="qwen3-thinking", contents="Describe a cat", config=types.GenerateContentConfig(
                seed=seed, max_output_tokens=limit, response_mime_type="application/json",
                response_json_schema=schema))
        assert response.candidates[0].finish_reason == types.FinishReason.STOP, (seed, response)
        jsonschema.validate(json.loads(response.text), schema)
        thoughts = response.usage_metadata.thoughts_token_count
        assert thoughts and thoughts <= limit // 2 + 1 and _spent(response) <= limit, response


def test_dynamic_thinking_leaves_room_for_a_forced_call(client):
    """The same for a forced call: thoughts stop at half the limit (and its </think>), the call fits in the rest."""
    limit = 60
    for seed in range(3):
        response = client.models.generate_content(
            model="qwen3-thinking", contents="Run the job", config=types.GenerateContentConfig(
                seed=seed, max_output_tokens=limit, tools=_tools("json_schema"), tool_config=FORCED))
        assert response.function_calls and response.candidates[0].finish_reason == types.FinishReason.STOP, response
        assert response.usage_metadata.thoughts_token_count <= limit // 2 + 1 and _spent(response) <= limit, response


def test_an_explicit_thinking_budget_is_not_capped(client):
    """The cap is dynamic thinking's alone: a budget the caller sets is spent as set (on this seed the model thinks to
    the limit, past the half that dynamic thinking would stop at)."""
    limit = 60
    response = client.models.generate_content(
        model="qwen3-thinking", contents="Describe a cat", config=types.GenerateContentConfig(
            seed=0, max_output_tokens=limit, response_mime_type="application/json",
            response_json_schema={"type": "object"}, thinking_config=types.ThinkingConfig(thinking_budget=1000)))
    assert response.usage_metadata.thoughts_token_count > limit // 2 + 1, response


@pytest.mark.parametrize("mode", ["ANY", "VALIDATED"])
@pytest.mark.parametrize("params, why", [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}}, "regex"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}}, "required": ["a"]},
     "unsatisfiable"),
])
def test_a_call_grammar_that_cannot_be_built_is_a_400(client, mode, params, why):
    """A function whose parameters no grammar can follow is the request's 400, naming the function. (Beside a function
    that can be called, the unsatisfiable one used to give an empty answer: no parts, no tokens, MAX_TOKENS; the bad
    pattern a 400 about a "response schema" that quoted the whole call grammar.)"""
    tools = [types.Tool(function_declarations=[
        types.FunctionDeclaration(name="broken", parameters_json_schema=params),
        types.FunctionDeclaration(name="fine", parameters_json_schema={"type": "object"})])]
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="qwen3", contents="Run the job", config=types.GenerateContentConfig(
            max_output_tokens=40, tools=tools, tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=mode))))
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT", why
    assert "function broken" in err.value.message, err.value.message


def test_a_response_schema_that_cannot_be_built_is_a_400(client):
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="qwen3", contents="Describe a cat", config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema={
                "type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}},
                "required": ["a"]}))
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
    assert "response schema" in err.value.message


COMPACT_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- for tc in m.tool_calls or [] %}<tool_call>"
    "{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson(separators=(',', ':')) }}"
    "</tool_call>{%- endfor %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")
NO_TOOLS_TEMPLATE = ("{%- for m in messages %}{%- if m.tool_calls %}{{ raise_exception('no tools here') }}{%- endif %}"
                     "{{ m.content }}{%- endfor %}")
# Llama 3.1's own refuses parallel calls; this one writes compact arguments too, which only a probe of one call sees.
SINGLE_CALL_TEMPLATE = tiny_models.LLAMA3_TEMPLATE.replace(
    "{%- for tc in message.tool_calls %}",
    "{%- if message.tool_calls | length > 1 %}{{ raise_exception('one call at a time') }}{%- endif %}"
    "{%- for tc in message.tool_calls %}").replace(
    "{{ tc.function.arguments | tojson }}", "{{ tc.function.arguments | tojson(separators=(',', ':')) }}")


@pytest.mark.parametrize("build, template, expected", [
    ("qwen3", None, {"before": "\n", "after": "\n", "between": "\n", "separators": (", ", ": ")}),
    ("chatml", None, {"before": "", "after": "", "between": "\n", "separators": (", ", ": ")}),
    ("chatml", COMPACT_TEMPLATE, {"before": "", "after": "", "between": "", "separators": (",", ":")}),
    ("chatml", NO_TOOLS_TEMPLATE, {"before": "", "after": "", "between": "", "separators": (", ", ": ")}),
    ("llama3", SINGLE_CALL_TEMPLATE, {"args_key": "parameters", "separators": (",", ":")}),
    ("mistral", None, {"before": " ", "many": True}),
])
def test_the_call_layout_is_read_from_the_chat_template(build, template, expected):
    """What forced calls look like comes from rendering calls through the model's own template; a template that
    cannot render them leaves the format's defaults."""
    from transformers import AutoTokenizer

    from pollux.engines.hf import _tool_format

    root = tiny_models.models_root()
    source = {"qwen3": tiny_models.build_qwen3, "chatml": tiny_models.build_llama,
              "llama3": tiny_models.build_llama3_format, "mistral": tiny_models.build_mistral_format}[build](root)
    tok = AutoTokenizer.from_pretrained(source)
    if template is not None:
        tok.chat_template = template
    fmt = _tool_format(tok)
    assert {key: getattr(fmt, key) for key in expected} == expected, fmt
