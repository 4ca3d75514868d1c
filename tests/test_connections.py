"""Connections against a real `pollux serve`: idle sockets that never finish their headers are closed and do not lock
others out, the connection cap makes room or answers 503, and a trickled request body has a deadline."""

from __future__ import annotations

import json
import re
import select
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, start_server

TIMEOUT = 30  # an upper bound for anything that should happen: no outcome here is waited for with a fixed sleep
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = b'{"contents": [{"parts": [{"text": "hi"}]}]}'


def _connect(srv: Server) -> socket.socket:
    host, port = srv.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _idle(srv: Server, sent: bytes) -> socket.socket:
    """A connection that sends part of a request head, then nothing."""
    sock = _connect(srv)
    sock.sendall(sent)
    return sock


def _busy(srv: Server) -> socket.socket:
    """A connection inside a request: past its headers, the app waits for its body. uvicorn's `100 Continue` comes
    once the app reads the body, so it is sure the server has parsed the headers."""
    sock = _connect(srv)
    sock.sendall(f"POST {GENERATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-goog-api-key: {srv.api_key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\nExpect: 100-continue\r\n\r\n"
                 .encode())
    assert _head(sock).startswith(b"HTTP/1.1 100 "), "the app never read the body"
    return sock


def _head(sock: socket.socket) -> bytes:
    """Reads a response head (and whatever of the body came with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Reads one whole response with a Content-Length: its head and its body."""
    head, _, body = _head(sock).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {head + body!r}"
        body += chunk
    return head, body


def _until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a socket timeout fails the test)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _models(srv: Server) -> httpx.Response:
    return httpx.get(f"{srv.base_url}/v1beta/models", headers={"x-goog-api-key": srv.api_key}, timeout=TIMEOUT)


def _open_files_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a process, where /proc tells it."""
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    match = re.search(r"^Max open files\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def _start_under_the_common_limit(data_dir: Path, config: str, own: int) -> Server:
    """`pollux serve` started with the common soft limit of 1,024 open files (it must raise its own), and this
    process allowed `own` for its sockets (restored by the `open_files` fixture)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < own:
        pytest.skip(f"the hard open-file limit {hard} is below the {own} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        return start_server(data_dir, config=config)  # the server inherits the limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, own), hard))


@pytest.fixture
def open_files() -> Iterator[None]:
    resource = pytest.importorskip("resource")
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_idle_half_sent_connections_are_closed_and_do_not_lock_others_out(tmp_path, open_files):
    """1,000 sockets that never finish their request head, with the server under the common limit of 1,024 open
    files: everyone else is still served, and each of them is closed at the header timeout."""
    config = "[limits]\nheader_timeout_seconds = 2\n"
    with _start_under_the_common_limit(tmp_path / "data", config, own=1500) as srv:
        limit = _open_files_limit(srv.process.pid)
        assert limit is None or limit >= 4096, limit  # raised so that max_connections (4,096) fits
        halves = (b"GET /v1beta/mod", f"GET /v1beta/models HTTP/1.1\r\nHost: 127.0.0.1\r\nx-goog-api-key: "
                  f"{srv.api_key}\r\n".encode(), b"")
        idle = [_idle(srv, halves[i % 3]) for i in range(1000)]
        try:
            for _ in range(5):  # fresh connections each time, while the idle ones are open
                response = _models(srv)
                assert response.status_code == 200 and response.json()["models"], response.text
            selector = selectors.DefaultSelector()
            for sock in idle:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            open_ = len(idle)
            deadline = time.monotonic() + 60
            while open_ and time.monotonic() < deadline:
                for key, _ in selector.select(deadline - time.monotonic()):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        sent = sock.recv(65536)
                    except ConnectionResetError:
                        sent = b""
                    assert sent == b"", sent  # closed unanswered
                    selector.unregister(sock)
                    open_ -= 1
            assert open_ == 0, f"{open_} of {len(idle)} half-sent connections are still open"
        finally:
            for sock in idle:
                sock.close()
        assert _models(srv).status_code == 200
        assert "does not fit" not in srv.log() and "Traceback" not in srv.log(), srv.log()


def test_the_next_request_on_a_kept_alive_connection_has_the_header_timeout_too(tmp_path):
    """Between requests uvicorn's keep-alive timeout applies; once the next request has begun, its head is timed."""
    with start_server(tmp_path / "data", config="[limits]\nheader_timeout_seconds = 2\n") as srv, \
            _connect(srv) as sock:
        request = f"GET /v1beta/models HTTP/1.1\r\nHost: 127.0.0.1\r\nx-goog-api-key: {srv.api_key}\r\n"
        sock.sendall(f"{request}\r\n".encode())
        assert _response(sock)[0].startswith(b"HTTP/1.1 200 ")
        sock.sendall(request.encode())  # the next request, all but the blank line that ends its head
        assert _until_eof(sock) == b""  # closed unanswered


def test_past_the_cap_the_connection_waiting_longest_for_its_headers_makes_room(tmp_path):
    """A busy connection is never dropped for a newcomer, even the oldest; the one idle longest is, and the rest are
    served."""
    config = "[limits]\nmax_connections = 3\nheader_timeout_seconds = 600\n"
    with start_server(tmp_path / "data", config=config) as srv:
        busy = _busy(srv)
        first = _idle(srv, b"GET /v1beta/mod")
        second = _idle(srv, b"GET /v1beta/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with busy, first, second:
            response = _models(srv)  # a fourth connection
            assert response.status_code == 200, response.text
            assert _until_eof(first) == b""  # dropped for it, well before its header timeout
            second.sendall(f"x-goog-api-key: {srv.api_key}\r\nConnection: close\r\n\r\n".encode())
            assert _until_eof(second).startswith(b"HTTP/1.1 200 ")
            busy.sendall(BODY)
            assert _head(busy).startswith(b"HTTP/1.1 200 ")


def test_past_the_cap_with_every_connection_busy_a_newcomer_gets_503(tmp_path):
    config = "[limits]\nmax_connections = 2\nheader_timeout_seconds = 600\n"
    with start_server(tmp_path / "data", config=config) as srv:
        busy = [_busy(srv), _busy(srv)]
        with _connect(srv) as newcomer:
            newcomer.sendall(f"GET /v1beta/models HTTP/1.1\r\nHost: 127.0.0.1\r\nx-goog-api-key: {srv.api_key}"
                             "\r\n\r\n".encode())
            answer = _until_eof(newcomer)  # answered, then closed
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert b"content-type: application/json" in head.lower(), answer
        error = json.loads(body)["error"]
        assert error["code"] == 503 and error["status"] == "UNAVAILABLE" and error["message"], error
        assert "refusing newcomers with 503" in srv.log()
        busy[0].close()  # a slot frees once the server has seen it go
        deadline = time.monotonic() + TIMEOUT
        while (status := _models(srv).status_code) == 503 and time.monotonic() < deadline:
            pass
        assert status == 200
        busy[1].sendall(BODY)
        assert _head(busy[1]).startswith(b"HTTP/1.1 200 ")
        busy[1].close()


def test_a_trickled_body_is_cut_at_the_total_deadline(tmp_path):
    """A byte every quarter second never trips the 60 s idle limit; the body's 2 s deadline ends it."""
    config = "[limits]\nbody_timeout_seconds = 2\nbody_idle_seconds = 60\n"
    with start_server(tmp_path / "data", config=config) as srv, _connect(srv) as sock:
        length = 400  # 100 s at this pace: no answer before the whole body means no deadline
        sock.sendall(f"POST {GENERATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-goog-api-key: {srv.api_key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{".encode())
        answered = False
        for _ in range(length - 2):
            answered = bool(select.select([sock], [], [], 0.25)[0])  # paces the trickle; stops at the answer
            if answered:
                break
            sock.sendall(b" ")
        assert answered, "the whole trickled body was read: no deadline"
        assert _head(sock).startswith(b"HTTP/1.1 499 ")
        log = srv.log()
        assert "did not arrive whole within 2 s; dropping the request" in log, log
        assert "no byte of the body" not in log, log


def test_a_cap_past_the_open_file_limit_is_lowered_with_one_warning(tmp_path):
    config = "[limits]\nmax_connections = 1000000000\n"
    with start_server(tmp_path / "data", config=config) as srv:
        assert _models(srv).status_code == 200
        log = srv.log()
        assert log.count("max_connections = 1000000000 does not fit the open-file limit") == 1, log
        limit = _open_files_limit(srv.process.pid)
        if limit is not None:
            resource = pytest.importorskip("resource")
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            assert limit == hard or hard == resource.RLIM_INFINITY, (limit, hard)  # raised as far as it goes
