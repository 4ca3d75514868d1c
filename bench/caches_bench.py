#!/usr/bin/env python
"""Context caching and long context (issue 15), every phase in one run:

    .venv/bin/python bench/caches_bench.py [--prefixes 4000,32000] [--runs 3] [--phases hf,llama,count,pdf]

1. `hf`: Pollux with the transformers engine on the 27.4 M-parameter random Llama of tests/tiny_models.py with a
   40,960-token context (`build_small_llama_long`; one torch thread, `kv_cache_mb = 3072`), pinned to CPU 0, the
   client on CPU 1. For each prefix size: time to first token (streamGenerateContent, SSE) of a request that holds the
   prefix written out (`--runs` times, each prefix new, so nothing is reused), then of requests naming a context cache
   of such a prefix (made first, and awaited until the engine has computed and kept it). Memory per cached token: the
   KV pages the engine pins (f32 keys and values of 8 layers), and the bytes stored for the cache.
2. `llama`: the same through llama.cpp's `llama-server` (the binary .ci/run builds; the same model as f32 GGUF, one
   thread, one slot, `--ctx-size 40960`) on CPU 0, Pollux (`engine = "openai"`) and the client on CPU 1: the cache's
   prompt is sent ahead at creation, and each request sends it first, so llama.cpp's prompt cache holds it.
3. `count`: countTokens of a 1,048,000-token text on gemini-2.5-flash (the built-in model), and the same text on the
   transformers model's tokenizer.
4. `pdf`: a 1,000-page PDF (one page of text each) uploaded with the SDK until it is ACTIVE, then a cache made of it.

Printed: a table per phase; results also go to bench/results/caches-<time>/.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from upstream_bench import Proc, free_port, http_ok, log  # noqa: E402

PY = sys.executable
SERVER_CPU, CLIENT_CPU = "0", "1"
MODEL = "small-long"
TOKENS_PER_WORD = 2.64  # of "w<n>" words with the tiny models' tokenizer (measured)
KV_BYTES_PER_TOKEN = 2 * 8 * 8 * 64 * 4  # keys and values, 8 layers, 8 heads of 64, float32


def words(tokens: int, tag: str) -> str:
    """About `tokens` tokens of text that no other prefix starts with."""
    return tag + " " + " ".join(f"w{i % 300}" for i in range(int(tokens / TOKENS_PER_WORD)))


def start_pollux(name: str, out: Path, cpu: str, config: str) -> tuple[Proc, str, str]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
    (data.parent / f"{name}.toml").write_text(config)
    proc = Proc(name, [PY, "-m", "pollux.cli", "serve", "--port", str(port), "--data-dir", str(data), "--config",
                       str(data.parent / f"{name}.toml")], out, cpu, env={"HF_HUB_OFFLINE": "1"})
    proc.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 300)
    match = re.search(r"export GEMINI_API_KEY=(\S+)", proc.text())
    if not match:
        raise RuntimeError(f"no API key in pollux's output:\n{proc.text()}")
    return proc, f"http://127.0.0.1:{port}", match.group(1)


def ttft(client: httpx.Client, base: str, key: str, body: dict) -> float:
    """Seconds from sending a streamed request to its first event with text."""
    t0 = time.perf_counter()
    with client.stream("POST", f"{base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=body,
                       headers={"x-goog-api-key": key}, timeout=900) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.read()[:500]!r}")
        first = None
        for line in r.iter_lines():  # read to the end, so the connection is reused
            if first is None and line.startswith("data:") and '"text"' in line:
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("no text in the stream")
    return first


def make_cache(client: httpx.Client, base: str, key: str, proc: Proc, text: str) -> dict:
    r = client.post(f"{base}/v1beta/cachedContents", headers={"x-goog-api-key": key}, timeout=900,
                    json={"model": f"models/{MODEL}", "contents": [{"role": "user", "parts": [{"text": text}]}],
                          "ttl": "3600s"})
    if r.status_code != 200:
        raise RuntimeError(f"create: {r.status_code} {r.text[:500]}")
    cache = r.json()
    cache_id = cache["name"].rsplit("/", 1)[-1]
    pattern = re.compile(rf"context cache {cache_id}: (\d+) tokens kept by the engine")
    proc.wait_for(lambda: pattern.search(proc.text()) is not None, 900)
    cache["kept"] = int(pattern.search(proc.text()).group(1))
    return cache


def measure(args: argparse.Namespace, name: str, proc: Proc, base: str, key: str) -> tuple[list[str], list[dict]]:
    """The TTFT table's rows, and the caches made."""
    rows, caches = [], []
    limits = {"maxOutputTokens": 4, "temperature": 0}
    with httpx.Client() as client:
        for size in args.prefixes:
            plain = [ttft(client, base, key, {"contents": [{"role": "user", "parts": [
                {"text": words(size, f"plain-{uuid.uuid4().hex}") + " Which word comes first?"}]}],
                "generationConfig": limits}) for _ in range(args.runs)]
            t0 = time.perf_counter()
            cache = make_cache(client, base, key, proc, words(size, f"cached-{uuid.uuid4().hex}"))
            made = time.perf_counter() - t0
            caches.append(cache)
            cached = [ttft(client, base, key, {"cachedContent": cache["name"], "generationConfig": limits,
                                               "contents": [{"role": "user", "parts": [{"text": f"Question {i}?"}]}]})
                      for i in range(args.runs)]
            without, with_ = statistics.median(plain), statistics.median(cached)
            tokens = cache["usageMetadata"]["totalTokenCount"]
            row = (f"| {name} | {tokens:,} | {without * 1000:,.0f} ms | {with_ * 1000:,.0f} ms | "
                   f"{without / with_:,.1f}× | {made:,.1f} s | {cache['kept']:,} |")
            log(row)
            rows.append(row)
    return rows, caches


def transformers_config(args: argparse.Namespace, kv_cache_mb: int) -> str:
    """Pollux's config serving MODEL in-process, one torch thread."""
    import tiny_models
    model = tiny_models.build_small_llama_long(Path(args.models_root))
    return f"""
[models."{MODEL}"]
base = "gemini-2.0-flash"
engine = "transformers"
engine_options = {{ source = "{model}", threads = 1, kv_cache_mb = {kv_cache_mb} }}
cache_min_tokens = 1024
"""


def phase_hf(args: argparse.Namespace, out: Path) -> list[str]:
    proc, base, key = start_pollux("pollux-hf", out, SERVER_CPU, transformers_config(args, 3072))
    try:
        rows, caches = measure(args, "transformers", proc, base, key)
        stored = sum(p.stat().st_size for p in out.glob("pollux-hf-*/caches/*/*/request"))
        tokens = sum(c["usageMetadata"]["totalTokenCount"] for c in caches)
        kept = sum(c["kept"] for c in caches)
        rows.append(f"\nMemory per cached token (transformers): {KV_BYTES_PER_TOKEN:,} bytes of pinned KV pages "
                    f"(f32 keys and values, 8 layers × 8 heads × 64; {len(caches)} caches of {tokens:,} tokens kept "
                    f"{kept:,} of them in whole pages); stored: {stored / tokens:.1f} bytes per token (request JSON).")
        return rows
    finally:
        proc.stop()


def phase_llama(args: argparse.Namespace, out: Path) -> list[str]:
    import llama_server
    import tiny_models
    binary = llama_server.llama_server_binary()
    if binary is None:
        return ["(no llama-server binary: phase skipped)"]
    root = Path(args.models_root)
    gguf = root / "small-llama-long-gguf" / "model.gguf"
    if not gguf.is_file():
        gguf.parent.mkdir(parents=True, exist_ok=True)
        llama_server.convert_to_gguf(tiny_models.build_small_llama_long(root), gguf)
    port = free_port()
    llama = Proc("llama-server", [str(binary), "--model", str(gguf), "--alias", MODEL, "--host", "127.0.0.1",
                                  "--port", str(port), "--jinja", "--ctx-size", "40960", "--parallel", "1",
                                  "--threads", "1", "--threads-batch", "1", "--no-webui"], out, SERVER_CPU)
    llama.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 300)
    config = f"""
[models."{MODEL}"]
base = "gemini-2.0-flash"
engine = "openai"
engine_options = {{ base_url = "http://127.0.0.1:{port}/v1", model = "{MODEL}" }}
cache_min_tokens = 1024
"""
    proc, base, key = start_pollux("pollux-llama", out, CLIENT_CPU, config)
    try:
        return measure(args, "llama.cpp (upstream)", proc, base, key)[0]
    finally:
        proc.stop()
        llama.stop()


def phase_count(args: argparse.Namespace, out: Path) -> list[str]:
    proc, base, key = start_pollux("pollux-count", out, SERVER_CPU, transformers_config(args, 64))
    rows = []
    try:
        with httpx.Client(timeout=300) as client:
            for model_id, unit in (("gemini-2.5-flash", "The lighthouse keeper counted ships. "),
                                   (MODEL, " ".join(f"w{i % 300}" for i in range(1000)) + " ")):
                probe = client.post(f"{base}/v1beta/models/{model_id}:countTokens", headers={"x-goog-api-key": key},
                                    json={"contents": [{"parts": [{"text": unit * 10}]}]}).json()["totalTokens"]
                text = unit * int(1_048_000 / (probe / 10))
                body = orjson.dumps({"contents": [{"parts": [{"text": text}]}]})
                times, total = [], 0
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    r = client.post(f"{base}/v1beta/models/{model_id}:countTokens", content=body,
                                    headers={"x-goog-api-key": key, "content-type": "application/json"})
                    times.append(time.perf_counter() - t0)
                    total = r.json()["totalTokens"]
                row = (f"| countTokens on {model_id} | {total:,} tokens | {len(body) / 2**20:.1f} MiB | "
                       f"{statistics.median(times):.2f} s (median of {args.runs}) |")
                log(row)
                rows.append(row)
    finally:
        proc.stop()
    return rows


def phase_pdf(args: argparse.Namespace, out: Path) -> list[str]:
    import media
    from google import genai
    from google.genai import types
    config = "[models.\"gemini-2.5-flash\"]\ncache_min_tokens = 1024\n"
    proc, base, key = start_pollux("pollux-pdf", out, SERVER_CPU, config)
    try:
        pdf = out / "thousand-pages.pdf"
        pdf.write_bytes(media.pages_pdf("A thousand pages", [(f"Page {i + 1}", f"Line {i} of a long report. " * 30)
                                                              for i in range(1000)]))
        client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base))
        t0 = time.perf_counter()
        uploaded = client.files.upload(file=str(pdf), config=types.UploadFileConfig(mime_type="application/pdf"))
        sent = time.perf_counter() - t0
        while uploaded.state.name == "PROCESSING":
            time.sleep(0.05)
            uploaded = client.files.get(name=uploaded.name)
        active = time.perf_counter() - t0
        t1 = time.perf_counter()
        cache = client.caches.create(model="gemini-2.5-flash", config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part.from_uri(file_uri=uploaded.uri,
                                                                            mime_type="application/pdf")])]))
        made = time.perf_counter() - t1
        row = (f"| 1,000-page PDF ({pdf.stat().st_size / 2**20:.1f} MiB) | uploaded {sent:.2f} s | "
               f"{uploaded.state.name} after {active:.2f} s | cache of it: {made:.2f} s, "
               f"{cache.usage_metadata.total_token_count:,} tokens |")
        log(row)
        return [row]
    finally:
        proc.stop()


PHASES = {"hf": phase_hf, "llama": phase_llama, "count": phase_count, "pdf": phase_pdf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", default="4000,32000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phases", default="hf,llama,count,pdf")
    parser.add_argument("--models-root", default=None, help="where the tiny models are built (tests' default)")
    args = parser.parse_args()
    args.prefixes = [int(p) for p in args.prefixes.split(",")]
    if args.models_root is None:
        import tiny_models
        args.models_root = str(tiny_models.models_root())
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    out = ROOT / "bench" / "results" / f"caches-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    report = []
    for phase in args.phases.split(","):
        if phase in ("hf", "llama"):
            report += ["", f"## {phase}", "", "| engine | prefix tokens | TTFT without cache | TTFT with cache | "
                       "speed-up | cache made (and kept) in | tokens kept |", "|---|---:|---:|---:|---:|---:|---:|"]
        else:
            report += ["", f"## {phase}", ""]
        report += PHASES[phase](args, out)
    text = "\n".join(report)
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
