"""Memory admission: the work whose memory grows with its input (decoded media, large request bodies) draws on one
budget for the process, so concurrent requests cannot take the machine's memory between them.

A claim that does not fit waits a little for others to give theirs back, then fails with `OverBudget`, which clients
see as a 503 with RetryInfo. A claim larger than the whole budget is cut to the budget: it runs, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
from collections.abc import Iterator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

MB = 1 << 20
# A body is held as received, joined, parsed (its strings copied) and base64-decoded; measured in
# bench/memory_bench.py, four times its size covers it.
BODY_FACTOR = 4
# Bodies smaller than this are not worth the bookkeeping.
BODY_THRESHOLD = 1 * MB


class OverBudget(Exception):
    """The memory a request needs did not become free in time."""

    def __init__(self, wanted: int, budget: int) -> None:
        super().__init__(f"The server is short of memory for this request (it needs {wanted // MB} MB of a "
                         f"{budget // MB} MB budget now in use by other requests). Please try again later.")


def over_budget_error(exc: OverBudget, retry_seconds: int = 1) -> ApiError:
    return ApiError("UNAVAILABLE", str(exc), details=[
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_seconds}s"}])


class MemoryBudget:
    """Bytes of memory claimed and given back, by threads (decoders) and by the event loop (bodies) alike."""

    def __init__(self, capacity: int, wait_seconds: float) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.used = 0
        self.peak = 0
        self._lock = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _try(self, wanted: int) -> bool:
        with self._lock:
            if self.used + wanted > self.capacity:
                return False
            self.used += wanted
            self.peak = max(self.peak, self.used)
            return True

    def take(self, wanted: int) -> int:
        """Claim `wanted` bytes from a worker thread, waiting up to `wait_seconds`; the bytes actually claimed."""
        wanted = min(wanted, self.capacity)
        deadline = time.monotonic() + self.wait_seconds
        with self._lock:
            while not self._try(wanted):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OverBudget(wanted, self.capacity)
                self._lock.wait(left)
        return wanted

    async def take_async(self, wanted: int) -> int:
        """`take` for the event loop: waits without holding a thread."""
        wanted = min(wanted, self.capacity)
        deadline = time.monotonic() + self.wait_seconds
        loop = asyncio.get_running_loop()
        while not self._try(wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                raise OverBudget(wanted, self.capacity)
            freed = asyncio.Event()
            waiter = (loop, freed)
            with self._lock:
                self._waiters.append(waiter)
            try:
                await asyncio.wait_for(freed.wait(), left)
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    self._waiters.remove(waiter)
        return wanted

    def give(self, taken: int) -> None:
        with self._lock:
            self.used -= taken
            self._lock.notify_all()
            waiters = list(self._waiters)
        for loop, freed in waiters:
            loop.call_soon_threadsafe(freed.set)

    @contextlib.contextmanager
    def held(self, wanted: int) -> Iterator[None]:
        taken = self.take(wanted)
        try:
            yield
        finally:
            self.give(taken)


# The process's budget: set from `[limits]` when the app is built; media decoders claim from it.
BUDGET = MemoryBudget(4096 * MB, 5.0)


def configure(capacity_bytes: int, wait_seconds: float) -> MemoryBudget:
    BUDGET.capacity, BUDGET.wait_seconds = capacity_bytes, wait_seconds
    _set_malloc_thresholds()
    return BUDGET


def keep_step_blocks() -> bool:
    """A CPU model decodes in this process: from now on glibc keeps freed blocks up to 32 MB in its heap (see
    `_set_malloc_thresholds`). Whichever of this and `configure` comes first, the process ends with this policy.
    False where the C library is not glibc."""
    global _step_blocks
    _step_blocks = True
    return _set_malloc_thresholds()


def _set_malloc_thresholds() -> bool:
    """The process's one malloc policy (glibc's are process-wide).

    By default glibc serves a block from its heap, where a freed one stays in the process, once a block of that size
    has been freed (its mmap threshold rises up to 32 MB): after a wave of decoded images the process would keep their
    memory for ever. A fixed threshold keeps every block of 1 MB or more in its own mapping, given back on free.

    A CPU model's decode steps allocate and free blocks of a few MB every step (the keys and values read back from the
    paged cache, activations); in their own mappings each step page-faults through megabytes of fresh zeroed pages:
    ~4,600 faults and ~14 % of the batch thread's CPU time in the kernel per step of a 27 M-parameter Llama
    (BENCHMARKS.md, issue 14). With such a model (`keep_step_blocks`) the threshold is 32 MB instead, and the heap
    gives back what is free at its top past 256 MB: decoded images under 32 MB may then stay in the heap."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: its allocator has its own ways
        return False
    if _step_blocks:
        return bool(mallopt(_M_MMAP_THRESHOLD, 32 * MB)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 * MB))
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 * MB))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_step_blocks = False  # set by `keep_step_blocks`


class AdmitLargeBodies:
    """ASGI middleware: a request with a large body claims memory for it when the app first reads the body (after
    authentication, before a byte of it is taken in): by its Content-Length, or, sent without one, as its chunks
    arrive. The claim lasts until the response is sent. `OverBudget` reaches the app's error handlers, which answer
    503 in the shape of the request's surface. Uploads are exempt: their chunks stream to disk."""

    def __init__(self, app: ASGIApp, budget: MemoryBudget = BUDGET) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/upload/"):
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared <= BODY_THRESHOLD:
            return await self.app(scope, receive, send)
        taken = received = 0

        async def claiming_receive() -> Message:
            nonlocal taken, received
            if declared is not None and not taken:
                taken = await self.budget.take_async(declared * BODY_FACTOR)
            message = await receive()
            if declared is None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > BODY_THRESHOLD and received * BODY_FACTOR > taken:
                    # Grown by a quarter at least, not chunk by chunk.
                    taken += await self.budget.take_async(max(received * BODY_FACTOR - taken, taken // 4))
            return message

        try:
            await self.app(scope, claiming_receive, send)
        finally:
            if taken:
                self.budget.give(taken)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
