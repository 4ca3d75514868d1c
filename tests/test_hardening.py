"""One request cannot stall the server or take its memory: backtracking patterns, bodies of millions of values, and
work that needs more memory than is free (reference: the hardening issue's attack inputs)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import re2

from conftest import Server, start_server

GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
TIMEOUT = 60  # a failure bound only: every request here used to hang for minutes or for ever
EMAIL = r"^([a-z0-9]+\.?)+@example\.com$"


def post(server: Server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=TIMEOUT, headers={"x-goog-api-key": server.api_key})


def models_answer(server: Server) -> bool:
    r = httpx.get(f"{server.base_url}/v1beta/models", headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    return r.status_code == 200 and bool(r.json()["models"])


def assert_error(r: httpx.Response, code: int, contains: str) -> dict:
    assert r.status_code == code, r.text[:500]
    error = r.json()["error"]
    assert error["code"] == code and contains in error["message"], error
    return error


def schema_request(schema: dict) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": "Give me an address."}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}


# Patterns -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("string_schema", [
    {"type": "string", "pattern": EMAIL, "maxLength": 64},
    {"type": "string", "pattern": r"^(a+)+$", "minLength": 10000},
], ids=["email-pattern", "nested-quantifier"])
def test_backtracking_patterns_are_answered_while_others_are_served(server: Server, string_schema: dict) -> None:
    schema = {"type": "object", "properties": {"value": string_schema}, "required": ["value"]}
    with ThreadPoolExecutor(4) as pool:
        attacks = [pool.submit(post, server, GENERATE, schema_request(schema)) for _ in range(2)]
        assert all(pool.map(lambda _: models_answer(server), range(4)))
        for attack in attacks:
            r = attack.result()
            assert r.status_code == 200, r.text[:500]
            value = json.loads(r.json()["candidates"][0]["content"]["parts"][0]["text"])["value"]
            assert re2.search(string_schema["pattern"], value)
            assert string_schema.get("minLength", 0) <= len(value) <= string_schema.get("maxLength", 10**9)


def test_backtracking_pattern_through_openai_response_format(server: Server) -> None:
    from openai import OpenAI

    oai = OpenAI(base_url=f"{server.base_url}/v1beta/openai/", api_key=server.api_key, timeout=TIMEOUT)
    schema = {"type": "object", "properties": {"email": {"type": "string", "pattern": EMAIL, "maxLength": 64}},
              "required": ["email"], "additionalProperties": False}
    completion = oai.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "An e-mail address, please."}],
        response_format={"type": "json_schema", "json_schema": {"name": "contact", "schema": schema}})
    email = json.loads(completion.choices[0].message.content)["email"]
    assert re2.search(EMAIL, email) and len(email) <= 64


def test_a_pattern_no_string_of_the_length_matches_is_a_400_naming_the_field(server: Server) -> None:
    schema = {"type": "object", "required": ["contact"], "properties": {"contact": {
        "type": "object", "required": ["email"],
        "properties": {"email": {"type": "string", "pattern": EMAIL, "maxLength": 8}}}}}
    assert_error(post(server, GENERATE, schema_request(schema)), 400, "at $.contact.email")


# Bodies of many values ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_values_server(tmp_path_factory: pytest.TempPathFactory):
    with start_server(tmp_path_factory.mktemp("values") / "data", config="[limits]\nmax_request_values = 2000\n") as srv:
        yield srv


def test_a_body_of_too_many_values_is_refused(small_values_server: Server) -> None:
    contents = [{"role": "user", "parts": [{"text": "hi"}]}] * 1000
    error = assert_error(post(small_values_server, GENERATE, {"contents": contents}), 400, "too many JSON values")
    assert error["status"] == "INVALID_ARGUMENT" and "the limit is 2000" in error["message"]


def test_commas_and_brackets_inside_strings_are_not_values(small_values_server: Server) -> None:
    text = "a,b,[c],{d}\\\", " * 3000  # 12,000 commas and brackets, in one string
    r = post(small_values_server, GENERATE, {"contents": [{"role": "user", "parts": [{"text": text}]}]})
    assert r.status_code == 200, r.text[:300]


def test_too_many_values_on_the_openai_surface(small_values_server: Server) -> None:
    messages = [{"role": "user", "content": "hi"}] * 1000
    r = httpx.post(f"{small_values_server.base_url}/v1beta/openai/chat/completions", timeout=TIMEOUT,
                   json={"model": "gemini-2.5-flash", "messages": messages},
                   headers={"Authorization": f"Bearer {small_values_server.api_key}"})
    assert r.status_code == 400 and "too many JSON values" in r.text, r.text[:300]


# Memory admission -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tight_memory_server(tmp_path_factory: pytest.TempPathFactory):
    config = "[limits]\nmemory_budget_mb = 8\nadmission_wait_seconds = 1\n"
    with start_server(tmp_path_factory.mktemp("memory") / "data", config=config) as srv:
        yield srv


def big_body(size: int) -> bytes:
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "x" * size}]}]}).encode()
    assert len(body) > 1 << 20  # above the size from which bodies claim memory
    return body


def test_a_body_that_does_not_fit_the_budget_waits_then_gets_503_with_retry_info(tight_memory_server: Server) -> None:
    srv = tight_memory_server
    held = big_body(2 << 20)  # claims 4 x its size: all of the 8 MB budget
    port = int(srv.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as holder:
        # Headers and half of the body: the server claims the memory when it starts reading, and keeps the claim.
        holder.sendall(f"POST {GENERATE} HTTP/1.1\r\nHost: x\r\nx-goog-api-key: {srv.api_key}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(held)}\r\n\r\n".encode())
        holder.sendall(held[: len(held) // 2])
        # Until the holder's claim is in, a newcomer may still get through: try until one is turned away.
        for _ in range(50):
            r = httpx.post(srv.base_url + GENERATE, content=big_body(1 << 20), timeout=TIMEOUT,
                           headers={"x-goog-api-key": srv.api_key, "Content-Type": "application/json"})
            if r.status_code == 503:
                break
            assert r.status_code == 200, r.text[:300]
        error = assert_error(r, 503, "short of memory")
        assert error["status"] == "UNAVAILABLE"
        retry = [d for d in error["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
        assert retry and retry[0]["retryDelay"].endswith("s")
        assert models_answer(srv)  # small requests never claim
        holder.sendall(held[len(held) // 2:])
        response = _read_response(holder)
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    # The claim was given back with the answer: the same request now fits.
    r = httpx.post(srv.base_url + GENERATE, content=big_body(1 << 20), timeout=TIMEOUT,
                   headers={"x-goog-api-key": srv.api_key, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:300]


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_image_larger_than_the_whole_budget_is_decoded_alone(tight_memory_server: Server) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (7000, 7000), 200).save(buffer, "PNG")  # ~50 KB that decode to 49 megapixels
    data = base64.b64encode(buffer.getvalue()).decode()
    body = {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": data}},
                                                    {"text": "What is this?"}]}]}
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: results.append(post(tight_memory_server, GENERATE, body)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each decode claims the whole budget in turn; a decode that waited past admission_wait_seconds is a 503.
    assert {r.status_code for r in results} <= {200, 503}
    assert any(r.status_code == 200 for r in results)
    for r in results:
        if r.status_code == 200:
            assert r.json()["usageMetadata"]["promptTokensDetails"][0]["modality"] in ("IMAGE", "TEXT")
        else:
            assert_error(r, 503, "short of memory")


def test_a_schema_bound_that_is_not_a_number_is_refused(server: Server) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "A number."}]}],
            "generationConfig": {"responseMimeType": "application/json",
                                 "responseSchema": {"type": "NUMBER", "minimum": "NaN"}}}
    assert_error(post(server, GENERATE, body), 400, "not finite")


def test_a_function_name_with_a_trailing_newline_is_refused(server: Server) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather\n", "description": "The weather."}]}]}
    r = post(server, GENERATE, body)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", r.text[:300]
