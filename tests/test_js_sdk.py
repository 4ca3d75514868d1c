"""The official JS SDKs (@google/genai 3.3.0, and openai with zod for the OpenAI-compatible surface; all pinned in
tests/js/package.json) driving Pollux under node.

Each test runs one script from tests/js/ with `node`, pointing the SDK at the session server only through the
environment variables a user sets (GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY). Scripts print one JSON document on
stdout; the assertions live here so that failures show a readable diff. The node dependencies are installed once per
session with `npm ci` when tests/js/node_modules lacks a pinned package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import media
import pytest

JS_DIR = Path(__file__).resolve().parent / "js"

# Everything that would make the SDK look somewhere other than the two variables we set.
_SDK_ENV = ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_API_VERSION",
            "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_VERTEX_BASE_URL",
            "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION")


def _all_installed() -> bool:
    """Every dependency of tests/js/package.json is in node_modules at its pinned version."""
    wanted = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        try:
            installed = json.loads((JS_DIR / "node_modules" / name / "package.json").read_text()).get("version")
        except (OSError, ValueError):
            return False
        if installed != version:
            return False
    return True


@pytest.fixture(scope="session")
def js_sdk() -> Path:
    """tests/js with its node dependencies installed (npm ci from the committed lock file when missing)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the JS SDK tests, and were not found on PATH", pytrace=False)
    if not _all_installed():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"`npm ci` in {JS_DIR} failed with exit code {proc.returncode}:\n"
                        f"{proc.stdout}\n{proc.stderr}", pytrace=False)
        if not _all_installed():
            pytest.fail(f"`npm ci` did not install the versions pinned in tests/js/package.json:\n"
                        f"{proc.stdout}\n{proc.stderr}", pytrace=False)
    return JS_DIR


def node_env(server, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SDK_ENV}
    env["GOOGLE_GEMINI_BASE_URL"] = server.base_url
    env["GEMINI_API_KEY"] = server.api_key
    env.update(overrides)
    return env


def run_node(js_sdk: Path, server, script: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["node", script], cwd=js_sdk, env=node_env(server, **env), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (
        f"node {script} exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        f"\n--- server log (tail)\n{server.log()[-4000:]}")
    return proc


def node_json(js_sdk: Path, server, script: str, **env: str) -> Any:
    proc = run_node(js_sdk, server, script, **env)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"node {script} printed nothing\n--- stderr\n{proc.stderr}"
    return json.loads(lines[-1])


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the docs' quickstart, verbatim -------------------------------------------------------------------------------


def test_quickstart_verbatim(js_sdk, server):
    """tests/js/quickstart.mjs is the JavaScript quickstart of the docs, unchanged."""
    proc = run_node(js_sdk, server, "quickstart.mjs")
    assert proc.stdout.strip(), f"the quickstart printed no text\n--- stderr\n{proc.stderr}"
    assert proc.stdout.strip() != "undefined"


def test_quickstart_with_a_new_key(js_sdk, server):
    """A key made with `pollux keys create` works from the environment like the first one."""
    key = server.new_key()
    assert key.startswith("AIza")
    proc = run_node(js_sdk, server, "quickstart.mjs", GEMINI_API_KEY=key)
    assert proc.stdout.strip() not in ("", "undefined")


# --- API versions ---------------------------------------------------------------------------------------------------

_CALLS = ("generateContent", "streamGenerateContent", "countTokens")


def _assert_version(result: dict, version: str) -> None:
    paths = [c["path"] for c in result["calls"]]
    assert paths == [f"/{version}/models/gemini-2.5-flash:{verb}" for verb in _CALLS]
    assert [c["status"] for c in result["calls"]] == [200, 200, 200]
    assert result["calls"][1]["query"] == {"alt": "sse"}
    assert result["text"], result
    assert result["streamed"] == result["text"]
    assert is_int(result["totalTokens"]) and result["totalTokens"] > 0


@pytest.mark.parametrize("env_version, default_version", [
    (None, "v1"),          # SDK 3.x default
    ("beta", "v1beta"),    # GOOGLE_GENAI_API_VERSION=beta
    ("v1alpha", "v1alpha"),  # any other value is used literally
])
def test_api_versions(js_sdk, server, env_version, default_version):
    env = {"GOOGLE_GENAI_API_VERSION": env_version} if env_version else {}
    out = node_json(js_sdk, server, "api_version.mjs", **env)
    assert out["origins"] == [server.base_url], "the SDK must reach Pollux through GOOGLE_GEMINI_BASE_URL only"
    assert out["apiKeyHeader"] is True
    _assert_version(out["default"], default_version)
    _assert_version(out["v1beta"], "v1beta")  # apiVersion in code wins over the environment
    assert out["v1beta"]["text"] == out["default"]["text"]


# --- streaming ------------------------------------------------------------------------------------------------------


def test_generate_content_stream(js_sdk, server):
    out = node_json(js_sdk, server, "stream.mjs")
    chunks = out["chunks"]
    assert len(chunks) >= 3, chunks
    assert out["streamCall"]["query"] == {"alt": "sse"}
    assert "".join(c["text"] or "" for c in chunks) == out["text"]
    assert out["finishReason"] == "STOP"
    assert chunks[-1]["finishReason"] == "STOP"
    assert [c["finishReason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert all(c["usageMetadata"] for c in chunks), "every chunk carries usageMetadata"
    assert all(c["role"] == "model" for c in chunks)
    assert len({c["responseId"] for c in chunks}) == 1 and chunks[0]["responseId"]
    assert all(c["modelVersion"] for c in chunks)
    # usageMetadata is cumulative: the last chunk's equals the non-streamed response's
    counts = [c["usageMetadata"].get("candidatesTokenCount", 0) for c in chunks]
    assert counts == sorted(counts), counts
    last = chunks[-1]["usageMetadata"]
    for field in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"):
        assert last.get(field) == out["usageMetadata"].get(field), field
    assert all(c["usageMetadata"]["promptTokenCount"] == out["usageMetadata"]["promptTokenCount"] for c in chunks)


# --- chats ----------------------------------------------------------------------------------------------------------


def test_chat_send_message_and_stream(js_sdk, server):
    out = node_json(js_sdk, server, "chat.mjs")
    assert out["first"] and out["second"]
    history = out["historyAfterTwo"]
    assert [h["role"] for h in history] == ["user", "model", "user", "model"]
    assert history[0]["parts"][0]["text"] == "Hello! My name is Ada and I like gardening."
    assert history[2]["parts"][0]["text"] == "Suggest a plant for a sunny balcony."
    assert "".join(p.get("text", "") for p in history[3]["parts"] if not p.get("thought")) == out["second"]

    # each request carried the whole conversation so far
    assert [c["roles"] for c in out["sentContents"]] == [
        ["user"], ["user", "model", "user"], ["user", "model", "user", "model", "user"]]
    assert out["sentContents"][2]["path"].endswith(":streamGenerateContent")

    chunks = out["streamChunks"]
    assert len(chunks) >= 2
    streamed = "".join(c["text"] or "" for c in chunks)
    assert streamed
    assert chunks[-1]["finishReason"] == "STOP"
    after = out["historyAfterStream"]
    assert after[:4] == history
    assert after[4]["role"] == "user" and after[4]["parts"][0]["text"] == "Now tell me how often to water it."
    assert len(after) > 5 and all(h["role"] == "model" for h in after[5:])
    assert "".join(p.get("text", "") for h in after[5:] for p in h["parts"] if not p.get("thought")) == streamed


# --- countTokens ----------------------------------------------------------------------------------------------------


def test_count_tokens_matches_prompt_token_count(js_sdk, server):
    out = node_json(js_sdk, server, "count_tokens.mjs")
    for name, result in out.items():
        assert is_int(result["totalTokens"]) and result["totalTokens"] > 0, (name, result)
        assert result["totalTokens"] == result["promptTokenCount"], (name, result)
    assert out["turns"]["totalTokens"] > out["string"]["totalTokens"]


# --- models ---------------------------------------------------------------------------------------------------------


def test_models_list_and_get(js_sdk, server):
    out = node_json(js_sdk, server, "models.mjs")
    names = out["names"]
    assert None not in names, f"the pager yielded an empty slot (an empty page with a nextPageToken?): {names}"
    assert all(n.startswith("models/") for n in names), names
    ids = [n.removeprefix("models/") for n in names]
    assert len(ids) == len(set(ids)), f"duplicates: {ids}"
    for expected in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-3-pro-preview",
                     "gemini-embedding-001"):
        assert expected in ids

    calls = out["listCalls"]
    assert len(calls) >= 2, "pageSize 3 must take several pages"
    assert all(c["path"] == "/v1/models" and c["query"].get("pageSize") == "3" and c["status"] == 200
               for c in calls), calls
    assert "pageToken" not in calls[0]["query"] and all(c["query"].get("pageToken") for c in calls[1:]), calls

    pages = out["pages"]
    assert [n for page in pages for n in page] == names, "page-by-page and for-await give the same models"
    assert all(1 <= len(page) <= 3 for page in pages), pages

    model = out["model"]
    assert model["name"] == "models/gemini-2.5-flash"
    assert model["inputTokenLimit"] == 1048576
    assert model["outputTokenLimit"] == 65536
    assert model["thinking"] is True
    assert model.get("displayName")
    assert "generateContent" in model.get("supportedActions", [])


# --- structured output ----------------------------------------------------------------------------------------------


def test_structured_output(js_sdk, server):
    out = node_json(js_sdk, server, "structured.mjs")

    person = json.loads(out["jsonSchema"])
    assert isinstance(person, dict)
    assert {"name", "age", "hobbies"} <= set(person)
    assert isinstance(person["name"], str)
    assert is_int(person["age"]) and 0 <= person["age"] <= 120
    assert isinstance(person["hobbies"], list) and len(person["hobbies"]) >= 1
    assert all(isinstance(h, str) for h in person["hobbies"])

    recipe = json.loads(out["responseSchema"])
    assert isinstance(recipe, dict)
    assert {"recipeName", "servings", "rating", "vegan", "ingredients"} <= set(recipe)
    assert isinstance(recipe["recipeName"], str)
    assert is_int(recipe["servings"])
    assert isinstance(recipe["rating"], (int, float)) and not isinstance(recipe["rating"], bool)
    assert isinstance(recipe["vegan"], bool)
    assert isinstance(recipe["ingredients"], list) and all(isinstance(i, str) for i in recipe["ingredients"])
    assert list(recipe)[:5] == ["recipeName", "servings", "rating", "vegan", "ingredients"], "propertyOrdering"

    colours = json.loads(out["arraySchema"])
    assert isinstance(colours, list)
    for item in colours:
        assert isinstance(item, dict) and isinstance(item.get("colour"), str) and isinstance(item.get("hex"), str)


# --- function calling -----------------------------------------------------------------------------------------------


def test_function_calling_round_trip(js_sdk, server):
    out = node_json(js_sdk, server, "function_calling.mjs")
    calls = out["functionCalls"]
    assert calls, f"no function call; parts: {out['firstParts']}"
    call = calls[0]
    assert call["name"] == "get_weather"
    assert isinstance(call.get("args", {}).get("location"), str)
    assert "boston" in call["args"]["location"].lower()
    assert isinstance(call.get("id"), str) and call["id"]
    assert out["firstFinishReason"] == "STOP"

    second = out["second"]
    assert out["sentHistoryRoles"] == ["user", "model", "user"]
    assert second["functionCalls"] == [], "after the function response the model answers in text"
    assert second["text"], second
    assert "21" in second["text"] or "partly cloudy" in second["text"].lower(), second["text"]
    assert second["finishReason"] == "STOP"


# --- thinking -------------------------------------------------------------------------------------------------------


def test_thinking(js_sdk, server):
    out = node_json(js_sdk, server, "thinking.mjs")

    with_thoughts = out["withThoughts"]
    thoughts = [p for p in with_thoughts["parts"] if p.get("thought") is True]
    answer = [p for p in with_thoughts["parts"] if "text" in p and not p.get("thought")]
    assert thoughts and all(p.get("text") for p in thoughts), with_thoughts["parts"]
    assert answer, with_thoughts["parts"]
    assert with_thoughts["text"] == "".join(p["text"] for p in answer), "response.text leaves thoughts out"
    usage = with_thoughts["usageMetadata"]
    assert is_int(usage.get("thoughtsTokenCount")) and usage["thoughtsTokenCount"] > 0, usage
    assert usage["totalTokenCount"] == (usage["promptTokenCount"] + usage["candidatesTokenCount"]
                                        + usage["thoughtsTokenCount"])

    no_thinking = out["noThinking"]
    assert no_thinking["text"]
    assert not any(p.get("thought") for p in no_thinking["parts"]), no_thinking["parts"]
    assert "thoughtsTokenCount" not in no_thinking["usageMetadata"], no_thinking["usageMetadata"]
    usage = no_thinking["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]

    streamed = out["streamed"]
    kinds = ["thought" if any(p.get("thought") for p in c["parts"]) else "answer" for c in streamed
             if any("text" in p for p in c["parts"])]
    assert kinds and kinds[0] == "thought" and "answer" in kinds, kinds
    assert kinds == sorted(kinds, key=lambda k: k == "answer"), "thoughts stream before the answer"
    assert "".join(c["text"] or "" for c in streamed)


# --- errors ---------------------------------------------------------------------------------------------------------


def _assert_api_error(err: dict, status: int, rpc_status: str) -> None:
    assert err["threw"] is True, f"expected an ApiError {status}, the call succeeded: {err}"
    assert err["isApiError"] is True and err["name"] == "ApiError", err
    assert err["status"] == status, err
    assert err["body"] is not None, f"the error body is not JSON: {err['message']}"
    assert err["body"]["error"]["code"] == status, err
    assert err["body"]["error"]["status"] == rpc_status, err


def test_errors(js_sdk, server):
    out = node_json(js_sdk, server, "errors.mjs")

    _assert_api_error(out["wrongKey"], 400, "INVALID_ARGUMENT")
    assert "API_KEY_INVALID" in out["wrongKey"]["message"]

    for case in ("unknownModel", "unknownModelStream"):
        _assert_api_error(out[case], 404, "NOT_FOUND")
        assert "models/gemini-nope is not found for API version v1," in out[case]["message"], out[case]
    _assert_api_error(out["unknownModelBeta"], 404, "NOT_FOUND")
    assert "models/gemini-nope is not found for API version v1beta" in out["unknownModelBeta"]["message"]
    _assert_api_error(out["unknownModelGet"], 404, "NOT_FOUND")
    assert "models/gemini-nope" in out["unknownModelGet"]["message"]

    _assert_api_error(out["badTemperature"], 400, "INVALID_ARGUMENT")



# --- Files ----------------------------------------------------------------------------------------------------------


def test_files_upload_blob_and_path_then_use_and_delete(js_sdk, server):
    pdf = media.sample("story.pdf")
    out = node_json(js_sdk, server, "files.mjs", PDF_PATH=str(pdf))
    size = str(pdf.stat().st_size)
    assert out["blob"] == {"name": out["blob"]["name"], "displayName": "JS blob", "sizeBytes": size, "state": "ACTIVE",
                           "mimeType": "application/pdf"}
    assert out["path"]["sizeBytes"] == size and out["path"]["state"] == "ACTIVE"
    assert out["got"]["name"] == out["blob"]["name"]
    assert base64.b64decode(out["got"]["sha256Hash"]).decode() == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert {out["blob"]["name"], out["path"]["name"]} <= set(out["listed"])
    assert "application/pdf" in out["text"] and out["documentTokens"] == 258
    assert out["afterDelete"] == 403


# --- the OpenAI-compatible surface through the openai npm package ------------------------------------------------------


def test_openai_js_examples_from_the_docs(js_sdk, server):
    out = node_json(js_sdk, server, "openai.mjs")
    assert "Explain to me how AI works" in out["chat"] and "Explain to me how AI works" in out["streamed"]
    assert is_int(out["streamUsage"]) and out["streamUsage"] > 0
    assert out["call"]["name"] == "get_weather" and json.loads(out["call"]["arguments"])["location"] == "Chicago"
    assert out["finish"] == "tool_calls"
    assert set(out["parsed"]) == {"name", "date", "participants"} and isinstance(out["parsed"]["participants"], list)
    assert out["embeddingLength"] == 3072
    assert out["imageBytes"] == "PNG"
    assert "models/gemini-2.5-flash" in out["models"] and out["retrieved"] == "models/gemini-2.0-flash"
    assert out["notFound"] == 404
