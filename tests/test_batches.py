"""Batch Mode (reference/wire-protocol.md §10, semantics.md §11) through the official SDKs and raw HTTP: inline and
file batches of generateContent and embedContent, their results, get / list / cancel / delete, isolation between
projects, creation errors, expiry, and jobs that survive a SIGKILLed process or move between replicas.

Slow batches run on dedicated servers whose emulator paces its answers (`[emulator] stream_delay`), so that a test can
cancel, delete, expire or kill a batch while it runs. Outcomes are awaited with bounded waits (`eventually`), never
measured."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_js_sdk
from conftest import Server, eventually, in_store, sql, start_server
from google import genai
from google.genai import errors, types
from test_js_sdk import run_node

TIMEOUT = 60
MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
TYPES = "type.googleapis.com/google.ai.generativelanguage.v1main."
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
BATCH_NAME = re.compile(r"batches/[a-z0-9]{36}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
NOT_FOUND = "Requested entity was not found."
# A paced emulator: each chunk of 8 tokens waits 0.05 s, so an answer of SHORT (32 tokens, no thoughts) takes about
# 0.2 s, and a batch of 200 of them runs for about ten seconds at the default batch_concurrency of 4.
SLOW = "[emulator]\nstream_delay = 0.05\n[limits]\nhousekeeping_seconds = 1\njob_lease_seconds = 3\n"
# The slow fixture server's own limits besides: short list pages and a small cap on inline requests.
SLOW_LIMITS = "batches_page_default = 2\nbatches_page_max = 3\nbatch_inline_bytes = 100000\n"
SHORT = {"max_output_tokens": 32, "thinking_config": {"thinking_budget": 0}}   # as the Python SDK's config
SHORT_WIRE = {"maxOutputTokens": 32, "thinkingConfig": {"thinkingBudget": 0}}  # as a request's generationConfig

js_sdk = test_js_sdk.js_sdk  # the fixture of tests/test_js_sdk.py: tests/js with its node dependencies installed
pytestmark = pytest.mark.filterwarnings("ignore:batches.create_embeddings")


# Helpers --------------------------------------------------------------------------------------------------------------
def client_for(server: Server, key: str | None = None) -> genai.Client:
    return genai.Client(api_key=key or server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


def api(server: Server, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
    """A raw request to `/v1beta/{path}`, as the REST docs' curl examples send it."""
    return httpx.request(method, f"{server.base_url}/v1beta/{path}", timeout=TIMEOUT,
                         headers={"x-goog-api-key": key or server.api_key}, **kwargs)


def operation(server: Server, name: str, key: str | None = None) -> dict[str, Any]:
    r = api(server, "GET", name, key)
    assert r.status_code == 200, r.text
    return r.json()


def stats(server: Server, name: str, key: str | None = None) -> dict[str, int]:
    """The operation's batchStats as numbers (int64 strings on the wire, zero counts left out)."""
    raw = operation(server, name, key)["metadata"]["batchStats"]
    assert all(isinstance(v, str) for v in raw.values()), raw
    return {k: int(raw.get(k, "0")) for k in ("requestCount", "successfulRequestCount", "failedRequestCount",
                                              "pendingRequestCount")}


def done_count(server: Server, name: str, key: str | None = None) -> int:
    s = stats(server, name, key)
    return s["successfulRequestCount"] + s["failedRequestCount"]


def wait_for(client: genai.Client, name: str, states: set[str] = TERMINAL, seconds: float = 60) -> types.BatchJob:
    """The batch once its state is one of `states` (a bounded wait)."""
    seen: dict[str, types.BatchJob] = {}

    def reached() -> bool:
        seen["job"] = client.batches.get(name=name)
        return seen["job"].state is not None and seen["job"].state.value in states

    assert eventually(reached, seconds), f"{name} is still {seen['job'].state}"
    return seen["job"]


def wait_some_done(server: Server, name: str, at_least: int, key: str | None = None) -> int:
    """Wait until at least `at_least` results of a running batch are stored; returns how many are."""
    seen = {"n": 0}

    def enough() -> bool:
        seen["n"] = done_count(server, name, key)
        return seen["n"] >= at_least

    assert eventually(enough, 60), f"{name}: only {seen['n']} results stored"
    return seen["n"]


def gone(client: genai.Client, name: str) -> bool:
    """Whether the batch answers 404 NOT_FOUND "Requested entity was not found." to `get`."""
    try:
        client.batches.get(name=name)
    except errors.ClientError as err:
        assert err.code == 404 and err.status == "NOT_FOUND" and err.message == NOT_FOUND, err
        return True
    return False


def listed(client: genai.Client, **config: Any) -> list[str]:
    return [job.name for job in client.batches.list(config=config or None)]


def upload_jsonl(client: genai.Client, path: Path, lines: list[str], mime_type: str = "jsonl") -> types.File:
    """An input file as the docs upload it (`mime_type="jsonl"`)."""
    path.write_text("".join(line + "\n" for line in lines))
    uploaded = client.files.upload(file=path, config={"mime_type": mime_type})
    assert uploaded.state == types.FileState.ACTIVE, uploaded
    return uploaded


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def text_of(response: dict[str, Any]) -> str:
    """The answer's text in a response as stored (camelCase JSON), thoughts left out."""
    parts = response["candidates"][0]["content"].get("parts", [])
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


def request(text: str, **generation_config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"parts": [{"text": text}], "role": "user"}]}
    if generation_config:
        body["generationConfig"] = generation_config
    return body


def new_project(server: Server, stem: str) -> str:
    """A key of a new project of its own."""
    name = f"{stem}-{secrets.token_hex(3)}"
    server.cli("projects", "create", name)
    return server.new_key(project=name)


def create_raw(server: Server, body: dict[str, Any], key: str | None = None, model: str = MODEL,
               verb: str = "batchGenerateContent") -> httpx.Response:
    return api(server, "POST", f"models/{model}:{verb}", key, json=body)


def inline_body(requests: list[dict[str, Any]], display_name: str | None = None) -> dict[str, Any]:
    batch: dict[str, Any] = {"inputConfig": {"requests": {"requests": requests}}}
    if display_name is not None:
        batch["displayName"] = display_name
    return {"batch": batch}


def slow_inline(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    """`n` inline requests of SHORT answers, each with its place as metadata."""
    return [{"contents": [{"parts": [{"text": f"{prefix} {i}"}], "role": "user"}], "config": SHORT,
             "metadata": {"i": str(i)}} for i in range(n)]


def result_rows(server: Server, batch_name: str) -> tuple[int, int, int | None, int | None]:
    """(rows, distinct places, lowest, highest) of the batch's stored results."""
    batch_id = batch_name.removeprefix("batches/")
    row = sql(server, "SELECT COUNT(*), COUNT(DISTINCT idx), MIN(idx), MAX(idx) FROM batch_results "
                      "WHERE batch_id = ?", batch_id)[0]
    return int(row[0]), int(row[1]), row[2], row[3]


def job_owner(server: Server, batch_name: str) -> str | None:
    """The lease owner (`host:pid:token`) of the job running the batch."""
    batch_id = batch_name.removeprefix("batches/")
    for owner, payload in sql(server, "SELECT lease_owner, payload FROM jobs WHERE kind = 'batch'"):
        payload = json.loads(payload) if isinstance(payload, str) else payload
        if payload.get("batch_id") == batch_id:
            return owner
    return None


def blob_keys(server: Server, prefix: str) -> list[str]:
    async def keys(_store, blobs):
        return list(await blobs.keys(prefix))
    return in_store(server, keys)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory):
    """A server whose emulator paces its answers: batches on it run long enough to be cancelled or deleted."""
    with start_server(tmp_path_factory.mktemp("slow") / "data", config=SLOW + SLOW_LIMITS) as srv:
        yield srv


# 1. Inline generate batch ---------------------------------------------------------------------------------------------
def test_inline_batch_answers_as_generate_content_does(server, client):
    cases = [
        ("Explain how AI works in a few words", {"temperature": 0.1}),
        ("Name three colours", {"max_output_tokens": 20, "thinking_config": {"thinking_budget": 0}}),
        ("Write a haiku about queues", {"system_instruction": "Answer briefly", "seed": 7}),
    ]
    src: list[dict[str, Any]] = [
        {"contents": [{"parts": [{"text": text}], "role": "user"}], "config": config, "metadata": {"key": f"r{i}"}}
        for i, (text, config) in enumerate(cases)]
    src.append({"contents": [{"parts": [{"text": "too hot"}], "role": "user"}], "config": {"temperature": 5},
                "metadata": {"key": "bad"}})
    job = client.batches.create(model=MODEL, src=src, config={"display_name": "inline batch"})
    assert BATCH_NAME.fullmatch(job.name), job.name
    assert job.display_name == "inline batch" and job.model == f"models/{MODEL}"
    assert job.state.value in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"), job.state
    assert job.create_time is not None

    job = wait_for(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job
    assert job.display_name == "inline batch" and job.end_time is not None and job.end_time >= job.create_time
    results = job.dest.inlined_responses
    assert [r.metadata for r in results] == [{"key": f"r{i}"} for i in range(len(cases))] + [{"key": "bad"}]
    for (text, config), result in zip(cases, results):
        assert result.error is None and result.response is not None, result
        online = client.models.generate_content(model=MODEL, contents=text, config=config)
        assert result.response.text == online.text, (text, result.response.text, online.text)
        assert result.response.text
    bad = results[-1]
    assert bad.response is None and bad.error.code == 3 and "temperature" in bad.error.message, bad

    s = stats(server, job.name)
    assert s == {"requestCount": 4, "successfulRequestCount": 3, "failedRequestCount": 1, "pendingRequestCount": 0}
    assert job.name in listed(client)
    # A cancel of an ended batch changes nothing.
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_SUCCEEDED


# 2. File batch --------------------------------------------------------------------------------------------------------
def test_file_batch_writes_a_responses_file_in_input_order(server, client, tmp_path):
    lines = [
        json.dumps({"key": "a", "request": {"contents": [{"parts": [{"text": "first"}]}],
                                            "generation_config": {"temperature": 0.2}}}),  # the docs' snake_case
        "this line is not JSON",
        json.dumps({"key": "b", "request": request("second", temperature=5)}),
        json.dumps({"key": "c"}),
        json.dumps({"key": "d", "request": {**request("fourth"), "notAField": 1}}),
        json.dumps({"key": "e", "request": request("third")}) + "\r",  # a CRLF line ending
        "[1, 2, 3]",
        "",  # blank lines are not requests
    ]
    uploaded = upload_jsonl(client, tmp_path / "input.jsonl", lines)
    assert uploaded.mime_type == "jsonl"
    job = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "file batch"})
    assert BATCH_NAME.fullmatch(job.name)
    job = wait_for(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job
    batch_id = job.name.removeprefix("batches/")
    assert job.dest.file_name == f"files/batch-{batch_id}" and not job.dest.inlined_responses

    out = jsonl(client.files.download(file=job.dest.file_name))
    assert len(out) == 7, out
    assert [line.get("key") for line in out] == ["a", None, "b", "c", "d", "e", None]
    assert text_of(out[0]["response"]) == client.models.generate_content(
        model=MODEL, contents="first", config={"temperature": 0.2}).text
    assert text_of(out[5]["response"]) == client.models.generate_content(model=MODEL, contents="third").text
    for i in (1, 2, 3, 4, 6):
        assert set(out[i]) <= {"error", "key"} and out[i]["error"]["code"] == 3, out[i]
        assert isinstance(out[i]["error"]["message"], str) and out[i]["error"]["message"], out[i]
    assert "Line 2" in out[1]["error"]["message"] and "JSON" in out[1]["error"]["message"]
    assert "temperature" in out[2]["error"]["message"]
    assert "Line 4" in out[3]["error"]["message"] and "request" in out[3]["error"]["message"]
    assert "notAField" in out[4]["error"]["message"] or "not_a_field" in out[4]["error"]["message"], out[4]
    assert "Line 7" in out[6]["error"]["message"] and "object" in out[6]["error"]["message"], out[6]

    op = operation(server, job.name)
    meta = op["metadata"]
    assert op["name"] == job.name and op["done"] is True and "error" not in op
    assert meta["@type"] == TYPES + "GenerateContentBatch" and meta["state"] == "BATCH_STATE_SUCCEEDED"
    assert meta["model"] == f"models/{MODEL}" and meta["displayName"] == "file batch" and meta["name"] == job.name
    assert meta["inputConfig"] == {"fileName": uploaded.name}
    assert meta["batchStats"] == {"requestCount": "7", "successfulRequestCount": "2", "failedRequestCount": "5"}
    for field in ("createTime", "updateTime", "endTime"):
        assert TIMESTAMP.fullmatch(meta[field]), meta
    assert meta["output"] == {"responsesFile": job.dest.file_name}
    assert op["response"] == {"@type": TYPES + "GenerateContentBatchOutput", "responsesFile": job.dest.file_name}

    # The docs' curl download of the responses file gives the same bytes; the file is an ordinary generated file.
    r = httpx.get(f"{server.base_url}/download/v1beta/{job.dest.file_name}:download", params={"alt": "media"},
                  headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    assert r.status_code == 200 and jsonl(r.content) == out, r.text
    made = client.files.get(name=job.dest.file_name)
    assert made.state == types.FileState.ACTIVE and made.size_bytes == len(r.content)

    # The same input as application/jsonl, the other spelling; the batch keeps its input when the file is deleted
    # right after the creation.
    again = upload_jsonl(client, tmp_path / "again.jsonl", lines[:1] + lines[5:6], mime_type="application/jsonl")
    second = client.batches.create(model=MODEL, src=again.name)
    client.files.delete(name=again.name)
    second = wait_for(client, second.name)
    assert second.state == types.JobState.JOB_STATE_SUCCEEDED
    assert [(line["key"], "response" in line) for line in jsonl(client.files.download(
        file=second.dest.file_name))] == [("a", True), ("e", True)]
    assert operation(server, second.name)["metadata"]["inputConfig"] == {"fileName": again.name}


# 3. Embeddings batches ------------------------------------------------------------------------------------------------
def test_embeddings_batches_inline_and_from_a_file(server, client, tmp_path):
    texts = ["alpha", "beta gamma", "the quick brown fox"]
    online = [client.models.embed_content(model=EMBED_MODEL, contents=t, config={"output_dimensionality": 8})
              .embeddings[0].values for t in texts]
    assert all(len(v) == 8 for v in online)

    job = client.batches.create_embeddings(model=EMBED_MODEL, src=types.EmbeddingsBatchJobSource(
        inlined_requests=types.EmbedContentBatch(contents=texts,
                                                 config=types.EmbedContentConfig(output_dimensionality=8))),
        config={"display_name": "embeddings"})
    assert BATCH_NAME.fullmatch(job.name)
    job = wait_for(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.display_name == "embeddings", job
    results = job.dest.inlined_embed_content_responses
    assert results is not None and len(results) == len(texts), job.dest
    for result, want in zip(results, online):
        assert result.error is None
        assert result.response.embedding.values == pytest.approx(want, rel=1e-6, abs=1e-7)
    op = operation(server, job.name)
    assert op["metadata"]["@type"] == TYPES + "EmbedContentBatch"
    assert op["response"]["@type"] == TYPES + "EmbedContentBatchOutput"
    assert op["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}

    lines = [json.dumps({"key": f"k{i}", "request": {"content": {"parts": [{"text": t}]},
                                                     "output_dimensionality": 8}}) for i, t in enumerate(texts)]
    lines.insert(1, json.dumps({"key": "broken", "request": {"content": {"parts": [{"text": "x"}]},
                                                             "output_dimensionality": "eight"}}))
    uploaded = upload_jsonl(client, tmp_path / "embed.jsonl", lines)
    job = client.batches.create_embeddings(model=EMBED_MODEL, src={"file_name": uploaded.name})
    job = wait_for(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job
    out = jsonl(client.files.download(file=job.dest.file_name))
    assert [line["key"] for line in out] == ["k0", "broken", "k1", "k2"]
    assert out[1]["error"]["code"] == 3 and "response" not in out[1], out[1]
    for line, want in zip([out[0], out[2], out[3]], online):
        assert line["response"]["embedding"]["values"] == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert stats(server, job.name)["failedRequestCount"] == 1


# 4. Cancel ------------------------------------------------------------------------------------------------------------
def test_cancel_keeps_the_results_done_so_far(slow, tmp_path):
    client = client_for(slow)
    total = 200
    lines = [json.dumps({"key": f"k{i:03d}", "request": request(f"line {i}", **SHORT_WIRE)}) for i in range(total)]
    uploaded = upload_jsonl(client, tmp_path / "many.jsonl", lines)
    job = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "to cancel"})
    before = wait_some_done(slow, job.name, 4)
    assert before < total
    assert operation(slow, job.name)["metadata"]["state"] == "BATCH_STATE_RUNNING"
    client.batches.cancel(name=job.name)

    job = wait_for(client, job.name, seconds=30)
    assert job.state == types.JobState.JOB_STATE_CANCELLED, job
    op = operation(slow, job.name)
    assert op["done"] is True and op["metadata"]["state"] == "BATCH_STATE_CANCELLED" and "endTime" in op["metadata"]
    assert op["response"]["responsesFile"] == job.dest.file_name == f"files/batch-{job.name.split('/')[1]}"
    out = jsonl(client.files.download(file=job.dest.file_name))
    assert before <= len(out) < total, (before, len(out))
    keys = [line["key"] for line in out]
    assert keys == sorted(set(keys)) and set(keys) <= {f"k{i:03d}" for i in range(total)}  # input order, once each
    for line in out:
        assert set(line) == {"response", "key"} and text_of(line["response"]), line
    s = stats(slow, job.name)
    assert s["requestCount"] == total and s["successfulRequestCount"] == len(out) and s["pendingRequestCount"] == 0

    # Nothing more runs: the counts (and stored rows) stay as they are, well past the runner's half-second watch.
    rows = result_rows(slow, job.name)[0]
    assert rows == len(out)
    time.sleep(1.5)
    assert stats(slow, job.name) == s and result_rows(slow, job.name)[0] == rows
    # Cancelling again is harmless.
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_CANCELLED


def test_cancel_with_the_docs_bare_get(slow):
    client = client_for(slow)
    total = 200
    job = client.batches.create(model=MODEL, src=slow_inline(total))
    wait_some_done(slow, job.name, 4)
    r = httpx.get(f"{slow.base_url}/v1beta/{job.name}:cancel", headers={"x-goog-api-key": slow.api_key},
                  timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {}, r.text
    job = wait_for(client, job.name, seconds=30)
    assert job.state == types.JobState.JOB_STATE_CANCELLED, job
    results = job.dest.inlined_responses
    assert 0 < len(results) < total
    places = [int(r.metadata["i"]) for r in results]
    assert places == sorted(set(places)), places
    assert all(r.error is None and r.response.text for r in results)
    assert stats(slow, job.name)["successfulRequestCount"] == len(results)


# 5. Delete ------------------------------------------------------------------------------------------------------------
def test_delete_an_ended_batch(server, client):
    names = [client.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": f"d{i}"}]}]}]).name
             for i in range(3)]
    for name in names:
        assert wait_for(client, name).state == types.JobState.JOB_STATE_SUCCEEDED
    client.batches.delete(name=names[0])                                 # the SDK: DELETE batches/{id}
    assert api(server, "GET", f"{names[1]}:delete").json() == {}        # the docs' curl: a bare GET of :delete
    assert api(server, "POST", f"{names[2]}:delete").status_code == 200
    remaining = listed(client)
    for name in names:
        assert gone(client, name)
        assert name not in remaining
        assert result_rows(server, name)[0] == 0
        r = api(server, "DELETE", name)
        assert r.status_code == 404 and r.json()["error"] == {"code": 404, "message": NOT_FOUND,
                                                              "status": "NOT_FOUND"}, r.text
        with pytest.raises(errors.ClientError) as err:
            client.batches.cancel(name=name)
        assert err.value.code == 404


def test_deleting_a_running_batch_stops_it(slow):
    client = client_for(slow)
    job = client.batches.create(model=MODEL, src=slow_inline(200))
    batch_id = job.name.removeprefix("batches/")
    wait_some_done(slow, job.name, 4)
    project = sql(slow, "SELECT project_id FROM batches WHERE id = ?", batch_id)[0][0]
    assert blob_keys(slow, f"batches/{project}/{batch_id}")  # its input, while it runs
    client.batches.delete(name=job.name)
    assert gone(client, job.name) and job.name not in listed(client)
    assert slow.logged(f"batch {batch_id}: stopping (ended elsewhere or deleted)"), slow.log()[-3000:]
    # What the runner saved as the row went is swept with it; its input goes too.
    assert eventually(lambda: result_rows(slow, job.name)[0] == 0), result_rows(slow, job.name)
    assert eventually(lambda: not blob_keys(slow, f"batches/{project}/{batch_id}"))
    assert sql(slow, "SELECT COUNT(*) FROM batches WHERE id = ?", batch_id)[0][0] == 0


def test_list_and_inline_limits_come_from_the_config(slow):
    key = new_project(slow, "batch-limits")
    client = client_for(slow, key)
    created = [client.batches.create(model=MODEL, src=slow_inline(1, f"limit {i}")).name for i in range(4)]
    body = api(slow, "GET", "batches", key).json()  # batches_page_default = 2
    assert [op["name"] for op in body["operations"]] == created[:-3:-1] and body["nextPageToken"], body
    body = api(slow, "GET", "batches", key, params={"pageSize": 50}).json()  # batches_page_max = 3
    assert [op["name"] for op in body["operations"]] == created[:-4:-1] and body["nextPageToken"], body
    assert listed(client) == created[::-1]
    # batch_inline_bytes = 100000: a larger body of inline requests is refused; an input file is the way.
    big = [{"request": request("x" * 1000)} for _ in range(120)]
    r = create_raw(slow, inline_body(big), key)
    assert r.status_code == 400 and "100000 bytes" in r.json()["error"]["message"], r.text
    assert listed(client) == created[::-1]
    for name in created:
        assert wait_for(client, name).state == types.JobState.JOB_STATE_SUCCEEDED


# 6. List pagination ---------------------------------------------------------------------------------------------------
def test_list_pages_newest_first(server):
    key = new_project(server, "batch-pages")
    client = client_for(server, key)
    assert api(server, "GET", "batches", key).json() == {}  # none yet
    assert listed(client) == []
    created = [client.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": f"p{i}"}]}]}],
                                     config={"display_name": f"page {i}"}).name for i in range(5)]
    newest_first = created[::-1]

    pager = client.batches.list(config={"page_size": 2})
    assert [j.name for j in pager.page] == newest_first[:2]
    assert [j.name for j in pager] == newest_first
    assert listed(client, page_size=100) == newest_first

    names: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 2}
        if token:
            params["pageToken"] = token
        body = api(server, "GET", "batches", key, params=params).json()
        pages += 1
        assert len(body["operations"]) == (2 if pages < 3 else 1), body
        assert all("output" not in op["metadata"] for op in body["operations"])  # listings leave results out
        names += [op["name"] for op in body["operations"]]
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and names == newest_first
    assert [op["metadata"]["displayName"] for op in api(server, "GET", "batches", key).json()["operations"]] == [
        f"page {i}" for i in range(4, -1, -1)]

    for bad, message in (({"pageSize": "abc"}, "page_size"), ({"pageSize": "-1"}, "page_size"),
                         ({"pageToken": "notatoken"}, "page token")):
        r = api(server, "GET", "batches", key, params=bad)
        assert r.status_code == 400 and message in r.json()["error"]["message"], (bad, r.text)


# 7. Isolation ---------------------------------------------------------------------------------------------------------
def test_another_project_cannot_see_or_touch_a_batch(server, client, tmp_path):
    uploaded = upload_jsonl(client, tmp_path / "mine.jsonl",
                            [json.dumps({"key": "x", "request": request("mine")})])
    mine = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "mine"})
    theirs_key = new_project(server, "batch-stranger")
    theirs = client_for(server, theirs_key)
    for call in (lambda: theirs.batches.get(name=mine.name), lambda: theirs.batches.cancel(name=mine.name),
                 lambda: theirs.batches.delete(name=mine.name)):
        with pytest.raises(errors.ClientError) as err:
            call()
        assert err.value.code == 404 and err.value.message == NOT_FOUND, err.value
    for verb in ("cancel", "delete"):
        assert api(server, "GET", f"{mine.name}:{verb}", theirs_key).status_code == 404
    assert mine.name not in listed(theirs)
    with pytest.raises(errors.ClientError) as err:
        theirs.batches.create(model=MODEL, src=uploaded.name)
    file_id = uploaded.name.removeprefix("files/")
    assert err.value.code == 403 and err.value.status == "PERMISSION_DENIED", err.value
    assert err.value.message == f"You do not have permission to access the File {file_id} or it may not exist."
    assert listed(theirs) == []

    job = wait_for(client, mine.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.display_name == "mine"
    assert mine.name in listed(client)
    # Its responses file is the owner's too.
    with pytest.raises(errors.ClientError) as err:
        theirs.files.get(name=job.dest.file_name)
    assert err.value.code == 403
    assert [line["key"] for line in jsonl(client.files.download(file=job.dest.file_name))] == ["x"]


# 8. Creation errors ---------------------------------------------------------------------------------------------------
def test_creation_errors(server, tmp_path):
    key = new_project(server, "batch-errors")
    client = client_for(server, key)
    one = [{"request": request("hello")}]

    def refused(r: httpx.Response, status: int, message: str) -> None:
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == status and message in error["message"], error
        assert error["status"] == {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}[status]

    refused(create_raw(server, {}, key), 400, "batch")
    refused(create_raw(server, {"batch": {"displayName": "neither"}}, key), 400, "exactly one")
    refused(create_raw(server, inline_body([]), key), 400, "at least one request")
    with pytest.raises(errors.ClientError) as err:
        client.batches.create(model=MODEL, src=[])
    assert err.value.code == 400 and "at least one request" in err.value.message

    good = upload_jsonl(client, tmp_path / "good.jsonl", [json.dumps({"key": "k", "request": request("hi")})])
    both = {"batch": {"inputConfig": {"fileName": good.name, "requests": {"requests": one}}}}
    refused(create_raw(server, both, key), 400, "exactly one")

    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    plain = client.files.upload(file=text, config={"mime_type": "text/plain"})
    with pytest.raises(errors.ClientError) as err:
        client.batches.create(model=MODEL, src=plain.name)
    assert err.value.code == 400 and "is not a batch input file" in err.value.message, err.value
    assert plain.name in err.value.message

    other_model = upload_jsonl(client, tmp_path / "other.jsonl", [
        json.dumps({"key": "ok", "request": request("fine")}),
        json.dumps({"key": "pro", "request": {"model": "models/gemini-2.5-pro", **request("other")}})])
    with pytest.raises(errors.ClientError) as err:
        client.batches.create(model=MODEL, src=other_model.name)
    assert err.value.code == 400 and "models/gemini-2.5-pro" in err.value.message and "Line 2" in err.value.message
    refused(create_raw(server, inline_body([{"request": {"model": "models/gemini-2.5-pro", **request("x")}}]), key),
            400, "models/gemini-2.5-pro")

    refused(create_raw(server, {"batch": {"inputConfig": {"fileName": "files/nosuchfile0"}}}, key), 403,
            "You do not have permission to access the File nosuchfile0 or it may not exist.")
    refused(create_raw(server, inline_body(one), key, model="no-such-model"), 404, "models/no-such-model")
    refused(create_raw(server, inline_body(one), key, verb="asyncBatchEmbedContent"), 404, "asyncBatchEmbedContent")
    refused(create_raw(server, inline_body(one), key, model=EMBED_MODEL), 404, "batchGenerateContent")
    refused(create_raw(server, {"batch": {"inputConfig": {"requests": {"requests": one}}, "bogus": 1}}, key), 400,
            "bogus")

    # Not found: get, cancel and delete of a batch that does not exist.
    for method, path in (("GET", "batches/nosuchbatch"), ("POST", "batches/nosuchbatch:cancel"),
                         ("GET", "batches/nosuchbatch:cancel"), ("DELETE", "batches/nosuchbatch")):
        refused(api(server, method, path, key), 404, NOT_FOUND)
    with pytest.raises(errors.ClientError) as err:
        client.batches.get(name="batches/nosuchbatch")
    assert err.value.code == 404 and err.value.message == NOT_FOUND

    # None of the refused creations left a batch behind.
    assert api(server, "GET", "batches", key).json() == {}
    # A request naming the batch's own model is fine; an item without a request gets an error entry (with its
    # metadata), not a refused batch.
    r = create_raw(server, inline_body([{"request": {"model": f"models/{MODEL}", **request("same")}},
                                        {"metadata": {"key": "empty"}}]), key)
    assert r.status_code == 200, r.text
    job = wait_for(client, r.json()["name"])
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    first, second = job.dest.inlined_responses
    assert first.response.text and first.error is None, first
    assert second.response is None and second.error.code == 3 and second.metadata == {"key": "empty"}, second


# 9. Expiry ------------------------------------------------------------------------------------------------------------
def test_batches_expire_and_are_forgotten(tmp_path):
    config = SLOW + "batch_ttl_seconds = 3\n"
    with start_server(tmp_path / "data", config=config) as srv:
        client = client_for(srv)
        quick = client.batches.create(model=MODEL, src=slow_inline(1, "quick"))
        assert wait_for(client, quick.name).state == types.JobState.JOB_STATE_SUCCEEDED
        lines = [json.dumps({"key": f"k{i:03d}", "request": request(f"slow {i}", **SHORT_WIRE)}) for i in range(200)]
        uploaded = upload_jsonl(client, tmp_path / "slow.jsonl", lines)
        job = client.batches.create(model=MODEL, src=uploaded.name)

        expired = wait_for(client, job.name, seconds=30)
        assert expired.state == types.JobState.JOB_STATE_EXPIRED, expired
        r = api(srv, "GET", job.name)
        if r.status_code == 200:  # still there (it is forgotten 3 s after it ended)
            assert r.json()["done"] is True and r.json()["metadata"]["state"] == "BATCH_STATE_EXPIRED", r.text
        assert expired.dest.file_name, expired  # what was done before it expired
        out = jsonl(client.files.download(file=expired.dest.file_name))
        assert len(out) < 200 and all("response" in line for line in out)
        assert [line["key"] for line in out] == sorted({line["key"] for line in out})

        # Ended batches are forgotten once their time is up: the succeeded one and the expired one alike.
        assert eventually(lambda: gone(client, job.name) and gone(client, quick.name), 30)
        assert job.name not in listed(client) and quick.name not in listed(client)
        assert eventually(lambda: result_rows(srv, job.name)[0] == 0)
        assert "Traceback" not in srv.log(), srv.log()[-3000:]


def test_a_batch_ended_by_another_process_takes_no_more_results(tmp_path):
    """A running batch expired by another process's housekeeping is closed to new results before its responses file
    is written: its runner, frozen (SIGSTOP) meanwhile with results it has not saved, stops when it resumes, and
    nothing changes after the end (counts, stored results and the responses file agree). Found by this test: the
    runner used to save after the end, so an ended batch gained results its file lacked."""
    config = "[emulator]\nstream_delay = 0.01\n[limits]\nhousekeeping_seconds = 1\njob_lease_seconds = 15\n"
    data = tmp_path / "data"
    a = start_server(data, config=config)
    b = start_server(data, config=config)
    frozen = False
    try:
        key = a.api_key
        on_a, on_b = client_for(a, key), client_for(b, key)
        lines = [json.dumps({"key": f"x{i:04d}", "request": request(f"expire {i}", **SHORT_WIRE)})
                 for i in range(2000)]
        uploaded = upload_jsonl(on_a, tmp_path / "expire.jsonl", lines)
        job = on_a.batches.create(model=MODEL, src=uploaded.name)  # a runs it (its creator)
        wait_some_done(b, job.name, 20, key)
        os.kill(a.process.pid, signal.SIGSTOP)  # results it has not saved yet stay in its memory
        frozen = True
        # Its time is up (as if batch_ttl_seconds had passed): b's housekeeping expires it.
        sql(b, "UPDATE batches SET expire_time = create_time WHERE id = ?", job.name.removeprefix("batches/"))
        expired = wait_for(on_b, job.name, seconds=30)
        assert expired.state == types.JobState.JOB_STATE_EXPIRED, expired
        at_end = stats(b, job.name, key)
        out = jsonl(on_b.files.download(file=expired.dest.file_name))
        assert at_end["successfulRequestCount"] + at_end["failedRequestCount"] == len(out) < 2000

        os.kill(a.process.pid, signal.SIGCONT)
        frozen = False
        batch_id = job.name.removeprefix("batches/")
        assert a.logged(f"batch {batch_id}: stopping (ended elsewhere or deleted)"), a.log()[-3000:]
        # An ended batch must not change: its counts, stored results and responses file agree, as at its end.
        assert stats(b, job.name, key) == at_end, "results were stored after the batch had EXPIRED"
        assert result_rows(b, job.name)[0] == len(out)
    finally:
        if frozen:
            os.kill(a.process.pid, signal.SIGCONT)
        a.stop()
        b.stop()


# 10. A process SIGKILLed mid-job --------------------------------------------------------------------------------------
def test_a_batch_survives_a_sigkill(server, tmp_path):
    total = 500
    config = ("[emulator]\nstream_delay = 0.08\n[limits]\njob_lease_seconds = 3\nhousekeeping_seconds = 1\n")
    tiny = {"max_output_tokens": 8, "thinking_config": {"thinking_budget": 0}}  # one chunk: ~0.08 s per answer
    src = [{"contents": [{"parts": [{"text": f"item {i}"}], "role": "user"}], "config": tiny,
            "metadata": {"i": str(i)}} for i in range(total)]
    # The answers the emulator gives (deterministic), from the session server, which does not pace them.
    reference = client_for(server)
    with ThreadPoolExecutor(8) as pool:
        expected = list(pool.map(lambda i: reference.models.generate_content(
            model=MODEL, contents=f"item {i}", config=tiny).text, range(total)))
    assert all(expected)

    data = tmp_path / "data"
    first = start_server(data, config=config)
    try:
        key = first.api_key
        creator = client_for(first)  # kept: a client the garbage collector takes closes its connections
        job = creator.batches.create(model=MODEL, src=src, config={"display_name": "survivor"})
        before = wait_some_done(first, job.name, 40)
        assert before < total, "the batch ended before the process could be killed"
        assert f":{first.process.pid}:" in (job_owner(first, job.name) or ""), job_owner(first, job.name)
        first.process.kill()  # SIGKILL: no shutdown, the lease is left to run out
        first.process.wait()
    finally:
        first.stop()
    stored = result_rows(first, job.name)
    assert before <= stored[0] < total and stored[0] == stored[1], stored

    with start_server(data, config=config) as second:
        client = client_for(second, key)
        job = wait_for(client, job.name, seconds=60)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job
        assert result_rows(second, job.name) == (total, total, 0, total - 1)
        results = job.dest.inlined_responses
        assert [r.metadata["i"] for r in results] == [str(i) for i in range(total)]
        assert [r.error for r in results] == [None] * total
        assert [r.response.text for r in results] == expected
        assert stats(second, job.name, key)["successfulRequestCount"] == total
        assert "Traceback" not in second.log(), second.log()[-3000:]


# 11. Two replicas on one database -------------------------------------------------------------------------------------
def test_replicas_share_batches_and_hand_over_a_killed_job(tmp_path):
    data = tmp_path / "data"
    a = start_server(data, config=SLOW)
    b = start_server(data, config=SLOW)  # a second process on the same data dir (and database)
    try:
        key = a.api_key
        on_a, on_b = client_for(a, key), client_for(b, key)

        # Created on one, read and cancelled on the other.
        job = on_a.batches.create(model=MODEL, src=slow_inline(100), config={"display_name": "shared"})
        wait_some_done(b, job.name, 2, key)
        seen = on_b.batches.get(name=job.name)
        assert seen.display_name == "shared" and seen.state == types.JobState.JOB_STATE_RUNNING
        assert job.name in listed(on_b)
        on_b.batches.cancel(name=job.name)
        cancelled = wait_for(on_a, job.name, seconds=30)
        assert cancelled.state == types.JobState.JOB_STATE_CANCELLED, cancelled
        assert wait_for(on_b, job.name).state == types.JobState.JOB_STATE_CANCELLED
        assert 0 < len(cancelled.dest.inlined_responses) < 100

        # The process running a batch (of an input file this time) is killed: the other takes the job over once the
        # lease runs out, and writes the responses file.
        lines = [json.dumps({"key": f"h{i:03d}", "request": request(f"handover {i}", **SHORT_WIRE)})
                 for i in range(100)]
        uploaded = upload_jsonl(on_a, tmp_path / "handover.jsonl", lines)
        job = on_a.batches.create(model=MODEL, src=uploaded.name)
        wait_some_done(b, job.name, 8, key)
        assert f":{a.process.pid}:" in (job_owner(b, job.name) or ""), job_owner(b, job.name)
        a.process.kill()
        a.process.wait()
        done = wait_for(on_b, job.name, seconds=60)
        assert done.state == types.JobState.JOB_STATE_SUCCEEDED, done
        out = jsonl(on_b.files.download(file=done.dest.file_name))
        assert [line["key"] for line in out] == [f"h{i:03d}" for i in range(100)]
        assert all(set(line) == {"response", "key"} and text_of(line["response"]) for line in out)
        assert result_rows(b, job.name) == (100, 100, 0, 99)
        assert stats(b, job.name, key)["successfulRequestCount"] == 100
        assert "Traceback" not in b.log(), b.log()[-3000:]
    finally:
        a.stop()
        b.stop()


# 12. The JS SDK -------------------------------------------------------------------------------------------------------
def test_js_sdk_inline_batch(js_sdk, server):
    out = json.loads(run_node(js_sdk, server, "batches.mjs").stdout.strip().splitlines()[-1])
    assert BATCH_NAME.fullmatch(out["created"]["name"]), out
    assert out["created"]["displayName"] == "js-batch" and out["created"]["model"] == f"models/{MODEL}"
    assert out["final"]["state"] == "JOB_STATE_SUCCEEDED" and out["final"]["endTime"], out
    assert [r["metadata"] for r in out["responses"]] == [{"key": "js-1"}, {"key": "js-2"}]
    assert [r["error"] for r in out["responses"]] == [None, None]
    assert [r["text"] for r in out["responses"]] == out["online"] and all(out["online"])
    assert out["created"]["name"] in out["listed"]
    assert out["afterDelete"]["threw"] and out["afterDelete"]["status"] == 404, out["afterDelete"]
    call = out["createCall"]
    assert call["path"].endswith(f"/models/{MODEL}:batchGenerateContent") and call["status"] == 200, call


# 13. REST shapes, as curl sends them ----------------------------------------------------------------------------------
def test_rest_shapes_as_curl_sends_them(server):
    body = {"batch": {"display_name": "curl batch", "priority": "5", "input_config": {"requests": {"requests": [
        {"request": {"contents": [{"parts": [{"text": "Describe batches"}]}]}, "metadata": {"key": "r1"}},
        {"request": {"contents": [{"parts": [{"text": "Give JSON"}]}],
                     "generation_config": {"response_mime_type": "application/json"}}},
    ]}}}}
    r = httpx.post(f"{server.base_url}/v1beta/models/{MODEL}:batchGenerateContent", json=body, timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    created = r.json()
    name = created["name"]
    assert BATCH_NAME.fullmatch(name) and "done" not in created and "response" not in created, created
    meta = created["metadata"]
    assert meta["@type"] == TYPES + "GenerateContentBatch" and meta["name"] == name
    assert meta["model"] == f"models/{MODEL}" and meta["displayName"] == "curl batch" and meta["priority"] == "5"
    assert meta["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"), meta
    assert TIMESTAMP.fullmatch(meta["createTime"]) and TIMESTAMP.fullmatch(meta["updateTime"])
    assert "endTime" not in meta and "inputConfig" not in meta and "output" not in meta
    counts = {k: int(v) for k, v in meta["batchStats"].items()}
    assert counts["requestCount"] == 2 and sum(counts.values()) == 4, meta["batchStats"]

    # Poll `.done` as the docs' loop does (the key in the query this time).
    final: dict[str, Any] = {}

    def finished() -> bool:
        got = httpx.get(f"{server.base_url}/v1beta/{name}", params={"key": server.api_key}, timeout=TIMEOUT)
        assert got.status_code == 200, got.text
        final.update(got.json())
        return final.get("done") is True

    assert eventually(finished, 60), final
    assert final["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert final["metadata"]["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert TIMESTAMP.fullmatch(final["metadata"]["endTime"])
    assert final["metadata"]["createTime"] == meta["createTime"]
    assert final["metadata"]["updateTime"] >= final["metadata"]["createTime"]
    response = final["response"]
    assert response["@type"] == TYPES + "GenerateContentBatchOutput"
    items = response["inlinedResponses"]["inlinedResponses"]
    assert final["metadata"]["output"] == {"inlinedResponses": response["inlinedResponses"]}
    assert len(items) == 2 and items[0]["metadata"] == {"key": "r1"} and "metadata" not in items[1], items
    assert text_of(items[0]["response"]) and items[0]["response"]["candidates"][0]["finishReason"] == "STOP"
    json.loads(text_of(items[1]["response"]))  # responseMimeType application/json: the text is JSON
    assert "error" not in final

    # The same batch under /v1, listed, cancelled when ended (a no-op) and deleted, with the bodies curl shows.
    assert httpx.get(f"{server.base_url}/v1/{name}", headers={"x-goog-api-key": server.api_key},
                     timeout=TIMEOUT).json()["name"] == name
    listing = api(server, "GET", "batches", params={"pageSize": 100}).json()
    assert name in [op["name"] for op in listing["operations"]]
    r = httpx.post(f"{server.base_url}/v1beta/{name}:cancel", timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "application/json",
                            "Content-Length": "0"})
    assert r.status_code == 200 and r.json() == {}, r.text
    assert operation(server, name)["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    r = api(server, "DELETE", name)
    assert r.status_code == 200 and r.json() == {}
    r = api(server, "GET", name)
    assert r.status_code == 404 and r.json() == {"error": {"code": 404, "message": NOT_FOUND, "status": "NOT_FOUND"}}
    assert api(server, "GET", f"{name}:frobnicate").status_code == 404
