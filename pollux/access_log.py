"""One line per request at info level, on the logger `pollux.access`: client, method, path, status, milliseconds.

Logged when the response ends (a stream when its last chunk is sent), so the time is the whole response's. Nothing
secret is written: no headers, no bodies (prompts), and in the query string the values of `key` (an API key) and
`upload_id` (a resumable upload's URL is a capability to write to it) are replaced, with those of any parameter
whose name says key or token."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pollux.access")

REDACTED = "REDACTED"


def _secret(name: str) -> bool:
    name = unquote(name).lower()
    return name == "upload_id" or "key" in name or "token" in name


def redact_query(query: str) -> str:
    """The query string with secret parameters' values replaced, the rest as sent."""
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if sep and _secret(name) else part)
    return "&".join(parts)


def target(scope: Scope) -> str:
    """The request target to log: the path as sent (percent-encoded, so no control characters reach the log) and the
    redacted query."""
    raw = scope.get("raw_path")
    path = raw.decode("ascii", "backslashreplace") if raw else scope.get("path", "")
    path = path.partition("?")[0]  # some servers put the query in raw_path
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{redact_query(query)}" if query else path


class AccessLog:
    """ASGI middleware, outermost: it sees the status of every response, the app's error pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status: int | None = None
        logged = False

        def line(note: str = "") -> None:
            nonlocal logged
            logged = True
            client = scope.get("client")
            log.info("%s %s %s %s %.1f ms%s", client[0] if client else "-", scope["method"], target(scope),
                     status if status is not None else 500, (time.perf_counter() - start) * 1000, note)

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                line()

        try:
            await self.app(scope, receive, logged_send)
        except BaseException:
            if not logged:  # uvicorn answers 500 when nothing was sent yet, else cuts the connection
                line(" (failed)" if status is None else " (cut short: the server failed)")
            raise
        if not logged:  # a stream whose client left (or no response at all: uvicorn sends 500)
            line(" (no response)" if status is None else " (cut short: the client left)")
