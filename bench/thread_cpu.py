#!/usr/bin/env python
"""Where a server's CPU goes, thread by thread, while it streams bursts of tokens (a diagnostic for issue 14).

    .venv/bin/python bench/thread_cpu.py pollux      # `pollux serve` with the transformers engine
    .venv/bin/python bench/thread_cpu.py peer        # `transformers serve --continuous-batching`

The server runs alone on CPU 0 with one torch thread, on the 27.4M-parameter random Llama of tests/tiny_models.py
(`build_small_llama`); this client runs on CPU 1. After a warm-up burst, --rounds bursts of 16 streaming requests of
64 greedy tokens (`--tokens`: 1 shows what a request costs beside its tokens) ("Request <i>: tell me a story about the
sea.", the prompts of bench/hf_bench.py: Pollux's native `streamGenerateContent?alt=sse`, the peer's `/v1/chat/completions` with enable_thinking false). Printed: wall time,
tokens/s, and each thread's CPU time over the bursts (from /proc/<pid>/task/<tid>/stat) per generated token; the
main thread is the event loop (HTTP, SSE, each request's events), the busiest other thread the continuous-batching
loop (forward passes, and in Pollux each sequence's choice of token). Run the targets alternately: this machine's
speed drifts by several per cent between consecutive runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tiny_models  # noqa: E402

PROMPT = "Request {i}: tell me a story about the sea."
REQUESTS, TOKENS = 16, 64


def start(target: str, model: Path, work: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = work / f"{target}.log"
    if target == "pollux":
        config = work / "pollux.toml"
        config.write_text(f'[models."gemini-2.0-flash"]\nengine = "transformers"\n'
                          f'engine_options = {{ source = "{model}", threads = 1 }}\n')
        argv = [sys.executable, "-m", "pollux.cli", "serve", "--port", "18290", "--data-dir", str(work / "data"),
                "--config", str(config), "--log-level", "warning"]
        base, ready = "http://127.0.0.1:18290", "/healthz"
    else:
        argv = [str(Path(sys.executable).with_name("transformers")), "serve", str(model), "--host", "127.0.0.1",
                "--port", "18291", "--device", "cpu", "--log-level", "warning", "--continuous-batching"]
        base, ready = "http://127.0.0.1:18291", "/v1/models"
    with open(log, "w") as out:
        proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT)
    headers: dict[str, str] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if target == "pollux" and not headers:
            found = re.search(r"export GEMINI_API_KEY=(\S+)", log.read_text())
            if found:
                headers = {"x-goog-api-key": found.group(1)}
        try:
            if (target != "pollux" or headers) and httpx.get(base + ready, headers=headers).status_code == 200:
                return proc, base, headers
        except httpx.HTTPError:
            pass
    proc.kill()
    raise RuntimeError(f"{target} did not start:\n{log.read_text()[-2000:]}")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`, the main thread named `main`."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        fields = stat[stat.rindex(")") + 2:].split()
        out["main" if tid == str(pid) else tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def one(http: httpx.AsyncClient, target: str, base: str, headers: dict[str, str], model: Path, i: int) -> None:
    if target == "pollux":
        url = f"{base}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": PROMPT.format(i=i)}]}],
                "generationConfig": {"maxOutputTokens": TOKENS, "temperature": 0}}
    else:
        url = f"{base}/v1/chat/completions"
        body = {"model": str(model), "messages": [{"role": "user", "content": PROMPT.format(i=i)}], "stream": True,
                "max_tokens": TOKENS, "temperature": 0, "chat_template_kwargs": {"enable_thinking": False}}
    async with http.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        async for _ in r.aiter_lines():
            pass


async def measure(target: str, proc: subprocess.Popen, base: str, headers: dict[str, str], model: Path,
                  rounds: int) -> None:
    os.sched_setaffinity(0, {1})
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as http:
        burst = lambda: asyncio.gather(*(one(http, target, base, headers, model, i) for i in range(REQUESTS)))  # noqa: E731
        await burst()  # warm-up
        before, start = thread_cpu(proc.pid), time.perf_counter()
        for _ in range(rounds):
            await burst()
        wall, after = time.perf_counter() - start, thread_cpu(proc.pid)
    tokens = rounds * REQUESTS * TOKENS
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    print(f"{target}: {tokens} tokens in {wall:.2f} s = {tokens / wall:.0f} tok/s; server CPU "
          f"{sum(used.values()):.2f} s = {sum(used.values()) / tokens * 1e6:.0f} µs/token")
    for tid, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        if cpu >= 0.01:
            print(f"   {'event loop (main)' if tid == 'main' else 'thread ' + tid:20} {cpu:6.2f} s "
                  f"{cpu / tokens * 1e6:6.0f} µs/token")


def main() -> None:
    global TOKENS
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=["pollux", "peer"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=TOKENS,
                    help="tokens per request (1: what a request costs beside its tokens)")
    args = ap.parse_args()
    TOKENS = args.tokens
    model = tiny_models.build_small_llama(tiny_models.models_root())
    work = Path(tempfile.mkdtemp(prefix="thread-cpu-"))
    proc, base, headers = start(args.target, model, work)
    try:
        asyncio.run(measure(args.target, proc, base, headers, model, args.rounds))
    finally:
        proc.kill()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
