"""Memory admission under load: a server's resident memory while 12 clients send 7000x7000 PNGs at once and 6 send
90 MB bodies at once, with a memory budget and, as the reference in the same run, with a budget too large to bind.

    .venv/bin/python bench/memory_bench.py                  # budget 1024 MB against 65536 MB
    .venv/bin/python bench/memory_bench.py --budget-mb 512

For each server it prints the resident set (VmRSS of the server process) at rest, its peak during each wave, and
after each wave once the answers are in, with the answers' status codes (503s are requests the budget turned away).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import start_server  # noqa: E402

GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """The peak resident set of a process, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak


def png_body() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (7000, 7000), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i in range(0, 7000, 50):  # some structure, still ~200 KB compressed
        draw.line([(i, 0), (7000 - i, 7000)], fill=(i % 256, 80, 160), width=3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": data}}, {"text": "Describe it."}]}]}).encode()


def large_body(size_mb: int = 90) -> bytes:
    # A text file inline: base64 of size_mb * 3/4 MB of text.
    text = (b"All work and no play makes Jack a dull boy. " * (size_mb * 3 * 2**20 // 4 // 44 + 1))
    data = base64.b64encode(text[: size_mb * 3 * 2**20 // 4]).decode()
    return json.dumps({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "text/plain", "data": data}}, {"text": "Summarise it."}]}]}).encode()


def wave(base_url: str, key: str, pid: int, body: bytes, clients: int) -> tuple[float, float, Counter]:
    sampler = Sampler(pid)
    sampler.start()

    def send(_: int) -> int:
        return httpx.post(base_url + GENERATE, content=body, timeout=600,
                          headers={"x-goog-api-key": key, "Content-Type": "application/json"}).status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = Counter(pool.map(send, range(clients)))
    peak = sampler.stop()
    time.sleep(2)  # let the allocator hand memory back before reading "after"
    return peak, rss_mb(pid), codes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-mb", type=int, default=1024)
    parser.add_argument("--reference-mb", type=int, default=65536)
    args = parser.parse_args()
    bodies = {"12 x 7000x7000 PNG": (png_body(), 12), "6 x 90 MB body": (large_body(), 6)}
    print(f"bodies: PNG request {len(bodies['12 x 7000x7000 PNG'][0]) / 1e3:.0f} KB, "
          f"large request {len(bodies['6 x 90 MB body'][0]) / 2**20:.0f} MB")
    print("| budget | wave | RSS at rest (MB) | peak (MB) | peak - rest | after (MB) | answers |")
    print("|---|---|---|---|---|---|---|")
    for budget in (args.budget_mb, args.reference_mb):
        with tempfile.TemporaryDirectory() as tmp:
            config = f"[limits]\nmemory_budget_mb = {budget}\nadmission_wait_seconds = 30\n"
            with start_server(Path(tmp) / "data", config=config) as srv:
                pid = srv.process.pid
                time.sleep(1)
                for name, (body, clients) in bodies.items():
                    rest = rss_mb(pid)
                    peak, after, codes = wave(srv.base_url, srv.api_key, pid, body, clients)
                    answers = ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()))
                    print(f"| {budget} MB | {name} | {rest:.0f} | {peak:.0f} | {peak - rest:.0f} | {after:.0f} | "
                          f"{answers} |", flush=True)
    print(f"\ncommand: {' '.join(sys.argv)} (python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
