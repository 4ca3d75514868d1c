"""Background work as leased jobs (see `store/jobs.py`): every process runs a `JobRunner`, which claims due jobs,
keeps their leases alive while it works, and finishes them. Housekeeping recurs (one job per kind, queued again for
its next run), so it runs once across the fleet, not once per process; a process killed mid-job only delays it by
one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from .store import Store, StoreUnavailable, job_row
from .store.db import utcnow
from .store.records import Job

log = logging.getLogger("pollux.jobs")

Handler = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True)
class _Kind:
    handler: Handler
    every: float | None  # seconds between runs of a recurring job
    slots: asyncio.Semaphore  # the jobs of this process it shares its bound with


def next_wait(wait: float, found: bool, poll: float, lease: float) -> float:
    """The claim loop's next wait: `poll` after a claim that found a job, else twice the last, up to 8 polls or a
    third of a lease (whichever is less, but never under `poll`)."""
    if found:
        return poll
    return min(2 * wait, max(poll, min(8 * poll, lease / 3)))


class LeaseLost(Exception):
    """This process no longer holds the job (it stalled past its lease); another worker has it."""


class JobRunner:
    def __init__(self, store: Store, lease: float = 30.0, poll: float = 1.0, concurrency: int = 4,
                 long_concurrency: int = 16) -> None:
        self.store = store
        self.lease = lease
        self.poll = poll
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._kinds: dict[str, _Kind] = {}
        # Claimed jobs at once: short ones (housekeeping, file processing), and apart, long ones (batches, which
        # bound their own work), so that resumed batches never keep housekeeping from running.
        self._slots = asyncio.Semaphore(concurrency)
        self._long_slots = asyncio.Semaphore(long_concurrency)
        self._loop: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def handle(self, kind: str, handler: Handler, every: float | None = None, long: bool = False) -> None:
        """Run `handler` for jobs of `kind`; with `every`, one such job recurs at that interval. `long` jobs (minutes
        or hours) are claimed within a bound of their own."""
        self._kinds[kind] = _Kind(handler, every, self._long_slots if long else self._slots)

    def new(self, kind: str, payload: dict, project_id: str | None = None) -> dict:
        """The row of a job of `kind` leased to this process, for a caller that inserts it in its own transaction
        and then runs it at once with `run`."""
        return job_row(kind, payload, project_id=project_id, owner=self.owner, lease=self.lease)

    async def start(self) -> None:
        for kind, spec in self._kinds.items():
            if spec.every is not None:  # due at once: housekeeping runs when a process starts, then at its interval
                await self.store.jobs.ensure(job_row(kind, {}, job_id=f"recurring:{kind}"))
                await self.store.jobs.due_now(f"recurring:{kind}")
        self._loop = asyncio.create_task(self._claim_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def run_soon(self, job: Job, slots: asyncio.Semaphore | None = None) -> None:
        """Run a job this process holds (one it has just inserted, leased to itself: see `new`; or one it claimed,
        holding one of `slots`) in the background, as one of this process's running jobs: `stop` cancels it, and its
        lease then runs out for another process."""
        task = asyncio.create_task(self._run_logged(job, slots))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_logged(self, job: Job, slots: asyncio.Semaphore | None) -> None:
        try:
            await self.run(job)
        except Exception:  # noqa: BLE001
            log.exception("job %s (%s) could not be finished", job.id, job.kind)
        finally:
            if slots is not None:
                slots.release()

    async def run(self, job: Job) -> None:
        """Run a job this process holds: its handler with heartbeats, then finish it (or queue it again)."""
        spec = self._kinds[job.kind]
        work = asyncio.ensure_future(spec.handler(job))
        beat = asyncio.create_task(self._heartbeat(job, work))
        error: str | None = None
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            if not work.done():  # our caller went away: so does the work (its lease runs out, another redoes it)
                work.cancel()
                raise
            if beat.done():  # the heartbeat cancelled the work: the lease is another worker's now
                raise LeaseLost(f"job {job.id} ({job.kind}): the lease ran out") from None
            raise
        except Exception as exc:  # noqa: BLE001 - the job failed; the process goes on
            log.exception("job %s (%s) failed", job.id, job.kind)
            error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            beat.cancel()
        if spec.every is not None:
            again = utcnow() + timedelta(seconds=spec.every)
            await self.store.jobs.finish(job, again_at=again, error=error)
        elif error is not None and job.attempts < 3:
            await self.store.jobs.finish(job, again_at=utcnow() + timedelta(seconds=self.lease), error=error)
        else:
            await self.store.jobs.finish(job, error=error, failed=error is not None)

    async def _heartbeat(self, job: Job, work: asyncio.Future[None]) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                held = await self.store.jobs.heartbeat(job, self.lease)
            except StoreUnavailable:
                continue  # the lease may still hold; if it runs out, another worker redoes the job
            if not held:
                log.warning("job %s (%s): lease lost, stopping", job.id, job.kind)
                work.cancel()
                return

    async def _claim_forever(self) -> None:
        # A claim costs a few ms of CPU (this machine: ~4 ms, most of it building the query), taken from requests on
        # a busy core; while none finds work the wait grows (`next_wait`), staying within a third of a lease so that
        # a job whose holder died is taken soon after its lease runs out. Jobs this process creates run at once
        # (`run_soon`).
        wait = self.poll
        while True:
            # Jittered, so that processes started together do not poll in step.
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))
            kinds = [kind for kind, spec in self._kinds.items() if not spec.slots.locked()]
            if not kinds:
                continue
            try:
                job = await self.store.jobs.claim(self.owner, self.lease, kinds)
            except Exception:  # noqa: BLE001 - the database is down: try again later
                log.warning("claiming jobs failed", exc_info=True)
                continue
            wait = next_wait(wait, job is not None, self.poll, self.lease)
            if job is None:
                continue
            slots = self._kinds[job.kind].slots
            await slots.acquire()  # free: only this loop takes them, and it saw room for this kind
            self.run_soon(job, slots)
