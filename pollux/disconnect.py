"""A client that goes away stops its work: a generation is cancelled, a stream stops.

ASGI only tells an app about a disconnect through `receive()`, so watching for one costs a task per request reading
it (and Starlette's `StreamingResponse` runs a task group for it). Under `pollux serve` the connection itself says
when it is lost (`Connection`, put in the scope by `server.GuardedHttp`), and the work's own task is cancelled then:
no second task. Under another server (an in-process test client) the watcher task is the fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse as _StarletteStreaming
from starlette.types import Receive, Scope, Send

from .first_wait import FirstWait

log = logging.getLogger("pollux")
T = TypeVar("T")

SCOPE_KEY = "pollux.connection"


class Connection:
    """One client connection's loss, as callbacks: what runs for a request on it registers while it runs."""

    __slots__ = ("lost", "_callbacks")

    def __init__(self) -> None:
        self.lost = False
        self._callbacks: set[Callable[[], None]] = set()

    def on_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls `callback` when the connection is lost; returns what unregisters it."""
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    def lose(self) -> None:
        self.lost = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()


class ClientGone(Exception):
    """The caller disconnected before its answer was ready; there is no one to answer."""


class _Cancelling:
    """Cancels the current task when its client's connection is lost, and tells that cancellation from others."""

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.baseline = task.cancelling()
        self.gone = False

    def __call__(self) -> None:
        self.gone = True
        self.task.cancel()

    def ours(self) -> bool:
        """After a CancelledError: whether it came from the disconnect alone (then it is taken back)."""
        return self.gone and self.task.uncancel() <= self.baseline


async def until_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in this task, cancelling it if the client goes away first (a long generation should not outlive
    its caller); then `ClientGone`."""
    cancelling = _Cancelling()
    connection: Connection | None = request.scope.get(SCOPE_KEY)
    if connection is not None:
        if connection.lost:
            work.close()
            raise ClientGone
        stop = connection.on_lost(cancelling)
    else:
        # Without the connection's notice, a watcher task reads receive(); it starts at the work's first wait, as
        # only then could a disconnect be acted on (work that never waits, the emulator's answers, costs none).
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancelling()

        def start_watching() -> None:
            nonlocal watcher
            watcher = asyncio.create_task(watch())

        def stop() -> None:
            if watcher is not None:
                watcher.cancel()

        work = FirstWait(work, start_watching)  # type: ignore[assignment]
    try:
        return await work
    except asyncio.CancelledError:
        if not cancelling.ours():  # not ours, or someone else's cancel came as well
            raise
        log.info("generation cancelled: the client went away")
        raise ClientGone from None
    finally:
        stop()


class StreamingResponse(_StarletteStreaming):
    """Starlette's, with the connection's notice instead of a task group listening for the disconnect: the stream
    (its generator's task) is cancelled when the client goes away."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection: Connection | None = scope.get(SCOPE_KEY)
        if connection is None:
            return await super().__call__(scope, receive, send)
        if connection.lost:
            await self._close_body()
            return
        cancelling = _Cancelling()
        stop = connection.on_lost(cancelling)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not cancelling.ours():
                raise
            await self._close_body()  # when the cancellation came while a chunk was being sent
            return  # nobody is left to answer
        finally:
            stop()
        if self.background is not None:
            await self.background()

    async def _close_body(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()
