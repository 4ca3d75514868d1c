"""Batch Mode (issue 16): how long a large inline batch takes, what it does to online latency, and a batch against
the same requests sent online one at a time through a real upstream, in one run.

    .venv/bin/python bench/batch_bench.py                      # all phases (~5 min); raw JSON in bench/results/
    .venv/bin/python bench/batch_bench.py --phases inline --repeats 1
    .venv/bin/python bench/batch_bench.py --phases upstream --upstream fake --upstream-requests 200

Every phase drives a `pollux serve` process (one worker, SQLite and blobs in a fresh data dir, `--log-level
warning`, the default limits: batch_concurrency 4, batch_inline_bytes 20 MB, max_request_values 200,000) over HTTP
with the key it prints on first start, header `x-goog-api-key`. Pinning (taskset / sched_setaffinity): the server
under test alone on CPU 0, this client on CPU 1; in phase 3 the upstream is on CPU 0 and Pollux shares CPU 1 with
the client.

1. inline: a batch of --requests (10,000) inline requests on the emulator (model gemini-2.5-flash), each
   `{"contents": [{"parts": [{"text": "Question <i>: what is <i> plus <i>?"}]}], "generationConfig":
   {"maxOutputTokens": 32, "thinkingConfig": {"thinkingBudget": 0}}}` (no thinking, so that each answer has text;
   with thinking the 32 tokens all go to thoughts) with metadata `{"key": "<i>"}`. The body's size and JSON value
   count are checked against the limits first. Timed: the create (POST :batchGenerateContent, the body sent to the
   Operation back), then `GET batches/<id>` every 100 ms until state BATCH_STATE_SUCCEEDED (create to done: from
   sending the create to the poll that saw it), and one more GET of the ended batch (its size and time: all
   responses inline). Checked: 10,000 inline responses, each with a response, their metadata keys 0..N-1 in order,
   batchStats.successfulRequestCount = N. Also the server's own createTime → endTime and its CPU time.
   --repeats times (3), each a new batch on the same server.
2. online: an online client (httpx.AsyncClient, --online-concurrency 4 tasks, each a loop of non-streaming
   generateContent with a request like the batch's) for --online-seconds (10) while the server is idle, then while
   batches run (batches of --requests created before the window, as many as needed to outlast it at phase 1's rate,
   at most --max-batches; checked through the batch listing, which leaves inline results out, that one was still
   running at the end of the window; they then run to their end, unloaded, and must all succeed), then idle again.
   p50/p99 per run, the server's CPU (% of its core), and the ratio of the loaded p99 to the first idle p99 (goal
   ≤ 2×). After a 2 s warm-up that is not reported.
3. upstream: --upstream-requests (1,000) requests through an `openai` upstream engine (`--model
   gemini-2.5-flash=openai:<base_url>#<alias>`): all sent online one at a time (one keep-alive connection), then
   the same ones as one inline batch (create to SUCCEEDED, polled every 100 ms). Wall time and requests/s each;
   how many batch answers equal the online ones. Upstreams (--upstream): `llama` is llama.cpp's `llama-server`
   (the binary .ci/run builds from llama-cpp-python's sdist, found by tests/llama_server.py; the Python package
   llama_cpp itself is not needed) on the tiny random-weight "qwen3" GGUF of tests/tiny_models.py (so every answer
   runs to maxOutputTokens; $BATCH_BENCH_LLAMA_MODEL=scripted picks the scripted model, whose answers stop after a
   few tokens), one thread, `--parallel 4` (as many slots as Pollux's batch_concurrency), greedy (temperature 0),
   maxOutputTokens --upstream-tokens (32); `fake` is tests/fake_vllm.py (echoes the prompt, no compute). Default:
   both, llama skipped (and said so) when there is no llama-server binary.

Before each phase the script waits (at most --quiet-wait s) for pytest or other benchmarks to stop, and notes in the
results any that ran during a measurement. Raw results (JSON, server logs, the table) go to
bench/results/batch-<timestamp>/ (git-ignored); the Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from upstream_bench import Proc, free_port, http_ok, log  # noqa: E402 - bench/ is on the path: this script's own dir

from pollux import jsonsize  # noqa: E402
from pollux.config import Limits  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
MODEL = "gemini-2.5-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
BATCH = f"/v1beta/models/{MODEL}:batchGenerateContent"
SERVER_CPU, CLIENT_CPU = 0, 1
LLAMA_MODEL = os.environ.get("BATCH_BENCH_LLAMA_MODEL", "qwen3")
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
ENDED = (SUCCEEDED, "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def others_running() -> list[str]:
    """pytest or other benchmark processes on the machine (it is shared): noted per phase, not waited for."""
    out = subprocess.run(["pgrep", "-af", r"pytest|bench/\w+\.(py|sh)"], check=False, capture_output=True,
                         text=True).stdout
    return [ln for ln in out.splitlines() if ln.split()[0] != str(os.getpid()) and "batch_bench" not in ln]


def wait_quiet(args: argparse.Namespace, phase: str) -> None:
    """Wait (at most --quiet-wait s) until no pytest or other benchmark has run for 5 s: others use this machine."""
    deadline, quiet_since, announced = time.monotonic() + args.quiet_wait, time.monotonic(), False
    while time.monotonic() < deadline:
        if others_running():
            if not announced:
                log(f"{phase}: waiting for other processes to finish: {others_running()[:2]}")
                announced = True
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 5:
            return
        time.sleep(1)
    if announced:
        log(f"{phase}: still busy after {args.quiet_wait:.0f} s, going on (noted in the results)")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------------------------------------------------------
# Processes


class Pollux(Proc):
    keep_data = False

    def __init__(self, name: str, out: Path, cpu: int, *extra: str) -> None:
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
        super().__init__(name, [PY, "-m", "pollux.cli", "serve", "--port", str(self.port), "--data-dir",
                                str(self.data), "--log-level", "warning", *extra], out, str(cpu),
                         env={"PYTHONUNBUFFERED": "1"})
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self.wait_for(lambda: http_ok(self.url + "/healthz"), 60)
        except BaseException:
            self.stop()
            raise
        match = re.search(r"export GEMINI_API_KEY=(\S+)", self.text())
        if not match:
            self.stop()
            raise RuntimeError(f"no API key in pollux's output:\n{self.text()}")
        self.key = match.group(1)
        self.headers = {"x-goog-api-key": self.key, "content-type": "application/json"}

    def stop(self) -> None:
        super().stop()
        if not self.keep_data:  # its database and blobs (~80 MB after the emulator phases); the log stays
            shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Requests and batches


def question(i: int) -> str:
    return f"Question {i}: what is {i} plus {i}?"


def gen_request(i: int, max_tokens: int, greedy: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {"maxOutputTokens": max_tokens, "thinkingConfig": {"thinkingBudget": 0}}
    if greedy:
        config["temperature"] = 0
    return {"contents": [{"parts": [{"text": question(i)}]}], "generationConfig": config}


def batch_body(n: int, max_tokens: int, name: str, greedy: bool = False) -> bytes:
    items = [{"request": gen_request(i, max_tokens, greedy), "metadata": {"key": str(i)}} for i in range(n)]
    return orjson.dumps({"batch": {"displayName": name, "inputConfig": {"requests": {"requests": items}}}})


def check_limits(body: bytes) -> dict[str, Any]:
    limits = Limits()
    values = jsonsize.count(body)
    info = {"bytes": len(body), "values": values, "batch_inline_bytes": limits.batch_inline_bytes,
            "max_request_values": limits.max_request_values}
    if len(body) > limits.batch_inline_bytes or values > limits.max_request_values:
        raise SystemExit(f"the batch body passes the server's limits: {info}; use fewer or smaller requests")
    return info


def create(client: httpx.Client, server: Pollux, body: bytes) -> dict[str, Any]:
    r = client.post(server.url + BATCH, content=body, headers=server.headers)
    if r.status_code != 200:
        raise RuntimeError(f"create: HTTP {r.status_code}: {r.text[:2000]}")
    return r.json()


def wait_done(client: httpx.Client, server: Pollux, name: str, started: float, timeout: float,
              every: float = 0.1) -> tuple[dict[str, Any], float, int, list[tuple[float, str, int, int, float]]]:
    """Poll `GET name` every `every` s until the batch ends. Returns the last operation, the time since `started`
    when it arrived, the number of polls, and (time, state, successful count, bytes, GET seconds) of each poll."""
    polls: list[tuple[float, str, int, int, float]] = []
    while True:
        sent = time.perf_counter()
        r = client.get(f"{server.url}/v1beta/{name}", headers=server.headers)
        now = time.perf_counter()
        if r.status_code != 200:
            raise RuntimeError(f"GET {name}: HTTP {r.status_code}: {r.text[:2000]}")
        op = orjson.loads(r.content)
        meta = op["metadata"]
        polls.append((now - started, meta["state"], int(meta.get("batchStats", {}).get("successfulRequestCount", 0)),
                      len(r.content), now - sent))
        if meta["state"] in ENDED:
            return op, now - started, len(polls), polls
        if now - started > timeout:
            raise RuntimeError(f"{name} not done after {timeout:.0f} s: {json.dumps(meta)}\n{server.text()[-3000:]}")
        time.sleep(every)


def inline_responses(op: dict[str, Any]) -> list[dict[str, Any]]:
    return op.get("response", {}).get("inlinedResponses", {}).get("inlinedResponses", [])


def verify(op: dict[str, Any], n: int) -> dict[str, Any]:
    """All n responses present, each a response (not an error), metadata keys 0..n-1 in order."""
    responses = inline_responses(op)
    keys = [r.get("metadata", {}).get("key") for r in responses]
    stats = op["metadata"].get("batchStats", {})
    ok = int(stats.get("successfulRequestCount", 0))
    return {"state": op["metadata"]["state"], "count": len(responses), "in_order": keys == [str(i) for i in range(n)],
            "errors": sum(1 for r in responses if "response" not in r),
            "with_text": sum(1 for r in responses if answer_text(r.get("response", {}))),
            "successful": ok, "failed": int(stats.get("failedRequestCount", 0)),
            "ok": (len(responses) == n and keys == [str(i) for i in range(n)]
                   and all("response" in r for r in responses) and ok == n)}


def answer_text(response: dict[str, Any]) -> str:
    parts = ((response.get("candidates") or [{}])[0].get("content") or {}).get("parts") or []
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


def server_seconds(meta: dict[str, Any]) -> float | None:
    from datetime import datetime
    if "endTime" not in meta:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(meta["endTime"]) - parse(meta["createTime"])).total_seconds()


# ---------------------------------------------------------------------------------------------------------------
# Phase 1: a 10,000-request inline batch on the emulator


def phase_inline(args: argparse.Namespace, server: Pollux, out: Path) -> dict[str, Any]:
    body = batch_body(args.requests, 32, "bench-inline")
    limits = check_limits(body)
    log(f"inline: body {len(body) / 1e6:.2f} MB, {limits['values']} JSON values (limits "
        f"{limits['batch_inline_bytes'] / 1e6:.1f} MB, {limits['max_request_values']})")
    runs = []
    with httpx.Client(timeout=300) as client:
        for rep in range(args.repeats):
            wait_quiet(args, f"inline {rep + 1}")
            busy = others_running()
            cpu0 = cpu_seconds(server.pid)
            t0 = time.perf_counter()
            op = create(client, server, body)
            t_create = time.perf_counter() - t0
            name = op["name"]
            last, t_done, n_polls, polls = wait_done(client, server, name, t0, args.batch_timeout)
            cpu1 = cpu_seconds(server.pid)
            t1 = time.perf_counter()
            r = client.get(f"{server.url}/v1beta/{name}", headers=server.headers)
            t_get = time.perf_counter() - t1
            final = orjson.loads(r.content)
            t2 = time.perf_counter()
            check = verify(final, args.requests)
            run = {"batch": name, "create_s": t_create, "create_to_done_s": t_done, "polls": n_polls,
                   "server_create_to_end_s": server_seconds(final["metadata"]),
                   "server_cpu_s": cpu1 - cpu0, "final_get_s": t_get, "final_get_bytes": len(r.content),
                   "final_get_status": r.status_code, "parse_s": t2 - t1 - t_get,
                   # The poll that saw the end carried the results too: its size and time.
                   "done_poll_bytes": polls[-1][3], "done_poll_s": polls[-1][4],
                   "check": check, "state": final["metadata"]["state"], "others_running": busy,
                   "first_running_s": next((p[0] for p in polls if p[1] == "BATCH_STATE_RUNNING"), None),
                   "progress": polls}
            runs.append(run)
            log(f"inline {rep + 1}/{args.repeats}: create {t_create:.2f} s, create→{run['state']} {t_done:.2f} s "
                f"(server {run['server_create_to_end_s']:.2f} s, CPU {run['server_cpu_s']:.1f} s), final GET "
                f"{len(r.content) / 1e6:.2f} MB in {t_get:.2f} s, check {'OK' if check['ok'] else check}")
            if busy:
                log(f"  (other processes ran: {busy[:3]})")
    (out / "inline.json").write_text(json.dumps({"limits": limits, "runs": runs}, indent=1))
    return {"limits": limits, "runs": runs}


# ---------------------------------------------------------------------------------------------------------------
# Phase 2: online latency, idle and with batches running


async def online_load(server: Pollux, seconds: float, concurrency: int) -> dict[str, Any]:
    bodies = [orjson.dumps(gen_request(i, 32)) for i in range(1000)]
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(server.url + GENERATE, content=bodies[i % len(bodies)], headers=server.headers)
                dt = time.perf_counter() - t0
                if r.status_code == 200:
                    latencies.append(dt * 1000)
                else:
                    errors.append(f"{r.status_code} {r.text[:300]}")
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - started
    return {"requests": len(latencies), "errors": len(errors), "error_samples": errors[:5], "wall_s": wall,
            "rps": len(latencies) / wall, "p50_ms": pct(latencies, 50), "p90_ms": pct(latencies, 90),
            "p99_ms": pct(latencies, 99), "max_ms": max(latencies) if latencies else None}


def timed_load(server: Pollux, seconds: float, concurrency: int) -> dict[str, Any]:
    """online_load, with the share of a core the server used meanwhile (from /proc/<pid>/stat)."""
    cpu0 = cpu_seconds(server.pid)
    result = asyncio.run(online_load(server, seconds, concurrency))
    result["server_cpu_pct"] = 100 * (cpu_seconds(server.pid) - cpu0) / result["wall_s"]
    return result


def list_batches(client: httpx.Client, server: Pollux) -> list[dict[str, Any]]:
    r = client.get(f"{server.url}/v1beta/batches?pageSize=100", headers=server.headers)
    r.raise_for_status()
    return r.json().get("operations", [])


def phase_online(args: argparse.Namespace, server: Pollux, out: Path, rate: float | None) -> dict[str, Any]:
    c, secs = args.online_concurrency, args.online_seconds
    wait_quiet(args, "online")
    log("online: warm-up 2 s")
    asyncio.run(online_load(server, 2, c))
    res: dict[str, Any] = {"concurrency": c, "seconds": secs}
    busy = others_running()
    log(f"online: idle, c={c}, {secs} s")
    res["idle"] = timed_load(server, secs, c)
    res["idle"]["others_running"] = busy

    # Enough batches to outlast the window at phase 1's rate (slower still with the online load beside them).
    per = args.requests
    count = min(args.max_batches, max(2, math.ceil((secs + 5) * (rate or 1000) / per)))
    body = batch_body(per, 32, "bench-online")
    names = []
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        for _ in range(count):
            names.append(create(client, server, body)["name"])
        t_created = time.perf_counter() - t0
        ours = set(names)

        def live() -> dict[str, tuple[str, int]]:
            return {op["name"]: (op["metadata"]["state"],
                                 int(op["metadata"].get("batchStats", {}).get("successfulRequestCount", 0)))
                    for op in list_batches(client, server) if op["name"] in ours}

        deadline = time.monotonic() + 30
        while not any(s == "BATCH_STATE_RUNNING" for s, _ in live().values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no batch running 30 s after creation: {live()}")
            time.sleep(0.05)
        before = live()
        log(f"online: {count} batches of {per} created in {t_created:.2f} s; loaded, c={c}, {secs} s")
        busy = others_running()
        res["loaded"] = timed_load(server, secs, c)
        res["loaded"]["others_running"] = busy
        after = live()
        done_in_window = sum(n for _, n in after.values()) - sum(n for _, n in before.values())
        res["batches"] = {"count": count, "requests_each": per, "create_all_s": t_created,
                          "before": before, "after": after, "done_during_window": done_in_window,
                          "batch_rps_during_window": done_in_window / res["loaded"]["wall_s"],
                          "running_at_window_end": any(s == "BATCH_STATE_RUNNING" for s, _ in after.values())}
        # The rest run to their end, with no online load (they are not cancelled: every one must succeed).
        t0 = time.perf_counter()
        deadline = time.monotonic() + args.batch_timeout
        while True:
            states = live()
            if all(s in ENDED for s, _ in states.values()):
                break
            if time.monotonic() > deadline:
                log(f"  batches not ended {args.batch_timeout:.0f} s after the window: {states}")
                break
            time.sleep(0.1)
        res["batches"]["window_end_to_all_ended_s"] = time.perf_counter() - t0
        res["batches"]["ended"] = states
        res["batches"]["all_succeeded"] = all(s == SUCCEEDED and n == per for s, n in states.values())
    time.sleep(1)
    log(f"online: idle again, c={c}, {secs} s")
    busy = others_running()
    res["idle_after"] = timed_load(server, secs, c)
    res["idle_after"]["others_running"] = busy
    res["p99_ratio"] = res["loaded"]["p99_ms"] / res["idle"]["p99_ms"]
    res["p50_ratio"] = res["loaded"]["p50_ms"] / res["idle"]["p50_ms"]
    (out / "online.json").write_text(json.dumps(res, indent=1))
    for k in ("idle", "loaded", "idle_after"):
        r = res[k]
        log(f"  {k:10}: {r['requests']} req ({r['rps']:.0f}/s), p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"errors {r['errors']}")
    b = res["batches"]
    log(f"  batches during the window: {b['done_during_window']} requests ({b['batch_rps_during_window']:.0f}/s), "
        f"one still running at its end: {b['running_at_window_end']}; p99 ratio {res['p99_ratio']:.2f}×")
    return res


# ---------------------------------------------------------------------------------------------------------------
# Phase 3: through a real upstream, batch against online one at a time


def start_upstream(kind: str, out: Path) -> tuple[Proc, str, str]:
    """(process, OpenAI base URL, model id) of the upstream, on CPU 0."""
    port = free_port()
    if kind == "llama":
        import llama_server
        import tiny_models
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        gguf = llama_server.tiny_gguf(tiny_models.models_root(), LLAMA_MODEL)
        binary = llama_server.llama_server_binary()
        proc = Proc("llama-server", [str(binary), "--model", str(gguf), "--alias", LLAMA_MODEL, "--host", "127.0.0.1",
                                     "--port", str(port), "--jinja", "--reasoning-format", "deepseek", "--ctx-size",
                                     "4096", "--parallel", "4", "--threads", "1", "--threads-batch", "1",
                                     "--no-webui"], out, str(SERVER_CPU))
        proc.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120)
        return proc, f"http://127.0.0.1:{port}/v1", LLAMA_MODEL
    proc = Proc("fake-vllm", [PY, str(ROOT / "tests" / "fake_vllm.py"), "--port", str(port)], out, str(SERVER_CPU),
                env={"PYTHONUNBUFFERED": "1"})
    proc.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/v1/models"), 60)
    return proc, f"http://127.0.0.1:{port}/v1", "Qwen/Qwen3-0.6B"


def phase_upstream(args: argparse.Namespace, kind: str, out: Path) -> dict[str, Any]:
    n, tokens = args.upstream_requests, args.upstream_tokens
    wait_quiet(args, f"upstream {kind}")
    upstream, base_url, alias = start_upstream(kind, out)
    server = None
    try:
        server = Pollux(f"pollux-{kind}", out, CLIENT_CPU, "--model", f"{MODEL}=openai:{base_url}#{alias}")
        bodies = [orjson.dumps(gen_request(i, tokens, greedy=True)) for i in range(n)]
        res: dict[str, Any] = {"upstream": kind, "requests": n, "max_output_tokens": tokens}
        with httpx.Client(timeout=120) as client:
            for i in range(5):  # warm-up: connections, the model's first runs
                client.post(server.url + GENERATE, content=bodies[i], headers=server.headers).raise_for_status()
            busy = others_running()
            log(f"upstream {kind}: {n} online requests, one at a time")
            online_text: list[str] = []
            out_tokens: list[int] = []
            errors = []
            lat = []
            u0, p0 = cpu_seconds(upstream.pid), cpu_seconds(server.pid)
            t0 = time.perf_counter()
            for body in bodies:
                t1 = time.perf_counter()
                r = client.post(server.url + GENERATE, content=body, headers=server.headers)
                lat.append(1000 * (time.perf_counter() - t1))
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:300]}")
                    online_text.append("")
                else:
                    online_text.append(answer_text(r.json()))
                    out_tokens.append(r.json().get("usageMetadata", {}).get("candidatesTokenCount", 0))
            wall = time.perf_counter() - t0
            res["online"] = {"wall_s": wall, "rps": n / wall, "errors": len(errors), "error_samples": errors[:5],
                             "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "others_running": busy,
                             "upstream_cpu_s": cpu_seconds(upstream.pid) - u0,
                             "pollux_cpu_s": cpu_seconds(server.pid) - p0,
                             "output_tokens_mean": statistics.fmean(out_tokens) if out_tokens else None,
                             "text_sample": online_text[:2]}
            log(f"  online: {wall:.2f} s, {n / wall:.1f} req/s, errors {len(errors)}")

            body = batch_body(n, tokens, f"bench-upstream-{kind}", greedy=True)
            check_limits(body)
            busy = others_running()
            log(f"upstream {kind}: one batch of {n}")
            u0, p0 = cpu_seconds(upstream.pid), cpu_seconds(server.pid)
            t0 = time.perf_counter()
            op = create(client, server, body)
            last, t_done, n_polls, _ = wait_done(client, server, op["name"], t0, args.batch_timeout)
            check = verify(last, n)
            batch_text = [answer_text(r.get("response", {})) for r in inline_responses(last)]
            res["batch"] = {"create_to_done_s": t_done, "rps": n / t_done, "polls": n_polls, "check": check,
                            "server_create_to_end_s": server_seconds(last["metadata"]), "others_running": busy,
                            "upstream_cpu_s": cpu_seconds(upstream.pid) - u0,
                            "pollux_cpu_s": cpu_seconds(server.pid) - p0,
                            "first_error": next((r["error"] for r in inline_responses(last) if "error" in r), None)}
            res["same_answers"] = sum(1 for a, b in zip(online_text, batch_text, strict=False) if a == b)
            res["speedup"] = wall / t_done
            log(f"  batch: {t_done:.2f} s, {n / t_done:.1f} req/s, check {'OK' if check['ok'] else check}; "
                f"{res['same_answers']}/{n} answers as online; batch {res['speedup']:.2f}× faster")
        (out / f"upstream-{kind}.json").write_text(json.dumps(res, indent=1))
        return res
    finally:
        if server is not None:
            server.stop()
        upstream.stop()


# ---------------------------------------------------------------------------------------------------------------


def disturbed(results: dict[str, Any]) -> list[str]:
    """The measurements during which pytest or another benchmark ran on the machine."""
    found = []
    for i, r in enumerate((results.get("inline") or {}).get("runs", []), 1):
        if r["others_running"]:
            found.append(f"inline run {i}")
    for k in ("idle", "loaded", "idle_after"):
        if (results.get("online") or {}).get(k, {}).get("others_running"):
            found.append(f"online {k}")
    for kind, r in (results.get("upstream") or {}).items():
        for k in ("online", "batch"):
            if r.get(k, {}).get("others_running"):
                found.append(f"upstream {kind} {k}")
    return found


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = []
    inline = results.get("inline")
    if inline:
        lim = inline["limits"]
        lines += [f"### Inline batch on the emulator: {args.requests} requests, body {lim['bytes'] / 1e6:.2f} MB, "
                  f"{lim['values']} JSON values", "",
                  "| run | create s | create → SUCCEEDED s | server createTime → endTime s | server CPU s | "
                  "final GET MB | final GET s | all present, in order |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for i, r in enumerate(inline["runs"], 1):
            lines.append(f"| {i} | {r['create_s']:.2f} | {r['create_to_done_s']:.2f} | "
                         f"{r['server_create_to_end_s']:.2f} | {r['server_cpu_s']:.1f} | "
                         f"{r['final_get_bytes'] / 1e6:.2f} | {r['final_get_s']:.2f} | "
                         f"{'yes' if r['check']['ok'] else r['check']} |")
        lines.append("")
    online = results.get("online")
    if online:
        b = online["batches"]
        lines += [f"### Online generateContent, c={online['concurrency']}, {online['seconds']} s each", "",
                  "| server | requests | req/s | p50 ms | p99 ms | max ms | errors | server CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k, label in (("idle", "idle"), ("loaded", "batches running"), ("idle_after", "idle again")):
            r = online[k]
            lines.append(f"| {label} | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{r['max_ms']:.2f} | {r['errors']} | {r['server_cpu_pct']:.0f} % |")
        lines += ["", f"p99 loaded / idle: **{online['p99_ratio']:.2f}×** (p50 {online['p50_ratio']:.2f}×). "
                  f"{b['count']} batches of {b['requests_each']}; during the window they completed "
                  f"{b['done_during_window']} requests ({b['batch_rps_during_window']:.0f}/s); a batch still running "
                  f"at the window's end: {'yes' if b['running_at_window_end'] else 'NO'}; all {b['count']} then "
                  f"succeeded with every request: {'yes' if b['all_succeeded'] else 'NO'} "
                  f"({b['window_end_to_all_ended_s']:.1f} s after the window).", ""]
    ups = results.get("upstream") or {}
    if ups:
        lines += [f"### Through an upstream: {args.upstream_requests} requests, maxOutputTokens "
                  f"{args.upstream_tokens}", "",
                  "| upstream | online one at a time s | req/s | batch create → SUCCEEDED s | req/s | batch / online "
                  "speed | batch all OK | same answers |", "|---|---:|---:|---:|---:|---:|---|---:|"]
        for kind, r in ups.items():
            if "skipped" in r:
                lines.append(f"| {kind} | {r['skipped']} | | | | | | |")
                continue
            lines.append(f"| {kind} | {r['online']['wall_s']:.2f} | {r['online']['rps']:.1f} | "
                         f"{r['batch']['create_to_done_s']:.2f} | {r['batch']['rps']:.1f} | {r['speedup']:.2f}× | "
                         f"{'yes' if r['batch']['check']['ok'] else r['batch']['check']} | "
                         f"{r['same_answers']}/{r['requests']} |")
        lines.append("")
    noisy = disturbed(results)
    lines.append(f"Other processes (pytest, benchmarks) ran during: {', '.join(noisy) if noisy else 'none'}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="inline,online,upstream", help="comma-separated: inline, online, upstream")
    ap.add_argument("--requests", type=int, default=10_000, help="requests of each emulator batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--online-seconds", type=float, default=10)
    ap.add_argument("--online-concurrency", type=int, default=4)
    ap.add_argument("--max-batches", type=int, default=10, help="most batches created for the online phase")
    ap.add_argument("--upstream", default="llama,fake", help="comma-separated: llama, fake")
    ap.add_argument("--upstream-requests", type=int, default=1000)
    ap.add_argument("--upstream-tokens", type=int, default=32)
    ap.add_argument("--batch-timeout", type=float, default=180, help="seconds before a batch counts as stuck")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="most seconds to wait before a phase for pytest/other benchmarks to stop (0: do not wait)")
    ap.add_argument("--keep-data", action="store_true", help="keep the servers' data dirs in the results directory")
    ap.add_argument("--out", help="results directory (default bench/results/batch-<timestamp>)")
    args = ap.parse_args()
    phases = args.phases.split(",")
    Pollux.keep_data = args.keep_data
    out = Path(args.out or ROOT / "bench" / "results" / f"batch-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {CLIENT_CPU})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "pollux"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip())
    results: dict[str, Any] = {"commit": commit, "pollux_dirty": dirty, "args": vars(args),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log(f"results in {out} (commit {commit}{', pollux/ modified' if dirty else ''})")
    started = time.monotonic()
    try:
        if "inline" in phases or "online" in phases:
            server = Pollux("pollux-emulator", out, SERVER_CPU)
            try:
                rate = None
                if "inline" in phases:
                    results["inline"] = phase_inline(args, server, out)
                    rate = args.requests / statistics.median(r["create_to_done_s"] for r in results["inline"]["runs"])
                if "online" in phases:
                    results["online"] = phase_online(args, server, out, rate)
            finally:
                server.stop()
                results["emulator_server_log_tail"] = server.text()[-4000:]
        if "upstream" in phases:
            import llama_server
            results["upstream"] = {}
            for kind in args.upstream.split(","):
                if kind == "llama" and llama_server.llama_server_binary() is None:
                    results["upstream"][kind] = {"skipped": "no llama-server binary"}
                    log("upstream llama: skipped (no llama-server binary; .ci/run builds one)")
                    continue
                results["upstream"][kind] = phase_upstream(args, kind, out)
    finally:
        results["total_s"] = time.monotonic() - started
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    table = report(results, args)
    (out / "table.md").write_text(table)
    print(table)
    log(f"done in {results['total_s']:.0f} s; {out}")


if __name__ == "__main__":
    main()
