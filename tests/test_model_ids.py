"""Today's model ids, and the ones Google releases next: the catalogue's current entries, Gemini-shaped ids beyond it
(served as their family's entry under their own name), the 404 for any other id, and pattern entries of the config
that route many ids to one engine.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
import tiny_models
from conftest import start_server
from google import genai
from google.genai import errors, types

from pollux.config import RESOLVED_CACHE_SIZE, Settings, load_config, lookup_model, serve_model

# What the current Gemini CLI (its default and its router's small model) and the python-genai tests ask for.
TODAYS_IDS = ["gemini-3.1-pro-preview", "gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-3-flash-preview",
              "gemini-3.5-flash", "gemini-3.1-pro-preview-customtools"]
NOT_FOUND = ("models/{model} is not found for API version v1beta, or is not supported for {method}. "
             "Call ListModels to see the list of available models and their supported methods.")


def get(server, path: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers={"x-goog-api-key": server.api_key}, timeout=30)


def post(server, path: str, body) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers={"x-goog-api-key": server.api_key}, timeout=60)


def listed_ids(server) -> list[str]:
    return [m["name"] for m in get(server, "/v1beta/models?pageSize=1000").json()["models"]]


# Today's ids on the default server ------------------------------------------------------------------------------
@pytest.mark.parametrize("model", TODAYS_IDS)
def test_todays_ids_generate(beta_client, model):
    response = beta_client.models.generate_content(model=model, contents="Say hello.")
    assert response.text
    assert response.model_version.startswith(f"{model} ")  # answered as the model asked for, not its family


def test_the_cli_stream_and_count_tokens_on_its_ids(beta_client):
    # The Gemini CLI streams from its default model and counts tokens on it.
    chunks = list(beta_client.models.generate_content_stream(model="gemini-3.1-pro-preview", contents="Hi there"))
    assert "".join(c.text or "" for c in chunks)
    assert beta_client.models.count_tokens(model="gemini-3.5-flash-lite", contents="Hi there").total_tokens > 0


def test_catalogue_lists_current_ids_with_their_published_limits(server):
    models = {m["name"]: m for m in get(server, "/v1beta/models?pageSize=1000").json()["models"]}
    for model in ("gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-3.1-pro-preview", "gemini-3.5-flash",
                  "gemini-3.5-flash-lite"):
        m = models[f"models/{model}"]
        assert (m["inputTokenLimit"], m["outputTokenLimit"], m.get("thinking")) == (1_048_576, 65_536, True), m
    banana = models["models/gemini-2.5-flash-image"]
    assert (banana["inputTokenLimit"], banana["outputTokenLimit"], banana["maxTemperature"]) == (32_768, 32_768, 1)
    assert banana["supportedGenerationMethods"] == ["generateContent", "countTokens", "batchGenerateContent"]
    assert "thinking" not in banana
    pro_image = models["models/gemini-3-pro-image-preview"]
    assert (pro_image["inputTokenLimit"], pro_image["outputTokenLimit"], pro_image["thinking"]) == (
        131_072, 32_768, True)
    assert "embedContent" in models["models/gemini-embedding-2"]["supportedGenerationMethods"]


def test_resolved_id_is_its_family_under_its_own_name(beta_client, server):
    # `models/<id>` with the fields of its family's entry; only its names differ.
    for model, family in (("gemini-3.8-flash", "gemini-3.5-flash"),
                          ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
                          ("gemini-4-pro-preview-05-2027", "gemini-3.1-pro-preview"),
                          ("gemini-3.5-flash-lite-latest", "gemini-3.5-flash-lite"),
                          ("gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"),
                          ("gemini-embedding-3", "gemini-embedding-2"),
                          ("gemini-3.1-pro-preview-customtools", "gemini-3.1-pro-preview"),
                          ("gemini-2.0-flash-preview-image-generation", "gemini-2.5-flash-image")):
        own, theirs = get(server, f"/v1beta/models/{model}").json(), get(server, f"/v1beta/models/{family}").json()
        assert own["name"] == f"models/{model}"
        names = ("name", "displayName", "description", "version")
        assert {k: v for k, v in own.items() if k not in names} == {k: v for k, v in theirs.items() if k not in names}
    got = beta_client.models.get(model="gemini-3.8-flash")
    assert (got.name, got.display_name, got.input_token_limit, got.thinking) == (
        "models/gemini-3.8-flash", "Gemini 3.8 Flash", 1_048_576, True)
    assert "generateContent" in got.supported_actions


def test_list_shows_the_catalogue_only(server):
    post(server, "/v1beta/models/gemini-3.9-flash:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})
    listed = listed_ids(server)
    assert "models/gemini-3.1-pro-preview" in listed and "models/gemini-3.9-flash" not in listed
    oai = openai.OpenAI(api_key=server.api_key, base_url=f"{server.base_url}/v1beta/openai/")
    assert oai.models.retrieve("gemini-3.9-flash").id == "models/gemini-3.9-flash"
    assert "models/gemini-3.9-flash" not in [m.id for m in oai.models.list()]


def test_thinking_level_on_3x_ids(beta_client):
    for model, level in (("gemini-3.8-flash", "MINIMAL"), ("gemini-3.1-pro-preview", "MEDIUM"),
                         ("gemini-3-pro-preview", "HIGH")):
        response = beta_client.models.generate_content(
            model=model, contents="Why is the sky blue?",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_level=level)))
        assert response.text
    # Gemini 3 Pro knows two levels; its family refuses the others as the real API does.
    with pytest.raises(errors.ClientError) as exc:
        beta_client.models.generate_content(
            model="gemini-3-pro-preview-11-2025", contents="Hi",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_level="MINIMAL")))
    assert exc.value.code == 400 and "Supported levels: LOW, HIGH" in exc.value.message


def test_thinking_budget_rules_of_25_on_a_dated_id(beta_client):
    model = "gemini-2.5-flash-preview-09-2025"

    def ask(**thinking):
        return beta_client.models.generate_content(
            model=model, contents="Hi", config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(include_thoughts=True, **thinking)))

    assert not any(p.thought for p in ask(thinking_budget=0).candidates[0].content.parts)  # 0 turns Flash's off
    assert ask(thinking_budget=1024).usage_metadata.thoughts_token_count
    with pytest.raises(errors.ClientError) as exc:
        ask(thinking_budget=30000)
    assert exc.value.code == 400 and "between 0 and 24576" in exc.value.message
    with pytest.raises(errors.ClientError) as exc:  # 2.5 Pro's family cannot stop thinking
        beta_client.models.generate_content(
            model="gemini-2.5-pro-preview-06-05", contents="Hi",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)))
    assert exc.value.code == 400 and "only works in thinking mode" in exc.value.message


def test_embedding_2_and_next(beta_client):
    # The SDK sends strings to these (multimodal) models as the parts of one content: one vector. Contents are many.
    texts = [types.Content(parts=[types.Part(text=t)]) for t in ("one text", "another")]
    for model in ("gemini-embedding-2", "gemini-embedding-3"):
        assert [len(e.values) for e in beta_client.models.embed_content(model=model, contents="a text").embeddings
                ] == [3072]
        assert [len(e.values) for e in beta_client.models.embed_content(model=model, contents=texts).embeddings
                ] == [3072, 3072]


@pytest.mark.parametrize("model", ["gpt-4", "gemini-foo", "gemini", "gemini-1.5-pro", "gemini-3.8-flash-tts",
                                   "gemini-2.5-flash-native-audio-preview-09-2025"])
def test_other_ids_get_the_real_404(beta_client, server, model):
    with pytest.raises(errors.ClientError) as exc:
        beta_client.models.generate_content(model=model, contents="Hi")
    assert exc.value.code == 404
    assert exc.value.message == NOT_FOUND.format(model=model, method="generateContent")
    assert get(server, f"/v1beta/models/{model}").status_code == 404


def test_embedding_ids_are_not_generation_models(server):
    r = post(server, "/v1beta/models/gemini-embedding-3:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == NOT_FOUND.format(model="gemini-embedding-3", method="generateContent")


# Patterns: one local model serving every Gemini id ------------------------------------------------------------------
@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """`gemini-*` on a tiny Llama (config file), `gemini-3.5-*` on a second copy of it (`--model` glob, other options),
    gemini-2.0-flash kept on the emulator by its own entry."""
    tiny = str(tiny_models.build_llama(tiny_models.models_root()))
    config = f"""
[models."gemini-*"]
engine = "transformers"
engine_options = {{ source = "{tiny}", threads = 1 }}

[models."gemini-2.0-flash"]
engine = "emulator"
"""
    os.environ["HF_HUB_OFFLINE"] = "1"
    with start_server(tmp_path_factory.mktemp("routed") / "data", "--model", f"gemini-3.5-*={tiny}",
                      config=config) as srv:
        yield srv


def engine_of(srv, model: str) -> str:
    client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
    response = client.models.generate_content(model=model, contents="Hello",
                                              config=types.GenerateContentConfig(max_output_tokens=4))
    assert response.model_version.startswith(f"{model} (pollux ")
    return response.model_version.removeprefix(f"{model} (pollux ").removesuffix(")")


def test_pattern_routes_catalogue_and_resolved_ids(routed):
    for model in ("gemini-2.5-flash", "gemini-3-pro-preview", "gemini-3.8-flash", "gemini-2.5-flash-preview-09-2025",
                  "gemini-3.5-flash", "gemini-3.5-flash-lite-latest"):
        assert engine_of(routed, model) == "transformers", model
    assert engine_of(routed, "gemini-2.0-flash") == "emulator"  # its own entry wins over the pattern
    # Two option sets, two engines: every id of one set shares its loaded model.
    tiny = str(tiny_models.build_llama(tiny_models.models_root()))
    assert routed.log().count(f"loading {tiny} on ") == 2, routed.log()


def test_routed_ids_show_the_engine_limits(routed):
    context = 4096  # the tiny Llama's max_position_embeddings
    # gemini-2.0-flash-exp: its family's entry stays on the emulator, the pattern takes it to the tiny Llama.
    assert engine_of(routed, "gemini-2.0-flash-exp") == "transformers"
    for model in ("gemini-2.5-flash", "gemini-3.8-flash", "gemini-3.5-flash-lite-latest", "gemini-2.0-flash-exp"):
        m = get(routed, f"/v1beta/models/{model}").json()
        assert (m["name"], m["inputTokenLimit"], m["outputTokenLimit"]) == (f"models/{model}", context, context)
    # A generation pattern leaves the embedding and image models where they were.
    banana = get(routed, "/v1beta/models/gemini-2.5-flash-image").json()
    assert (banana["inputTokenLimit"], banana["outputTokenLimit"]) == (32_768, 32_768)
    assert get(routed, "/v1beta/models/gemini-2.0-flash").json()["inputTokenLimit"] == 1_048_576
    r = post(routed, "/v1beta/models/gemini-embedding-2:embedContent", {"content": {"parts": [{"text": "hi"}]}})
    assert len(r.json()["embedding"]["values"]) == 3072


# Resolution rules, without a server ---------------------------------------------------------------------------------
def test_cache_of_resolved_ids_is_bounded():
    settings = Settings(data_dir=Path("unused"))
    ids = [f"gemini-{major}.{minor}-flash-preview-{month:02d}-2027" for major in range(3, 9) for minor in range(100)
           for month in range(1, 13)]
    assert len(ids) > 2 * RESOLVED_CACHE_SIZE
    for model_id in ids:
        assert lookup_model(settings, model_id).id == model_id
    assert settings.resolved.cache_info().currsize <= RESOLVED_CACHE_SIZE
    assert len(settings.models) == len(Settings(data_dir=Path("unused")).models)  # nothing was added


def test_resolved_id_follows_its_family_entry_when_engines_rewrite_it():
    # As app.py does when a loaded model starts: the catalogue entry is replaced with the engine's limits.
    settings = Settings(data_dir=Path("unused"))
    assert lookup_model(settings, "gemini-3.8-flash").input_token_limit == 1_048_576
    family = settings.models["gemini-3.5-flash"]
    settings.models["gemini-3.5-flash"] = replace(family, engine="transformers", engine_options={"source": "x"},
                                                  input_token_limit=4096, output_token_limit=4096)
    resolved = lookup_model(settings, "gemini-3.8-flash")
    assert (resolved.engine_key, resolved.input_token_limit) == (settings.models["gemini-3.5-flash"].engine_key, 4096)


def test_most_specific_entry_wins_field_by_field(tmp_path):
    config = tmp_path / "pollux.toml"
    config.write_text('[models."gemini-*"]\nengine = "transformers"\nengine_options = {source = "/a"}\n'
                      'output_token_limit = 1000\n\n'
                      '[models."gemini-3*"]\nengine_options = {source = "/b"}\n\n'
                      '[models."gemini-3.5-flash"]\noutput_token_limit = 2000\n\n'
                      '[models."gemini-embedding-*"]\nengine = "transformers"\nengine_options = {source = "/e"}\n')
    settings = load_config(config, Settings(data_dir=tmp_path))
    serve_model(settings, "gemini-2.5-*=/c")
    source = {m: lookup_model(settings, m).engine_options["source"]
              for m in ("gemini-2.0-flash", "gemini-3.5-flash", "gemini-3.9-pro", "gemini-2.5-flash-preview-09-2025",
                        "gemini-embedding-001", "gemini-embedding-3")}
    assert source == {"gemini-2.0-flash": "/a", "gemini-3.5-flash": "/b", "gemini-3.9-pro": "/b",
                      "gemini-2.5-flash-preview-09-2025": "/c", "gemini-embedding-001": "/e",
                      "gemini-embedding-3": "/e"}
    assert lookup_model(settings, "gemini-3.5-flash").output_token_limit == 2000  # its own entry
    assert lookup_model(settings, "gemini-3.9-pro").output_token_limit == 1000     # the pattern's
    # Image and embedding models are not the generation pattern's.
    assert lookup_model(settings, "gemini-2.5-flash-image").engine == "emulator"
    assert lookup_model(settings, "imagen-4.0-generate-001").engine == "emulator"
