#!/usr/bin/env python
"""Benchmark of the transformers engine (issue 3) against `transformers serve`, in one run.

    .venv/bin/python bench/hf_bench.py                 # the table of BENCHMARKS.md, raw output in bench/results/
    .venv/bin/python bench/hf_bench.py --peer none     # Pollux only
    .venv/bin/python bench/hf_bench.py --phases poisson,concurrent --peer cb
    bench/hf_run.sh                                    # the same, with the repository's venv

The model is the ~27M-parameter random Llama of `tests/tiny_models.py` (`build_small_llama`, built offline into the
test-model cache). Every request is a one-turn chat, "Request <i>: tell me a story about the sea." (i from
PROMPT_INDICES, in turn, starting again from the first when a phase has more requests than there are indices),
answered greedily (temperature 0) with at most 64 new tokens (--tokens). Both servers render the same 28-token
prompt (the chat template with enable_thinking false, as Pollux does for a model without thinking) and so compute the
same answers, which the script checks; the random model does not reach its end-of-turn token on these prompts, so
each answer is 64 tokens, as the servers' own token counts show.

Targets, one at a time, each pinned with `taskset` to the same core(s) and given the same number of torch threads
(the engine's `threads` option for Pollux, OMP_NUM_THREADS for `transformers serve`, which does not set it itself);
the client (this script, asyncio + httpx) is pinned to another core:

- pollux: `pollux serve` with the model as `gemini-2.0-flash`, engine_options `source`, `threads` and
  `max_batch_size` (--max-batch-size, default: the engine's own) and nothing else, plus what a --pollux-variant adds;
  streaming `:streamGenerateContent?alt=sse`; also with `responseMimeType: application/json` and a
  `responseJsonSchema`.
- transformers-serve: `transformers serve <model dir>` (sequential `model.generate`, its default) and
  `transformers serve --continuous-batching <model dir>` (paged attention), streaming `/v1/chat/completions`.

Phases (--phases, a comma list of concurrent, sequential, poisson, constrained; default all), each repeated --repeats
times in turn (A B C A B C ...) so that a noisy spell hits all of them:

- concurrent: N (--requests, 16) requests sent at once; throughput = all generated tokens / (last end - first start).
- sequential: the same N one after another; throughput = all generated tokens / total time.
- poisson: --poisson-requests (32) requests sent at Poisson arrivals: exponential gaps with mean --poisson-gap-ms
  (120 ms) drawn from random.Random(--poisson-seed), the first at the phase start; the same schedule for every target
  and every repeat. Each request is launched at its offset from the phase start (not after the previous one ends).
  Throughput = all generated tokens / (last end - first start); TTFT p50, p90 and max over all requests of all repeats.
- constrained (pollux only): a twin, with the JSON schema, of each of the phases above that runs; the concurrent and
  poisson twins batch constrained requests together, the sequential one is batch 1. Each constrained phase runs next
  to its unconstrained twin, the two in alternating order. For poisson, the report gives the decode ms/token of the
  constrained twin over the unconstrained one: the cost of constrained decoding in the shared batch.
  --no-constrained and --no-sequential drop those phases from --phases.

TTFT: time from sending a request to the first SSE event that carries text. Throughput figures are the median over
repeats; TTFT percentiles are over all requests of all repeats of a phase. "decode ms/token" is, per request, the time
from its first to its last token over the tokens in between (the step time of the batch it ran in), median over
requests. Pollux runs with --log-level debug so that the largest batch its engine formed can be reported (the
largest N of its "shared batch: N sequences" lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402 - after the sys.path line, as tiny_models must be
import jsonschema  # noqa: E402
import tiny_models  # noqa: E402

MODEL_ID = "gemini-2.0-flash"
PROMPT = "Request {i}: tell me a story about the sea."
# The prompts used: those whose greedy answer (64 tokens) is printable text from its first token on. The random model
# answers some other indices with lone bytes of multi-byte characters, which both servers rightly hold back until the
# character is whole: their first text event comes tens of tokens late and TTFT would measure the text, not the server.
PROMPT_INDICES = [0, 1, 2, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 26, 28, 29, 30, 31, 32]
# Up to 14 strings of up to 4 characters: on these prompts the grammar completes after 52-60 tokens, inside the
# 64-token limit, so every answer is a whole (valid) document.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 14}},
    "required": ["words"], "additionalProperties": False,
}


# --------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Request:
    index: int                 # the request's number in its phase
    start: float
    prompt: int = 0            # the i of its "Request <i>: ..." prompt
    scheduled: float | None = None  # poisson: its send time from the phase start (s)
    ttft: float | None = None
    end: float = 0.0
    last: float = 0.0          # when its last text arrived (perf_counter)
    tokens: int = 0            # as the server counts them (candidatesTokenCount / usage.completion_tokens)
    prompt_tokens: int = 0     # as the server reports them (promptTokenCount / usage.prompt_tokens)
    events: int = 0            # SSE events with text
    text: str = ""
    finish: str | None = None
    error: str | None = None


@dataclass
class Phase:
    target: str
    name: str
    repeat: int
    wall: float
    requests: list[Request]
    server_cpu_s: float
    other_busy_pct: float
    batch_max: int | None = None  # largest N of "shared batch: N sequences" log lines

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


# --------------------------------------------------------------------------------------------------------------------
# Processes and CPU accounting


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_busy_s(cpus: list[int]) -> float:
    """Busy CPU seconds of the given cores (user, nice, system, irq, softirq, steal) from /proc/stat."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in vals]
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cpus: list[int],
                 health_url: str) -> None:
        self.name, self.cpus, self.health_url, self.log_path = name, cpus, health_url, log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
        self.proc = subprocess.Popen(pin + argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {self.health_url} in {timeout} s:\n{self.log_path.read_text()}")

    def text(self, offset: int = 0) -> str:
        """The server's output, from byte `offset` on."""
        self.log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------------------------------
# Clients: one streaming request each


async def pollux_stream(http: httpx.AsyncClient, base: str, key: str, i: int, tokens: int,
                        schema: dict[str, Any] | None) -> Request:
    config: dict[str, Any] = {"maxOutputTokens": tokens, "temperature": 0}
    if schema is not None:
        config |= {"responseMimeType": "application/json", "responseJsonSchema": schema}
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT.format(i=prompt_index(i))}]}],
            "generationConfig": config}
    url = f"{base}/v1beta/models/{MODEL_ID}:streamGenerateContent?alt=sse"
    req = Request(i, time.perf_counter(), prompt_index(i))
    texts = []
    try:
        async with http.stream("POST", url, json=body, headers={"x-goog-api-key": key}) as r:
            if r.status_code != 200:
                req.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
                return req
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[6:])
                cand = (chunk.get("candidates") or [{}])[0]
                text = "".join(p.get("text", "") for p in cand.get("content", {}).get("parts", []))
                if text:
                    if req.ttft is None:
                        req.ttft = time.perf_counter() - req.start
                    req.events += 1
                    req.last = time.perf_counter()
                    texts.append(text)
                if cand.get("finishReason"):
                    req.finish = cand["finishReason"]
                usage = chunk.get("usageMetadata") or {}
                if "candidatesTokenCount" in usage:
                    req.tokens = usage["candidatesTokenCount"]
                    req.prompt_tokens = usage.get("promptTokenCount", 0)
                if "error" in chunk:
                    req.error = json.dumps(chunk["error"])[:300]
    except httpx.HTTPError as exc:
        req.error = f"{type(exc).__name__}: {exc}"
    req.end = time.perf_counter()
    req.text = "".join(texts)
    return req


async def openai_stream(http: httpx.AsyncClient, base: str, model: str, i: int, tokens: int) -> Request:
    # enable_thinking false: the prompt Pollux renders for a model without thinking (the template then pre-fills an
    # empty think block), so that both servers decode the same 28-token prompts.
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT.format(i=prompt_index(i))}],
            "stream": True, "max_tokens": tokens, "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False}}
    req = Request(i, time.perf_counter(), prompt_index(i))
    texts = []
    try:
        async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                req.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
                return req
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    req.error = str(chunk["error"])[:300]
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        if req.ttft is None:
                            req.ttft = time.perf_counter() - req.start
                        req.events += 1
                        req.last = time.perf_counter()
                        texts.append(text)
                    if choice.get("finish_reason"):
                        req.finish = choice["finish_reason"]
                if chunk.get("usage"):
                    req.tokens = chunk["usage"].get("completion_tokens", 0)
                    req.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
    except httpx.HTTPError as exc:
        req.error = f"{type(exc).__name__}: {exc}"
    req.end = time.perf_counter()
    req.text = "".join(texts)
    return req


def prompt_index(i: int) -> int:
    """The i of the prompt of request number i of a phase: PROMPT_INDICES in turn, again from the start past its end."""
    return PROMPT_INDICES[i % len(PROMPT_INDICES)]


def poisson_schedule(n: int, gap_ms: float, seed: int) -> list[float]:
    """Send times (s from the phase start) of n requests at Poisson arrivals: the first at 0, then exponential gaps
    with mean gap_ms, from random.Random(seed), so that every target (and every repeat) gets the same schedule."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for k in range(n):
        if k:
            t += rng.expovariate(1000 / gap_ms)
        times.append(t)
    return times


SHARED_BATCH = re.compile(r"shared batch: (\d+) sequences?")


async def run_phase(target: str, name: str, repeat: int, one, n: int, mode: str, server: Server,
                    batch_log: bool = False, schedule: list[float] | None = None) -> Phase:
    """One phase: n requests `one(i)`, all at once (mode concurrent), one after another (sequential) or each at its
    send time in `schedule` (poisson)."""
    log_offset = server.log_size() if batch_log else 0
    cpu0, busy0 = proc_cpu_s(server.pid), cores_busy_s(server.cpus)
    start = time.perf_counter()
    if mode == "concurrent":
        requests = list(await asyncio.gather(*(one(i) for i in range(n))))
    elif mode == "sequential":
        requests = [await one(i) for i in range(n)]
    elif mode == "poisson":
        assert schedule is not None and len(schedule) >= n

        async def at(i: int) -> Request:
            delay = start + schedule[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            req = await one(i)
            req.scheduled = schedule[i]
            return req

        requests = list(await asyncio.gather(*(at(i) for i in range(n))))
    else:
        raise ValueError(f"unknown phase mode {mode!r}")
    end = time.perf_counter()
    wall = end - start
    if mode == "poisson":  # from the first send to the last answer's end
        wall = max(r.end or end for r in requests) - min(r.start for r in requests)
    cpu = proc_cpu_s(server.pid) - cpu0
    busy = cores_busy_s(server.cpus) - busy0
    other = max(0.0, busy - cpu) / ((end - start) * max(1, len(server.cpus))) * 100 if server.cpus else float("nan")
    batch_max = None
    if batch_log:
        await asyncio.sleep(0.05)
        batch_max = max((int(m) for m in SHARED_BATCH.findall(server.text(log_offset))), default=None)
    phase = Phase(target, name, repeat, wall, requests, cpu, other, batch_max)
    errors = [r.error for r in requests if r.error]
    tok = [r.tokens for r in requests]
    batch_note = f"  shared batch max {batch_max}" if batch_max is not None else ""
    print(f"  {target:28} {name:22} #{repeat}: {phase.tok_s:7.1f} tok/s  wall {wall:6.2f} s  "
          f"ttft p50 {p50([r.ttft for r in requests]) * 1000:7.1f} ms  tokens {min(tok)}-{max(tok)}"
          + batch_note + (f"  ERRORS {errors[:2]}" if errors else ""),
          file=sys.stderr, flush=True)
    return phase


def percentile(values: list[float | None], q: float) -> float:
    """The q-quantile (0..1) of the values that are not None, interpolated linearly between the closest ranks."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return float("nan")
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def p50(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


# --------------------------------------------------------------------------------------------------------------------
# Targets


PHASES = ("concurrent", "sequential", "poisson", "constrained")


def base_modes(args) -> list[str]:
    """The unconstrained phases to run, in the order they run within a repeat."""
    return [m for m in ("concurrent", "sequential", "poisson") if m in args.phases]


def phase_requests(args, mode: str) -> int:
    return args.poisson_requests if mode == "poisson" else args.requests


def client_limits(args) -> httpx.Limits:
    n = 2 * max(args.requests, args.poisson_requests if "poisson" in args.phases else 0)
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


def server_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                  "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                  "TOKENIZERS_PARALLELISM": "false"}


async def bench_pollux(args, variant: str, target: str, model_dir: Path, out: Path,
                       phases: list[Phase]) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="pollux-hf-bench-"))
    slug = re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")
    config = out / (f"pollux-{slug}.toml" if slug else "pollux.toml")
    # Only options that both the batch-gathering engine and the continuous-batching one take; a variant adds others.
    options = f"threads = {args.threads}"
    options += f", max_batch_size = {args.max_batch_size}" if args.max_batch_size else ""
    options += f", {variant}" if variant else ""
    config.write_text(f'[models."{MODEL_ID}"]\nengine = "transformers"\nengine_options = {{ source = "{model_dir}", '
                      f'{options} }}\n')
    base = f"http://127.0.0.1:{args.pollux_port}"
    server = Server(target, [sys.executable, "-m", "pollux.cli", "serve", "--port", str(args.pollux_port),
                             "--data-dir", str(data), "--config", str(config), "--log-level", "debug"],
                    server_env(args.threads), config.with_suffix(".log"), args.server_cpus, f"{base}/healthz")
    info: dict[str, Any] = {"argv": f"pollux serve --config {config.name} --log-level debug "
                                    f"(engine_options: source = <model dir>, {options})"}
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        info["startup_s"] = time.perf_counter() - t0
        match = re.search(r"export GEMINI_API_KEY=(\S+)", server.text())
        if not match:
            raise RuntimeError(f"no 'export GEMINI_API_KEY=' in pollux's output:\n{server.text()}")
        key = match.group(1)
        async with httpx.AsyncClient(timeout=600, limits=client_limits(args)) as http:
            def plain(i: int):
                return pollux_stream(http, base, key, i, args.tokens, None)

            def constrained(i: int):
                return pollux_stream(http, base, key, i, args.tokens, SCHEMA)

            # Warm-up, not reported: the first requests pay one-off costs (allocator, llguidance's tokenizer wrap).
            t0 = time.perf_counter()
            await constrained(0)
            info["first_constrained_request_s"] = time.perf_counter() - t0
            await asyncio.gather(*(plain(i) for i in range(args.requests)))
            if "constrained" in args.phases:
                await asyncio.gather(*(constrained(i) for i in range(args.requests)))
            # Each constrained phase next to its unconstrained twin, the order of the two swapped every repeat.
            for rep in range(args.repeats):
                for mode in base_modes(args):
                    kinds = [("", plain)] + ([("constrained ", constrained)] if "constrained" in args.phases else [])
                    for prefix, one in kinds if rep % 2 == 0 else kinds[::-1]:
                        phases.append(await run_phase(target, prefix + mode, rep, one, phase_requests(args, mode),
                                                      mode, server, True, args.poisson_schedule))
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return info


async def bench_peer(args, mode: str, model_dir: Path, out: Path, phases: list[Phase]) -> dict[str, Any]:
    target = "transformers serve" + (" --continuous-batching" if mode == "cb" else "")
    tserve = Path(sys.executable).with_name("transformers")
    argv = [str(tserve), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(args.peer_port),
            "--device", "cpu", "--log-level", "warning"] + (["--continuous-batching"] if mode == "cb" else [])
    base = f"http://127.0.0.1:{args.peer_port}"
    server = Server(f"transformers-serve-{mode}", argv, server_env(args.threads), out / f"tserve-{mode}.log",
                    args.server_cpus, f"{base}/health")
    info: dict[str, Any] = {"argv": " ".join(["transformers"] + argv[1:])}
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        info["startup_s"] = time.perf_counter() - t0
        async with httpx.AsyncClient(timeout=600, limits=client_limits(args)) as http:
            def one(i: int):
                return openai_stream(http, base, str(model_dir), i, args.tokens)

            warm = await one(0)
            if warm.error or not warm.tokens:
                info["error"] = warm.error or f"no tokens (finish {warm.finish})"
                print(f"  {target}: first request failed: {info['error']}", file=sys.stderr)
                info["log_tail"] = server.text()[-3000:]
                return info
            await asyncio.gather(*(one(i) for i in range(args.requests)))
            for rep in range(args.repeats):
                for mode in base_modes(args):
                    phases.append(await run_phase(target, mode, rep, one, phase_requests(args, mode), mode, server,
                                                  schedule=args.poisson_schedule))
    except RuntimeError as exc:
        info["error"] = str(exc)[-3000:]
        print(f"  {target}: {info['error']}", file=sys.stderr)
    finally:
        server.stop()
    return info


# --------------------------------------------------------------------------------------------------------------------
# Report


def model_params(model_dir: Path) -> int:
    from safetensors import safe_open
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                n = 1
                for d in st.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def summarize(phases: list[Phase], target: str, name: str) -> dict[str, Any] | None:
    ps = [p for p in phases if p.target == target and p.name == name]
    if not ps:
        return None
    reqs = [r for p in ps for r in p.requests]
    steps = [max(r.tokens for r in p.requests) for p in ps]
    starts = [min(r.start for r in p.requests) for p in ps]  # poisson: the phase start (the first send is at 0)
    return {
        "tok_s": statistics.median(p.tok_s for p in ps),
        "tok_s_all": [round(p.tok_s, 1) for p in ps],
        "wall_s": statistics.median(p.wall for p in ps),
        "ms_per_token": statistics.median(1000 * p.wall / max(1, p.tokens) for p in ps),
        # per decode step of the batch: the batch runs until its longest sequence is done
        "ms_per_step": statistics.median(1000 * p.wall / max(1, s) for p, s in zip(ps, steps, strict=True)),
        # per request, the time between its first and last token over the tokens in between: the decode step time of
        # the batch it ran in, without the wait for a batch and the prefill
        "decode_ms_per_token": 1000 * p50([(r.end - r.start - r.ttft) / (r.tokens - 1) for r in reqs
                                           if r.ttft is not None and r.tokens > 1]),
        "ttft_p50_ms": 1000 * p50([r.ttft for r in reqs]),
        "ttft_p90_ms": 1000 * percentile([r.ttft for r in reqs], 0.9),
        "ttft_max_ms": 1000 * max((r.ttft or 0) for r in reqs),
        "ttft_missing": sum(r.ttft is None for r in reqs),
        "requests": len(ps[0].requests),
        "tokens_min": min(r.tokens for r in reqs), "tokens_max": max(r.tokens for r in reqs),
        "tokens_mean": statistics.mean(r.tokens for r in reqs),
        "finish": sorted({str(r.finish) for r in reqs}),
        "errors": [r.error for r in reqs if r.error],
        "server_cpu_s": statistics.median(p.server_cpu_s for p in ps),
        "other_busy_pct": max(p.other_busy_pct for p in ps),
        "shared_batch_max": [p.batch_max for p in ps if p.batch_max is not None],
        "batch_max": max((p.batch_max for p in ps if p.batch_max is not None), default=None),
        # poisson: how late the client sent a request after its scheduled time (its own scheduling, not the server)
        "send_lag_max_ms": (1000 * max(r.start - start - r.scheduled for p, start in zip(ps, starts, strict=True)
                                       for r in p.requests) if all(r.scheduled is not None for r in reqs) else None),
        "repeats": len(ps),
    }


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "" if v is None or math.isnan(v) else format(v, spec)


def _tokens(x: dict[str, Any]) -> str:
    return (f"{x['tokens_min']}" if x["tokens_min"] == x["tokens_max"]
            else f"{x['tokens_min']}–{x['tokens_max']} (mean {x['tokens_mean']:.1f})")


def _batches(x: dict[str, Any]) -> str:
    """What the engine's debug log said about the batches of a phase, per repeat; '' when it said nothing."""
    return f"largest shared batch per repeat: {x['shared_batch_max']}" if x["shared_batch_max"] else ""


def report(args, meta: dict[str, Any], phases: list[Phase], infos: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    names = ("concurrent", "sequential", "constrained concurrent", "constrained sequential")
    poisson_names = ("poisson", "constrained poisson")
    targets = list(dict.fromkeys([*infos, *(p.target for p in phases)]))
    s = {t: {n: summarize(phases, t, n) for n in names + poisson_names} for t in targets}
    for t in targets:  # the cost of constrained decoding in the shared batch, as read from the per-token decode time
        pu, pc_ = s[t]["poisson"], s[t]["constrained poisson"]
        if pu and pc_ and pu["decode_ms_per_token"]:
            pc_["decode_ratio_vs_unconstrained"] = pc_["decode_ms_per_token"] / pu["decode_ms_per_token"]
    out: list[str] = []
    lines = [("| target | phase | tok/s | ms/token | decode ms/token | TTFT p50 ms | TTFT max ms | tokens/request | "
              "finish | concurrent ÷ sequential | server CPU s | other load |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for t in targets:
        seq = s[t]["sequential"]
        for n in names:
            x = s[t][n]
            if x is None:
                continue
            ratio = ""
            if n == "concurrent" and seq:
                ratio = f"{x['tok_s'] / seq['tok_s']:.2f}×"
            lines.append(f"| {t} | {n} ({args.requests} × {args.tokens}) | {fmt(x['tok_s'])} | "
                         f"{fmt(x['ms_per_token'], '.2f')} | {fmt(x['decode_ms_per_token'], '.1f')} | "
                         f"{fmt(x['ttft_p50_ms'], '.0f')} | "
                         f"{fmt(x['ttft_max_ms'], '.0f')} | {_tokens(x)} | {', '.join(x['finish'])} | {ratio} | "
                         f"{fmt(x['server_cpu_s'], '.1f')} | {fmt(x['other_busy_pct'])} % |")
        if infos.get(t, {}).get("error"):
            lines.append(f"| {t} | failed: {infos[t]['error'].strip().splitlines()[-1][:200]} | | | | | | | | | | |")
    if len(lines) > 2:
        out += ["\n".join(lines), ""]

    if "poisson" in args.phases:
        sched = args.poisson_schedule
        plines = [f"Poisson arrivals: {args.poisson_requests} streaming requests × {args.tokens} tokens, exponential "
                  f"gaps with mean {args.poisson_gap_ms:g} ms (seed {args.poisson_seed}; the last sent at "
                  f"{1000 * sched[-1]:.0f} ms), the same schedule for every target and repeat. tok/s = all generated "
                  f"tokens / (last end - first start), median over repeats; TTFT over all requests of all repeats.",
                  "",
                  "| target | phase | tok/s | TTFT p50 ms | TTFT p90 ms | TTFT max ms | decode ms/token | "
                  "constrained ÷ unconstrained decode | tokens/request | finish | max batch | server CPU s | "
                  "other load |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for t in targets:
            for n in poisson_names:
                x = s[t][n]
                if x is None:
                    continue
                ratio = x.get("decode_ratio_vs_unconstrained")
                plines.append(
                    f"| {t} | {n} ({x['requests']} × {args.tokens}) | {fmt(x['tok_s'])} | "
                    f"{fmt(x['ttft_p50_ms'])} | {fmt(x['ttft_p90_ms'])} | {fmt(x['ttft_max_ms'])} | "
                    f"{fmt(x['decode_ms_per_token'], '.1f')} | {fmt(ratio, '.2f') + '×' if ratio else ''} | "
                    f"{_tokens(x)} | {', '.join(x['finish'])} | "
                    f"{x['batch_max'] if x['batch_max'] is not None else ''} | "
                    f"{fmt(x['server_cpu_s'], '.1f')} | {fmt(x['other_busy_pct'])} % |")
            if infos.get(t, {}).get("error"):
                plines.append(f"| {t} | failed: {infos[t]['error'].strip().splitlines()[-1][:200]} "
                              f"| | | | | | | | | | | |")
        out += ["\n".join(plines), ""]

    verdicts = []
    main = "pollux" if "pollux" in s else next((t for t in targets if t.startswith("pollux")), None)
    pc = ps_ = cc = cs = pp = cp = None
    if main:
        pc, ps_ = s[main]["concurrent"], s[main]["sequential"]
        cc, cs = s[main]["constrained concurrent"], s[main]["constrained sequential"]
        pp, cp = s[main]["poisson"], s[main]["constrained poisson"]
    if pc and ps_:
        r = pc["tok_s"] / ps_["tok_s"]
        verdicts.append(f"- Batching: {args.requests} concurrent = {r:.2f}× the same {args.requests} one after another "
                        f"({pc['tok_s']:.0f} vs {ps_['tok_s']:.0f} tok/s; goal ≥ 5×): "
                        f"**{'MET' if r >= 5 else 'NOT MET'}**." + (f" {_batches(pc).capitalize()}." if _batches(pc)
                                                                    else ""))
        verdicts.append(f"- TTFT p50 at {args.requests} concurrent: {pc['ttft_p50_ms']:.0f} ms "
                        f"(max {pc['ttft_max_ms']:.0f} ms); one at a time: {ps_['ttft_p50_ms']:.0f} ms.")
    elif pc and _batches(pc):
        verdicts.append(f"- {args.requests} concurrent: {_batches(pc)}.")
    if pc and cc:
        o_tok = cc["ms_per_token"] / pc["ms_per_token"] - 1
        o_step = cc["ms_per_step"] / pc["ms_per_step"] - 1
        verdicts.append(
            f"- Constrained decoding, {args.requests} concurrent: {cc['ms_per_token']:.2f} vs {pc['ms_per_token']:.2f} "
            f"ms per generated token = {100 * o_tok:+.1f} % (goal ≤ 15 %): "
            f"**{'MET' if o_tok <= 0.15 else 'NOT MET'}**; "
            f"per decode step (wall ÷ longest answer) {cc['ms_per_step']:.1f} vs {pc['ms_per_step']:.1f} ms = "
            f"{100 * o_step:+.1f} %; decode time per token of a request (first to last token) "
            f"{cc['decode_ms_per_token']:.1f} vs {pc['decode_ms_per_token']:.1f} ms = "
            f"{100 * (cc['decode_ms_per_token'] / pc['decode_ms_per_token'] - 1):+.1f} %."
            + (f" {_batches(cc).capitalize()}." if _batches(cc) else ""))
    if ps_ and cs:
        o = cs["ms_per_token"] / ps_["ms_per_token"] - 1
        o_dec = cs["decode_ms_per_token"] / ps_["decode_ms_per_token"] - 1
        verdicts.append(f"- Constrained decoding, one at a time (batch of 1): {cs['ms_per_token']:.2f} vs "
                        f"{ps_['ms_per_token']:.2f} ms per generated token = {100 * o:+.1f} %; decode time per token "
                        f"{cs['decode_ms_per_token']:.1f} vs {ps_['decode_ms_per_token']:.1f} ms = "
                        f"{100 * o_dec:+.1f} %.")
    if pp and cp and cp.get("decode_ratio_vs_unconstrained"):
        ratio = cp["decode_ratio_vs_unconstrained"]
        verdicts.append(
            f"- Constrained decoding in the shared batch (Poisson arrivals, {args.poisson_requests} requests): decode "
            f"time per token of a request {cp['decode_ms_per_token']:.1f} vs {pp['decode_ms_per_token']:.1f} ms = "
            f"{ratio:.2f}× ({100 * (ratio - 1):+.1f} %); throughput {cp['tok_s']:.0f} vs {pp['tok_s']:.0f} tok/s; "
            f"TTFT p50 {cp['ttft_p50_ms']:.0f} vs {pp['ttft_p50_ms']:.0f} ms, p90 {cp['ttft_p90_ms']:.0f} vs "
            f"{pp['ttft_p90_ms']:.0f} ms.")
    if pp:
        lag = max(x["send_lag_max_ms"] or 0 for t in targets for x in [s[t]["poisson"], s[t]["constrained poisson"]]
                  if x)
        verdicts.append(f"- Poisson arrivals, Pollux: {pp['tok_s']:.0f} tok/s, TTFT p50 {pp['ttft_p50_ms']:.0f} ms, "
                        f"p90 {pp['ttft_p90_ms']:.0f} ms, max {pp['ttft_max_ms']:.0f} ms"
                        + (f"; largest batch the engine formed: {pp['batch_max']}" if pp["batch_max"] else "")
                        + f". The client sent every request within {lag:.0f} ms of its scheduled time.")
    if cc or cs or cp:
        verdicts.append(f"- Constrained outputs valid against the schema: {meta.get('constrained_valid')} "
                        f"(json.loads + jsonschema.validate).")
    for t in targets:
        tc = s[t]["concurrent"]
        if t.startswith("transformers") and pc and tc:
            verdicts.append(f"- vs `{t}`: Pollux has {pc['tok_s'] / tc['tok_s']:.2f}× its concurrent throughput "
                            f"({pc['tok_s']:.0f} vs {tc['tok_s']:.0f} tok/s), TTFT p50 {pc['ttft_p50_ms']:.0f} vs "
                            f"{tc['ttft_p50_ms']:.0f} ms.")
        tp = s[t]["poisson"]
        if t.startswith("transformers") and pp and tp:
            verdicts.append(f"- vs `{t}`, Poisson arrivals: Pollux has {pp['tok_s'] / tp['tok_s']:.2f}× its throughput "
                            f"({pp['tok_s']:.0f} vs {tp['tok_s']:.0f} tok/s), TTFT p50 {pp['ttft_p50_ms']:.0f} vs "
                            f"{tp['ttft_p50_ms']:.0f} ms, p90 {pp['ttft_p90_ms']:.0f} vs {tp['ttft_p90_ms']:.0f} ms.")
    return "\n".join(out) + "\n" + "\n".join(verdicts) + "\n", s


# --------------------------------------------------------------------------------------------------------------------


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=16, help="requests of the concurrent and sequential phases")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per request (maxOutputTokens / max_tokens)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    ap.add_argument("--server-cpus", default="0", help="cores the servers are pinned to ('' for none)")
    ap.add_argument("--client-cpu", default="1", help="core this client is pinned to ('' for none)")
    ap.add_argument("--peer", choices=["both", "plain", "cb", "none"], default="both")
    ap.add_argument("--pollux-variant", action="append", default=None, metavar="OPTIONS",
                    help="extra engine_options of a Pollux run, e.g. 'max_batch_tokens = 2048' (repeatable; '' is the "
                         "default configuration: source, threads, max_batch_size only; default: one run with '')")
    ap.add_argument("--max-batch-size", type=int, default=None,
                    help="Pollux's max_batch_size engine option (default: the engine's own)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma list of the phases to run, of {', '.join(PHASES)} (default: all); constrained adds "
                         f"the constrained twins (Pollux only) of the others that run")
    ap.add_argument("--poisson-requests", type=int, default=32, help="requests of the poisson phase")
    ap.add_argument("--poisson-gap-ms", type=float, default=120.0,
                    help="mean of the exponential gaps between the poisson phase's send times")
    ap.add_argument("--poisson-seed", type=int, default=0, help="seed of the poisson phase's send times")
    ap.add_argument("--no-constrained", dest="constrained", action="store_false",
                    help="skip the constrained phases (drops constrained from --phases)")
    ap.add_argument("--no-sequential", dest="sequential", action="store_false",
                    help="skip the one-after-another phases (drops sequential from --phases; no concurrent ÷ "
                         "sequential ratio then)")
    ap.add_argument("--peer-first", action="store_true", help="run the peer(s) before Pollux")
    ap.add_argument("--pollux-port", type=int, default=18190)
    ap.add_argument("--peer-port", type=int, default=18191)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.requests > len(PROMPT_INDICES):
        ap.error(f"at most {len(PROMPT_INDICES)} requests (PROMPT_INDICES)")
    phases_asked = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = [x for x in phases_asked if x not in PHASES]
    if unknown:
        ap.error(f"unknown phase(s) {unknown}: --phases takes a comma list of {', '.join(PHASES)}")
    dropped = {name for name, keep in (("constrained", args.constrained), ("sequential", args.sequential)) if not keep}
    args.phases = [x for x in PHASES if x in phases_asked and x not in dropped]
    if not base_modes(args):
        ap.error("no phase to run: --phases needs at least one of concurrent, sequential, poisson")
    if args.poisson_requests < 1 or args.poisson_gap_ms < 0:
        ap.error("--poisson-requests must be at least 1 and --poisson-gap-ms not negative")
    args.poisson_schedule = poisson_schedule(args.poisson_requests, args.poisson_gap_ms, args.poisson_seed)
    args.server_cpus = [int(c) for c in args.server_cpus.split(",") if c.strip()]
    if args.client_cpu.strip():
        os.sched_setaffinity(0, {int(args.client_cpu)})
    out = args.out or ROOT / "bench" / "results" / ("hf-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    out.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    model_dir = tiny_models.build_small_llama(tiny_models.models_root())
    import importlib.metadata as md
    versions = {p: md.version(p) for p in ("torch", "transformers", "llguidance", "httpx", "fastapi", "uvicorn",
                                           "openai") if _installed(p)}
    git = _git()
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": " ".join(sys.argv),
        "model": str(model_dir), "params": model_params(model_dir), "machine": f"{os.cpu_count()} cores, {cpu_model}",
        "load_before": Path("/proc/loadavg").read_text().split()[:3], "versions": versions, "git": git,
        "server_cpus": args.server_cpus, "client_cpu": args.client_cpu, "threads": args.threads,
        "requests": args.requests, "tokens": args.tokens, "repeats": args.repeats, "schema": SCHEMA,
        "phases": args.phases, "max_batch_size": args.max_batch_size,
    }
    if "poisson" in args.phases:
        meta["poisson"] = {"requests": args.poisson_requests, "gap_ms": args.poisson_gap_ms, "seed": args.poisson_seed,
                           "send_times_ms": [round(1000 * t, 1) for t in args.poisson_schedule]}
    print(f"model {model_dir} ({meta['params']:,} parameters); servers on CPU {args.server_cpus} with "
          f"{args.threads} torch thread(s), client on CPU {args.client_cpu}; load {meta['load_before']}",
          file=sys.stderr)

    phases: list[Phase] = []
    infos: dict[str, Any] = {}

    async def polluxes() -> None:
        for variant in args.pollux_variant or [""]:
            target = f"pollux ({variant})" if variant else "pollux"
            print(target, file=sys.stderr)
            infos[target] = await bench_pollux(args, variant, target, model_dir, out, phases)

    async def peers() -> None:
        if args.peer in ("both", "plain"):
            print("transformers serve", file=sys.stderr)
            infos["transformers serve"] = await bench_peer(args, "plain", model_dir, out, phases)
        if args.peer in ("both", "cb"):
            print("transformers serve --continuous-batching", file=sys.stderr)
            infos["transformers serve --continuous-batching"] = await bench_peer(args, "cb", model_dir, out, phases)

    # Targets run one after the other: --peer-first swaps the order, to see whether a drift of the machine's speed
    # during the run favours the one that comes second.
    for part in ((peers, polluxes) if args.peer_first else (polluxes, peers)):
        await part()
    if args.peer_first:  # Pollux's figures are the reference of the report: its entries first
        infos = {k: infos[k] for k in sorted(infos, key=lambda k: not k.startswith("pollux"))}

    invalid = []
    for p in phases:
        if p.name.startswith("constrained"):
            for r in p.requests:
                try:
                    jsonschema.validate(json.loads(r.text), SCHEMA)
                except (ValueError, jsonschema.ValidationError) as exc:
                    invalid.append(f"{p.name} #{p.repeat} request {r.index}: {str(exc)[:120]} ({r.text[:80]!r})")
    # Same work on every target: each unconstrained answer should be the text Pollux gives one at a time (for the
    # prompts the sequential phase has: a poisson phase with more requests than --requests has others too).
    reference = {r.prompt: r.text for p in phases if p.target == next(iter(infos)) and p.name == "sequential"
                 for r in p.requests}
    same: dict[str, str] = {}
    for t in dict.fromkeys(p.target for p in phases):
        reqs = [r for p in phases if p.target == t and p.name in ("concurrent", "sequential", "poisson")
                for r in p.requests if r.prompt in reference]
        same[t] = f"{sum(reference[r.prompt] == r.text for r in reqs)}/{len(reqs)}"
    meta["same_text_as_reference"] = same
    prompt_tokens = {t: sorted({r.prompt_tokens for p in phases if p.target == t for r in p.requests})
                     for t in dict.fromkeys(p.target for p in phases)}
    meta["prompt_tokens_reported"] = prompt_tokens
    n_constrained = sum(len(p.requests) for p in phases if p.name.startswith("constrained"))
    meta["constrained_valid"] = f"{n_constrained - len(invalid)}/{n_constrained}"
    meta["constrained_invalid"] = invalid
    meta["elapsed_s"] = time.perf_counter() - t_start
    meta["load_after"] = Path("/proc/loadavg").read_text().split()[:3]

    table, summary = report(args, meta, phases, infos)
    (out / "raw.json").write_text(json.dumps({"meta": meta, "infos": infos, "summary": summary,
                                              "phases": [asdict(p) for p in phases]}, indent=1, default=str))
    head = (f"date: {meta['date']}; model: {model_dir.name}, {meta['params']:,} parameters (float32); "
            + ", ".join(([f"{args.requests} requests per concurrent/sequential phase"]
                         if {"concurrent", "sequential"} & set(args.phases) else [])
                        + ([f"{args.poisson_requests} per poisson phase"] if "poisson" in args.phases else []))
            + f", × {args.tokens} tokens, greedy; {args.repeats} repeats; phases {', '.join(args.phases)}\n"
            f"machine: {meta['machine']}; load average before {' '.join(meta['load_before'])}, after "
            f"{' '.join(meta['load_after'])}\n"
            f"pinning: servers on CPU {','.join(map(str, args.server_cpus)) or 'any'} with {args.threads} torch "
            f"thread(s) each, client on CPU {args.client_cpu or 'any'}\n"
            f"versions: {', '.join(f'{k} {v}' for k, v in versions.items())}; code: {git}\n"
            + "".join(f"{t}: {i['argv']} (ready in {i.get('startup_s', float('nan')):.1f} s)\n"
                      for t, i in infos.items()))
    if any(p.name == "sequential" for p in phases):
        table += ("- Unconstrained answers identical to the reference (the first target, one at a time), per target: "
                  + ", ".join(f"{t} {v}" for t, v in meta["same_text_as_reference"].items()) + ".\n")
    table += ("- Prompt tokens as the servers report them: "
              + ", ".join(f"{t} {v}" for t, v in meta["prompt_tokens_reported"].items()) + ".\n")
    (out / "table.md").write_text(head + "\n" + table)
    print(head + "\n" + table)
    if invalid:
        print("invalid constrained outputs:\n  " + "\n  ".join(invalid[:10]), file=sys.stderr)
    print(f"raw results: {out} ({meta['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0


def _installed(name: str) -> bool:
    import importlib.metadata as md
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _git() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "pollux"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return f"commit {head}, {len(dirty.splitlines()) if dirty else 0} uncommitted change(s) under pollux/"
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
