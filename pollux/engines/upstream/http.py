"""The engine's HTTP/1.1 client: keep-alive connections to the model servers, on asyncio and httptools' parser.

Why not aiohttp or httpx: in front of a fast server the client is most of what Pollux adds to a request. Alone
against a fast server, httpx costs ~700 µs of CPU a request here, aiohttp ~90 µs (its session does redirects,
cookies, proxies, tracing and per-request timeout objects, none of which an upstream needs) and this client ~45 µs;
inside Pollux the proxied request went from ~420 µs with aiohttp to ~300 (BENCHMARKS.md, issue 12).
It does only what the engine needs: POST or GET with a known body length, a response read whole or as it arrives
(of a stated length, chunked, or until the connection closes), keep-alive reuse, http and https.

Failures are three exceptions: `ConnectFailed` (nothing was sent: another server may take the request), `ReadTimeout`
(no byte for `read_timeout` seconds) and `Disconnected` (the connection broke before the response ended).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

# A response's body beyond this, unread, stops reading from the socket until the caller catches up.
HIGH_WATER = 1 << 20


class ConnectFailed(Exception):
    """The connection could not be made (refused, no route, connect timeout): the request was not sent."""


class ReadTimeout(Exception):
    """The server sent nothing for `read_timeout` seconds."""


class Disconnected(Exception):
    """The connection closed, or the server sent what is not HTTP, before the response was whole."""


class Client:
    """Connections per (scheme, host, port), reused while idle for up to `keepalive` seconds."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, headers: Mapping[str, str] | None = None,
                 keepalive: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self._headers = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._closed = False

    async def request(self, method: str, url: str, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Sends the request and returns once the response's status and headers are in."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        key, start = target
        head = (method.encode() + start + self._headers
                + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
                + (b"Content-Length: %d\r\n\r\n" % len(body) if body is not None else b"\r\n"))
        if body is not None and len(body) < 65536:  # one write, and one exact-size copy kept for a second try
            head, body = head + body, None
        while True:
            conn = self._reuse(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            response = conn.send(head, body, self)
            try:
                await response._head()
            except Disconnected:
                # An idle connection the server closed as this request went out: nothing was read, so nothing was
                # generated from it; once more on a new connection.
                if reused and not response._any:
                    continue
                raise
            except BaseException:  # cancelled (the client went away), timed out: the server should stop too
                conn.close()
                raise
            return response

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """Where `url` connects, and its request line after the method with the Host header; kept, as the engine
        asks the same few URLs again and again."""
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {url}")
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = (scheme, parts.hostname, port), f" {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode("latin-1")
        if len(self._targets) >= 256:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _reuse(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            if conn.usable(now - self.keepalive):
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(key, self.read_timeout), host, port, ssl=context),
                self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        return conn

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, deque())
        idle.append(conn)
        oldest = asyncio.get_running_loop().time() - self.keepalive
        while not idle[0].usable(oldest):  # closed by the server, or idle too long: let go of it
            idle.popleft().close()

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class Response:
    """A response whose head is in: its status and headers; its body read whole, or chunk by chunk as it comes. It
    holds its connection until `release()` (back to the pool if the body was read to its end, else closed)."""

    def __init__(self, conn: _Connection, client: Client) -> None:
        self._conn = conn
        self._client = client
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self._chunks: list[bytes] = []  # a list: a deque costs ~700 bytes, even empty
        self._buffered = 0
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._headed = False
        self._any = False  # whether any byte of it arrived
        self.keep_alive = False
        self._interim = False  # reading a 1xx answer's head
        self._released = False

    def at_eof(self) -> bool:
        return self._complete and not self._chunks

    async def read(self) -> bytes:
        out = []
        async for chunk in self.chunks():
            out.append(chunk)
        return b"".join(out)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, to its end."""
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                self._buffered = 0
                self._conn.resume()
                for chunk in chunks:
                    yield chunk
            if self._complete and not self._chunks:
                return
            if not self._chunks:
                await self._wait()

    def release(self) -> None:
        """Done with it: a response read to its end leaves its connection for the next request; one left early closes
        it (a server generating for it stops)."""
        if self._released:
            return
        self._released = True
        if self.at_eof() and self.keep_alive and self._conn.reusable():
            self._conn.response = None
            self._client._release(self._conn)
        else:
            self._conn.close()

    async def _head(self) -> None:
        while not self._headed:
            await self._wait()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(self._conn.read_timeout, self._timed_out)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _timed_out(self) -> None:
        self._fail(ReadTimeout(f"no answer for {self._conn.read_timeout:g} s"))
        self._conn.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    # httptools' callbacks (through the connection)
    def on_status(self, status: bytes) -> None:
        self._any = True
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._any = True
        if self._headed:  # a chunked body's trailer fields: not the response's headers
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        parser = self._conn.parser
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the final one follows (RFC 9110 §15.2)
            self._interim = True
            self.reason, self.headers = "", {}
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()  # asked now: the parser forgets it once the message ends
        self._headed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self._headed:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._wake()


class _Connection(asyncio.Protocol):
    def __init__(self, key: tuple[str, str, int], read_timeout: float) -> None:
        self.key = key
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.lost = False
        self.idle_since = 0.0
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are Transports without the subclass

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for, on an idle connection: it cannot be trusted again
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.response is not None:
                self.response._fail(Disconnected(f"the answer is not HTTP ({exc})"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None:
            if response._headed and "content-length" not in response.headers \
                    and "transfer-encoding" not in response.headers:
                response.on_message_complete()  # a body of no stated length ends with the connection
            response._fail(Disconnected("the connection closed before the answer ended"))

    # the parser's callbacks, for the response being read
    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response.on_status(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.on_body(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response.on_message_complete()

    # for the client
    def send(self, head: bytes, body: bytes | None, client: Client) -> Response:
        assert self.transport is not None
        self.response = Response(self, client)
        self.transport.write(head)
        if body is not None:
            self.transport.write(body)
        return self.response

    def usable(self, idle_after: float) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing() \
            and self.idle_since >= idle_after

    def reusable(self) -> bool:
        if self.lost or self.transport is None or self.transport.is_closing():
            return False
        self.idle_since = asyncio.get_running_loop().time()
        return True

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
