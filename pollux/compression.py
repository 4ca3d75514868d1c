"""gzip for JSON responses, as Google's front end does when the client sends `Accept-Encoding: gzip` (the Python SDK's
httpx and Node's fetch do, and decode it).

Only a JSON body sent whole (one ASGI body message) of at least `minimum_size` bytes is compressed. Streams, SSE or
the JSON array of `streamGenerateContent`, pass untouched: each chunk must reach the client when it is made, and
their chunks are small. Starlette's GZipMiddleware is not used because its behaviour changed across the versions
Pollux allows (before 1.5 it held streamed chunks in its gzip buffer instead of flushing each one).

Cost (bench/gzip_bench.py, BENCHMARKS.md): level 4 keeps nearly level 6's ratio at 1.3-3x its speed (139 MB/s on a
models.list page, 27 MB/s on 100 embeddings); bodies of `thread_minimum_size` bytes or more are compressed in a
worker thread (zlib releases the GIL), so a large response (many embeddings, a base64 image) never holds the event
loop; below it a body takes well under a millisecond."""

from __future__ import annotations

import asyncio
import zlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip;q=0` refuses it; `*` allows it unless gzip is named)."""
    star = False
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding == "*":
            star = q > 0
        else:
            return q > 0
    return star


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def gzip_bytes(body: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip container
    return compressor.compress(body) + compressor.flush()


class GzipJson:
    def __init__(self, app: ASGIApp, minimum_size: int = 1024, level: int = 4,
                 thread_minimum_size: int = 32 * 1024) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.level = level
        self.thread_minimum_size = thread_minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or not accepts_gzip(b",".join(
                value for name, value in scope["headers"] if name == b"accept-encoding").decode("latin-1")):
            return await self.app(scope, receive, send)
        held: Message | None = None  # the response start, until the first body message says whether to compress
        decided = False

        async def compressing_send(message: Message) -> None:
            nonlocal held, decided
            if decided:
                return await send(message)
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                if (_is_json(headers.get("content-type", "")) and "content-encoding" not in headers
                        and message["status"] != 206 and not message.get("trailers", False)):
                    held = message
                    return
                decided = True
                return await send(message)
            decided = True
            if held is None:  # a message of another kind before any start: not ours to judge
                return await send(message)
            start, held = held, None
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and not message.get("more_body", False) \
                    and len(body) >= self.minimum_size:
                if len(body) >= self.thread_minimum_size:
                    body = await asyncio.to_thread(gzip_bytes, body, self.level)
                else:
                    body = gzip_bytes(body, self.level)
                headers = MutableHeaders(raw=list(start.get("headers", [])))
                headers["content-encoding"] = "gzip"
                headers["content-length"] = str(len(body))
                headers.add_vary_header("Accept-Encoding")
                start = {**start, "headers": headers.raw}
                message = {**message, "body": body}
            await send(start)
            await send(message)

        await self.app(scope, receive, compressing_send)
        if held is not None:  # a start and no body: passed on as it came, for the server to deal with
            await send(held)
