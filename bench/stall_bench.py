"""How long `GET /v1beta/models` waits while one heavy request is processed: the event loop must stay free (the
hardening issue's goal is an answer within 1 s, whatever the other request).

    .venv/bin/python bench/stall_bench.py

For each heavy request it polls `models.list` every 50 ms from another connection while the request runs, and
prints the heavy request's status and time, and the slowest and median `models.list` answers during it. The first
row, an ordinary request, is the reference.
"""

from __future__ import annotations

import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import start_server  # noqa: E402

GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"


def contents(n: int) -> bytes:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}] * n}).encode()


def schema_request(string_schema: dict) -> bytes:
    schema = {"type": "object", "properties": {"value": string_schema}, "required": ["value"]}
    return json.dumps({"contents": [{"parts": [{"text": "Give me a value."}]}], "generationConfig": {
        "responseMimeType": "application/json", "responseJsonSchema": schema}}).encode()


def png_request() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (200, 100, 50)).save(buffer, "PNG")
    return json.dumps({"contents": [{"parts": [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(buffer.getvalue()).decode()}},
        {"text": "What is it?"}]}]}).encode()


def heavy_requests() -> dict[str, bytes]:
    text = base64.b64encode(b"All work and no play makes Jack a dull boy. " * 1_500_000).decode()
    return {
        "ordinary request (reference)": contents(1),
        "39,000 contents (195,000 values, under the bound)": contents(39_000),
        "1,000,000 contents (5 M values, refused)": contents(1_000_000),
        "96 MB body of 48 M numbers (refused)": b'{"contents":[{"parts":[{"text":"x"}]}],"cachedContent":[' +
        b",".join([b"1"] * 48_000_000) + b"]}",
        "text pattern ^([a-z0-9]+\\.?)+@example\\.com$, maxLength 64":
            schema_request({"type": "string", "pattern": r"^([a-z0-9]+\.?)+@example\.com$", "maxLength": 64}),
        "pattern ^(a+)+$, minLength 10000": schema_request({"type": "string", "pattern": "^(a+)+$",
                                                            "minLength": 10000}),
        "7000x7000 PNG inline": png_request(),
        "88 MB inline text file": json.dumps({"contents": [{"parts": [
            {"inlineData": {"mimeType": "text/plain", "data": text}}, {"text": "Summarise."}]}]}).encode(),
    }


def measure(base_url: str, key: str, body: bytes) -> tuple[int, float, float, float, int]:
    result: dict[str, float] = {}

    def heavy() -> None:
        started = time.monotonic()
        r = httpx.post(base_url + GENERATE, content=body, timeout=600,
                       headers={"x-goog-api-key": key, "Content-Type": "application/json"})
        result["status"], result["seconds"] = r.status_code, time.monotonic() - started

    thread = threading.Thread(target=heavy)
    waits: list[float] = []
    with httpx.Client(headers={"x-goog-api-key": key}, timeout=600) as client:
        thread.start()
        while thread.is_alive():
            started = time.monotonic()
            assert client.get(base_url + "/v1beta/models").status_code == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.05)
    thread.join()
    return int(result["status"]), result["seconds"], max(waits), statistics.median(waits), len(waits)


def main() -> None:
    requests = heavy_requests()
    print("| request | status | its time (s) | models.list slowest (ms) | median (ms) | polls |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp) / "data") as srv:
        for name, body in requests.items():
            status, seconds, slowest, median, polls = measure(srv.base_url, srv.api_key, body)
            print(f"| {name} | {status} | {seconds:.2f} | {slowest * 1000:.0f} | {median * 1000:.1f} | {polls} |",
                  flush=True)


if __name__ == "__main__":
    main()
