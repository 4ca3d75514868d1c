"""Serving the app over HTTP: uvicorn, with the connection limits of `[limits]`.

uvicorn bounds neither the time a client may take over its request headers nor the number of open connections, so
idle sockets would hold descriptors for ever and lock everyone else out. `GuardedHttp` adds both to uvicorn's
httptools protocol. It relies on uvicorn internals that have not changed since 0.30 (pyproject.toml pins the range):
the parser callbacks `on_message_begin`, `on_headers_complete`, `on_response_complete`, and the `transport`,
`scope` and `cycle` (its `response_complete`) attributes. It also puts the connection's loss in each request's scope
(`disconnect.Connection`), so that a request's work is cancelled without a task watching for it."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from typing import Any

import orjson
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Settings
from .disconnect import SCOPE_KEY, Connection
from .errors import ApiError

log = logging.getLogger("pollux")

# Descriptors kept for what is not a connection (files read or written, the database, models) and for refusals.
RESERVE = 256
# Newcomers being refused at once (each holds its socket until its client reads the 503); past it, dropped unanswered.
REFUSING = 64

_BUSY = ApiError("UNAVAILABLE", "The server has too many open connections. Please try again later.")
_BODY = orjson.dumps(_BUSY.body())
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=UTF-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY))


class Gate:
    """What the connections of one server share: the cap, and who waits for request headers, longest first."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0  # connections counted against the cap
        self.refusing = 0
        self.warned_at: float | None = None
        # Insertion-ordered: the first entry has waited longest (since it opened, or since its last response).
        self.waiting: dict[GuardedHttp, None] = {}


class GuardedHttp(HttpToolsProtocol):
    """A connection has `header_timeout` for its request headers, timed from when it opens (first request) or from
    the first byte of the next request (the wait between requests is uvicorn's keep-alive timeout). Past
    `max_connections` a newcomer closes the connection that has waited longest for its headers, or is answered 503.
    A request whose head arrives in one read, the usual case, arms no timer."""

    gate: Gate  # set on the subclass that `serve` makes
    _timer: asyncio.TimerHandle | None = None
    _counted = False  # holds one of the gate's `open`
    _refused = False  # holds one of the gate's `refusing`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connection = Connection()
        gate = self.gate
        if gate.open >= gate.max_connections:
            if not gate.waiting:
                return self._refuse()
            next(iter(gate.waiting))._drop()
        gate.open += 1
        self._counted = True
        gate.waiting[self] = None
        self._timer = asyncio.get_running_loop().call_later(gate.header_timeout, self._drop)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.connection.lose()
        self._release()
        if self._refused:
            self._refused = False
            self.gate.refusing -= 1

    def data_received(self, data: bytes) -> None:
        if self._refused:  # read and dropped: its answer is sent
            return
        super().data_received(data)
        # Bytes that leave no request running (the next request's head cut across reads, a body the app did not
        # read): the headers still to come are timed. A whole head started a request, and arms nothing. Part of a
        # pipelined head that came during a request is left to uvicorn's keep-alive timeout, armed when it ends.
        cycle = self.cycle
        if self._timer is None and (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self._timer = asyncio.get_running_loop().call_later(self.gate.header_timeout, self._drop)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[SCOPE_KEY] = self.connection  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        self.gate.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:  # idle, not a pipelined request
            self.gate.waiting[self] = None

    def _drop(self) -> None:
        """Closes a connection still waiting for request headers: past the timeout, or to make room."""
        self._release()
        self.transport.close()

    def _release(self) -> None:
        self.gate.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self.gate.open -= 1

    def _refuse(self) -> None:
        gate = self.gate
        if gate.refusing >= REFUSING:
            self.transport.abort()
            return
        now = asyncio.get_running_loop().time()
        if gate.warned_at is None or now - gate.warned_at > 60:  # at most once a minute, however many are refused
            gate.warned_at = now
            log.warning("%d connections are open and none waits for its request headers: refusing newcomers with "
                        "503", gate.open)
        gate.refusing += 1
        self._refused = True
        # Half-closed rather than closed: a request the client already sent, unread, would turn a close into a
        # reset that can destroy the 503 before the client reads it. The client closes, or the timer does.
        self.transport.write(_REFUSAL)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(gate.header_timeout, self.transport.abort)


def fit_descriptors(max_connections: int) -> int:
    """Raises the soft RLIMIT_NOFILE toward the hard one so that `max_connections` fit; returns how many do."""
    try:
        import resource
    except ImportError:  # no such limit to raise (Windows)
        return max_connections
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/dev/fd"))
    except OSError:
        in_use = 64
    need = in_use + RESERVE + max_connections
    if soft != infinity and soft < need:
        target = need if hard == infinity else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. past the kernel's own bound (fs.nr_open, macOS's OPEN_MAX)
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == infinity or soft >= need:
        return max_connections
    fits = max(16, soft - in_use - min(RESERVE, soft // 4))  # a small limit keeps a smaller reserve
    if fits >= max_connections:
        return max_connections
    log.warning("max_connections = %d does not fit the open-file limit (%d, hard limit %s): serving at most %d "
                "connections; raise the limit (ulimit -n) to serve more", max_connections, soft,
                "unlimited" if hard == infinity else hard, fits)
    return fits


class ListenError(OSError):
    """The address cannot be listened on; the message says which and what to do."""


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address `host` names (as asyncio's create_server, and so uvicorn, would bind them), before
    anything is loaded or printed: a port in use stops `pollux serve` at once with a message saying so. They listen
    once uvicorn serves: until then a client is refused rather than left waiting for a server still loading."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose the address with --host)") \
            from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            if port == 0 and len(sockets) > 1:  # one port for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} is already in use on {host} (another `pollux serve`, or another "
                              f"server): stop it, or choose another port with --port, e.g. --port {port + 1}") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose the address with --host "
                          "and the port with --port)") from None
    return sockets


class PolluxHttp(GuardedHttp):
    """The protocol uvicorn makes for each connection, importable by name: worker processes load it themselves, each
    with a gate of its own (`configure`)."""


def configure(settings: Settings) -> None:
    """This process's connection gate: the cap and the header timeout of `[limits]`."""
    limits = settings.limits
    PolluxHttp.gate = Gate(fit_descriptors(limits.max_connections), limits.header_timeout_seconds)


def _config(app: Any, **kwargs: Any) -> Any:
    import uvicorn

    # No WebSocket routes: an upgrade would hand the connection to a protocol outside the gate. uvicorn's access
    # log is off: AccessLog writes the one line per request (its own would print the query string, keys included).
    return uvicorn.Config(app, http=PolluxHttp, ws="none", log_level="warning", access_log=False,
                          timeout_graceful_shutdown=5, **kwargs)


def serve(app: Starlette, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Serves `app` on `sockets` (from `listen`; bound here when not given), with an access log line per request."""
    import uvicorn

    from .access_log import AccessLog

    if sockets is None:
        sockets = listen(settings.host, settings.port)
    configure(settings)
    server = uvicorn.Server(_config(AccessLog(app)))
    server.run(sockets=sockets)
    if not server.started:  # the app's start-up failed (uvicorn logged why), as uvicorn.run would exit
        sys.exit(3)


def serve_workers(factory: str, workers: int, sockets: list[socket.socket]) -> None:
    """`workers` processes sharing `sockets`, each building its app with `factory` (an import path): uvicorn's
    supervisor starts them, replaces one that dies, and stops when one fails its start-up."""
    from uvicorn.supervisors import Multiprocess

    Multiprocess(_config(factory, factory=True, workers=workers), sockets=sockets).run()
