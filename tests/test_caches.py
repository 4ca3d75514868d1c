"""Context caching (reference/wire-protocol.md §9, semantics.md §10) through the official SDKs and raw HTTP: the
`cachedContents` resource on /v1, /v1beta and /v1alpha (create, get, list in pages, a patch of the expiration,
delete), its use by generateContent, streamGenerateContent, countTokens, batches and the OpenAI-compatible chat
completions, Gemini's rules with their exact messages, caches of uploaded files that outlive the files, expiry by the
housekeeping job, isolation between projects, the per-project limits, a cache that survives a SIGKILLed process,
`pollux projects delete`, and the JS SDK.

The default model is the deterministic emulator: a request naming a cache must answer exactly as the same request
with the cache's contents written out and its system instruction set directly, with the same promptTokenCount. Most
tests share the session server, in projects of their own; those that need special settings (a one-second
housekeeping, two caches and 300 kB per project, a lower minimum size) share one dedicated server. Outcomes are
awaited with bounded waits (`eventually`), never measured."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import media
import pytest
import test_js_sdk
from conftest import Server, eventually, in_store, sql, start_server
from google import genai
from google.genai import errors, types
from openai import BadRequestError, OpenAI, PermissionDeniedError

TIMEOUT = 60
MODEL = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"                 # a minimum of 4,096 tokens
OTHER_MODEL = "gemini-2.5-flash-lite"  # caches allowed, but not those made for MODEL
# About 3,600 tokens on the emulator: above gemini-2.5-flash's 1,024, below gemini-2.5-pro's 4,096.
DOC = "The lighthouse keeper counted ships. " * 400
SYSTEM = "You are the lighthouse keeper. Answer briefly."
QUESTION = "How many ships did the keeper count?"
NOT_FOUND = "CachedContent not found (or permission denied)"
BESIDE = ("CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
          "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request.")
CACHE_NAME = re.compile(r"cachedContents/[a-z0-9]+")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
RESOURCE_FIELDS = {"name", "model", "displayName", "createTime", "updateTime", "expireTime", "usageMetadata"}
TOOLS = [{"functionDeclarations": [{"name": "count_ships", "description": "Counts the ships seen today.",
                                    "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}},
                                                   "required": ["harbour"]}}]}]
FORCE_CALL = {"functionCallingConfig": {"mode": "ANY"}}
# The dedicated server: expired caches swept every second, two live caches and 300 kB of them per project, and a
# model whose minimum is configured down to 10 tokens.
TIGHT = ('[limits]\nhousekeeping_seconds = 1\nmax_caches = 2\nmax_cache_bytes = 300000\n'
         f'[models."{MODEL}"]\ncache_min_tokens = 10\n')

js_sdk = test_js_sdk.js_sdk  # the fixture of tests/test_js_sdk.py: tests/js with its node dependencies installed


# Helpers --------------------------------------------------------------------------------------------------------------
def user(*parts: Any) -> dict[str, Any]:
    """A user turn of text parts (strings) and other parts (dicts), as JSON."""
    return {"role": "user", "parts": [{"text": p} if isinstance(p, str) else p for p in parts]}


def api(server: Server, method: str, path: str, key: str | None = None, version: str = "v1beta",
        **kwargs: Any) -> httpx.Response:
    """A raw request to `/{version}/{path}`, as the REST docs' curl examples send it."""
    return httpx.request(method, f"{server.base_url}/{version}/{path}", timeout=TIMEOUT,
                         headers={"x-goog-api-key": key or server.api_key}, **kwargs)


def create(server: Server, key: str | None = None, version: str = "v1beta", **fields: Any) -> httpx.Response:
    """POST cachedContents with DOC as its contents unless `fields` say otherwise."""
    body = {"model": f"models/{MODEL}", "contents": [user(DOC)], **fields}
    return api(server, "POST", "cachedContents", key, version, json=body)


def created(server: Server, key: str | None = None, version: str = "v1beta", **fields: Any) -> dict[str, Any]:
    r = create(server, key, version, **fields)
    assert r.status_code == 200, r.text
    return r.json()


def generate(server: Server, body: dict[str, Any], key: str | None = None, model: str = MODEL,
             verb: str = "generateContent", version: str = "v1beta") -> httpx.Response:
    params = {"alt": "sse"} if verb == "streamGenerateContent" else None
    return api(server, "POST", f"models/{model}:{verb}", key, version, json=body, params=params)


def generated(server: Server, body: dict[str, Any], key: str | None = None, model: str = MODEL) -> dict[str, Any]:
    r = generate(server, body, key, model)
    assert r.status_code == 200, r.text
    return r.json()


def sse(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]


def count(server: Server, request: dict[str, Any], key: str | None = None, model: str = MODEL) -> dict[str, Any]:
    """countTokens of a whole GenerateContentRequest (the only form that can name a cache)."""
    r = api(server, "POST", f"models/{model}:countTokens", key,
            json={"generateContentRequest": {"model": f"models/{model}", **request}})
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r: httpx.Response, code: int, status: str, message: str) -> None:
    where = f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:600]}"
    assert r.status_code == code, where
    error = r.json()["error"]
    assert (error["code"], error["status"], error["message"]) == (code, status, message), where


def assert_sdk_error(err: errors.APIError, code: int, status: str, message: str) -> None:
    assert (err.code, err.status, err.message) == (code, status, message), err


def when(value: str) -> datetime:
    assert TIMESTAMP.fullmatch(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def text_of(response: dict[str, Any]) -> str:
    parts = response["candidates"][0]["content"].get("parts", [])
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


def calls_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    parts = response["candidates"][0]["content"].get("parts", [])
    return [p["functionCall"] for p in parts if "functionCall" in p]


def client_for(server: Server, key: str | None = None, version: str | None = None) -> genai.Client:
    """A client of the server (keep it in a variable: a client that is collected closes its connections)."""
    options = types.HttpOptions(base_url=server.base_url, api_version=version) if version else \
        types.HttpOptions(base_url=server.base_url)
    return genai.Client(api_key=key or server.api_key, http_options=options)


def new_project(server: Server, stem: str) -> tuple[str, str]:
    """(id, key) of a new project of its own."""
    name = f"{stem}-{secrets.token_hex(3)}"
    out = server.cli("projects", "create", name).stdout
    project_id = re.search(r"\((gen-lang-client-\d+)\)", out)
    assert project_id, out
    return project_id.group(1), server.new_key(project=name)


def listed(server: Server, key: str | None = None, version: str = "v1beta") -> list[str]:
    """Every cache the key's list shows, page after page."""
    names: list[str] = []
    token = None
    while True:
        r = api(server, "GET", "cachedContents", key, version, params={"pageToken": token} if token else None)
        assert r.status_code == 200, r.text
        names += [c["name"] for c in r.json().get("cachedContents", [])]
        token = r.json().get("nextPageToken")
        if not token:
            return names


def rows(server: Server, cache: str) -> int:
    return sql(server, "SELECT count(*) FROM cached_contents WHERE id = ?", cache.removeprefix("cachedContents/"))[0][0]


def blob_keys(server: Server, prefix: str) -> list[str]:
    async def keys(_store, blobs):
        return list(await blobs.keys(prefix))
    return in_store(server, keys)


def cache_blobs(server: Server, project_id: str, cache: str | None = None) -> list[str]:
    """The blobs a project's caches (or one of them) hold in the data dir."""
    prefix = f"caches/{project_id}" + (f"/{cache.removeprefix('cachedContents/')}" if cache else "")
    return blob_keys(server, prefix)


def gone(server: Server, cache: str, key: str | None = None) -> bool:
    """Whether `get` answers the real API's 403 for the cache."""
    r = api(server, "GET", cache, key)
    if r.status_code == 200:
        return False
    assert_error(r, 403, "PERMISSION_DENIED", NOT_FOUND)
    return True


def assert_missing_everywhere(server: Server, name: str, key: str, ttl: str) -> None:
    """Every route that names the cache (get, patch to `ttl`, delete, generate, stream, countTokens) answers the real
    API's 403 for it with `key`."""
    assert_error(api(server, "GET", name, key), 403, "PERMISSION_DENIED", NOT_FOUND)
    assert_error(api(server, "PATCH", name, key, json={"ttl": ttl}), 403, "PERMISSION_DENIED", NOT_FOUND)
    assert_error(api(server, "DELETE", name, key), 403, "PERMISSION_DENIED", NOT_FOUND)
    body = {"cachedContent": name, "contents": [user(QUESTION)]}
    for verb in ("generateContent", "streamGenerateContent"):
        assert_error(generate(server, body, key, verb=verb), 403, "PERMISSION_DENIED", NOT_FOUND)
    r = api(server, "POST", f"models/{MODEL}:countTokens", key,
            json={"generateContentRequest": {"model": f"models/{MODEL}", **body}})
    assert_error(r, 403, "PERMISSION_DENIED", NOT_FOUND)


@pytest.fixture(scope="module")
def owner(server: Server) -> tuple[str, str]:
    """(project id, key) of a project of its own on the session server, so that what the tests here leave there (a
    few caches, which expire within the hour) never shows in the default project's lists."""
    return new_project(server, "caches")


@pytest.fixture(scope="module")
def keeper(server: Server, owner: tuple[str, str]) -> dict[str, Any]:
    """A cache of DOC with SYSTEM as its system instruction, shared by the tests that only use it."""
    cache = created(server, owner[1], displayName="keeper", systemInstruction={"parts": [{"text": SYSTEM}]})
    yield cache
    api(server, "DELETE", cache["name"], owner[1])


@pytest.fixture(scope="module")
def stranger(server: Server) -> tuple[str, str]:
    """(project id, key) of another project, which makes no cache of its own: what it sees of `owner`'s."""
    return new_project(server, "other-caches")


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory):
    with start_server(tmp_path_factory.mktemp("tight") / "data", config=TIGHT) as srv:
        yield srv


# 1. The resource --------------------------------------------------------------------------------------------------
def test_sdk_create_get_list_update_delete(server, owner):
    client = client_for(server, owner[1])
    cache = client.caches.create(model=MODEL, config=types.CreateCachedContentConfig(
        contents=[DOC], system_instruction=SYSTEM, display_name="sdk cache", ttl="300s"))
    assert CACHE_NAME.fullmatch(cache.name), cache.name
    assert cache.model == f"models/{MODEL}" and cache.display_name == "sdk cache"
    assert cache.create_time == cache.update_time
    assert cache.expire_time - cache.create_time == timedelta(seconds=300)
    # What the cache holds is counted as the model reads it: its contents and its system instruction.
    counted = count(server, {"contents": [user(DOC)], "systemInstruction": {"parts": [{"text": SYSTEM}]}},
                    owner[1])["totalTokens"]
    assert cache.usage_metadata.total_token_count == counted > 1024

    got = client.caches.get(name=cache.name)
    assert got.model_dump(exclude={"sdk_http_response"}) == cache.model_dump(exclude={"sdk_http_response"})
    assert cache.name in [c.name for c in client.caches.list()]

    longer = client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert longer.update_time > cache.update_time and longer.create_time == cache.create_time
    assert longer.expire_time - longer.update_time == pytest.approx(timedelta(seconds=7200), abs=timedelta(seconds=5))
    assert (longer.name, longer.model, longer.display_name, longer.usage_metadata) == (
        cache.name, cache.model, cache.display_name, cache.usage_metadata)

    # An expire time in another zone is the same instant.
    at = datetime(2031, 5, 6, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    fixed = client.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(expire_time=at))
    assert fixed.expire_time == at == datetime(2031, 5, 6, 7, 30, tzinfo=timezone.utc)
    assert client.caches.get(name=cache.name).expire_time == at

    client.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as err:
        client.caches.get(name=cache.name)
    assert_sdk_error(err.value, 403, "PERMISSION_DENIED", NOT_FOUND)
    assert cache.name not in [c.name for c in client.caches.list()]


@pytest.mark.parametrize("version", ["v1", "v1beta", "v1alpha"])
def test_rest_resource_on_every_version(server, owner, version):
    key = owner[1]
    cache = created(server, key, version, displayName="rest cache",
                    systemInstruction={"parts": [{"text": SYSTEM}]}, tools=TOOLS)
    name = cache["name"]
    # The answer never holds what the cache holds, nor the ttl it was given.
    assert set(cache) == RESOURCE_FIELDS, cache
    assert CACHE_NAME.fullmatch(name) and cache["model"] == f"models/{MODEL}"
    assert cache["displayName"] == "rest cache" and cache["createTime"] == cache["updateTime"]
    assert when(cache["expireTime"]) - when(cache["createTime"]) == timedelta(hours=1)  # the default ttl
    assert set(cache["usageMetadata"]) == {"totalTokenCount"}
    assert cache["usageMetadata"]["totalTokenCount"] == count(server, {
        "contents": [user(DOC)], "systemInstruction": {"parts": [{"text": SYSTEM}]}, "tools": TOOLS},
        key)["totalTokens"]
    for v in ("v1", "v1beta", "v1alpha"):  # one resource, whichever version reads it
        got = api(server, "GET", name, key, v)
        assert got.status_code == 200 and got.json() == cache, got.text

    # The expiration is a oneof.
    both = create(server, key, version, ttl="60s", expireTime="2031-01-01T00:00:00Z")
    assert both.status_code == 400 and both.json()["error"]["status"] == "INVALID_ARGUMENT", both.text
    assert "expiration" in both.json()["error"]["message"], both.text
    at = created(server, key, version, expireTime="2031-01-02T03:04:05Z")
    assert when(at["expireTime"]) == datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc) and "displayName" not in at
    ttl = created(server, key, version, ttl="90s")
    assert when(ttl["expireTime"]) - when(ttl["createTime"]) == timedelta(seconds=90)
    # An offset names the same instant in UTC: an hour ahead, written in UTC-10 (its digits read as UTC are past).
    ahead = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    zoned = created(server, key, version, expireTime=ahead.astimezone(timezone(timedelta(hours=-10))).isoformat())
    assert when(zoned["expireTime"]) == ahead and api(server, "GET", zoned["name"], key, version).json() == zoned
    # A ttl that is a valid Duration but ends after the year 9999 is refused, not a server error.
    far = create(server, key, version, ttl="300000000000s")
    assert far.status_code == 400 and far.json()["error"]["status"] == "INVALID_ARGUMENT", far.text
    # A cache that would expire at once is refused before anything is counted or stored.
    listed = len(api(server, "GET", "cachedContents", key, version).json().get("cachedContents", []))
    for expiration in ({"ttl": "0s"}, {"expireTime": "2001-01-01T00:00:00Z"}):
        at_once = create(server, key, version, **expiration)
        assert at_once.status_code == 400 and "expire at once" in at_once.json()["error"]["message"], at_once.text
    assert len(api(server, "GET", "cachedContents", key, version).json().get("cachedContents", [])) == listed

    # A patch changes the expiration and updateTime, nothing else; the SDKs send no updateMask.
    r = api(server, "PATCH", name, key, version, json={"ttl": "600s"})
    assert r.status_code == 200, r.text
    patched = r.json()
    assert {k: v for k, v in patched.items() if k not in ("expireTime", "updateTime")} == \
        {k: v for k, v in cache.items() if k not in ("expireTime", "updateTime")}
    assert when(patched["updateTime"]) > when(cache["updateTime"])
    assert when(patched["expireTime"]) - when(patched["updateTime"]) == pytest.approx(
        timedelta(seconds=600), abs=timedelta(seconds=5))
    r = api(server, "PATCH", name, key, version, params={"updateMask": "expireTime"},
            json={"expireTime": "2032-03-04T05:06:07Z"})
    assert r.status_code == 200 and when(r.json()["expireTime"]) == datetime(2032, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    patched = r.json()
    # What a cache holds is immutable: such a patch is refused and changes nothing.
    for body, params in (({"ttl": "60s", "contents": [user("other")]}, None),
                         ({"model": f"models/{PRO}"}, None),
                         ({"displayName": "renamed"}, None),
                         ({"systemInstruction": {"parts": [{"text": "x"}]}}, None),
                         ({"model": f"models/{PRO}"}, {"updateMask": "model"}),
                         ({"ttl": "60s", "contents": [user("other")]}, {"updateMask": "ttl,contents"})):
        r = api(server, "PATCH", name, key, version, json=body, params=params)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", (body, r.text)
    no_expiry = api(server, "PATCH", name, key, version, json={})
    assert no_expiry.status_code == 400, no_expiry.text
    for body in ({"ttl": "300000000000s"}, {"ttl": "-5s"}, {"ttl": "5"}, {"expireTime": "tomorrow"}):
        r = api(server, "PATCH", name, key, version, json=body)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", (body, r.text)
    assert api(server, "GET", name, key, version).json() == patched

    r = api(server, "DELETE", name, key, version)
    assert r.status_code == 200 and r.json() == {}, r.text
    assert gone(server, name, key)
    for leftover in (at, ttl, zoned):
        assert api(server, "DELETE", leftover["name"], key, version).status_code == 200


def test_list_in_pages(server):
    _, key = new_project(server, "caches-list")
    names = [created(server, key, displayName=f"page {i}")["name"] for i in range(5)]
    pages: list[list[str]] = []
    token = None
    while True:
        params = {"pageSize": 2, **({"pageToken": token} if token else {})}
        r = api(server, "GET", "cachedContents", key, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert all(set(c) == RESOURCE_FIELDS for c in page["cachedContents"]), page
        pages.append([c["name"] for c in page["cachedContents"]])
        token = page.get("nextPageToken")
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1], pages
    flat = [n for p in pages for n in p]
    assert sorted(flat) == sorted(names) and len(set(flat)) == 5

    # The SDK's pager walks the same pages, on every version.
    for version in ("v1", "v1beta", "v1alpha"):
        client = client_for(server, key, version)
        pager = client.caches.list(config={"page_size": 2})
        assert pager.page_size == 2 and len(pager.page) == 2
        assert [c.name for c in pager] == flat
    # Without a page size, one page holds them all (the default page is 100).
    r = api(server, "GET", "cachedContents", key, "v1")
    assert [c["name"] for c in r.json()["cachedContents"]] == flat and "nextPageToken" not in r.json()
    bad = api(server, "GET", "cachedContents", key, params={"pageToken": "not-a-token"})
    assert bad.status_code == 400, bad.text
    for name in names:
        api(server, "DELETE", name, key)
    empty = api(server, "GET", "cachedContents", key)
    assert empty.status_code == 200 and empty.json() == {}, empty.text


# 2. Use ---------------------------------------------------------------------------------------------------------------
def test_generate_with_a_cache_answers_as_the_request_written_out(server, owner, keeper):
    key, name, held = owner[1], keeper["name"], keeper["usageMetadata"]["totalTokenCount"]
    client = client_for(server, key)
    with_cache = client.models.generate_content(model=MODEL, contents=QUESTION,
                                                config=types.GenerateContentConfig(cached_content=name))
    written = client.models.generate_content(
        model=MODEL, contents=[types.Content(role="user", parts=[types.Part(text=DOC)]),
                               types.Content(role="user", parts=[types.Part(text=QUESTION)])],
        config=types.GenerateContentConfig(system_instruction=SYSTEM))
    assert with_cache.text and with_cache.text == written.text
    usage, plain = with_cache.usage_metadata, written.usage_metadata
    assert usage.prompt_token_count == plain.prompt_token_count
    assert usage.cached_content_token_count == held < usage.prompt_token_count
    assert plain.cached_content_token_count is None and plain.cache_tokens_details is None
    assert [(d.modality.value, d.token_count) for d in usage.cache_tokens_details] == [("TEXT", held)]
    assert (usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (
        plain.candidates_token_count, plain.thoughts_token_count, plain.total_token_count)
    # A different question on the same cache is a different answer: the cache is a prefix, not the whole prompt.
    other = client.models.generate_content(model=MODEL, contents="Name the lighthouse.",
                                           config=types.GenerateContentConfig(cached_content=name))
    assert other.text != with_cache.text and other.usage_metadata.cached_content_token_count == held

    # Streamed: the same text, and the cache's count in the usage.
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=QUESTION,
                                                        config=types.GenerateContentConfig(cached_content=name)))
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks) == with_cache.text
    last = chunks[-1].usage_metadata
    assert (last.prompt_token_count, last.cached_content_token_count, last.total_token_count) == (
        usage.prompt_token_count, held, usage.total_token_count)

    # Raw REST, on each version, with generationConfig beside the cache (allowed); the stream as SSE.
    for version in ("v1", "v1beta", "v1alpha"):
        body = {"cachedContent": name, "contents": [user(QUESTION)], "generationConfig": {"temperature": 0.5}}
        r = generate(server, body, key, version=version)
        assert r.status_code == 200, r.text
        out = r.json()
        ref = generated(server, {"contents": [user(DOC), user(QUESTION)], "generationConfig": {"temperature": 0.5},
                                 "systemInstruction": {"parts": [{"text": SYSTEM}]}}, key)
        assert text_of(out) == text_of(ref) and out["usageMetadata"]["cachedContentTokenCount"] == held
        assert out["usageMetadata"]["promptTokenCount"] == ref["usageMetadata"]["promptTokenCount"]
        assert out["usageMetadata"]["cacheTokensDetails"] == [{"modality": "TEXT", "tokenCount": held}]
        events = sse(generate(server, body, key, verb="streamGenerateContent", version=version))
        assert "".join(text_of(e) for e in events) == text_of(out)
        assert events[-1]["usageMetadata"]["cachedContentTokenCount"] == held


def test_count_tokens_with_a_cache(server, owner, keeper):
    key, name, held = owner[1], keeper["name"], keeper["usageMetadata"]["totalTokenCount"]
    counted = count(server, {"cachedContent": name, "contents": [user(QUESTION)]}, key)
    written = count(server, {"contents": [user(DOC), user(QUESTION)],
                             "systemInstruction": {"parts": [{"text": SYSTEM}]}}, key)
    assert counted["totalTokens"] == written["totalTokens"] > held
    assert counted["cachedContentTokenCount"] == held and "cachedContentTokenCount" not in written
    assert counted["cacheTokensDetails"] == [{"modality": "TEXT", "tokenCount": held}]
    used = generated(server, {"cachedContent": name, "contents": [user(QUESTION)]}, key)
    assert used["usageMetadata"]["promptTokenCount"] == counted["totalTokens"]
    # The SDK's countTokens of the contents alone knows no cache: the count of the question only.
    client = client_for(server, key)
    alone = client.models.count_tokens(model=MODEL, contents=QUESTION)
    assert alone.total_tokens == counted["totalTokens"] - held
    assert alone.cached_content_token_count is None


def test_cached_tools_and_tool_config_apply(server, owner):
    """The cache's tools and toolConfig are the request's: mode ANY forces a call to the cached function."""
    key = owner[1]
    cache = created(server, key, tools=TOOLS, toolConfig=FORCE_CALL,
                    systemInstruction={"parts": [{"text": SYSTEM}]})
    try:
        out = generated(server, {"cachedContent": cache["name"], "contents": [user(QUESTION)]}, key)
        ref = generated(server, {"contents": [user(DOC), user(QUESTION)], "tools": TOOLS, "toolConfig": FORCE_CALL,
                                 "systemInstruction": {"parts": [{"text": SYSTEM}]}}, key)
        assert [c["name"] for c in calls_of(out)] == ["count_ships"], out
        assert calls_of(out) == calls_of(ref)
        assert out["usageMetadata"]["promptTokenCount"] == ref["usageMetadata"]["promptTokenCount"]
        assert out["usageMetadata"]["cachedContentTokenCount"] == cache["usageMetadata"]["totalTokenCount"]
    finally:
        api(server, "DELETE", cache["name"], key)


@pytest.mark.parametrize("base", ["/v1beta/openai/", "/v1beta/"])
@pytest.mark.parametrize("form", ["flat", "nested"])
def test_openai_chat_completions_with_a_cache(server, owner, keeper, base, form):
    key, name, held = owner[1], keeper["name"], keeper["usageMetadata"]["totalTokenCount"]
    google = {"cached_content": name}
    # The openai SDK merges extra_body into the request's top level: {"google": …} is the flat form, and the docs'
    # {"extra_body": {"google": …}} arrives nested.
    extra = {"google": google} if form == "flat" else {"extra_body": {"google": google}}
    oai = OpenAI(api_key=key, base_url=server.base_url + base)
    messages = [{"role": "user", "content": QUESTION}]
    ref = generated(server, {"cachedContent": name, "contents": [user(QUESTION)]}, key)

    done = oai.chat.completions.create(model=MODEL, messages=messages, extra_body=extra)
    assert done.choices[0].message.content == text_of(ref)
    assert done.usage.prompt_tokens == ref["usageMetadata"]["promptTokenCount"]
    assert done.usage.prompt_tokens_details.cached_tokens == held

    stream = oai.chat.completions.create(model=MODEL, messages=messages, extra_body=extra, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text_of(ref)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == done.usage.prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == held

    # Without the cache, nothing is read from one.
    plain = oai.chat.completions.create(model=MODEL, messages=messages)
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    assert plain.usage.prompt_tokens == done.usage.prompt_tokens - held


def test_openai_errors_of_a_cache(server, owner, keeper):
    """The surface's errors carry Gemini's (a list of one error, as Gemini's OpenAI compatibility answers)."""
    oai = OpenAI(api_key=owner[1], base_url=server.base_url + "/v1beta/openai/")
    with pytest.raises(PermissionDeniedError) as denied:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                    extra_body={"google": {"cached_content": "cachedContents/missing"}})
    assert denied.value.body[0]["error"]["message"] == NOT_FOUND, denied.value.body
    # A system message is the request's systemInstruction: refused beside a cache.
    with pytest.raises(BadRequestError) as beside:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Be terse."},
                                                           {"role": "user", "content": QUESTION}],
                                    extra_body={"google": {"cached_content": keeper["name"]}})
    assert beside.value.body[0]["error"]["message"] == BESIDE, beside.value.body


def test_a_batch_request_reads_a_cache(server, owner, keeper):
    key, name = owner[1], keeper["name"]
    body = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"cachedContent": name, "contents": [user(QUESTION)]}, "metadata": {"key": "cached"}},
        {"request": {"cachedContent": "cachedContents/missing", "contents": [user(QUESTION)]},
         "metadata": {"key": "missing"}}]}}}}
    r = api(server, "POST", f"models/{MODEL}:batchGenerateContent", key, json=body)
    assert r.status_code == 200, r.text
    batch = r.json()["name"]
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen["op"] = api(server, "GET", batch, key).json()
        return bool(seen["op"].get("done"))

    assert eventually(done), seen
    results = seen["op"]["response"]["inlinedResponses"]["inlinedResponses"]
    online = generated(server, {"cachedContent": name, "contents": [user(QUESTION)]}, key)
    assert results[0]["metadata"] == {"key": "cached"}
    assert text_of(results[0]["response"]) == text_of(online)
    assert results[0]["response"]["usageMetadata"]["cachedContentTokenCount"] == \
        keeper["usageMetadata"]["totalTokenCount"]
    assert results[1]["metadata"] == {"key": "missing"} and results[1]["error"]["code"] == 7, results[1]
    assert results[1]["error"]["message"] == NOT_FOUND
    api(server, "DELETE", batch, key)


def test_a_cache_of_inline_media(server, owner):
    """Inline data is held in the cache itself, and counted by modality."""
    key = owner[1]
    picture = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(media.logo_png()).decode()}}
    cache = created(server, key, contents=[user(picture, DOC)])
    try:
        out = generated(server, {"cachedContent": cache["name"], "contents": [user(QUESTION)]}, key)
        ref = generated(server, {"contents": [user(picture, DOC), user(QUESTION)]}, key)
        assert text_of(out) == text_of(ref)
        usage = out["usageMetadata"]
        assert usage["promptTokenCount"] == ref["usageMetadata"]["promptTokenCount"]
        assert usage["promptTokensDetails"] == ref["usageMetadata"]["promptTokensDetails"]
        cached = {d["modality"]: d["tokenCount"] for d in usage["cacheTokensDetails"]}
        prompt = {d["modality"]: d["tokenCount"] for d in usage["promptTokensDetails"]}
        assert cached["IMAGE"] == prompt["IMAGE"] > 0 and set(cached) == {"TEXT", "IMAGE"}
        assert sum(cached.values()) == usage["cachedContentTokenCount"] == cache["usageMetadata"]["totalTokenCount"]
    finally:
        api(server, "DELETE", cache["name"], key)


# 3. Rules and their messages ------------------------------------------------------------------------------------------
def test_too_small_a_cache_is_refused(server, owner):
    key = owner[1]
    note = {"contents": [user("A short note about ships.")], "systemInstruction": {"parts": [{"text": SYSTEM}]}}
    small = count(server, note, key)["totalTokens"]
    r = create(server, key, **note)
    assert_error(r, 400, "INVALID_ARGUMENT",
                 f"Cached content is too small. total_token_count={small}, min_total_token_count=1024")
    # DOC is enough for gemini-2.5-flash, not for gemini-2.5-pro (4,096).
    on_pro = count(server, {"contents": [user(DOC)]}, key, model=PRO)["totalTokens"]
    assert 1024 < on_pro < 4096
    assert_error(create(server, key, model=f"models/{PRO}"), 400, "INVALID_ARGUMENT",
                 f"Cached content is too small. total_token_count={on_pro}, min_total_token_count=4096")
    client = client_for(server, key)
    with pytest.raises(errors.ClientError) as err:
        client.caches.create(model=PRO, config=types.CreateCachedContentConfig(contents=[DOC]))
    assert_sdk_error(err.value, 400, "INVALID_ARGUMENT",
                     f"Cached content is too small. total_token_count={on_pro}, min_total_token_count=4096")
    # Nothing is stored for a refused cache: every blob of the project's caches belongs to a cache it lists.
    live = {n.removeprefix("cachedContents/") for n in listed(server, key)}
    assert {k.split("/")[2] for k in cache_blobs(server, owner[0])} <= live


@pytest.mark.parametrize("beside", [
    {"systemInstruction": {"parts": [{"text": "Be terse."}]}},
    {"tools": TOOLS},
    {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}},
], ids=["systemInstruction", "tools", "toolConfig"])
def test_a_cache_with_system_instruction_tools_or_tool_config_is_refused(server, owner, keeper, beside):
    key = owner[1]
    body = {"cachedContent": keeper["name"], "contents": [user(QUESTION)], **beside}
    for verb in ("generateContent", "streamGenerateContent"):
        assert_error(generate(server, body, key, verb=verb), 400, "INVALID_ARGUMENT", BESIDE)
    r = api(server, "POST", f"models/{MODEL}:countTokens", key,
            json={"generateContentRequest": {"model": f"models/{MODEL}", **body}})
    assert_error(r, 400, "INVALID_ARGUMENT", BESIDE)


def test_sdk_system_instruction_beside_a_cache(server, owner, keeper):
    client = client_for(server, owner[1])
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(
            model=MODEL, contents=QUESTION,
            config=types.GenerateContentConfig(cached_content=keeper["name"], system_instruction="Be terse."))
    assert_sdk_error(err.value, 400, "INVALID_ARGUMENT", BESIDE)


def test_a_cache_is_used_with_its_own_model_only(server, owner, keeper):
    key = owner[1]
    message = (f"Model used by GenerateContent request (models/{OTHER_MODEL}) and CachedContent (models/{MODEL}) has "
               "to be the same.")
    body = {"cachedContent": keeper["name"], "contents": [user(QUESTION)]}
    for verb in ("generateContent", "streamGenerateContent"):
        assert_error(generate(server, body, key, model=OTHER_MODEL, verb=verb), 400, "INVALID_ARGUMENT", message)
    r = api(server, "POST", f"models/{OTHER_MODEL}:countTokens", key,
            json={"generateContentRequest": {"model": f"models/{OTHER_MODEL}", **body}})
    assert_error(r, 400, "INVALID_ARGUMENT", message)


def test_a_missing_or_deleted_cache_is_permission_denied(server, owner):
    key = owner[1]
    doomed = created(server, key)["name"]
    assert api(server, "DELETE", doomed, key).status_code == 200
    assert rows(server, doomed) == 0 and cache_blobs(server, owner[0], doomed) == []
    for name in ("cachedContents/doesnotexist0123456789", doomed):
        assert_missing_everywhere(server, name, key, "60s")
    client = client_for(server, key)
    with pytest.raises(errors.ClientError) as err:
        client.caches.delete(name=doomed)
    assert_sdk_error(err.value, 403, "PERMISSION_DENIED", NOT_FOUND)


def test_a_model_without_create_cached_content_is_not_found(server, owner):
    model = "gemini-2.5-flash-image"
    r = api(server, "GET", f"models/{model}", owner[1])
    assert r.status_code == 200 and "createCachedContent" not in r.json()["supportedGenerationMethods"], r.text
    assert "createCachedContent" in api(server, "GET", f"models/{MODEL}", owner[1]).json()[
        "supportedGenerationMethods"]
    assert_error(create(server, owner[1], model=f"models/{model}"), 404, "NOT_FOUND",
                 f"models/{model} is not found for API version v1beta, or is not supported for createCachedContent. "
                 "Call ListModels to see the list of available models and their supported methods.")
    missing = create(server, owner[1])
    assert missing.status_code == 200
    api(server, "DELETE", missing.json()["name"], owner[1])
    no_model = api(server, "POST", "cachedContents", owner[1], json={"contents": [user(DOC)]})
    assert no_model.status_code == 400 and no_model.json()["error"]["status"] == "INVALID_ARGUMENT", no_model.text


def test_a_configured_minimum(tight):
    """`cache_min_tokens` of a model's entry in the config replaces its minimum."""
    note = {"contents": [user("A short note about the ships the keeper counted at dawn.")]}
    tokens = count(tight, note)["totalTokens"]
    assert 10 < tokens < 1024
    cache = created(tight, **note)
    assert cache["usageMetadata"]["totalTokenCount"] == tokens
    out = generated(tight, {"cachedContent": cache["name"], "contents": [user(QUESTION)]})
    assert out["usageMetadata"]["cachedContentTokenCount"] == tokens
    tiny = count(tight, {"contents": [user("Ships.")]})["totalTokens"]
    assert_error(create(tight, contents=[user("Ships.")]), 400, "INVALID_ARGUMENT",
                 f"Cached content is too small. total_token_count={tiny}, min_total_token_count=10")
    # Other models keep theirs.
    pro = count(tight, note, model=PRO)["totalTokens"]
    assert_error(create(tight, model=f"models/{PRO}", **note), 400, "INVALID_ARGUMENT",
                 f"Cached content is too small. total_token_count={pro}, min_total_token_count=4096")
    assert api(tight, "DELETE", cache["name"]).status_code == 200


# 4. Files -------------------------------------------------------------------------------------------------------------
def test_a_cache_of_uploaded_files_outlives_them(server, owner):
    project_id, key = owner
    client = client_for(server, key)
    pdf = client.files.upload(file=media.sample("story.pdf"))
    txt = client.files.upload(file=media.sample("story.txt"))
    assert pdf.state == types.FileState.ACTIVE and txt.state == types.FileState.ACTIVE
    held = [types.Content(role="user", parts=[types.Part.from_uri(file_uri=pdf.uri, mime_type=pdf.mime_type),
                                              types.Part.from_uri(file_uri=txt.uri, mime_type=txt.mime_type),
                                              types.Part(text=DOC)])]
    cache = client.caches.create(model=MODEL, config=types.CreateCachedContentConfig(contents=held))
    tokens = cache.usage_metadata.total_token_count
    assert tokens == client.models.count_tokens(model=MODEL, contents=held).total_tokens
    ask = types.GenerateContentConfig(cached_content=cache.name)
    before = client.models.generate_content(model=MODEL, contents=QUESTION, config=ask)
    written = client.models.generate_content(
        model=MODEL, contents=held + [types.Content(role="user", parts=[types.Part(text=QUESTION)])])
    assert before.text == written.text
    assert before.usage_metadata.prompt_token_count == written.usage_metadata.prompt_token_count
    modalities = {d.modality.value: d.token_count for d in before.usage_metadata.prompt_tokens_details}
    cached = {d.modality.value: d.token_count for d in before.usage_metadata.cache_tokens_details}
    assert modalities["DOCUMENT"] > 0 and cached["DOCUMENT"] == modalities["DOCUMENT"]
    assert sum(cached.values()) == tokens == before.usage_metadata.cached_content_token_count
    # The cache keeps its own copy of each file's bytes.
    assert len(cache_blobs(server, project_id, cache.name)) == 3  # its request and two files

    for f in (pdf, txt):
        client.files.delete(name=f.name)
        with pytest.raises(errors.ClientError):
            client.files.get(name=f.name)
    with pytest.raises(errors.ClientError) as err:  # the files really are gone
        client.models.generate_content(model=MODEL, contents=held)
    assert err.value.code == 403, err.value
    after = client.models.generate_content(model=MODEL, contents=QUESTION, config=ask)
    assert after.text == before.text
    assert after.usage_metadata.model_dump() == before.usage_metadata.model_dump()
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=QUESTION, config=ask))
    assert "".join(c.text or "" for c in chunks) == before.text
    client.caches.delete(name=cache.name)
    assert cache_blobs(server, project_id, cache.name) == []


def test_a_cache_naming_a_missing_or_foreign_file_is_refused(server, owner, stranger):
    other_id, other_key = stranger
    client = client_for(server, owner[1])
    foreign = client.files.upload(file=media.sample("story.txt"))
    try:
        file_id = foreign.name.removeprefix("files/")
        for uri, fid in ((foreign.uri, file_id), (foreign.uri.replace(file_id, "nosuchfile99"), "nosuchfile99")):
            contents = [user({"fileData": {"fileUri": uri, "mimeType": "text/plain"}}, DOC)]
            assert_error(create(server, other_key, contents=contents), 403, "PERMISSION_DENIED",
                         f"You do not have permission to access the File {fid} or it may not exist.")
        assert listed(server, other_key) == []
        assert sql(server, "SELECT count(*) FROM cached_contents WHERE project_id = ?", other_id) == [(0,)]
        assert cache_blobs(server, other_id) == []
    finally:
        client.files.delete(name=foreign.name)


# 5. Expiry ------------------------------------------------------------------------------------------------------------
def test_an_expired_cache_is_swept_and_a_longer_ttl_keeps_one(tight):
    brief = created(tight, ttl="3s", contents=[user("The keeper rang the bell at noon each day.")])
    # `kept` expires first when `brief` does: the sweep that takes `brief` has passed that instant too.
    kept = created(tight, expireTime=brief["expireTime"],
                   contents=[user("The keeper kept a log of the ships in the bay.")])
    assert kept["expireTime"] == brief["expireTime"]
    brief_id = brief["name"].removeprefix("cachedContents/")
    project_id = sql(tight, "SELECT project_id FROM cached_contents WHERE id = ?", brief_id)[0][0]
    assert cache_blobs(tight, project_id, brief["name"])
    longer = api(tight, "PATCH", kept["name"], json={"ttl": "600s"})
    assert longer.status_code == 200, longer.text
    assert when(longer.json()["expireTime"]) > when(kept["expireTime"])

    # Nothing touches `brief` after this: the housekeeping job alone deletes its row and blobs.
    assert eventually(lambda: rows(tight, brief["name"]) == 0), tight.log()[-3000:]
    assert eventually(lambda: cache_blobs(tight, project_id, brief["name"]) == [])
    assert gone(tight, brief["name"]) and brief["name"] not in listed(tight)
    assert_error(generate(tight, {"cachedContent": brief["name"], "contents": [user(QUESTION)]}), 403,
                 "PERMISSION_DENIED", NOT_FOUND)
    assert re.search(r"expired: .*, [1-9]\d* caches", tight.log()), tight.log()[-3000:]  # the job's summary

    assert datetime.now(timezone.utc) > when(kept["expireTime"])
    assert api(tight, "GET", kept["name"]).json() == longer.json()
    assert kept["name"] in listed(tight) and rows(tight, kept["name"]) == 1
    out = generated(tight, {"cachedContent": kept["name"], "contents": [user(QUESTION)]})
    assert out["usageMetadata"]["cachedContentTokenCount"] == kept["usageMetadata"]["totalTokenCount"]
    assert api(tight, "DELETE", kept["name"]).status_code == 200
    assert cache_blobs(tight, project_id, kept["name"]) == []


def test_blobs_no_cache_owns_are_swept(tight):
    """What a crash between a cache's blobs and its row leaves behind (blobs of no cache) goes in a later sweep."""
    project_id = sql(tight, "SELECT id FROM projects WHERE name = ?", "Default Gemini Project")[0][0]
    orphan = f"caches/{project_id}/orphan{secrets.token_hex(8)}"

    async def write(_store, blobs):
        await blobs.write(f"{orphan}/request", b"{}")
        await blobs.write(f"{orphan}/files/abc", b"bytes")
    in_store(tight, write)
    assert len(blob_keys(tight, orphan)) == 2
    live = created(tight, contents=[user("The keeper kept a log of the ships in the bay.")])
    assert eventually(lambda: blob_keys(tight, orphan) == []), blob_keys(tight, orphan)
    # A cache's own blobs stay.
    assert len(cache_blobs(tight, project_id, live["name"])) == 1
    assert generate(tight, {"cachedContent": live["name"], "contents": [user(QUESTION)]}).status_code == 200
    assert api(tight, "DELETE", live["name"]).status_code == 200


# 6. Isolation ---------------------------------------------------------------------------------------------------------
def test_another_project_sees_a_cache_as_a_missing_one(server, owner, keeper, stranger):
    other = stranger[1]
    name = keeper["name"]
    assert_missing_everywhere(server, name, other, "1s")
    client = client_for(server, other)
    with pytest.raises(errors.ClientError) as err:
        client.caches.get(name=name)
    assert_sdk_error(err.value, 403, "PERMISSION_DENIED", NOT_FOUND)
    assert list(client.caches.list()) == []
    r = api(server, "GET", "cachedContents", other)
    assert r.status_code == 200 and r.json() == {}
    # The owner's cache is untouched by all that.
    assert api(server, "GET", name, owner[1]).json() == keeper
    assert name in listed(server, owner[1])


# 7. Limits ------------------------------------------------------------------------------------------------------------
def test_a_project_holds_at_most_max_caches(tight):
    project_id, key = new_project(tight, "caches-limit")
    small = {"contents": [user("The keeper counted the ships in the harbour twice a day.")]}
    first, second = created(tight, key, **small), created(tight, key, **small)
    third = create(tight, key, **small)
    assert third.status_code == 429 and third.json()["error"]["status"] == "RESOURCE_EXHAUSTED", third.text
    assert "2 caches" in third.json()["error"]["message"], third.text
    assert sorted(listed(tight, key)) == sorted([first["name"], second["name"]])
    assert {k.split("/")[2] for k in cache_blobs(tight, project_id)} == {
        first["name"].removeprefix("cachedContents/"), second["name"].removeprefix("cachedContents/")}
    # Another project is not bound by this one's caches.
    other = created(tight, **small)
    assert api(tight, "DELETE", other["name"]).status_code == 200

    assert api(tight, "DELETE", first["name"], key).status_code == 200
    fourth = created(tight, key, **small)
    assert sorted(listed(tight, key)) == sorted([second["name"], fourth["name"]])

    # The bytes a project's caches hold are bounded too: with room for one more cache, not for one this large.
    assert api(tight, "DELETE", fourth["name"], key).status_code == 200
    big = create(tight, key, contents=[user("The keeper counted ships. " * 12000)])
    assert big.status_code == 429 and big.json()["error"]["status"] == "RESOURCE_EXHAUSTED", big.text[:500]
    assert "300000 bytes" in big.json()["error"]["message"], big.text[:500]
    assert listed(tight, key) == [second["name"]]
    assert {k.split("/")[2] for k in cache_blobs(tight, project_id)} == {second["name"].removeprefix("cachedContents/")}


# 8. Durability --------------------------------------------------------------------------------------------------------
def test_a_cache_survives_a_sigkill(tmp_path):
    data = tmp_path / "data"
    with start_server(data) as first:
        key = first.api_key
        client = client_for(first, key)
        txt = client.files.upload(file=media.sample("story.txt"))
        held = [types.Content(role="user", parts=[types.Part.from_uri(file_uri=txt.uri, mime_type=txt.mime_type),
                                                  types.Part(text=DOC)])]
        cache = created(first, key, contents=[c.model_dump(mode="json", exclude_none=True) for c in held],
                        systemInstruction={"parts": [{"text": SYSTEM}]}, displayName="survivor")
        answer = generated(first, {"cachedContent": cache["name"], "contents": [user(QUESTION)]}, key)
        first.process.kill()  # SIGKILL: no shutdown
        first.process.wait()
    with start_server(data) as second:
        assert api(second, "GET", cache["name"], key).json() == cache
        assert listed(second, key) == [cache["name"]]
        again = generated(second, {"cachedContent": cache["name"], "contents": [user(QUESTION)]}, key)
        assert text_of(again) == text_of(answer) and again["usageMetadata"] == answer["usageMetadata"]


# 9. Deleting a project ------------------------------------------------------------------------------------------------
def test_deleting_a_project_deletes_its_caches(server):
    project_id, key = new_project(server, "caches-doomed")
    name = sql(server, "SELECT name FROM projects WHERE id = ?", project_id)[0][0]
    client = client_for(server, key)
    txt = client.files.upload(file=media.sample("story.txt"))
    caches = [created(server, key)["name"],
              created(server, key, contents=[user({"fileData": {"fileUri": txt.uri, "mimeType": "text/plain"}},
                                                  DOC)])["name"]]
    assert sql(server, "SELECT count(*) FROM cached_contents WHERE project_id = ?", project_id) == [(2,)]
    assert len(cache_blobs(server, project_id)) == 3  # two requests and one file copy
    deleted = server.cli("projects", "delete", name)
    assert "2 context cache(s)" in deleted.stdout, deleted.stdout
    assert sql(server, "SELECT count(*) FROM cached_contents WHERE project_id = ?", project_id) == [(0,)]
    assert cache_blobs(server, project_id) == []
    assert all(rows(server, c) == 0 for c in caches)


# 10. The JS SDK -------------------------------------------------------------------------------------------------------
JS_CACHE = """
import { GoogleGenAI } from "@google/genai";
import { calls, emit, expectError } from "./record.mjs";

const ai = new GoogleGenAI({});
const model = "%(model)s";
const cache = await ai.caches.create({
  model,
  config: { contents: [{ role: "user", parts: [{ text: %(doc)s }] }], systemInstruction: %(system)s,
            displayName: "js cache", ttl: "600s" },
});
const got = await ai.caches.get({ name: cache.name });
const answer = await ai.models.generateContent({ model, contents: %(question)s,
                                                 config: { cachedContent: cache.name } });
const written = await ai.models.generateContent({
  model,
  contents: [{ role: "user", parts: [{ text: %(doc)s }] }, { role: "user", parts: [{ text: %(question)s }] }],
  config: { systemInstruction: %(system)s },
});
const updated = await ai.caches.update({ name: cache.name, config: { ttl: "1200s" } });
const listed = [];
for await (const c of await ai.caches.list({ config: { pageSize: 1 } })) listed.push(c.name);
await ai.caches.delete({ name: cache.name });
const afterDelete = await expectError(() => ai.caches.get({ name: cache.name }));
emit({
  cache, got, updated, listed, afterDelete: { threw: afterDelete.threw, status: afterDelete.status,
                                              body: afterDelete.body },
  answer: { text: answer.text, usage: answer.usageMetadata },
  written: { text: written.text, usage: written.usageMetadata },
  createCall: calls.find((c) => c.method === "POST" && c.path.endsWith("/cachedContents")) ?? null,
});
"""


def test_js_sdk_creates_and_uses_a_cache(js_sdk: Path, server, owner):
    script = JS_CACHE % {"model": MODEL, "doc": json.dumps(DOC), "system": json.dumps(SYSTEM),
                         "question": json.dumps(QUESTION)}
    # The script is piped to node from tests/js, so that its imports (the SDK, record.mjs) resolve there.
    proc = subprocess.run(["node", "--input-type=module"], input=script, cwd=js_sdk, capture_output=True, text=True,
                          timeout=TIMEOUT, env=test_js_sdk.node_env(server, GEMINI_API_KEY=owner[1]))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{server.log()[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    cache = out["cache"]
    assert CACHE_NAME.fullmatch(cache["name"]) and cache["model"] == f"models/{MODEL}", cache
    assert cache["displayName"] == "js cache" and out["got"] == cache
    held = cache["usageMetadata"]["totalTokenCount"]
    assert held == count(server, {"contents": [user(DOC)], "systemInstruction": {"parts": [{"text": SYSTEM}]}},
                         owner[1])["totalTokens"]
    assert when(cache["expireTime"]) - when(cache["createTime"]) == timedelta(seconds=600)
    assert when(out["updated"]["expireTime"]) > when(cache["expireTime"])
    assert cache["name"] in out["listed"]
    assert out["afterDelete"]["threw"] and out["afterDelete"]["status"] == 403, out["afterDelete"]
    assert out["afterDelete"]["body"]["error"]["message"] == NOT_FOUND
    call = out["createCall"]
    assert call["status"] == 200 and call["path"] == "/v1/cachedContents", call
    assert call["body"]["ttl"] == "600s" and call["body"]["model"] == f"models/{MODEL}", call
    assert out["answer"]["text"] == out["written"]["text"] and out["answer"]["text"]
    usage = out["answer"]["usage"]
    assert usage["cachedContentTokenCount"] == held
    assert usage["promptTokenCount"] == out["written"]["usage"]["promptTokenCount"]
    assert "cachedContentTokenCount" not in out["written"]["usage"]
