"""Engine `openai` (issue 12): what Pollux adds in front of an OpenAI-compatible upstream, against the upstream called
directly and against LiteLLM's proxy on its Gemini route, in one run.

    .venv/bin/python bench/upstream_bench.py                        # everything (~5 min); raw output in --out
    .venv/bin/python bench/upstream_bench.py --no-litellm --no-llama --duration 3
    .venv/bin/python bench/upstream_bench.py --phases reference     # the HTTP clients alone; Pollux without an upstream

Phases, each started after no `pytest` process has run for a while (--quiet-wait; the machine is shared):

1. wrk, non-streaming, on the fake vLLM of tests/fake_vllm.py in fixed mode (one precomputed answer, as vLLM sends
   it) at c = 1, 8, 32: the upstream directly (`POST /v1/chat/completions`), Pollux → upstream and LiteLLM's proxy →
   upstream (both `POST /v1beta/models/gemini-2.5-flash:generateContent`, key in `x-goog-api-key`). The proxy under
   test is alone on CPU 0; the fake upstream and wrk share CPU 1 (the same for all three targets). CPU µs/req from
   /proc/<pid>/stat; upstream connections a proxy closed, from the TIME_WAIT sockets to the fake's port (`ss`).
2. Time to the first SSE event with text, N sequential streaming requests per target on one keep-alive connection
   each (a raw-socket client, pinned to CPU 1): the upstream (`"stream": true`) and Pollux interleaved, then LiteLLM
   alone (it shares CPU 0 with Pollux, and its work after each answer would run into Pollux's next request); both
   proxies on `:streamGenerateContent?alt=sse`. Then 200 more per target alone, for its CPU time and closed upstream
   connections per stream.
3. Memory per stream: a fresh Pollux in front of a second fixed fake whose SSE events are --chunk-delay seconds
   apart; --streams concurrent streaming requests (asyncio + httpx) are held open; Pollux's VmRSS before, once all
   have their first event, and the peak, divided by the number of streams.
4. llama.cpp's `llama-server` (the binary .ci/run builds into pip's cache dir) on the 27.4 M-parameter random Llama
   of tests/tiny_models.py (`build_small_llama`, converted to f32 GGUF under --models-root), one thread on CPU 0;
   Pollux and the client on CPU 1. A streamed 256-token greedy generation, directly and through Pollux, alternating,
   --llama-runs each: TTFT, the second text event, tokens/s of the whole request and of the decode phase, medians.

5. (--phases reference, not by default) The two halves of a proxied request apart: the HTTP client posting to the
   fake from CPU 0, alone (httpx's AsyncClient, the engine's client before aiohttp and then its own `http.py`; whole
   answers at c = 1, 8, 32; streams read to the end of the body, or for httpx also stopped at `data: [DONE]`), and
   Pollux on its emulator (no upstream) under wrk at c = 1, 8.

LiteLLM runs from its own venv (--litellm, default /tmp/litellm/bin/litellm; `python3 -m venv /tmp/litellm &&
/tmp/litellm/bin/pip install 'litellm[proxy]'`), one worker, with a config that points model `gemini-2.5-flash` at
the fake as `openai/Qwen/Qwen3-0.6B` and a master key sent as `x-goog-api-key`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import orjson

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
MODEL = "gemini-2.5-flash"
UPSTREAM_MODEL = "Qwen/Qwen3-0.6B"
GEN_PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
PROMPT = "Explain how AI works in a few words"
GEMINI_BODY = orjson.dumps({"contents": [{"parts": [{"text": PROMPT}]}]})
OPENAI_BODY = orjson.dumps({"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": PROMPT}]})
OPENAI_STREAM_BODY = orjson.dumps({"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": PROMPT}],
                                   "stream": True, "stream_options": {"include_usage": True}})
LITELLM_KEY = "sk-bench-upstream"
SERVER_CPU, CLIENT_CPU = "0", "1"

WRK_LUA = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
%s
function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%%d duration_s=%%.3f rps=%%.1f p50_ms=%%.3f p90_ms=%%.3f p99_ms=%%.3f max_ms=%%.3f " ..
    "errors=%%d non2xx=%%d\\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lua_str(s: str | bytes) -> str:
    if isinstance(s, bytes):
        s = s.decode()
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Processes


class Watch:
    """Notes every phase during which a pytest process ran (polled each second in a thread)."""
    phase: ClassVar[str] = "start"
    disturbed: ClassVar[list[str]] = []

    @classmethod
    def start(cls) -> None:
        import threading

        def poll() -> None:
            while True:
                out = subprocess.run(["pgrep", "-f", "pytest"], check=False, capture_output=True,
                                     text=True).stdout.split()
                if [p for p in out if int(p) != os.getpid()] and cls.phase not in cls.disturbed + ["start", "end"]:
                    cls.disturbed.append(cls.phase)
                time.sleep(1)

        threading.Thread(target=poll, daemon=True).start()


def wait_quiet(args: argparse.Namespace, phase: str) -> None:
    """Block until no pytest process has been seen for --quiet-wait seconds (other people run the suite here)."""
    if args.quiet_wait <= 0:
        Watch.phase = phase
        return
    quiet_since, announced = time.monotonic(), False
    while True:
        out = subprocess.run(["pgrep", "-f", "pytest"], check=False, capture_output=True, text=True).stdout.split()
        busy = [p for p in out if int(p) != os.getpid()]
        if busy:
            if not announced:
                log(f"{phase}: waiting for pytest ({' '.join(busy)}) to finish")
                announced = True
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= args.quiet_wait:
            Watch.phase = phase
            return
        time.sleep(2)


class Proc:
    """A server process on a pinned core, its output in out/<name>.log."""

    def __init__(self, name: str, argv: list[str], out: Path, cpu: str | None, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.log_path = name, out / f"{name}.log"
        argv = (["taskset", "-c", cpu] if cpu is not None else []) + argv
        self.fh = open(self.log_path, "wb")  # noqa: SIM115 - open while the process runs, closed in stop()
        self.p = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, **(env or {})}, cwd=cwd or ROOT, start_new_session=True)
        self.pid = self.p.pid  # taskset execs the program, so this is the server's pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, probe: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.p.returncode}):\n{self.text()[-3000:]}")
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001, S110 - not listening yet: try again
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fh.close()


def http_ok(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> bool:
    import httpx
    r = httpx.request(method, url, content=body, headers=headers, timeout=5)
    return r.status_code == 200


def start_fake(name: str, out: Path, cpu: str, chunk_delay: float = 0.0) -> tuple[Proc, int]:
    port = free_port()
    if chunk_delay:
        argv = [PY, str(Path(__file__).resolve()), "_slow_fake", "--port", str(port), "--chunk-delay", str(chunk_delay)]
    else:
        argv = [PY, str(ROOT / "tests" / "fake_vllm.py"), "--port", str(port), "--fixed"]
    proc = Proc(name, argv, out, cpu)
    proc.wait_for(lambda: "listening on" in proc.text(), 60)
    return proc, port


def start_pollux(name: str, out: Path, cpu: str, upstream: str) -> tuple[Proc, int, str]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
    proc = Proc(name, [PY, "-m", "pollux.cli", "serve", "--port", str(port), "--data-dir", str(data),
                       "--model", f"{MODEL}={upstream}", "--log-level", "warning"], out, cpu)
    proc.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
    match = re.search(r"export GEMINI_API_KEY=(\S+)", proc.text())
    if not match:
        raise RuntimeError(f"no API key in pollux's output:\n{proc.text()}")
    return proc, port, match.group(1)


def start_litellm(binary: str, out: Path, cpu: str, upstream_port: int) -> tuple[Proc, int]:
    port = free_port()
    cfg = out / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{UPSTREAM_MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: x
general_settings:
  master_key: {LITELLM_KEY}
""")
    proc = Proc("litellm", [binary, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                            "--num_workers", "1"], out, cpu,
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "PYTHONUNBUFFERED": "1"})
    proc.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"), 180)
    return proc, port


def proc_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def core_busy(cpu: str) -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts[0] == f"cpu{cpu}":
            return sum(int(x) for x in (parts[1], parts[2], parts[3], parts[6], parts[7], parts[8]))
    return 0


def time_wait(port: int) -> int:
    """TCP connections to `port` closed in the last minute (TIME_WAIT is on the side that closed: the client's)."""
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( dport = :{port} )"], check=False,
                         capture_output=True, text=True).stdout
    return len(out.splitlines())


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------------------------------------
# Phase 1: wrk


class Target:
    def __init__(self, name: str, url: str, body: bytes, headers: dict[str, str], pid: int, upstream_pid: int | None,
                 tmp: Path, upstream_port: int) -> None:
        self.name, self.url, self.pid, self.upstream_pid = name, url, pid, upstream_pid
        self.upstream_port = upstream_port
        self.body, self.headers = body, headers
        self.lua = tmp / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}.lua"
        self.lua.write_text(WRK_LUA % (lua_str(body), "\n".join(
            f"wrk.headers[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())))


def run_wrk(t: Target, c: int, duration: int, out: Path, label: str) -> dict[str, Any]:
    hz = os.sysconf("SC_CLK_TCK")
    def ticks() -> tuple[int, int, int, float]:
        return (proc_ticks(t.pid), proc_ticks(t.upstream_pid) if t.upstream_pid else 0, core_busy(SERVER_CPU),
                time.monotonic())

    w0 = time_wait(t.upstream_port)
    p0, u0, b0, s0 = ticks()
    res = subprocess.run(["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{c}", f"-d{duration}s", "--latency",
                          "-s", str(t.lua), t.url], check=False, capture_output=True, text=True)
    p1, u1, b1, s1 = ticks()
    w1 = time_wait(t.upstream_port)
    (out / f"{label}.txt").write_text(res.stdout + res.stderr)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WRK_RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {t.name}:\n{res.stdout}\n{res.stderr}")
    r: dict[str, Any] = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    n = max(r["requests"], 1)
    r["cpu_us"] = 1e6 * (p1 - p0) / hz / n
    r["upstream_cpu_us"] = 1e6 * (u1 - u0) / hz / n if t.upstream_pid else None
    # The server core's busy time not spent by the server (for the direct target CPU 0 has no server: all of it).
    own = (p1 - p0) if t.upstream_pid else 0
    r["other_pct"] = max(0.0, 100 * ((b1 - b0) - own) / hz / (s1 - s0))
    r["bad"] = int(r["errors"] + r["non2xx"])
    # For the direct target the client (wrk) keeps its connections: this counts the proxies' upstream connections.
    r["closed_per_req"] = max(0, w1 - w0) / n  # (older TIME_WAITs expiring during the run can make it negative)
    return r


def phase_wrk(args: argparse.Namespace, targets: list[Target], out: Path) -> str:
    wait_quiet(args, "wrk")
    log(f"wrk: warm-up {args.warmup} s each at c=8")
    for t in targets:
        run_wrk(t, 8, args.warmup, out, f"warmup-{t.lua.stem}")
    rows = [("| target | c | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | × LiteLLM req/s | proxy CPU µs/req "
             "| upstream CPU µs/req | upstream connections closed /req | other load CPU 0 | errors |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    results: dict[tuple[str, int], dict] = {}
    for c in args.concurrency:
        wait_quiet(args, f"wrk c={c}")
        for t in targets:
            log(f"wrk: {t.name} c={c} {args.duration} s")
            results[(t.name, c)] = run_wrk(t, c, args.duration, out, f"{t.lua.stem}-c{c}")
        direct = results[(targets[0].name, c)]
        lite = results.get(("litellm → upstream", c))
        for t in targets:
            r = results[(t.name, c)]
            first = t is targets[0]
            added = "" if first else f"{r['p50_ms'] - direct['p50_ms']:+.2f}"
            vs_lite = f"{r['rps'] / lite['rps']:.1f}×" if lite and t.name.startswith("pollux") else ""
            # Direct: the upstream is the server, its CPU goes in the upstream column.
            proxy_cpu = "" if first else f"{r['cpu_us']:.0f}"
            upstream_cpu = r["cpu_us"] if first else r["upstream_cpu_us"]
            closed = "" if first else f"{r['closed_per_req']:.2f}"
            rows.append(f"| {t.name} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                        f"{r['p99_ms']:.2f} | {added} | {vs_lite} | {proxy_cpu} | {upstream_cpu:.0f} | "
                        f"{closed} | {r['other_pct']:.0f} % | {r['bad']} |")
    (out / "wrk.json").write_text(json.dumps({f"{k[0]} c={k[1]}": v for k, v in results.items()}, indent=1))
    table = "\n".join(rows)
    verdicts = []
    for c, goal in ((1, 1.0), (8, 2.0)):
        if (targets[0].name, c) in results and ("pollux → upstream", c) in results:
            a = results[("pollux → upstream", c)]["p50_ms"] - results[(targets[0].name, c)]["p50_ms"]
            verdicts.append(f"added p50 at c={c}: {a:+.2f} ms (goal ≤ {goal:g} ms): "
                            f"{'MET' if a <= goal else 'NOT MET'}")
    for c in args.concurrency:
        lite = results.get(("litellm → upstream", c))
        if lite:
            x = results[("pollux → upstream", c)]["rps"] / lite["rps"]
            verdicts.append(f"throughput vs LiteLLM at c={c}: {x:.1f}× (goal ≥ 20×): "
                            f"{'MET' if x >= 20 else 'NOT MET'}")
    return table + "\n\n" + "\n".join(verdicts)


# ---------------------------------------------------------------------------------------------------------------
# Raw-socket SSE client (phases 2 and 4): times every event as it arrives


class RawSSE:
    """One keep-alive HTTP/1.1 connection; `post` sends a request and returns [(time, event_json)] plus the time
    the request was sent, decoding chunked bodies and SSE events as they come."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connect()

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fresh = True

    def close(self) -> None:
        self.sock.close()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, list[tuple[float, Any]], float]:
        try:
            return self._post(path, body, headers)
        except ConnectionError:  # the server closed the idle connection (llama-server does): once more, afresh
            if self.fresh:
                raise
            self.close()
            self.connect()
            return self._post(path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, list[tuple[float, Any]], float]:
        self.fresh = False
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        t0 = time.perf_counter()
        self.sock.sendall(head.encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        now = time.perf_counter()  # the first events may come in the same packet as the headers
        header, buf = buf.split(b"\r\n\r\n", 1)
        status = int(header.split(b" ", 2)[1])
        if status != 200 or b"chunked" not in header.lower():
            raise RuntimeError(f"unexpected answer {header!r} {buf[:500]!r}")
        events: list[tuple[float, Any]] = []
        sse = b""
        while True:
            while b"\r\n" not in buf:
                buf += self._recv()
                now = time.perf_counter()
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += self._recv()
                now = time.perf_counter()
            data, buf = buf[:size], buf[size + 2:]
            if size == 0:
                if b"connection: close" in header.lower():
                    self.close()
                    self.connect()
                return t0, events, now
            sse = (sse + data).replace(b"\r\n", b"\n")  # Pollux ends its events with \r\n\r\n
            while True:
                idx = sse.find(b"\n\n")
                if idx < 0:
                    break
                event, sse = sse[:idx], sse[idx + 2:]
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        payload = line[5:].strip()
                        events.append((now, None if payload == b"[DONE]" else orjson.loads(payload)))

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        return chunk


def openai_text(ev: Any) -> str:
    if not ev or not ev.get("choices"):
        return ""
    return ev["choices"][0].get("delta", {}).get("content") or ""


def gemini_text(ev: Any) -> str:
    if not ev:
        return ""
    return "".join(p.get("text", "") for c in ev.get("candidates", [])
                   for p in (c.get("content") or {}).get("parts", []))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def phase_ttft(args: argparse.Namespace, specs: list[tuple[str, int, str, bytes, dict, Callable]], out: Path,
               pids: dict[str, int], upstream_port: int) -> str:
    wait_quiet(args, "ttft")
    conns = {name: RawSSE(port) for name, port, *_ in specs}
    times: dict[str, list[float]] = {name: [] for name, *_ in specs}
    totals: dict[str, list[float]] = {name: [] for name, *_ in specs}
    # The direct call and Pollux interleaved; LiteLLM after them, alone: it shares CPU 0 with Pollux, and its work
    # after each answer (~25 ms of CPU a stream) would still run when Pollux's next request came.
    groups = [[s for s in specs if not s[0].startswith("litellm")], [s for s in specs if s[0].startswith("litellm")]]
    log(f"ttft: {args.ttft_n} sequential streams per target, the direct call and Pollux interleaved, then LiteLLM "
        f"(+{args.ttft_warmup} warm-up)")
    for group in filter(None, groups):
        for i in range(args.ttft_warmup + args.ttft_n):
            for name, _, path, body, headers, text_of in group:
                t0, events, t_end = conns[name].post(path, body, headers)
                first = next((t for t, ev in events if text_of(ev)), None)
                if first is None:
                    raise RuntimeError(f"{name}: no text in the stream: {events[:3]}")
                if i >= args.ttft_warmup:
                    times[name].append(1000 * (first - t0))
                    totals[name].append(1000 * (t_end - t0))
    # Per target alone: its server's CPU time and the upstream connections it closed, over 200 more streams.
    hz = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    closed: dict[str, float] = {}
    for name, _, path, body, headers, _ in specs:
        w0, c0 = time_wait(upstream_port), proc_ticks(pids[name])
        for _ in range(200):
            conns[name].post(path, body, headers)
        closed[name] = (time_wait(upstream_port) - w0) / 200
        cpu[name] = 1e6 * (proc_ticks(pids[name]) - c0) / hz / 200
    for c in conns.values():
        c.close()
    base = statistics.median(times[specs[0][0]])
    rows = [("| target | first text event p50 ms | p90 ms | added p50 ms | whole stream p50 ms | server CPU µs/stream "
             "| upstream connections closed /stream |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for name, *_ in specs:
        m = statistics.median(times[name])
        first = name == specs[0][0]
        added = "" if first else f"{m - base:+.3f}"
        rows.append(f"| {name} | {m:.3f} | {pct(times[name], 90):.3f} | {added} | "
                    f"{statistics.median(totals[name]):.3f} | {cpu[name]:.0f} | "
                    f"{'' if first else f'{closed[name]:.2f}'} |")
    (out / "ttft.json").write_text(json.dumps({"first": times, "total": totals}))
    added = statistics.median(times["pollux → upstream"]) - base
    return "\n".join(rows) + f"\n\nstreaming, added to the first text event: {added:+.3f} ms (goal ≤ 1 ms): " \
                             f"{'MET' if added <= 1 else 'NOT MET'}"


# ---------------------------------------------------------------------------------------------------------------
# Phase 3: memory per stream


async def hold_streams(port: int, key: str, n: int, pid: int) -> dict[str, Any]:
    import httpx
    url = f"http://127.0.0.1:{port}{STREAM_PATH}"
    headers = {"x-goog-api-key": key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    first_count = 0
    all_first = asyncio.Event()
    peak = 0
    statuses: dict[int, int] = {}
    finished: list[bool] = []

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal first_count
        async with client.stream("POST", url, content=GEMINI_BODY, headers=headers) as r:
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            counted, done = False, False
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    done = '"finishReason":"STOP"' in line
                    if not counted:
                        counted = True
                        first_count += 1
                        if first_count == n:
                            all_first.set()
            finished.append(done)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120)) as client:
        async def drain() -> None:
            async with client.stream("POST", url, content=GEMINI_BODY, headers=headers) as r:
                async for _ in r.aiter_bytes():
                    pass

        await asyncio.gather(*(drain() for _ in range(10)))  # warm-up: 10 streams
        await asyncio.sleep(1)
        before = rss_kb(pid)
        sampler = asyncio.create_task(sample())
        t0 = time.monotonic()
        tasks = [asyncio.create_task(one(client)) for _ in range(n)]
        await asyncio.wait_for(all_first.wait(), 120)
        t_open = time.monotonic() - t0
        during = rss_kb(pid)
        await asyncio.gather(*tasks)
        sampler.cancel()
        await asyncio.sleep(1)
        after = rss_kb(pid)
    return {"before_kb": before, "during_kb": during, "peak_kb": peak, "after_kb": after, "open_s": t_open,
            "statuses": statuses, "complete": sum(finished), "n": n}


def phase_memory(args: argparse.Namespace, out: Path) -> str:
    wait_quiet(args, "memory")
    fake, fport = start_fake("fake-slow", out, CLIENT_CPU, chunk_delay=args.chunk_delay)
    pollux, pport, key = start_pollux("pollux-mem", out, SERVER_CPU,
                                      f"openai:http://127.0.0.1:{fport}/v1#{UPSTREAM_MODEL}")
    try:
        log(f"memory: {args.streams} concurrent streams through pollux (events {args.chunk_delay} s apart)")
        r = asyncio.run(hold_streams(pport, key, args.streams, pollux.pid))
    finally:
        pollux.stop()
        fake.stop()
    (out / "memory.json").write_text(json.dumps(r, indent=1))
    per_during = (r["during_kb"] - r["before_kb"]) / r["n"]
    per_peak = (r["peak_kb"] - r["before_kb"]) / r["n"]
    return ("| streams | RSS before MB | RSS with all open MB | peak MB | after MB | KB per stream (all open) | "
            "KB per stream (peak) | time to open all s | answers | complete streams |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
            f"| {r['n']} | {r['before_kb'] / 1024:.1f} | {r['during_kb'] / 1024:.1f} | {r['peak_kb'] / 1024:.1f} | "
            f"{r['after_kb'] / 1024:.1f} | {per_during:.1f} | {per_peak:.1f} | {r['open_s']:.2f} | "
            f"{', '.join(f'{v} × {k}' for k, v in r['statuses'].items())} | {r['complete']} |\n\n"
            f"memory per stream: {per_peak:.1f} KB at the peak (goal ≤ 50 KB): "
            f"{'MET' if per_peak <= 50 else 'NOT MET'}")


# ---------------------------------------------------------------------------------------------------------------
# Phase 4: llama.cpp


def build_gguf(models_root: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import llama_server
    import tiny_models
    target = models_root / "small-llama-gguf" / "model.gguf"
    if not target.is_file():
        hf = tiny_models.build_small_llama(models_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        llama_server.convert_to_gguf(hf, target)
    return target


def phase_llama(args: argparse.Namespace, out: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    import llama_server
    binary = llama_server.llama_server_binary()
    if binary is None:
        return "(no llama-server binary: phase skipped)"
    gguf = build_gguf(Path(args.models_root))
    wait_quiet(args, "llama.cpp")
    lport = free_port()
    llama = Proc("llama-server", [str(binary), "--model", str(gguf), "--alias", "small-llama",
                                  "--host", "127.0.0.1", "--port", str(lport), "--jinja",
                                  "--reasoning-format", "deepseek", "--ctx-size", "4096", "--parallel", "1",
                                  "--threads", "1", "--threads-batch", "1", "--no-webui"], out, SERVER_CPU)
    llama.wait_for(lambda: http_ok(f"http://127.0.0.1:{lport}/health"), 120)
    pollux, pport, key = start_pollux("pollux-llama", out, CLIENT_CPU,
                                      f"openai:http://127.0.0.1:{lport}/v1#small-llama")
    prompt = "Tell me a story about the sea."
    n_tok = args.max_tokens
    direct_body = orjson.dumps({"model": "small-llama", "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": n_tok, "temperature": 0, "stream": True,
                                "stream_options": {"include_usage": True}})
    pollux_body = orjson.dumps({"contents": [{"parts": [{"text": prompt}]}],
                                "generationConfig": {"maxOutputTokens": n_tok, "temperature": 0}})
    specs = [("llama.cpp directly", lport, "/v1/chat/completions", direct_body, {}, openai_text),
             ("pollux → llama.cpp", pport, STREAM_PATH, pollux_body, {"x-goog-api-key": key}, gemini_text)]
    res: dict[str, dict[str, list]] = {s[0]: {"ttft": [], "second": [], "tps": [], "decode_tps": [], "tokens": [],
                                              "text": []}
                                       for s in specs}
    try:
        conns = {s[0]: RawSSE(s[1]) for s in specs}
        log(f"llama.cpp: {args.llama_runs} runs of {n_tok} tokens per target, alternating (+1 warm-up)")
        for i in range(args.llama_runs + 1):
            for name, _, path, body, headers, text_of in (specs if i % 2 == 0 else specs[::-1]):
                t0, events, t_end = conns[name].post(path, body, headers)
                texts = [(t, text_of(ev)) for t, ev in events if text_of(ev)]
                usage = next((ev.get("usage") or ev.get("usageMetadata") for _, ev in reversed(events) if ev and (
                    ev.get("usage") or (ev.get("usageMetadata") or {}).get("candidatesTokenCount"))), {})
                tokens = usage.get("completion_tokens") or usage.get("candidatesTokenCount") or 0
                if i == 0:
                    continue
                r = res[name]
                r["ttft"].append(1000 * (texts[0][0] - t0))
                r["second"].append(1000 * (texts[1][0] - t0))
                r["tps"].append(tokens / (t_end - t0))
                r["decode_tps"].append((tokens - 1) / (texts[-1][0] - texts[0][0]))
                r["tokens"].append(tokens)
                r["text"].append("".join(x for _, x in texts))
        for c in conns.values():
            c.close()
    finally:
        pollux.stop()
        llama.stop()
    (out / "llama.json").write_text(json.dumps(res))
    d, p = res[specs[0][0]], res[specs[1][0]]
    same = all(a == b for a, b in zip(d["text"], p["text"])) and len(set(d["text"] + p["text"])) == 1
    rows = [("| target | tokens | TTFT p50 ms | TTFT min–max ms | 2nd text event p50 ms | tok/s (whole request) p50 "
             "| min–max | decode tok/s p50 |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in (specs[0][0], specs[1][0]):
        r = res[name]
        rows.append(f"| {name} | {statistics.median(r['tokens']):.0f} | {statistics.median(r['ttft']):.2f} | "
                    f"{min(r['ttft']):.2f}–{max(r['ttft']):.2f} | {statistics.median(r['second']):.2f} | "
                    f"{statistics.median(r['tps']):.1f} | "
                    f"{min(r['tps']):.1f}–{max(r['tps']):.1f} | {statistics.median(r['decode_tps']):.1f} |")
    ratio = statistics.median(p["tps"]) / statistics.median(d["tps"])
    dttft = statistics.median(p["ttft"]) - statistics.median(d["ttft"])
    return ("\n".join(rows) + f"\n\nidentical texts in all runs: {same}\n"
            f"tokens/s through pollux: {100 * ratio:.1f} % of direct (goal ≥ 97 %): "
            f"{'MET' if ratio >= 0.97 else 'NOT MET'}\n"
            f"TTFT added: {dttft:+.2f} ms (goal ≤ 5 ms): {'MET' if dttft <= 5 else 'NOT MET'}")


# ---------------------------------------------------------------------------------------------------------------
# Reference (--phases reference): the two halves of a proxied request's cost, apart


async def _timed(one: Callable[[], Awaitable[None]], c: int, n: int) -> tuple[float, float]:
    """CPU µs per call and calls/s of `one`, run n times by c workers side by side (after 20 each to warm up)."""
    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(20) for _ in range(c)))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(n // c) for _ in range(c)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return 1e6 * cpu / n, n / wall


async def _httpx_run(url: str, c: int, n: int, mode: str) -> tuple[float, float]:
    """CPU µs per request and requests/s of an httpx AsyncClient (configured as the engine's pool was when it used
    httpx) posting to the fake: `whole` reads the whole answer; `stream-to-end` reads an SSE answer to the end of its
    body; `stream-break` stops at `data: [DONE]` and closes the response, as the engine then did."""
    import httpx
    stream = mode != "whole"
    body = OPENAI_STREAM_BODY if stream else OPENAI_BODY
    headers = {"Content-Type": "application/json"}
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024),
                               timeout=httpx.Timeout(600, connect=5))

    async def one() -> None:
        response = await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
        try:
            if not stream:
                orjson.loads(await response.aread())
                return
            async for line in response.aiter_lines():
                if mode == "stream-break" and line.startswith("data:") and line[5:].strip() == "[DONE]":
                    break
        finally:
            await response.aclose()

    try:
        return await _timed(one, c, n)
    finally:
        await client.aclose()


async def _client_run(url: str, c: int, n: int, mode: str) -> tuple[float, float]:
    """The same with the engine's own client (pollux/engines/upstream/http.py), as the engine uses it."""
    sys.path.insert(0, str(ROOT))
    from pollux.engines.upstream.http import Client
    stream = mode != "whole"
    body = OPENAI_STREAM_BODY if stream else OPENAI_BODY
    headers = {"Content-Type": "application/json"}
    client = Client(connect_timeout=5, read_timeout=600)

    async def one() -> None:
        response = await client.request("POST", url, body, headers)
        try:
            if not stream:
                orjson.loads(await response.read())
                return
            async for _ in response.chunks():
                pass
        finally:
            response.release()

    try:
        return await _timed(one, c, n)
    finally:
        await client.close()


def httpx_floor(argv: list[str]) -> None:
    """`_httpx_floor URL`: one JSON line per (client, mode, c), run under uvloop as Pollux is."""
    import uvloop
    for mode, cs in (("whole", (1, 8, 32)), ("stream-to-end", (1,)), ("stream-break", (1,))):
        for c in cs:
            us, rps = uvloop.run(_httpx_run(argv[0], c, 3000, mode))
            print(json.dumps({"mode": mode, "c": c, "rps": rps, "cpu_us": us}), flush=True)
    for mode, cs in (("whole", (1, 8, 32)), ("stream-to-end", (1,))):
        for c in cs:
            us, rps = uvloop.run(_client_run(argv[0], c, 3000, mode))
            print(json.dumps({"mode": f"client-{mode}", "c": c, "rps": rps, "cpu_us": us}), flush=True)


def phase_reference(args: argparse.Namespace, out: Path) -> str:
    wait_quiet(args, "reference")
    fake, fport = start_fake("fake-reference", out, CLIENT_CPU)
    rows = ["| what | c | req/s | CPU µs/req |", "|---|---:|---:|---:|"]
    names = {"whole": "httpx AsyncClient alone, POST + read the whole answer",
             "stream-to-end": "httpx alone, streamed, read to the end of the body",
             "stream-break": "httpx alone, streamed, stop at `data: [DONE]` and close",
             "client-whole": "the engine's own client (`http.py`) alone, POST + read the whole answer",
             "client-stream-to-end": "the engine's own client alone, streamed, read to the end of the body"}
    try:
        log("reference: httpx, then the engine's own client, alone on CPU 0 against the fake")
        res = subprocess.run(["taskset", "-c", SERVER_CPU, PY, str(Path(__file__).resolve()), "_httpx_floor",
                              f"http://127.0.0.1:{fport}/v1/chat/completions"], check=True, capture_output=True,
                             text=True)
        for line in res.stdout.splitlines():
            r = json.loads(line)
            rows.append(f"| {names[r['mode']]} | {r['c']} | {r['rps']:.0f} | {r['cpu_us']:.0f} |")
    finally:
        fake.stop()
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="pollux-emulator-", dir=out))
    emu = Proc("pollux-emulator", [PY, "-m", "pollux.cli", "serve", "--port", str(port), "--data-dir", str(data),
                                   "--log-level", "warning"], out, SERVER_CPU)
    try:
        emu.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
        key = re.search(r"export GEMINI_API_KEY=(\S+)", emu.text()).group(1)
        t = Target("pollux emulator", f"http://127.0.0.1:{port}{GEN_PATH}", GEMINI_BODY, {"x-goog-api-key": key},
                   emu.pid, None, out, port)
        for c in (1, 8):
            log(f"reference: pollux on its emulator, c={c}")
            run_wrk(t, c, args.warmup, out, f"reference-warmup-c{c}")
            r = run_wrk(t, c, args.duration, out, f"reference-emulator-c{c}")
            rows.append(f"| Pollux on its emulator (no upstream), wrk | {c} | {r['rps']:.0f} | {r['cpu_us']:.0f} |")
    finally:
        emu.stop()
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------------------


def slow_fake(argv: list[str]) -> None:
    """`_slow_fake --port N --chunk-delay S`: the fixed fake with its SSE events S seconds apart (a knob the fake's
    own command line does not expose)."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunk-delay", type=float, required=True)
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import uvicorn
    from fake_vllm import _Fake, _listen
    fake = _Fake(fixed=True, chunk_delay=a.chunk_delay)
    sock = _listen("127.0.0.1", a.port)
    print(f"fake vLLM listening on http://127.0.0.1:{a.port}/v1 (chunk_delay {a.chunk_delay})", flush=True)
    uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])


class _Skip(Exception):
    """No phase needs the shared fake, Pollux and LiteLLM."""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_slow_fake":
        return slow_fake(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_httpx_floor":
        return httpx_floor(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds of each wrk run (default 8)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of wrk warm-up per target at c=8 (default 3)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--ttft-n", type=int, default=300, help="measured streams per target (default 300)")
    ap.add_argument("--ttft-warmup", type=int, default=30)
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams of the memory phase")
    ap.add_argument("--chunk-delay", type=float, default=2.0, help="seconds between SSE events, memory phase")
    ap.add_argument("--litellm", default=os.environ.get("LITELLM", "/tmp/litellm/bin/litellm"))
    ap.add_argument("--phases", default="wrk,ttft,memory,llama",
                    help="comma-separated, of wrk, ttft, memory, llama, reference (default: all but reference)")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--llama-runs", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--models-root", default="/tmp/pollux-bench-models",
                    help="where the small Llama and its GGUF are built (default /tmp/pollux-bench-models)")
    ap.add_argument("--quiet-wait", type=float, default=10,
                    help="seconds without any pytest process before each phase (0: do not wait)")
    ap.add_argument("--out", default=None, help="raw output directory (default /tmp/upstream-bench-<time>)")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    unknown = phases - {"wrk", "ttft", "memory", "llama", "reference"}
    if unknown:
        ap.error(f"unknown phase(s) {sorted(unknown)}")
    if args.no_memory:
        phases.discard("memory")
    if args.no_llama:
        phases.discard("llama")

    if shutil.which("wrk") is None:
        log("installing wrk")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    out = Path(args.out or f"/tmp/upstream-bench-{time.strftime('%Y%m%dT%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    Watch.start()
    use_litellm = not args.no_litellm and Path(args.litellm).exists() and bool(phases & {"wrk", "ttft"})
    if not args.no_litellm and not Path(args.litellm).exists():
        log(f"no LiteLLM at {args.litellm}: measuring without it")

    def output(*argv: str) -> str:
        return subprocess.run(argv, check=False, capture_output=True, text=True).stdout

    commit = output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
    dirty = output("git", "-C", str(ROOT), "status", "--porcelain", "--", "pollux").count("\n")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    meta = [f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", f"machine: {os.cpu_count()} cores, {cpu}",
            f"python: {sys.version.split()[0]}",
            f"code: commit {commit}, {dirty} uncommitted change(s) under pollux/",
            f"wrk: {output('wrk', '-v').splitlines()[0]}",
            (f"pinning: proxy under test on CPU {SERVER_CPU}; fake upstream, wrk and the bench client on CPU "
             f"{CLIENT_CPU}"), f"raw output: {out}"]
    if use_litellm:
        version = output(str(Path(args.litellm).parent / "python"), "-c",
                         "import importlib.metadata as m; print(m.version('litellm'))").strip()
        meta.append(f"litellm: {version} ({args.litellm}), one worker")

    procs: list[Proc] = []
    report: list[str] = ["\n".join(meta)]
    try:
        if not phases & {"wrk", "ttft"}:
            raise _Skip
        fake, fport = start_fake("fake", out, CLIENT_CPU)
        procs.append(fake)
        pollux, pport, key = start_pollux("pollux", out, SERVER_CPU,
                                          f"openai:http://127.0.0.1:{fport}/v1#{UPSTREAM_MODEL}")
        procs.append(pollux)
        gh = {"x-goog-api-key": key}
        targets = [Target("upstream directly", f"http://127.0.0.1:{fport}/v1/chat/completions", OPENAI_BODY, {},
                          fake.pid, None, out, fport),
                   Target("pollux → upstream", f"http://127.0.0.1:{pport}{GEN_PATH}", GEMINI_BODY, gh, pollux.pid,
                          fake.pid, out, fport)]
        ttft = [("upstream directly", fport, "/v1/chat/completions", OPENAI_STREAM_BODY, {}, openai_text),
                ("pollux → upstream", pport, STREAM_PATH, GEMINI_BODY, gh, gemini_text)]
        if use_litellm:
            lite, lport = start_litellm(args.litellm, out, SERVER_CPU, fport)
            procs.append(lite)
            lh = {"x-goog-api-key": LITELLM_KEY}
            targets.append(Target("litellm → upstream", f"http://127.0.0.1:{lport}{GEN_PATH}", GEMINI_BODY, lh,
                                  lite.pid, fake.pid, out, fport))
            ttft.append(("litellm → upstream", lport, STREAM_PATH, GEMINI_BODY, lh, gemini_text))
        import httpx
        for t in targets:  # every target answers 200; the answers are kept
            r = httpx.post(t.url, content=t.body, headers={"Content-Type": "application/json", **t.headers}, timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"{t.name} answered {r.status_code}: {r.text[:1000]}")
            (out / f"{t.lua.stem}.response.json").write_text(r.text)
        if "wrk" in phases:
            report.append("## wrk, non-streaming\n\n" + phase_wrk(args, targets, out))
        if "ttft" in phases:
            pids = {t.name: t.pid for t in targets}  # the direct target's pid is the fake's
            report.append("## time to first text event, streaming\n\n" + phase_ttft(args, ttft, out, pids, fport))
    except _Skip:
        pass
    finally:
        for p in reversed(procs):
            p.stop()
    if "memory" in phases:
        report.append("## memory per stream\n\n" + phase_memory(args, out))
    if "llama" in phases:
        report.append("## llama.cpp\n\n" + phase_llama(args, out))
    if "reference" in phases:
        report.append("## reference: httpx alone, Pollux without an upstream\n\n" + phase_reference(args, out))
    Watch.phase = "end"
    report.append("pytest ran during: " + (", ".join(Watch.disturbed) if Watch.disturbed
                                           else "no phase (quiet machine)"))
    text = "\n\n".join(report)
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
