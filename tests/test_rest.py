"""Raw HTTP as curl users send it: the docs' REST quickstart run as written, SSE and JSON-array framing,
cancellation."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx
import pytest
from conftest import start_server

DOCS_HOST = "https://generativelanguage.googleapis.com"
KEY_PLACEHOLDER = "YOUR_API_KEY"  # what a user replaces with their key where it is written into the command

# The REST quickstart in the forms the Gemini docs give it: a POST to Google's host on
# /v1beta/models/gemini-2.5-flash:generateContent with a JSON body {"contents": [{"parts": [{"text": ...}]}]},
# the key in x-goog-api-key, either from $GEMINI_API_KEY (twice in the docs) or written in (Content-Type first).
# The commands are this project's own, one per form, each with its own prompt: (id, prompt, command).
EXAMPLES = [
    ("key_from_env", "List three uses of a paperclip", f"""\
curl "{DOCS_HOST}/v1beta/models/gemini-2.5-flash:generateContent" \\
  -H "x-goog-api-key: $GEMINI_API_KEY" \\
  -H 'Content-Type: application/json' \\
  -X POST \\
  -d '{{
    "contents": [
      {{
        "parts": [
          {{
            "text": "List three uses of a paperclip"
          }}
        ]
      }}
    ]
  }}'"""),
    ("key_from_env_compact_body", "Name a planet with rings", f"""\
curl "{DOCS_HOST}/v1beta/models/gemini-2.5-flash:generateContent" \\
  -H "x-goog-api-key: $GEMINI_API_KEY" \\
  -H 'Content-Type: application/json' \\
  -X POST \\
  -d '{{"contents": [{{"parts": [{{"text": "Name a planet with rings"}}]}}]}}'"""),
    ("key_in_command", "What makes bread rise", f"""\
curl "{DOCS_HOST}/v1beta/models/gemini-2.5-flash:generateContent" \\
  -H 'Content-Type: application/json' \\
  -H "x-goog-api-key: {KEY_PLACEHOLDER}" \\
  -X POST \\
  -d '{{
    "contents": [
      {{
        "parts": [
          {{
            "text": "What makes bread rise"
          }}
        ]
      }}
    ]
  }}'"""),
]


@pytest.mark.parametrize(("prompt", "command"), [(p, c) for _, p, c in EXAMPLES], ids=[i for i, _, _ in EXAMPLES])
def test_docs_curl_example_runs_unchanged(server, prompt, command):
    # Only the host and the key change, as a user would change them.
    command = command.replace(DOCS_HOST, server.base_url).replace(KEY_PLACEHOLDER, server.api_key)
    result = subprocess.run(["bash", "-c", command + " --silent --show-error --fail-with-body"],
                            capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "GEMINI_API_KEY": server.api_key})
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["candidates"][0]["content"]["parts"][0]["text"]
    assert prompt in body["candidates"][0]["content"]["parts"][0]["text"]  # the emulator's reply quotes the prompt
    assert body["usageMetadata"]["promptTokenCount"] > 0


def test_snake_case_rest_body_with_key_in_query(server):
    body = {"system_instruction": {"parts": [{"text": "You are a cat."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
            "generation_config": {"max_output_tokens": 200, "stop_sequences": ["zzz"],
                                  "thinking_config": {"thinking_budget": 0}}}
    response = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:generateContent?key={server.api_key}",
                          json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "thoughtsTokenCount" not in response.json()["usageMetadata"]


def test_sse_framing(server):
    url = f"{server.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    with httpx.stream("POST", url, headers={"x-goog-api-key": server.api_key},
                      json={"contents": [{"parts": [{"text": "Tell me a story"}]}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\r\n\r\n")
    assert events[-1] == ""  # the last event is terminated too
    events = events[:-1]
    assert len(events) > 2
    for event in events:
        assert event.startswith("data: ") and "\n" not in event  # one line, no event:/id:/comments
        chunk = json.loads(event[len("data: "):])
        assert chunk["usageMetadata"]["promptTokenCount"] > 0 and chunk["modelVersion"] and chunk["responseId"]
    assert "[DONE]" not in raw
    assert json.loads(events[-1][6:])["candidates"][0]["finishReason"] == "STOP"


def test_stream_without_alt_sse_is_a_json_array(server):
    url = f"{server.base_url}/v1/models/gemini-2.5-flash:streamGenerateContent?key={server.api_key}"
    response = httpx.post(url, json={"contents": [{"parts": [{"text": "Tell me a story"}]}]})
    assert response.status_code == 200
    chunks = json.loads(response.text)
    assert isinstance(chunks, list) and len(chunks) > 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_engine_error_before_any_chunk_is_a_plain_http_error(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('- match: {contains: "fail"}\n  respond: {error: {code: 503, status: UNAVAILABLE, '
                     'message: "The model is overloaded. Please try again later."}}\n')
    with start_server(tmp_path / "data", "--fixtures", str(rules)) as srv:
        url = f"{srv.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={srv.api_key}"
        response = httpx.post(url, json={"contents": [{"parts": [{"text": "fail now"}]}]})
        assert response.status_code == 503
        assert response.json()["error"]["status"] == "UNAVAILABLE"


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A server whose emulator takes 0.3 s per chunk of 8 tokens, so a client can leave mid-generation."""
    with start_server(tmp_path_factory.mktemp("slow") / "data", config="[emulator]\nstream_delay = 0.3\n") as srv:
        yield srv


def test_client_disconnect_cancels_a_stream(slow):
    before = slow.log().count("emulator generation cancelled")
    url = f"{slow.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={slow.api_key}"
    body = {"contents": [{"parts": [{"text": "Tell me a long story"}]}], "generationConfig": {"thinkingConfig": {
        "includeThoughts": True}}}
    with httpx.stream("POST", url, json=body) as r:
        assert next(r.iter_lines()).startswith("data: ")
    # The engine itself stopped, not only the response.
    assert slow.logged("emulator generation cancelled", before + 1), slow.log()


def test_client_disconnect_cancels_a_whole_answer(slow):
    before = slow.log().count("emulator generation cancelled")
    url = f"{slow.base_url}/v1beta/models/gemini-2.5-flash:generateContent?key={slow.api_key}"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"contents": [{"parts": [{"text": "Tell me a long story"}]}]}, timeout=0.5)
    assert slow.logged("emulator generation cancelled", before + 1), slow.log()


def test_a_client_that_leaves_while_sending_its_body_is_no_error(slow):
    """Content-Length promises more than arrives, then the connection closes: nothing to answer, nothing to log as
    an error."""
    host, port = slow.base_url.removeprefix("http://").split(":")
    for path in ("/v1beta/models/gemini-2.5-flash:generateContent", "/upload/v1beta/files?uploadType=media"):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nx-goog-api-key: {slow.api_key}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 97\r\n\r\n{\"contents\": [".encode())
            time.sleep(0.2)
        assert slow.logged(f"POST {path.split('?')[0]}: the request body did not arrive whole", 1)
    r = httpx.post(f"{slow.base_url}/v1beta/models/gemini-2.5-flash:countTokens?key={slow.api_key}",
                   json={"contents": [{"parts": [{"text": "still here"}]}]})
    assert r.status_code == 200
    assert "Traceback" not in slow.log() and "unhandled error" not in slow.log(), slow.log()


async def test_error_after_the_first_chunk_ends_the_stream_with_an_error_event():
    from pollux.engines.base import TokenCount
    from pollux.errors import ApiError
    from pollux.generate.results import Candidate, Chunk, OutPart, Reply, Usage
    from pollux.generate.router import _frames

    reply = Reply([Chunk(Candidate(0), [OutPart(text="Hello")], [])], Usage(TokenCount({"TEXT": 1}), 1, 0), "m", "r")

    async def replies():
        yield reply
        raise ApiError("RESOURCE_EXHAUSTED", "Quota exceeded.")

    sse = [f async for f in _frames(replies(), reply, sse=True)]
    assert len(sse) == 3
    assert sse[-1] == b'data: {"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n'
    array = b"".join([f async for f in _frames(replies(), reply, sse=False)])
    assert json.loads(array)[-1]["error"]["code"] == 429
