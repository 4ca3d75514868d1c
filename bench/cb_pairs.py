#!/usr/bin/env python
"""Pollux against `transformers serve --continuous-batching` in alternating pairs, both servers up at once (issue 14).

    .venv/bin/python bench/cb_pairs.py                    # 10 rounds of the Poisson phase and the burst of 16
    .venv/bin/python bench/cb_pairs.py --rounds 20 --phases poisson

bench/hf_bench.py runs one server's repeats, then the other's; this machine's speed drifts by several per cent over
minutes (the same server's runs minutes apart differ by up to 8 %), which can fall on one server only. Here both
servers run at once, each on CPU 0 with one torch thread (this client on CPU 1), on the same model and prompts as
hf_bench.py (27.4 M-parameter random Llama, greedy, 64 tokens, streaming: Pollux's native SSE, the peer's
/v1/chat/completions); each round runs a phase on one and straight after on the other, the order swapped every
round, so that drift falls on both alike. The server whose turn it is not is stopped (SIGSTOP) for the other's phase,
so that its own background work (Pollux's job polls, the peer's loop) takes nothing from the other on their shared
core; `--no-stop` leaves it running, and the CPU it used meanwhile is reported ("idle CPU").
Phases: `poisson` (32 requests at the seeded Poisson schedule of hf_bench.py, mean gap 120 ms) and `concurrent` (16 at
once). Printed per phase: the medians of tok/s, TTFT p50/p90 and decode ms/token of each server, and per round the ratio
Pollux ÷ peer of tok/s, with their median and the rounds in which Pollux's throughput was ≥ the peer's.

The peer needs transformers' serving extras; `bench/hf_run.sh` installs them into the venv (run it once first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hf_bench  # noqa: E402
import tiny_models  # noqa: E402
from hf_bench import MODEL_ID, Phase, Server, openai_stream, percentile, pollux_stream, proc_cpu_s  # noqa: E402


def decode_ms(phase: Phase) -> float:
    return 1000 * statistics.median((r.end - r.start - r.ttft) / (r.tokens - 1) for r in phase.requests
                                    if r.ttft is not None and r.tokens > 1)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--phases", default="poisson,concurrent")
    ap.add_argument("--pollux-options", default="", help="extra engine_options, e.g. 'decode_attention = \"library\"'")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-stop", dest="stop", action="store_false",
                    help="leave the other server running (idle) during a server's phase")
    args = ap.parse_args()
    phases = args.phases.split(",")
    model_dir = tiny_models.build_small_llama(tiny_models.models_root())
    out = args.out or Path(tempfile.mkdtemp(prefix="cb-pairs-"))
    out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="cb-pairs-data-"))
    schedule = hf_bench.poisson_schedule(32, 120, 0)
    env = hf_bench.server_env(1)
    options = "threads = 1" + (f", {args.pollux_options}" if args.pollux_options else "")
    config = out / "pollux.toml"
    config.write_text(f'[models."{MODEL_ID}"]\nengine = "transformers"\n'
                      f'engine_options = {{ source = "{model_dir}", {options} }}\n')
    pollux = Server("pollux", [sys.executable, "-m", "pollux.cli", "serve", "--port", "18090", "--data-dir", str(data),
                               "--config", str(config)], env, out / "pollux.log", [0], "http://127.0.0.1:18090/healthz")
    peer = Server("peer", [str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir), "--host",
                           "127.0.0.1", "--port", "18091", "--device", "cpu", "--log-level", "warning",
                           "--continuous-batching"], env, out / "peer.log", [0], "http://127.0.0.1:18091/health")
    os.sched_setaffinity(0, {1})
    results: dict[tuple[str, str], list[tuple[Phase, float]]] = {}
    try:
        pollux.wait_ready()
        peer.wait_ready()
        key = re.search(r"export GEMINI_API_KEY=(\S+)", pollux.text()).group(1)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            targets = {"pollux": (pollux, lambda i: pollux_stream(http, "http://127.0.0.1:18090", key, i, 64, None)),
                       "peer": (peer, lambda i: openai_stream(http, "http://127.0.0.1:18091", str(model_dir), i, 64))}
            for _, one in targets.values():  # warm-up, not reported
                await asyncio.gather(*(one(i) for i in range(16)))
            for rnd in range(args.rounds):
                for mode in phases:
                    order = ["pollux", "peer"] if rnd % 2 == 0 else ["peer", "pollux"]
                    for name in order:
                        server, one = targets[name]
                        idle = targets["peer" if name == "pollux" else "pollux"][0]
                        idle0 = proc_cpu_s(idle.pid)
                        n = 32 if mode == "poisson" else 16
                        if args.stop:
                            os.kill(idle.pid, signal.SIGSTOP)
                        try:
                            phase = await hf_bench.run_phase(name, mode, rnd, one, n, mode, server, schedule=schedule)
                        finally:
                            if args.stop:
                                os.kill(idle.pid, signal.SIGCONT)
                        errors = [r.error for r in phase.requests if r.error]
                        if errors:
                            raise RuntimeError(f"{name} {mode}: {errors[:2]}")
                        results.setdefault((mode, name), []).append((phase, proc_cpu_s(idle.pid) - idle0))
    finally:
        pollux.stop()
        peer.stop()
        shutil.rmtree(data, ignore_errors=True)

    print(f"\n{args.rounds} rounds, both servers on CPU 0 (one torch thread), client on CPU 1; the other server "
          f"{'stopped' if args.stop else 'idle'} during a phase; Pollux options: {options}")
    for mode in phases:
        print(f"\n{mode} ({32 if mode == 'poisson' else 16} × 64 tokens):")
        print("| server | tok/s | TTFT p50 ms | TTFT p90 ms | decode ms/token | server CPU µs/token | "
              "idle CPU while the other ran |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in ("pollux", "peer"):
            runs = results[(mode, name)]
            ttfts = [r.ttft for phase, _ in runs for r in phase.requests]
            print(f"| {name} | {statistics.median(p.tok_s for p, _ in runs):.0f} | "
                  f"{1000 * percentile(ttfts, 0.5):.0f} | {1000 * percentile(ttfts, 0.9):.0f} | "
                  f"{statistics.median(decode_ms(p) for p, _ in runs):.1f} | "
                  f"{statistics.median(1e6 * p.server_cpu_s / p.tokens for p, _ in runs):.0f} | "
                  f"{max(idle for _, idle in runs):.2f} s at most |")
        print("\nwhere the wall time ends (medians over rounds): the last answer's end after the last send; the "
              "request that ends last (its send time, TTFT, first to last text, last text to end of stream); last "
              "text to end of stream over all requests")
        for name in ("pollux", "peer"):
            tails = []
            for phase, _ in results[(mode, name)]:
                first = min(r.start for r in phase.requests)
                last_end = max(r.end for r in phase.requests) - first
                last_sent = max(r.start for r in phase.requests) - first
                r = max(phase.requests, key=lambda q: q.end)
                tails.append((last_end - last_sent, r.start - first, r.ttft or 0, r.last - r.start - (r.ttft or 0),
                              r.end - r.last, statistics.median(q.end - q.last for q in phase.requests)))
            med = [statistics.median(t[k] for t in tails) for k in range(6)]
            print(f"  {name:7} after last send {1000 * med[0]:6.0f} ms; last to end: sent at {med[1]:5.2f} s, "
                  f"TTFT {1000 * med[2]:4.0f} ms, decode {1000 * med[3]:5.0f} ms, close {1000 * med[4]:4.1f} ms; "
                  f"close over all {1000 * med[5]:4.1f} ms")
        ratios = [a.tok_s / b.tok_s for (a, _), (b, _) in zip(results[(mode, "pollux")], results[(mode, "peer")],
                                                             strict=True)]
        print(f"tok/s Pollux ÷ peer per round: {' '.join(f'{r:.3f}' for r in ratios)}")
        print(f"median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; "
              f"Pollux ≥ peer in {sum(r >= 1 for r in ratios)} of {len(ratios)} rounds")
    print(f"\nlogs: {out}")


if __name__ == "__main__":
    asyncio.run(main())
