"""The model servers behind one model: connections, flavor and model detection, choice and failover.

Pollux starts whatever state its upstreams are in: a server is first contacted by the first request that needs it,
which detects its flavor (and its served model when none was named) once. Requests go to the server with the fewest
outstanding requests; a server that cannot be reached is taken out for `retry_after` seconds, then health-checked
(`GET /v1/models`) before it gets a request again. A request moves to another server only before anything of its
answer arrived, so no answer is ever given twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import EngineError, Failure, InvalidInput, Overloaded, Timeout, Unavailable
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


# What connecting failures look like: the request never reached the server, so another one may take it.
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class Pool:
    def __init__(self, options: UpstreamOptions) -> None:
        self.options = options
        self.servers = [Server(url) for url in options.urls]
        headers = {}
        if options.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[options.api_key_env]}"
        limits = httpx.Limits(max_connections=options.max_connections,
                              max_keepalive_connections=options.max_connections)
        # `read` bounds the wait for each byte, so a stream may run long while the server keeps sending.
        # A request waits `connect_timeout` at most for one of the `max_connections`, then it is a 503 (`busy`).
        timeout = httpx.Timeout(options.timeout, connect=options.connect_timeout, pool=options.connect_timeout)
        self.client = httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout)
        self._flavor = flavor(options.flavor) if options.flavor else None

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

    async def attempts(self) -> AsyncIterator[Server]:
        """Ready servers (checked, flavor and model known), best first, each at most once: the caller sends to the
        first and asks for the next only when that one could not take the request. When none is left, 503 with
        RetryInfo."""
        tried: set[Server] = set()
        while True:
            server = self._pick(tried)
            if server is None:
                raise self._unavailable()
            tried.add(server)
            try:
                await self._ready(server)
            except CONNECT_ERRORS as exc:
                self.take_out(server, f"cannot connect ({type(exc).__name__})")
                continue
            except httpx.PoolTimeout:
                raise self.busy() from None
            except (httpx.HTTPError, ValueError) as exc:
                self.take_out(server, f"its answer to Pollux's first questions was not understood: {exc}")
                continue
            yield server

    async def _ready(self, server: Server) -> None:
        if server.checked and server.flavor is not None and server.model is not None:
            return
        async with server.lock:
            if not server.checked:  # back after a failure: answers again before it gets a request
                (await self.client.get(f"{server.url}/models", timeout=self.options.connect_timeout)
                 ).raise_for_status()
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
            try:
                response = await self.client.get(server.root + path, timeout=self.options.connect_timeout)
            except (*CONNECT_ERRORS, httpx.PoolTimeout):
                raise
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            try:
                return response.json()
            except ValueError:
                return None

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

    async def _model(self, server: Server) -> tuple[str, int | None]:
        response = await self.client.get(f"{server.url}/models", timeout=self.options.connect_timeout)
        if response.status_code in (401, 403):  # the server is there; Pollux's key is not right
            raise http_error(response, response.content, server)
        response.raise_for_status()
        models = [m for m in response.json().get("data", []) if isinstance(m, dict) and m.get("id")]
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
        await self.client.aclose()


def http_error(response: httpx.Response, body: bytes, server: Server) -> EngineError:
    """A server's error answer as the engine's error: its 4xx are the request's fault (400 with its message),
    overload is 503 with RetryInfo, anything else says the server failed."""
    message = _message(body) or response.reason_phrase
    status = response.status_code
    if status in (400, 413, 422):
        return InvalidInput(f"The model server refused the request: {message}")
    if status in (408, 504):
        return Timeout(f"The model server timed out: {message}")
    if status in (429, 503):
        return Overloaded(f"The model server is overloaded: {message}", retry_after=_retry_after(response))
    if status == 404:
        return Unavailable(f"The model server has no such model or route ({server.url}): {message}")
    if status in (401, 403):
        return Unavailable(f"The model server refused Pollux's credentials ({status}): set api_key_env.")
    return Failure(f"The model server failed ({status}): {message}")


def _message(body: bytes) -> str:
    import json

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


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return 5.0
