"""CPU per generateContent request with the ASGI app called in a loop, no HTTP: steadier than wrk on a shared VM,
for comparing two versions of the code (HTTP, uvicorn and the protocol's own cost are left out).

    .venv/bin/python bench/inprocess.py                 # this checkout
    .venv/bin/python bench/inprocess.py /path/to/other  # another checkout of Pollux, with this venv

Prints the median and the best of 5 rounds of 2,000 requests, in CPU µs per request.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
sys.path.insert(0, str(ROOT))

import pollux  # noqa: E402
from pollux import auth  # noqa: E402
from pollux.app import build_app, build_services  # noqa: E402
from pollux.config import Settings  # noqa: E402
from pollux.store import Store  # noqa: E402

assert Path(pollux.__file__).resolve().is_relative_to(ROOT), pollux.__file__
BODY = b'{"contents":[{"parts":[{"text":"Explain how AI works in a few words"}]}]}'
PATH = "/v1beta/models/gemini-2.5-flash:generateContent"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = Store(settings.data_dir)
        services = build_services(settings, store)
        issued = auth.bootstrap(store)
        assert issued is not None
        app = build_app(settings, services)
        headers = [(b"host", b"bench"), (b"x-goog-api-key", issued.key.encode()),
                   (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": PATH,
                 "raw_path": PATH.encode(), "query_string": b"", "headers": headers, "server": ("127.0.0.1", 80),
                 "client": ("127.0.0.1", 1), "root_path": "", "app": app}
        statuses: set[int] = set()

        async def one() -> None:
            sent = False

            async def receive() -> dict:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": BODY, "more_body": False}
                await asyncio.Event().wait()  # no disconnect
                raise AssertionError

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    statuses.add(message["status"])

            await app(dict(scope), receive, send)

        for _ in range(300):
            await one()
        gc.freeze()
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(2000):
                await one()
            rounds.append((time.process_time() - started) / 2000 * 1e6)
        assert statuses == {200}, statuses
        print(f"{ROOT}: median {sorted(rounds)[2]:.1f} µs/request, best {min(rounds):.1f}")


asyncio.run(main())
