#!/usr/bin/env python
"""Timeline of how the transformers engine forms batches from a burst of simultaneous requests (a diagnostic).

    .venv/bin/python bench/hf_trace.py                      # default engine options, 2 bursts plain + 2 with a schema
    .venv/bin/python bench/hf_trace.py 'batch_wait_ms = 100'

It starts `pollux serve` through this same file, which wraps it without changing it: before `pollux.cli.main` runs, it
patches in log lines, with milliseconds since start, where a request enters the ASGI app ("http arrive"), where it
reaches `TransformersEngine.generate` and `_submit` (the job is queued), and where a batch starts and ends (`_run`).
Then it sends bursts of 16 streaming requests (as bench/hf_bench.py does: same model, prompts, pinning) and prints
each burst's timeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve_wrapped(argv: list[str]) -> int:
    logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)9.1f %(threadName)-12s %(message)s")
    for noisy in ("asyncio", "aiosqlite", "sqlalchemy", "urllib3", "filelock", "httpcore", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.path.insert(0, str(ROOT))
    import pollux.app as app_module
    from pollux.engines import hf

    log = logging.getLogger("trace")
    engine = hf.TransformersEngine
    submit, run, generate = engine._submit, engine._run, engine.generate

    def traced_submit(self, job):
        log.info("submit")
        return submit(self, job)

    def traced_run(self, jobs):
        log.info("batch start (%d)", len(jobs))
        try:
            return run(self, jobs)
        finally:
            log.info("batch end (%d)", len(jobs))

    async def traced_generate(self, request):
        log.info("generate called")
        async for event in generate(self, request):
            yield event

    engine._submit, engine._run, engine.generate = traced_submit, traced_run, traced_generate
    build_app = app_module.build_app

    def traced_build_app(*args, **kwargs):
        inner = build_app(*args, **kwargs)

        async def app(scope, receive, send):
            if scope["type"] == "http" and "enerateContent" in scope.get("path", ""):
                log.info("http arrive")
            return await inner(scope, receive, send)
        return app

    app_module.build_app = traced_build_app
    from pollux.cli import main
    sys.argv = ["pollux", *argv]
    return main() or 0


async def drive(variant: str) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import hf_bench as hb
    import httpx

    os.sched_setaffinity(0, {1})
    model_dir = hb.tiny_models.build_small_llama(hb.tiny_models.models_root())
    out = Path(tempfile.mkdtemp(prefix="pollux-hf-trace-"))
    config = out / "pollux.toml"
    config.write_text(f'[models."{hb.MODEL_ID}"]\nengine = "transformers"\nengine_options = {{ source = "{model_dir}", '
                      f'threads = 1, max_batch_size = 16{", " + variant if variant else ""} }}\n')
    port = 18193
    server = hb.Server("pollux (traced)", [sys.executable, __file__, "serve", "--port", str(port), "--data-dir",
                                           str(out / "data"), "--config", str(config), "--log-level", "debug"],
                       hb.server_env(1), out / "pollux.log", [0], f"http://127.0.0.1:{port}/healthz")
    try:
        server.wait_ready()
        key = re.search(r"export GEMINI_API_KEY=(\S+)", server.text()).group(1)
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=32)) as http:
            for schema in (None, hb.SCHEMA):
                def one(i: int, schema=schema):
                    return hb.pollux_stream(http, f"http://127.0.0.1:{port}", key, i, 64, schema)
                await asyncio.gather(*(one(i) for i in range(16)))  # warm-up
                for burst in range(2):
                    mark = len(server.text())
                    start = time.perf_counter()
                    await asyncio.gather(*(one(i) for i in range(16)))
                    wall = time.perf_counter() - start
                    await asyncio.sleep(0.2)
                    lines = [line for line in server.text()[mark:].splitlines()
                             if re.search(r"http arrive|generate called|submit|batch (start|end)", line)]
                    t0 = float(lines[0].split()[0]) if lines else 0.0
                    print(f"== {'with the JSON schema' if schema else 'plain'}, burst {burst}: {16 * 64 / wall:.0f} "
                          f"tok/s; ms from the first arrival:")
                    for line in lines:
                        t, thread, *rest = line.split()
                        print(f"  {float(t) - t0:8.1f}  {thread:12} {' '.join(rest)}")
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve_wrapped(sys.argv[1:]))
    asyncio.run(drive(sys.argv[1] if len(sys.argv) > 1 else ""))
