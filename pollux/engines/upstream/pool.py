"""The model servers behind one model: connections, flavor and model detection, choice and failover.

Pollux starts whatever state its upstreams are in: a server is first contacted by the first request that needs it,
which detects its flavor (and its served model when none was named) once. Requests go to the server with the fewest
outstanding requests; a server that cannot be reached is taken out for `retry_after` seconds, then health-checked
(`GET /v1/models`) before it gets a request again. A request moves to another server only before anything of its
answer arrived, so no answer is ever given twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import EngineError, Failure, InvalidInput, Overloaded, Timeout, Unavailable
from . import http
from .flavors import FLAVORS, Flavor, flavor, vllm_flavor

log = logging.getLogger("pollux.engines.upstream")


@dataclass(frozen=True)
class UpstreamOptions:
    base_url: str | list[str]            # http://host:8000/v1, or several: one pool
    model: str | None = None             # the served model name; None: the server's only model
    flavor: str | None = None            # vllm, sglang, llamacpp, ollama, generic; None: detected
    api_key_env: str | None = None       # the environment variable holding the servers' API key
    connect_timeout: float = 5.0         # seconds to connect; then the next server is tried
    timeout: float = 600.0               # seconds without a byte from the server, then 504
    retry_after: float = 5.0             # seconds a server that failed stays out (and RetryInfo's delay)
    max_connections: int = 1024          # per Pollux process, all servers together
    # Sent as `priority` with batch jobs' requests, for servers started with priority scheduling (vLLM's
    # --scheduling-policy priority, where a larger number is served later; SGLang's --enable-priority-scheduling).
    # None: not sent (a vLLM without priority scheduling refuses any priority but 0).
    batch_priority: int | None = None

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> UpstreamOptions:
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown openai engine option(s) {sorted(unknown)}")
        if not options.get("base_url"):
            raise ValueError("the openai engine needs a base_url (http://host:port/v1, or a list of them)")
        urls = options["base_url"] if isinstance(options["base_url"], list) else [options["base_url"]]
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"openai engine: base_url {url!r} is not an http(s) URL")
        if options.get("flavor") is not None and options["flavor"] not in FLAVORS:
            raise ValueError(f"openai engine: unknown flavor {options['flavor']!r} (one of: {', '.join(FLAVORS)})")
        if options.get("api_key_env") and options["api_key_env"] not in os.environ:
            raise ValueError(f"openai engine: the environment variable {options['api_key_env']} (api_key_env) is "
                             "not set")
        priority = options.get("batch_priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValueError(f"openai engine: batch_priority must be a whole number, got {priority!r}")
        return cls(**options)

    @property
    def urls(self) -> list[str]:
        return [u.rstrip("/") for u in (self.base_url if isinstance(self.base_url, list) else [self.base_url])]


@dataclass(eq=False)
class Server:
    url: str                      # the OpenAI base, e.g. http://gpu1:8000/v1
    outstanding: int = 0
    sent: int = 0                 # requests given to it: among equally busy servers, the one given fewest goes first
    down_until: float = 0.0       # monotonic time before which it gets no request
    checked: bool = True          # whether it answered since it was last taken out
    flavor: Flavor | None = None
    model: str | None = None
    context_length: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def root(self) -> str:
        """The server's own routes (/tokenize, /version, /props) live beside /v1, not under it."""
        return self.url.removesuffix("/v1")


_JSON = {"Content-Type": "application/json"}


class Refused(Unavailable):
    """The server refused Pollux's credentials: it is there, but no request will pass."""


class Unreachable(Exception):
    """The request could not be sent to this server (refused, no route, connect timeout): try the next one."""


class Pool:
    def __init__(self, options: UpstreamOptions) -> None:
        self.options = options
        self.servers = [Server(url) for url in options.urls]
        self._headers = {}
        if options.api_key_env:
            self._headers["Authorization"] = f"Bearer {os.environ[options.api_key_env]}"
        # Made at first use: connections belong to a running loop.
        self._client: http.Client | None = None
        self._slots: asyncio.Semaphore | None = None  # max_connections, with a bounded wait (else 503 `busy`)
        self._flavor = flavor(options.flavor) if options.flavor else None

    @property
    def client(self) -> http.Client:
        if self._client is None:
            # The read timeout bounds the wait for each read, so a stream may run long while the server keeps sending.
            self._client = http.Client(connect_timeout=self.options.connect_timeout, read_timeout=self.options.timeout,
                                       headers={"User-Agent": "pollux", **self._headers})
        return self._client

    def send(self, server: Server, url: str, content: bytes | None = None) -> Sending:
        """POST `content` (GET without it) to `url` on `server`, holding one of the `max_connections` while the
        response is read: `async with pool.send(...) as response`. Transport failures become the engine's:
        `Unreachable` (nothing was sent: the caller may try another server), `Timeout`, `Unavailable` (the answer
        broke off). A response read to its end leaves its connection for the next request; one left early (the
        client went away) closes it, so the server stops."""
        return Sending(self, server, url, content)

    async def take_slot(self) -> None:
        """One of the `max_connections`, waited for at most `connect_timeout` (then 503 `busy`)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.options.max_connections)
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:  # wait_for costs a task: only when there is a wait
            await asyncio.wait_for(self._slots.acquire(), self.options.connect_timeout)
        except TimeoutError:
            raise self.busy() from None

    def give_slot(self) -> None:
        assert self._slots is not None
        self._slots.release()

    async def post_json(self, server: Server, url: str, content: bytes) -> Any:
        """POST `content` and read a JSON object back; a server's error answer is the engine's error."""
        async with self.send(server, url, content) as response:
            body = await response.read()
            if response.status != 200:
                raise http_error(response, body, server)
            return parse_json(body)

    def timeout(self) -> Timeout:
        return Timeout(f"The model server did not answer within {self.options.timeout:g} s.")

    def describe(self) -> str:
        return ", ".join(s.url for s in self.servers)

    def _pick(self, tried: set[Server]) -> Server | None:
        now = time.monotonic()
        up = [s for s in self.servers if s not in tried and s.down_until <= now]
        if not up:
            return None
        server = min(up, key=lambda s: (s.outstanding, s.sent))
        server.sent += 1
        return server

    def _unavailable(self) -> Unavailable:
        now = time.monotonic()
        wait = min((s.down_until - now for s in self.servers if s.down_until > now), default=0.0)
        return Unavailable(f"The model server is unavailable ({self.describe()}). Please try again later.",
                           retry_after=max(1.0, wait or self.options.retry_after))

    def busy(self) -> Overloaded:
        """Every connection Pollux may open to these servers is in use."""
        return Overloaded(f"Too many requests are in flight to the model server ({self.options.max_connections} "
                          "connections). Please try again later.", retry_after=self.options.retry_after)

    def take_out(self, server: Server, why: str) -> None:
        if server.down_until <= time.monotonic():
            log.warning("model server %s taken out for %.0f s: %s", server.url, self.options.retry_after, why)
        server.down_until = time.monotonic() + self.options.retry_after
        server.checked = False

    async def pick(self, tried: set[Server]) -> Server:
        """The best ready server (checked, flavor and model known) not in `tried`, which it joins: the caller sends
        to it and asks again only when that one could not take the request. When none is left, 503 with
        RetryInfo."""
        while True:
            server = self._pick(tried)
            if server is None:
                raise self._unavailable()
            tried.add(server)
            try:
                await self._ready(server)
            except Unreachable as exc:
                self.take_out(server, f"cannot connect ({exc})")
                continue
            except (Overloaded, Refused):
                raise
            except (EngineError, ValueError) as exc:
                self.take_out(server, f"its answer to Pollux's first questions was not understood: {exc}")
                continue
            return server

    async def _ready(self, server: Server) -> None:
        if server.checked and server.flavor is not None and server.model is not None:
            return
        async with server.lock:
            if not server.checked:  # back after a failure: answers again before it gets a request
                status, _ = await self._get(server, f"{server.url}/models")
                if status != 200:
                    raise ValueError(f"GET /v1/models answered {status}")
                server.checked = True
            if server.flavor is None:
                server.flavor = self._flavor or await self._detect(server)
                log.info("model server %s: flavor %s", server.url, server.flavor.name)
            if server.model is None:
                server.model, server.context_length = await self._model(server)

    async def _detect(self, server: Server) -> Flavor:
        """The server's kind, from the routes only it has: SGLang's /get_server_info, vLLM's /version, llama.cpp's
        /props, Ollama's /api/version; else a generic OpenAI-compatible server."""
        async def get(path: str) -> Any:
            status, data = await self._get(server, server.root + path)
            return data if status == 200 else None

        if isinstance(await get("/get_server_info"), dict):
            return flavor("sglang")
        version = await get("/version")
        if isinstance(version, dict) and "version" in version:
            return vllm_flavor(str(version["version"]))
        props = await get("/props")
        if isinstance(props, dict) and ("default_generation_settings" in props or "chat_template" in props):
            return flavor("llamacpp")
        if isinstance(await get("/api/version"), dict):
            return flavor("ollama")
        return flavor("generic")

    async def _get(self, server: Server, url: str) -> tuple[int, Any]:
        """A short GET for Pollux's own questions: its status and JSON (None when it is not JSON)."""
        async with self.send(server, url) as response:
            body = await asyncio.wait_for(response.read(), self.options.connect_timeout)
            if response.status in (401, 403):  # the server is there; Pollux's key is not right
                raise http_error(response, body, server)
            try:
                return response.status, json.loads(body)
            except ValueError:
                return response.status, None

    async def _model(self, server: Server) -> tuple[str, int | None]:
        status, data = await self._get(server, f"{server.url}/models")
        if status != 200 or not isinstance(data, dict):
            raise ValueError(f"GET /v1/models answered {status}")
        models = [m for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
        if self.options.model is not None:
            entry = next((m for m in models if m["id"] == self.options.model), None)
            if entry is None and models:
                log.warning("model server %s does not list %r (it lists %s)", server.url, self.options.model,
                            ", ".join(m["id"] for m in models))
            return self.options.model, (entry or {}).get("max_model_len")
        if len(models) != 1:
            raise ValueError(f"it serves {len(models)} models ({', '.join(m['id'] for m in models) or 'none'}): "
                             "name the one to use (ID=openai:URL#MODEL, or engine_options.model)")
        return models[0]["id"], models[0].get("max_model_len")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class Sending:
    """`Pool.send`'s context: a class, not a generator, as it runs for every request."""

    __slots__ = ("content", "pool", "raw", "server", "url")

    def __init__(self, pool: Pool, server: Server, url: str, content: bytes | None) -> None:
        self.pool, self.server, self.url, self.content = pool, server, url, content
        self.raw: http.Response | None = None

    async def __aenter__(self) -> Response:
        pool = self.pool
        await pool.take_slot()
        try:
            if self.content is None:
                self.raw = await pool.client.request("GET", self.url)
            else:
                self.raw = await pool.client.request("POST", self.url, self._take_content(), _JSON)
        except BaseException as exc:
            pool.give_slot()
            if isinstance(exc, http.ConnectFailed):
                raise Unreachable(str(exc)) from None
            if isinstance(exc, http.ReadTimeout):
                raise pool.timeout() from None
            if isinstance(exc, http.Disconnected):
                raise Unavailable(f"The model server at {self.server.url} failed to answer ({exc}).",
                                  retry_after=pool.options.retry_after) from None
            raise
        return Response(self.raw)

    def _take_content(self) -> bytes | None:
        """The body, no longer held here: the client holds it only until it is sent (orjson's small outputs hold
        4 KiB each, which adds up over a thousand waiting requests)."""
        content, self.content = self.content, None
        return content

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        assert self.raw is not None
        self.raw.release()
        self.pool.give_slot()
        if isinstance(exc, http.ReadTimeout):
            raise self.pool.timeout() from None
        if isinstance(exc, http.Disconnected):
            raise Unavailable(f"The model server broke off the answer ({exc}).") from None


class Response:
    """An upstream answer being read: its status, headers and body, whole or line by line."""

    def __init__(self, raw: http.Response) -> None:
        self._raw = raw
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers  # names in lower case
        self.reason_phrase = raw.reason

    async def read(self) -> bytes:
        return await self._raw.read()

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines (without their end), read to the end of the body: no line length limit, as an upstream
        may send a large image or tool call in one event."""
        pending: list[bytes] = []  # the line being read, in pieces: joined once, however many reads it takes
        async for chunk in self._raw.chunks():
            if b"\n" not in chunk:
                pending.append(chunk)
                continue
            if pending:
                pending.append(chunk)
                chunk, pending = b"".join(pending), []
            *lines, rest = chunk.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")
            if rest:
                pending.append(rest)
        if pending:
            yield b"".join(pending)


def parse_json(data: str | bytes) -> Any:
    """A server's JSON object (a whole answer, or one stream event)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Failure("The model server's answer is not JSON.") from None
    if not isinstance(value, dict):
        raise Failure("The model server's answer is not a JSON object.")
    return value


def http_error(response: Response, body: bytes, server: Server) -> EngineError:
    """A server's error answer as the engine's error: its 4xx are the request's fault (400 with its message),
    overload is 503 with RetryInfo, anything else says the server failed."""
    message = _message(body) or response.reason_phrase
    status = response.status
    if status in (400, 413, 422):
        return InvalidInput(f"The model server refused the request: {message}")
    if status in (408, 504):
        return Timeout(f"The model server timed out: {message}")
    if status in (429, 503):
        return Overloaded(f"The model server is overloaded: {message}", retry_after=_retry_after(response))
    if status == 404:
        return Unavailable(f"The model server has no such model or route ({server.url}): {message}")
    if status in (401, 403):
        return Refused(f"The model server refused Pollux's credentials ({status}): set api_key_env.")
    return Failure(f"The model server failed ({status}): {message}")


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return body.decode("utf-8", "replace")[:500]


def _retry_after(response: Response) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return 5.0
