"""OpenAI's Batch API on the compat surface, as the docs use it: the JSONL file uploaded with the genai SDK, the batch
made, polled and cancelled with the openai SDK, the output and error files downloaded with the genai SDK."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import Server, start_server
from google import genai
from google.genai import types
from openai import OpenAI

TIMEOUT = 60
ENDED = ("completed", "failed", "cancelled", "expired")


def genai_client(server: Server, key: str | None = None) -> genai.Client:
    return genai.Client(api_key=key or server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


def openai_client(server: Server, key: str | None = None) -> OpenAI:
    return OpenAI(api_key=key or server.api_key, base_url=server.base_url + "/v1beta/openai/", max_retries=0)


def chat_line(custom_id: str, content: str, model: str = "gemini-2.5-flash", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}}


def upload(client: genai.Client, tmp_path: Path, lines: list, name: str = "my-batch-requests") -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return client.files.upload(file=str(path), config=types.UploadFileConfig(display_name=name,
                                                                             mime_type="jsonl")).name


def wait(oai: OpenAI, batch_id: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        batch = oai.batches.retrieve(batch_id)
        if batch.status in ENDED or time.monotonic() > deadline:
            return batch
        time.sleep(0.1)


def download(client: genai.Client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.download(file=file_id).decode("utf-8").splitlines()]


def test_docs_example_chat_batch(server, tmp_path):
    client, oai = genai_client(server), openai_client(server)
    lines = [chat_line("request-1", "Tell me a one-sentence joke."), chat_line("request-2", "Why is the sky blue?")]
    batch_input_file_id = upload(client, tmp_path, lines)
    batch = oai.batches.create(input_file_id=batch_input_file_id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"team": "docs"})
    assert batch.id.startswith("batches/") and batch.status in ("validating", "in_progress", "completed")
    assert batch.endpoint == "/v1/chat/completions" and batch.input_file_id == batch_input_file_id
    batch = wait(oai, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 2 and batch.request_counts.completed == 2 and batch.request_counts.failed == 0
    assert batch.metadata == {"team": "docs"} and batch.completed_at >= batch.created_at
    assert batch.error_file_id is None
    output = download(client, batch.output_file_id)
    assert [line["custom_id"] for line in output] == ["request-1", "request-2"]
    for line, sent in zip(output, lines):
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        alone = oai.chat.completions.create(model="gemini-2.5-flash", messages=sent["body"]["messages"])
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == alone.choices[0].message.content


def test_failed_lines_go_to_the_error_file(server, tmp_path):
    client, oai = genai_client(server), openai_client(server)
    lines = [chat_line("good", "Hello"), chat_line("hot", "Hello", temperature=9), "not json at all",
             {"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"},
             chat_line("stream", "Hello", stream=True)]
    batch = wait(oai, oai.batches.create(input_file_id=upload(client, tmp_path, lines),
                                         endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "completed"  # errors are per line, not per job
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (5, 1, 4)
    assert [line["custom_id"] for line in download(client, batch.output_file_id)] == ["good"]
    errors = download(client, batch.error_file_id)
    assert [line["custom_id"] for line in errors] == ["hot", None, "no-body", "stream"]
    hot = errors[0]["response"]
    assert hot["status_code"] == 400 and "temperature" in hot["body"]["error"]["message"]
    assert errors[1]["response"] is None and "not valid JSON" in errors[1]["error"]["message"]
    assert "no body" in errors[2]["error"]["message"]
    assert errors[3]["response"]["status_code"] == 400 and "stream" in errors[3]["response"]["body"]["error"]["message"]


def test_embeddings_batch(server, tmp_path):
    client, oai = genai_client(server), openai_client(server)
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "gemini-embedding-001", "input": text, "dimensions": 8}}
             for i, text in enumerate(["the sea", "a mountain"])]
    batch = wait(oai, oai.batches.create(input_file_id=upload(client, tmp_path, lines), endpoint="/v1/embeddings",
                                         completion_window="24h").id)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    for line, sent in zip(download(client, batch.output_file_id), lines):
        alone = oai.embeddings.create(model="gemini-embedding-001", input=sent["body"]["input"], dimensions=8)
        assert line["response"]["body"]["data"][0]["embedding"] == pytest.approx(alone.data[0].embedding, abs=1e-6)


def test_create_refuses_what_cannot_run(server, tmp_path):
    client, oai = genai_client(server), openai_client(server)
    good = upload(client, tmp_path, [chat_line("a", "hi")], "good")

    def refused(**kwargs) -> str:
        args = {"input_file_id": good, "endpoint": "/v1/chat/completions", "completion_window": "24h", **kwargs}
        with pytest.raises(openai.BadRequestError) as err:
            oai.batches.create(**args)
        return err.value.body[0]["error"]["message"]

    assert "endpoint" in refused(endpoint="/v1/responses")
    assert "completion_window" in refused(completion_window="48h")
    mixed = upload(client, tmp_path, [chat_line("a", "hi"), chat_line("b", "hi", model="gemini-2.5-pro")], "mixed")
    assert "one model" in refused(input_file_id=mixed)
    wrong_url = upload(client, tmp_path, [chat_line("a", "hi") | {"url": "/v1/embeddings"}], "url")
    assert "endpoint is /v1/chat/completions" in refused(input_file_id=wrong_url)
    text = upload(client, tmp_path, ["just some words", "and more"], "text")
    assert "not a batch input file" in refused(input_file_id=text)
    with pytest.raises(openai.NotFoundError):  # the model must be served
        oai.batches.create(input_file_id=upload(client, tmp_path, [chat_line("a", "hi", model="no-such-model")],
                                                "unknown"),
                           endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.PermissionDeniedError):  # as the Files API answers for a file that is not there
        oai.batches.create(input_file_id="files/missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batches/nosuchbatch")


def test_list_pages_through_openai_batches_only(tmp_path):
    with start_server(tmp_path / "data") as server:
        client, oai = genai_client(server), openai_client(server)
        file_id = upload(client, tmp_path, [chat_line("a", "hi")])
        made = [oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                   completion_window="24h").id for _ in range(5)]
        native = client.batches.create(model="gemini-2.5-flash", src=[{"contents": [{"parts": [{"text": "hi"}]}]}])
        first = oai.batches.list(limit=2)
        assert len(first.data) == 2 and first.has_more
        listed = [b.id for b in oai.batches.list(limit=2)]  # the SDK's pager follows `after`
        assert listed == made[::-1] and native.name not in listed


def test_cancel_keeps_what_was_done(tmp_path):
    config = "[emulator]\nstream_delay = 0.05\n[limits]\nbatch_concurrency = 1\n"
    with start_server(tmp_path / "data", config=config) as server:
        client, oai = genai_client(server), openai_client(server)
        lines = [chat_line(f"r{i}", f"Question {i}", max_tokens=40) for i in range(200)]
        batch = oai.batches.create(input_file_id=upload(client, tmp_path, lines), endpoint="/v1/chat/completions",
                                   completion_window="24h")
        deadline = time.monotonic() + 60
        while oai.batches.retrieve(batch.id).request_counts.completed < 2:
            assert time.monotonic() < deadline, "no request of the batch finished"
            time.sleep(0.1)
        cancelled = oai.batches.cancel(batch.id)
        assert cancelled.status in ("cancelling", "cancelled")
        batch = wait(oai, batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at is not None
        done = batch.request_counts.completed
        assert 2 <= done < 200
        output = download(client, batch.output_file_id)
        assert [line["custom_id"] for line in output] == [f"r{i}" for i in range(done)]
        assert all(line["response"]["status_code"] == 200 for line in output)
        assert oai.batches.retrieve(batch.id).request_counts.completed == done  # nothing ran after the end


def test_another_project_cannot_see_a_batch(server, tmp_path):
    client, oai = genai_client(server), openai_client(server)
    file_id = upload(client, tmp_path, [chat_line("a", "hi")])
    batch = oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    server.cli("projects", "create", "batch-stranger")
    key = server.new_key(project="batch-stranger")
    theirs = openai_client(server, key)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(batch.id)
    assert batch.id not in [b.id for b in theirs.batches.list()]
    with pytest.raises(openai.PermissionDeniedError):  # nor use the owner's input file
        theirs.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert wait(oai, batch.id).status == "completed"


def test_curl_shapes(server, tmp_path):
    """The REST bodies as the OpenAI API documents them, percent-encoded ids included."""
    client = genai_client(server)
    file_id = upload(client, tmp_path, [chat_line("a", "hi")])
    headers = {"Authorization": f"Bearer {server.api_key}"}
    base = f"{server.base_url}/v1beta/openai/batches"
    r = httpx.post(base, json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                               "completion_window": "24h"}, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["object"] == "batch" and made["request_counts"]["total"] == 1
    encoded = made["id"].replace("/", "%2F")
    deadline = time.monotonic() + 60
    while (got := httpx.get(f"{base}/{encoded}", headers=headers, timeout=TIMEOUT).json())["status"] not in ENDED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert got["status"] == "completed" and got["output_file_id"] == f"files/batch-{made['id'].split('/')[1]}"
    r = httpx.get(base, params={"limit": 0}, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 400 and isinstance(r.json(), list)  # the compat layer's error array


def test_live_batches_per_project_are_bounded(tmp_path):
    config = "[emulator]\nstream_delay = 0.05\n[limits]\nmax_live_batches = 1\nbatch_concurrency = 1\n"
    with start_server(tmp_path / "data", config=config) as server:
        client, oai = genai_client(server), openai_client(server)
        file_id = upload(client, tmp_path, [chat_line(f"r{i}", f"Question {i}", max_tokens=40) for i in range(50)])
        first = oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        with pytest.raises(openai.RateLimitError) as err:
            oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert "as many as it may (1)" in err.value.body[0]["error"]["message"]
        with pytest.raises(genai.errors.ClientError) as native:  # native and OpenAI batches count together
            client.batches.create(model="gemini-2.5-flash", src=[{"contents": [{"parts": [{"text": "hi"}]}]}])
        assert native.value.code == 429
        oai.batches.cancel(first.id)
        assert wait(oai, first.id).status == "cancelled"
        again = oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert again.status in ("validating", "in_progress")
