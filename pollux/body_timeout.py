"""A request body that stops arriving, or trickles in: without a limit its connection (and an upload's lock) would be
held for ever."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .first_wait import FirstWait

log = logging.getLogger("pollux")


class BodyIdleTimeout:
    """ASGI middleware: a request whose body stalls for `idle` seconds, or has not arrived whole `total` seconds after
    the request started, is treated as one whose client left.

    The one timer (whichever limit comes first) is armed only when a read of the body has to wait: a body that came
    with its headers (nearly every request) costs no timer."""

    def __init__(self, app: ASGIApp, idle: float, total: float | None = None) -> None:
        self.app = app
        self.idle = idle
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_done = False
        deadline = None if self.total is None else time.monotonic() + self.total

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() only waits for a disconnect, as long as that takes
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            baseline = task.cancelling()
            timer: asyncio.TimerHandle | None = None
            expired = False
            total = False  # the whole-body deadline, not the idle limit, is what the timer waits for

            def expire() -> None:
                nonlocal expired
                expired = True
                task.cancel()

            def arm() -> None:
                nonlocal timer, total
                delay = self.idle
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left < delay:
                        delay, total = max(0.0, left), True
                timer = asyncio.get_running_loop().call_later(delay, expire)

            try:
                message = await FirstWait(receive(), arm)
            except asyncio.CancelledError:
                if not expired or task.uncancel() > baseline:  # not ours, or someone else's cancel came as well
                    raise
                if total:
                    log.info("%s %s: the body did not arrive whole within %g s; dropping the request",
                             scope["method"], scope["path"], self.total)
                else:
                    log.info("%s %s: no byte of the body for %g s; dropping the request", scope["method"],
                             scope["path"], self.idle)
                body_done = True
                return {"type": "http.disconnect"}
            finally:
                if timer is not None:
                    timer.cancel()
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
