"""One run of a batch's remaining requests, in the process that holds its job: the input read line by line, each
request run through the engines (at most `batch_concurrency` at a time across the process's runs), the results saved
in groups, and the run stopped within half a second once the batch is cancelled, deleted, expired or ended
elsewhere. A run that stops returns every place it held, even those of requests cancelled before they started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson

from ..errors import ApiError
from ..store import Store, StoreUnavailable
from ..store.batches import LIVE
from ..store.blobs import BlobStore, BlobUnavailable
from ..store.db import utcnow
from ..store.records import BatchRecord, BatchResult
from .protocol import CANCELLED, EXPIRED, OPENAI_KINDS, SUCCEEDED

log = logging.getLogger("pollux.batches")

# google.rpc.Code numbers: a result's error is a google.rpc.Status, as in the real API's batch output.
_GRPC = {"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
         "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
         "ABORTED": 10, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}
# Errors that say "later", not "never": the request is tried again after a pause (the engine was overloaded by
# online traffic, say) before it gets an error entry.
_TRANSIENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})
_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)
_SAVE_EVERY = 256     # results saved in one transaction
_WATCH_SECONDS = 0.5  # how often a running batch saves its results and looks for a cancel, a delete or expiry
_BIG_LINE = 64 * 1024  # lines longer than this are parsed off the event loop


class Run:
    """One run of a batch's remaining requests."""

    def __init__(self, store: Store, blobs: BlobStore, places: asyncio.Semaphore, record: BatchRecord,
                 run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        self.store = store
        self.blobs = blobs
        self.places = places  # the process's `batch_concurrency`, shared by all its runs
        self.record = record
        self.run = run
        self.pending: list[BatchResult] = []
        self.stop: str | None = None  # why the run stops early: a state to end in, or "" (deleted, or ended)
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None  # what failed the run (not a request): the job is tried again
        self._halted = asyncio.Event()
        self._saving = asyncio.Lock()

    async def go(self) -> str | None:
        """Run what has no result yet. Returns the state to end in, or None when there is nothing to do."""
        record = self.record
        done = await self.store.batches.done(record.project_id, record.id)
        watch = asyncio.create_task(self._watch())
        try:
            async with aclosing(self._lines()) as lines:
                async for idx, line in lines:
                    if self.stop is not None:
                        break
                    if idx in done:
                        continue
                    if not await self._slot():
                        break
                    task = asyncio.create_task(self._one(idx, line))
                    self.tasks.add(task)
                    # Released when the task ends, even one cancelled before it started.
                    task.add_done_callback(self._finished)
            while self.tasks:
                await asyncio.wait(set(self.tasks))
        finally:
            watch.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(watch, *self.tasks, return_exceptions=True)
        if self.failure is not None:  # the store failed under a request: the job runs again later, from the saved
            with contextlib.suppress(Exception):
                await self._save()
            raise self.failure
        if self.stop != "":
            await self._save()  # refused (and the stop set) if the batch ended meanwhile
        if self.stop == "":
            return None  # deleted, or ended by another change
        if self.stop is None:  # every request ran: each must have its result before the batch can succeed
            counts = (await self.store.batches.counts(record.project_id, [record.id]))[record.id]
            if counts.succeeded + counts.failed < record.request_count:
                raise RuntimeError(f"batch {record.id}: {counts.succeeded + counts.failed} results of "
                                   f"{record.request_count} stored; the job runs again for the rest")
        return self.stop or SUCCEEDED

    async def _slot(self) -> bool:
        """One of the process's `batch_concurrency` places for a request of this run; False (and no place held) once
        the run is stopping, even while it waits for one."""
        slots = self.places
        if self.stop is not None:
            return False
        acquire = asyncio.ensure_future(slots.acquire())
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait({acquire, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            acquire.cancel()  # no effect once it has acquired
            held = acquire.done() and not acquire.cancelled()
            if held and self.stop is not None:
                slots.release()
        return held and self.stop is None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.places.release()
        if not task.cancelled() and (error := task.exception()) is not None and self.failure is None:
            self.failure = error  # StoreUnavailable or BlobUnavailable (a request's own errors are its results)
            self._halt("")

    async def _lines(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The input's lines in order. Only each new block is searched for line ends, so a long line (an inline
        request with a large image) costs its length once, not once per block."""
        idx = 0
        pieces: list[bytes] = []
        async for block in self.blobs.read(self.record.input_blob):
            start = 0
            while (end := block.find(b"\n", start)) != -1:
                pieces.append(block[start:end])
                raw = b"".join(pieces)
                pieces = []
                start = end + 1
                if raw:
                    yield idx, await _loads(raw)
                    idx += 1
            pieces.append(block[start:])
        raw = b"".join(pieces)
        if raw.strip():
            yield idx, await _loads(raw)

    async def _one(self, idx: int, line: dict[str, Any]) -> None:
        outcome = await self._attempt(line)
        body = orjson.dumps(entry(self.record, idx, line, outcome), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        self.pending.append(BatchResult(idx, not isinstance(outcome, ApiError), body))
        if len(self.pending) >= _SAVE_EVERY:
            await self._save()

    async def _attempt(self, line: dict[str, Any]) -> dict[str, Any] | ApiError:
        """The request's response, or the error it ends with."""
        if "e" in line:
            return ApiError.invalid(line["e"])
        for pause in (*_RETRY_PAUSES, None):
            try:
                return await self.run(line["r"])
            except ApiError as err:
                if err.status in _TRANSIENT and pause is not None:
                    await asyncio.sleep(pause)
                    continue
                return err
            except (StoreUnavailable, BlobUnavailable):
                raise  # not the request's fault: the job is tried again later, with the results saved so far
            except Exception:  # noqa: BLE001 - a bug met by one request fails that request alone
                log.exception("batch %s: a request failed", self.record.id)
                return ApiError("INTERNAL", "An internal error has occurred.")
        raise AssertionError("unreachable")

    async def _save(self) -> None:
        async with self._saving:
            if not self.pending:  # nothing to write: no transaction (the watch reads the batch's state anyway)
                return
            results, self.pending = self.pending, []
            try:
                kept = await self.store.batches.save(self.record.project_id, self.record.id, results)
            except BaseException:
                self.pending = results + self.pending
                raise
        if not kept:  # the batch is ending, has ended or is gone: what is not stored is not its result any more
            self._halt("")

    def _halt(self, why: str) -> None:
        self._halted.set()
        if self.stop is None:
            self.stop = why
            log.info("batch %s: stopping (%s)", self.record.id, why or "ended elsewhere or deleted")
        for task in list(self.tasks):
            task.cancel()

    async def _watch(self) -> None:
        """Save results every half second, and stop the run once the batch is cancelled, deleted or expired."""
        record = self.record
        while self.stop is None:
            await asyncio.sleep(_WATCH_SECONDS)
            await self._save()
            fresh = await self.store.batches.get(record.project_id, record.id)
            if fresh is None or fresh.state not in LIVE or fresh.ending is not None:
                self._halt("")
            elif fresh.cancel_requested:
                self._halt(CANCELLED)
            elif fresh.expire_time <= utcnow():
                self._halt(EXPIRED)


async def _loads(raw: bytes) -> dict[str, Any]:
    return orjson.loads(raw) if len(raw) < _BIG_LINE else await asyncio.to_thread(orjson.loads, raw)


def entry(record: BatchRecord, idx: int, line: dict[str, Any], outcome: dict[str, Any] | ApiError
           ) -> dict[str, Any]:
    """A request's result as its batch's output carries it: an OpenAI batch's output line, a line of the native
    responses file (with the input's key) or an inline response (with the request's metadata)."""
    failed = isinstance(outcome, ApiError)
    if record.kind in OPENAI_KINDS:
        request_id = f"batch_req_{record.id[:12]}_{idx}"
        out: dict[str, Any] = {"id": request_id, "custom_id": line.get("k")}
        if failed and "e" in line:  # not a request at all
            out.update(response=None, error={"code": "invalid_request", "message": line["e"]})
        else:
            body = outcome.body() if failed else outcome
            out.update(response={"status_code": outcome.code if failed else 200, "request_id": request_id,
                                 "body": body}, error=None)
        return out
    entry: dict[str, Any] = {"error": status(outcome)} if failed else {"response": outcome}
    if record.input_file is not None:
        if "k" in line:
            entry["key"] = line["k"]
    elif "m" in line:
        entry["metadata"] = line["m"]
    return entry


def status(err: ApiError) -> dict[str, Any]:
    status: dict[str, Any] = {"code": _GRPC.get(err.status, 2), "message": err.message}
    if err.details:
        status["details"] = err.details
    return status
