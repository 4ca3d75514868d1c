"""Shared state under load: `--workers 2` against 1, Postgres against SQLite, and a 1 GiB upload to object storage.

    .venv/bin/python bench/state_bench.py                     # all phases
    .venv/bin/python bench/state_bench.py --phases throughput --duration 10 --rounds 2
    .venv/bin/python bench/state_bench.py --phases upload --upload-mib 1024

throughput: non-streaming generateContent on the emulator, loaded by wrk (bench/generate.lua) at c=8 and c=32, for
each of SQLite and Postgres (Debian's binaries, a durable server started here) with 1 and with 2 worker processes.
Nothing is pinned: the two workers need both cores, and wrk shares them (it is the same for every target). Each round
runs every target once, in order, so drift in the machine's speed falls on all of them alike.

upload: one resumable upload of --upload-mib MiB in 8 MiB chunks (as the SDKs send them), to S3 (moto's server, run
here) and, as the reference, to the local blob store; the server's RSS is sampled every 20 ms from /proc, and its
growth is the peak during the upload minus the RSS just before it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import free_port  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from s3_server import start_s3_server  # noqa: E402

GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"


class Pollux:
    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(dir=workdir))
        self.log = self.data.parent / f"{self.data.name}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pollux.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data),
                 "--log-level", "warning", *args], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self._wait(workers="--workers" in args)
        except BaseException:
            self.stop()
            raise

    def _wait(self, workers: bool) -> None:
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer:\n{self.log.read_text()}")
            time.sleep(0.2)
        time.sleep(3 if workers else 1)  # every worker up, not only the first to answer
        match = re.search(r"GEMINI_API_KEY=(\S+)", self.log.read_text())
        assert match, self.log.read_text()
        self.key = match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wrk(url: str, key: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                          str(ROOT / "bench" / "generate.lua"), url + GENERATE], capture_output=True, text=True,
                         env={**os.environ, "GEMINI_API_KEY": key}, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_RESULT"))
    result = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    if result["errors"] or result["non2xx"]:
        raise RuntimeError(out)
    return result


def throughput(args: argparse.Namespace, workdir: Path) -> None:
    pg = PostgresServer(free_port(), durable=True)
    try:
        targets = [(db, workers) for db in ("sqlite", "postgres") for workers in (1, 2)]
        results: dict[tuple[str, int, int], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            for db, workers in targets:
                # A fresh database each time (the first start creates the key the run uses).
                extra = ["--database-url", pg.database()] if db == "postgres" else []
                server = Pollux(workdir, *extra, *(["--workers", str(workers)] if workers > 1 else []))
                try:
                    wrk(server.url, server.key, 8, 3)  # warm-up, not reported
                    for c in (8, 32):
                        result = wrk(server.url, server.key, c, args.duration)
                        results.setdefault((db, workers, c), []).append(result)
                        print(f"round {round_ + 1} {db:8} workers={workers} c={c:2}: {result['rps']:8.1f} rps "
                              f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms", flush=True)
                finally:
                    server.stop()
    finally:
        pg.stop()
    print("\n| database | c | workers=1 rps | workers=2 rps | 2 vs 1 | p50 w=1 / w=2 (ms) | p99 w=1 / w=2 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms")} for k, v in results.items()}
    for db in ("sqlite", "postgres"):
        for c in (8, 32):
            one, two = med[(db, 1, c)], med[(db, 2, c)]
            print(f"| {db} | {c} | {one['rps']:.0f} | {two['rps']:.0f} | {two['rps'] / one['rps']:.2f}× | "
                  f"{one['p50_ms']:.2f} / {two['p50_ms']:.2f} | {one['p99_ms']:.2f} / {two['p99_ms']:.2f} |")
    print("\n| workers | c | Postgres rps / SQLite rps |")
    print("|---:|---:|---:|")
    for workers in (1, 2):
        for c in (8, 32):
            ratio = med[("postgres", workers, c)]["rps"] / med[("sqlite", workers, c)]["rps"]
            print(f"| {workers} | {c} | {ratio:.1%} |")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def upload_once(server: Pollux, mib: int) -> dict[str, float]:
    chunk = os.urandom(8 * 1024 * 1024)
    total = mib * 1024 * 1024
    r = httpx.post(f"{server.url}/upload/v1beta/files", timeout=60, json={"file": {"display_name": "big"}}, headers={
        "x-goog-api-key": server.key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(total), "X-Goog-Upload-Header-Content-Type": "text/plain"})
    url = r.headers["x-goog-upload-url"]
    before = rss_kib(server.process.pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(server.process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    with httpx.Client(timeout=600) as client:
        for offset in range(0, total, len(chunk)):
            last = offset + len(chunk) >= total
            r = client.post(url, content=chunk, headers={
                "X-Goog-Upload-Offset": str(offset),
                "X-Goog-Upload-Command": "upload, finalize" if last else "upload"})
            if r.status_code != 200:
                raise RuntimeError(r.text)
            if last:
                chunks_done = time.monotonic()
    stop.set()
    sampler.join()
    finished = time.monotonic()
    assert r.json()["file"]["sizeBytes"] == str(total), r.text
    return {"seconds": finished - started, "mib_s": mib / (finished - started), "rss_before_mib": before / 1024,
            "rss_growth_mib": (peak[0] - before) / 1024, "chunks_s": chunks_done - started}


def upload(args: argparse.Namespace, workdir: Path) -> None:
    s3 = start_s3_server(workdir / "s3.log")
    try:
        s3.create_bucket("bench")
        env = {"AWS_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1"}
        for name, extra in (("local directory", ()), ("S3 (moto)", ("--blob-url", "s3://bench/pollux"))):
            server = Pollux(workdir, *extra, env=env)
            try:
                result = upload_once(server, args.upload_mib)
            finally:
                server.stop()
            print(f"| {name} | {args.upload_mib} MiB | {result['seconds']:.1f} s | {result['mib_s']:.0f} MiB/s | "
                  f"{result['rss_before_mib']:.0f} MiB | +{result['rss_growth_mib']:.1f} MiB |", flush=True)
    finally:
        s3.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="throughput,upload")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--upload-mib", type=int, default=1024)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pollux-state-bench-", dir="/tmp"))
    phases = args.phases.split(",")
    if "throughput" in phases:
        throughput(args, workdir)
    if "upload" in phases:
        print("\n| blob store | upload | time (chunks + finalize) | throughput | server RSS before | RSS growth |")
        print("|---|---:|---:|---:|---:|---:|")
        upload(args, workdir)


if __name__ == "__main__":
    main()
