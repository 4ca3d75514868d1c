"""The engine's HTTP/1.1 client (pollux/engines/upstream/http.py) against scripted servers on loopback sockets.

Each test starts a server with `asyncio.start_server` on 127.0.0.1, port 0, whose answers it writes byte for byte,
so it controls the framing exactly; the server records the connections it accepted, the requests it read and the
connections the client closed. Every test runs on asyncio's own loop and, when installed, on uvloop (which uvicorn
picks when it is there). Nothing asserts a duration: waits are bounded only so that a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from pollux.engines.upstream.http import Client, ConnectFailed, Disconnected, ReadTimeout

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
WAIT = 3.0  # the bound on any wait for something the server should see


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a test's coroutine to its end on a fresh loop of the parametrized kind, failing it if it hangs."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 15))

    return run


# The scripted server

@dataclass
class Request:
    """One request as the server read it: the head through its blank line, the body, and the connection's index."""

    head: bytes
    body: bytes
    conn: int

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def headers(self) -> dict[str, list[str]]:
        """The header fields, by lower-case name, each with its values in order."""
        out: dict[str, list[str]] = {}
        for line in self.head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.decode("latin-1").partition(":")
                out.setdefault(name.lower(), []).append(value.strip())
        return out


# Writes an answer to the request on the writer. Returns False to have the server close the connection afterwards;
# anything else and the server reads the connection's next request.
Respond = Callable[[Request, asyncio.StreamWriter], Awaitable[bool | None]]


class Scripted:
    """A loopback HTTP server whose answers `respond` writes as raw bytes: `async with Scripted(respond) as server`."""

    def __init__(self, respond: Respond, ssl_context: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.ssl_context = ssl_context
        self.accepted = 0
        self.requests: list[Request] = []
        self.eof: list[asyncio.Event] = []  # per connection: set when the client closed it (the server read EOF)
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def saw_eof(self, conn: int) -> bool:
        """Whether the client closed connection `conn` (waiting a bounded while for it)."""
        try:
            await asyncio.wait_for(self._accepted(conn + 1), WAIT)
            await asyncio.wait_for(self.eof[conn].wait(), WAIT)
        except TimeoutError:
            return False
        return True

    async def received(self, count: int) -> None:
        """Waits until `count` requests are in."""
        while len(self.requests) < count:
            await asyncio.sleep(0.005)

    async def drop(self, conn: int) -> None:
        """Closes connection `conn` from the server's side."""
        writer = self._writers[conn]
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass

    async def _accepted(self, count: int) -> None:
        while self.accepted < count:
            await asyncio.sleep(0.005)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        self.eof.append(asyncio.Event())
        self._writers.append(writer)
        self._tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eof[index].set()
                    return
                request = Request(head, b"", index)
                length = request.headers().get("content-length")
                if length:
                    request.body = await reader.readexactly(int(length[0]))
                self.requests.append(request)
                keep = await self.respond(request, writer)
                await writer.drain()
                if keep is False:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.eof[index].set()
        except asyncio.CancelledError:  # the server shutting down: ends quietly (asyncio logs a cancelled handler)
            pass
        finally:
            writer.close()


def answer(body: bytes = b"", status: str = "200 OK", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole response with a Content-Length."""
    fields = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"HTTP/1.1 {status}\r\n{fields}Content-Length: {len(body)}\r\n\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def echo_path() -> Respond:
    """Answers each request with its own path, with a Content-Length."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(request.line.split(b" ")[1]))

    return respond


def client(**kw: Any) -> Client:
    kw.setdefault("connect_timeout", 2.0)
    kw.setdefault("read_timeout", 2.0)
    return Client(**kw)


async def get(c: Client, url: str) -> bytes:
    """A GET read whole and released."""
    response = await c.request("GET", url)
    try:
        return await response.read()
    finally:
        response.release()


# Requests and whole responses

def test_post_sends_its_line_headers_and_body_and_reads_a_whole_response(run):
    """A POST carries the request line, Host, default and own headers, Content-Length and body; the answer's status,
    reason, headers (lower-case, repeats joined) and Content-Length body are read."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nX-Multi: a\r\nContent-Type: application/json\r\nx-multi: b\r\n"
                     b"Content-Length: 11\r\n\r\n{\"ok\":true}")

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client(headers={"User-Agent": "pollux-test", "Authorization": "Bearer k"})
            response = await c.request("POST", server.url("/v1/chat/completions?stream=0"), b'{"q":1}',
                                       {"Content-Type": "application/json"})
            assert (response.status, response.reason) == (201, "Created")
            assert response.headers == {"x-multi": "a, b", "content-type": "application/json",
                                        "content-length": "11"}
            assert await response.read() == b'{"ok":true}'
            assert response.at_eof()
            response.release()
            await c.close()

            [request] = server.requests
            assert request.line == b"POST /v1/chat/completions?stream=0 HTTP/1.1"
            assert request.headers() == {"host": [f"127.0.0.1:{server.port}"], "user-agent": ["pollux-test"],
                                         "authorization": ["Bearer k"], "content-type": ["application/json"],
                                         "content-length": ["7"]}
            assert request.body == b'{"q":1}'

    run(main())


def test_answer_in_tiny_pieces_is_parsed_whole(run):
    """An answer written a few bytes at a time (status line, headers and body split anywhere) reads as one."""
    raw = answer(b"split body", "200 All Right", (("X-Long-Name", "a value"), ("X-Long-Name", "another")))

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(raw), 3):
            writer.write(raw[i:i + 3])
            await writer.drain()
            await asyncio.sleep(0)

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url())
            assert (response.status, response.reason) == (200, "All Right")
            assert response.headers == {"x-long-name": "a value, another", "content-length": "10"}
            assert await response.read() == b"split body"
            response.release()
            await c.close()

    run(main())


def test_interim_1xx_answer_is_skipped(run):
    """An interim answer (103 Early Hints) before the final one is not taken for it (RFC 9110 section 15.2)."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer(b"final"))

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url())
            assert (response.status, response.reason) == (200, "OK")
            assert await response.read() == b"final"
            response.release()
            await c.close()

    run(main())


def test_large_request_body_and_get_without_body(run):
    """A body past the single-write size arrives whole with its length; a GET sends no Content-Length."""
    payload = bytes(range(256)) * 1024  # 256 KiB

    async def main() -> None:
        async with Scripted(echo_path()) as server:
            c = client()
            response = await c.request("POST", server.url("/big"), payload)
            assert await response.read() == b"/big"
            response.release()
            assert await get(c, server.url()) == b"/"
            await c.close()
            big, small = server.requests
            assert big.headers()["content-length"] == [str(len(payload))] and big.body == payload
            assert small.line == b"GET / HTTP/1.1" and "content-length" not in small.headers()

    run(main())


# Keep-alive

def test_sequential_requests_reuse_one_connection(run):
    """Three requests, each read and released, go over one connection, bodiless answers (204, length 0) included."""
    answers = [answer(b"first"), b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", answer(b"")]

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(answers[len(server.requests) - 1])

    async def main() -> None:
        nonlocal server
        async with Scripted(respond) as server:
            c = client()
            bodies = []
            for path in ("/a", "/b", "/c"):
                response = await c.request("POST", server.url(path), b"x")
                bodies.append((response.status, await response.read(), response.at_eof()))
                response.release()
            await c.close()
            assert bodies == [(200, b"first", True), (204, b"", True), (200, b"", True)]
            assert server.accepted == 1
            assert [r.conn for r in server.requests] == [0, 0, 0]
            assert [r.line.split(b" ")[1] for r in server.requests] == [b"/a", b"/b", b"/c"]

    server: Scripted
    run(main())


def test_connection_close_answer_is_not_reused(run):
    """An answer saying `Connection: close` is not reused even if the server leaves it open: the client closes it."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        headers = (("Connection", "close"),) if request.conn == 0 else ()
        writer.write(answer(b"ok", headers=headers))  # and the connection stays open on this side

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            assert await get(c, server.url("/1")) == b"ok"
            assert await server.saw_eof(0)
            assert await get(c, server.url("/2")) == b"ok"
            assert await get(c, server.url("/3")) == b"ok"
            await c.close()
            assert server.accepted == 2
            assert [r.conn for r in server.requests] == [0, 1, 1]

    run(main())


def test_idle_connection_past_keepalive_is_closed_not_reused(run):
    """A connection idle longer than `keepalive` is closed and a new one made."""

    async def main() -> None:
        async with Scripted(echo_path()) as server:
            c = client(keepalive=0.05)
            assert await get(c, server.url("/1")) == b"/1"
            await asyncio.sleep(0.2)  # a lower bound only: the connection is at least this old
            assert await get(c, server.url("/2")) == b"/2"
            assert await server.saw_eof(0)
            await c.close()
            assert server.accepted == 2

    run(main())


def test_concurrent_requests_take_separate_connections_then_reuse_them(run):
    """Requests in flight at once each get a connection; the next round reuses them all."""
    go: dict[int, asyncio.Event] = {}  # per round: set once all its requests are in, before any answer goes out

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        await go[(len(server.requests) - 1) // 3].wait()
        writer.write(answer(request.line.split(b" ")[1]))

    async def round_of(c: Client, number: int) -> list[bytes]:
        go[number] = asyncio.Event()
        tasks = [asyncio.create_task(get(c, server.url(f"/{number}{i}"))) for i in range(3)]
        await server.received(3 * number + 3)
        go[number].set()
        return await asyncio.gather(*tasks)

    async def main() -> None:
        nonlocal server
        async with Scripted(respond) as server:
            c = client()
            assert await round_of(c, 0) == [b"/00", b"/01", b"/02"]
            assert server.accepted == 3
            assert await round_of(c, 1) == [b"/10", b"/11", b"/12"]
            assert server.accepted == 3
            await c.close()

    server: Scripted
    run(main())


# Bodies: chunked, until close, cut off, large

def test_chunked_body_streams_in_order_and_connection_is_reused(run):
    """Chunks arrive through `chunks()` one by one as the server sends them; `read()` joins them; then reuse."""
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: " + b"3" * 3000 + b"\n\n", b"data: [DONE]\n\n"]
    acks: asyncio.Queue[int]

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED)
        sent = 0
        for piece in pieces:
            writer.write(chunk(piece))
            await writer.drain()
            sent += len(piece)
            if request.line.startswith(b"POST /lockstep"):
                while await acks.get() < sent:  # the client has this piece before the next is sent
                    pass
            else:
                await asyncio.sleep(0.01)
        writer.write(LAST_CHUNK)

    async def main() -> None:
        nonlocal acks
        acks = asyncio.Queue()
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("POST", server.url("/lockstep"), b"{}")
            assert response.headers["transfer-encoding"] == "chunked"
            received = b""
            async for data in response.chunks():
                received += data
                acks.put_nowait(len(received))
            assert received == b"".join(pieces)
            assert response.at_eof()
            response.release()

            response = await c.request("POST", server.url("/sleepy"), b"{}")
            assert await response.read() == b"".join(pieces)
            response.release()
            await c.close()
            assert server.accepted == 1

    run(main())


def test_body_ended_by_close_is_read_whole_and_not_reused(run):
    """A body with neither Content-Length nor chunked ends when the server closes: read whole, no error, no reuse."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.conn == 1:
            writer.write(answer(b"second"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in (b"until ", b"the ", b"end"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        return False  # the close ends the body

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url("/1"))
            assert response.status == 200
            assert await response.read() == b"until the end"
            assert response.at_eof()
            response.release()
            assert await get(c, server.url("/2")) == b"second"
            await c.close()
            assert server.accepted == 2

    run(main())


def test_content_length_body_cut_short_raises_disconnected(run):
    """The server closing after half a Content-Length body makes `read()` raise Disconnected."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        return False

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url())
            with pytest.raises(Disconnected):
                await response.read()
            assert not response.at_eof()
            response.release()
            await c.close()

    run(main())


def test_chunked_body_without_last_chunk_raises_disconnected(run):
    """The server closing before the terminating chunk makes `chunks()` raise Disconnected after the chunks sent."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(CHUNKED + chunk(b"one") + chunk(b"two"))
        return False

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url())
            received = b""
            with pytest.raises(Disconnected):
                async for data in response.chunks():
                    received += data
            assert received == b"onetwo"
            response.release()
            await c.close()

    run(main())


def test_closed_or_not_http_answer_on_new_connection_raises_disconnected(run):
    """A new connection closed with no answer, or answered with what is not HTTP, raises Disconnected, no retry."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.line.startswith(b"GET /garbage"):
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            return True  # and left open: the client must notice by itself
        return False

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            with pytest.raises(Disconnected):
                await c.request("GET", server.url("/closed"))
            with pytest.raises(Disconnected):
                await c.request("GET", server.url("/garbage"))
            assert await server.saw_eof(1)
            await c.close()
            assert server.accepted == 2 and len(server.requests) == 2

    run(main())


def test_large_body_read_slowly_arrives_exact(run):
    """A 5 MiB body, left unread long enough to fill the buffer and then read chunk by chunk, arrives byte-exact."""
    payload = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(payload))

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("GET", server.url("/big"))
            assert response.headers["content-length"] == str(len(payload))
            await asyncio.sleep(0.2)  # lets the body pile up past the high-water mark, so reading pauses
            digest, size, count = hashlib.sha256(), 0, 0
            async for data in response.chunks():
                digest.update(data)
                size += len(data)
                count += 1
                await asyncio.sleep(0)
            assert size == len(payload) and digest.digest() == hashlib.sha256(payload).digest()
            assert count > 1
            response.release()
            assert await get(c, server.url("/after")) == payload  # reading resumed: the connection is whole
            await c.close()
            assert server.accepted == 1

    run(main())


# Failures: timeouts, refused connections, stale and early-left connections

def test_no_answer_raises_read_timeout(run):
    """A server that reads the request and never answers makes `request()` raise ReadTimeout."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        return None  # no answer, connection left open

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client(read_timeout=0.3)
            with pytest.raises(ReadTimeout):
                await c.request("POST", server.url(), b"{}")
            assert await server.saw_eof(0)  # the timed-out connection is closed
            await c.close()

    run(main())


def test_body_that_stalls_raises_read_timeout(run):
    """A body that stops coming makes `read()` raise ReadTimeout."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client(read_timeout=0.3)
            response = await c.request("GET", server.url())
            with pytest.raises(ReadTimeout):
                await response.read()
            response.release()
            await c.close()

    run(main())


def test_connect_failed_for_closed_port_and_other_schemes(run):
    """Nothing listening, or a URL that is not http(s), raises ConnectFailed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there

    async def main() -> None:
        c = client()
        with pytest.raises(ConnectFailed):
            await c.request("POST", f"http://127.0.0.1:{port}/v1/x", b"{}")
        for url in ("ftp://127.0.0.1/x", "ws://127.0.0.1:1/x", "http:///no-host"):
            with pytest.raises(ConnectFailed):
                await c.request("GET", url)
        await c.close()

    run(main())


def test_idle_connection_closed_by_server_is_replaced(run):
    """An idle connection the server closed after the answer is not used for the next request (or is retried)."""

    async def main() -> None:
        async with Scripted(echo_path()) as server:
            c = client()
            assert await get(c, server.url("/1")) == b"/1"
            await server.drop(0)
            await asyncio.sleep(0.05)  # the client may or may not have seen the close: both must work
            response = await c.request("GET", server.url("/2"))
            assert response.status == 200 and await response.read() == b"/2"
            response.release()
            await c.close()
            assert server.accepted == 2

    run(main())


def test_idle_connection_closed_as_request_arrives_is_retried_once(run):
    """A reused connection the server closes on the next request, unanswered, is retried on a new one, body too."""
    payload = b"z" * 100_000  # past the size sent in one write, so the body is kept apart and sent again

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.conn == 0 and len(server.requests) == 2:
            return False  # reads it and closes, as a server whose keep-alive ran out would
        writer.write(answer(b"%d" % len(request.body)))
        return True

    async def main() -> None:
        nonlocal server
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("POST", server.url("/x"), b"first")
            assert await response.read() == b"5"
            response.release()
            response = await c.request("POST", server.url("/x"), payload)
            assert response.status == 200 and await response.read() == b"100000"
            response.release()
            await c.close()
            assert server.accepted == 2
            _, dropped, retried = server.requests
            assert (dropped.conn, retried.conn) == (0, 1)
            assert dropped.head == retried.head and dropped.body == retried.body == payload

    server: Scripted
    run(main())


def test_response_left_early_closes_its_connection(run):
    """`release()` before the body of a long chunked answer is read closes the connection; the next is new."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.conn == 0:
            writer.write(CHUNKED + b"".join(chunk(b"t" * 65536) for _ in range(8)))  # no last chunk yet
        else:
            writer.write(answer(b"fresh"))

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client()
            response = await c.request("POST", server.url("/stream"), b"{}")
            assert response.status == 200
            response.release()
            assert await server.saw_eof(0)  # the server generating for it is told to stop
            assert await get(c, server.url("/next")) == b"fresh"
            await c.close()
            assert server.accepted == 2

    run(main())


def test_request_cancelled_before_the_head_closes_its_connection(run):
    """A request cancelled while it waits for the answer's head closes its connection, so the server stops."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        return None  # generating a long while: no answer yet

    async def main() -> None:
        async with Scripted(respond) as server:
            c = client(read_timeout=10.0)
            task = asyncio.create_task(c.request("POST", server.url("/slow"), b"{}"))
            await server.received(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await server.saw_eof(0)
            await c.close()

    run(main())


# https

def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pollux test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_verifies_against_ssl_cert_file_and_reuses(run, tmp_path, monkeypatch):
    """https to 127.0.0.1 fails to connect with an untrusted certificate and works, with reuse, once SSL_CERT_FILE
    names it."""
    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def main() -> None:
        async with Scripted(echo_path(), server_context) as server:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            untrusting = client()
            with pytest.raises(ConnectFailed):
                await untrusting.request("GET", server.url("/untrusted", "https"))
            await untrusting.close()

            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            trusting = client()  # its context is made at its first https connection, reading SSL_CERT_FILE
            for path in ("/1", "/2"):
                response = await trusting.request("POST", server.url(path, "https"), b"{}")
                assert response.status == 200 and await response.read() == path.encode()
                response.release()
            await trusting.close()
            assert server.accepted == 1  # the failed handshake never reached the handler; both requests on one
            assert await server.saw_eof(0)

    run(main())


# Closing

def test_close_closes_idle_connections_and_later_requests_still_work_unpooled(run):
    """`close()` closes idle connections (the server sees EOF); a later request works on a new connection, which
    is closed, not pooled, when released."""

    async def main() -> None:
        async with Scripted(echo_path()) as server:
            c = client()
            assert await get(c, server.url("/1")) == b"/1"
            await c.close()
            assert await server.saw_eof(0)
            assert await get(c, server.url("/2")) == b"/2"
            assert await server.saw_eof(1)
            assert server.accepted == 2
            await c.close()

    run(main())
