"""Leased jobs (`pollux/jobs.py`, `store/jobs.py`) on the suite's database (SQLite, or Postgres in the Postgres
pass): one claimant per job, leases that run out, heartbeats that notice a lost lease, recurring work and retries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from conftest import ON_POSTGRES, postgres
from sqlalchemy import update

from pollux.jobs import JobRunner, LeaseLost, next_wait
from pollux.store import Store, job_row
from pollux.store.db import jobs, utcnow
from pollux.store.records import Job


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(postgres().database() if ON_POSTGRES else None, tmp_path)
    yield store
    await store.close()


def test_an_idle_claim_loop_waits_longer_up_to_a_bound():
    waits, wait = [], 1.0
    for _ in range(6):
        wait = next_wait(wait, False, poll=1.0, lease=30)
        waits.append(wait)
    assert waits == [2, 4, 8, 8, 8, 8]  # up to 8 polls
    assert next_wait(8, True, poll=1.0, lease=30) == 1.0  # a claim that found work: back to the poll
    assert next_wait(4, False, poll=1.0, lease=6) == 2  # within a third of a short lease, so a dead holder's job
    assert next_wait(1, False, poll=1.0, lease=2) == 1  # is taken soon; never under the poll


async def test_a_job_has_one_holder_at_a_time(store):
    await store.jobs.add(job_row("work", {"n": 1}))
    claims = await asyncio.gather(*(store.jobs.claim(f"worker-{i}", 30, ["work"]) for i in range(8)))
    held = [c for c in claims if c is not None]
    assert len(held) == 1 and held[0].attempts == 1
    assert await store.jobs.claim("late", 30, ["work"]) is None  # leased: nobody else takes it
    assert await store.jobs.claim("other-kind", 30, ["else"]) is None


async def test_a_lease_that_runs_out_passes_the_job_on(store):
    await store.jobs.add(job_row("work", {}, owner="died", lease=-1))  # its holder stopped renewing
    job = await store.jobs.claim("heir", 30, ["work"])
    assert job is not None and job.lease_owner == "heir" and job.attempts == 2
    # The dead holder's late finish changes nothing; the heir's does.
    assert not await store.jobs.finish(Job(job.id, "work", None, {}, 1, "died"))
    assert await store.jobs.finish(job)
    assert (await store.jobs.get(job.id))["state"] == "done"


async def test_the_runner_finishes_retries_and_recurs(store):
    runner = JobRunner(store, lease=30)
    ran: list[str] = []

    async def ok(job):
        ran.append(job.kind)

    async def broken(job):
        raise RuntimeError("always")

    runner.handle("ok", ok)
    runner.handle("broken", broken)
    runner.handle("tick", ok, every=60)
    # Driven by hand here (no claim loop): each round makes every queued job due and runs what it claims.
    await store.jobs.ensure(job_row("tick", {}, job_id="recurring:tick"))
    await store.jobs.ensure(job_row("tick", {}, job_id="recurring:tick"))  # every process seeds it: one row
    for kind in ("ok", "broken"):
        await store.jobs.add(job_row(kind, {}, job_id=kind))
    for _ in range(3):  # the broken one: tried three times, then failed for good
        for kind in ("ok", "broken", "tick"):
            async with store.db.begin() as conn:  # due now, whatever backoff it was given
                await conn.execute(update(jobs).where(jobs.c.kind == kind, jobs.c.state == "queued")
                                   .values(run_at=utcnow() - timedelta(seconds=1)))
            job = await store.jobs.claim(runner.owner, 30, [kind])
            if job is not None:
                await runner.run(job)
    assert (await store.jobs.get("ok"))["state"] == "done"
    broken_row = await store.jobs.get("broken")
    assert broken_row["state"] == "failed" and broken_row["attempts"] == 3 and "always" in broken_row["error"]
    tick = await store.jobs.get("recurring:tick")
    assert tick["state"] == "queued" and tick["lease_owner"] is None  # queued again for its next run
    assert ran.count("tick") == 3 and ran.count("ok") == 1


async def test_a_worker_that_loses_its_lease_stops_working(store):
    runner = JobRunner(store, lease=0.3)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long(job):
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner.handle("long", long)
    await store.jobs.add(job_row("long", {}, job_id="long"))
    job = await store.jobs.claim(runner.owner, 0.3, ["long"])
    work = asyncio.create_task(runner.run(job))
    await started.wait()
    async with store.db.begin() as conn:  # another worker took it over (this one stalled past its lease)
        await conn.execute(update(jobs).where(jobs.c.id == "long").values(lease_owner="usurper"))
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(work, 30)
    assert cancelled.is_set()
    assert (await store.jobs.get("long"))["lease_owner"] == "usurper"  # not finished by the loser


async def test_long_jobs_do_not_keep_short_ones_waiting(store):
    """Long jobs (batches) are claimed within a bound of their own: while as many as it allows run, the claim loop
    still takes and runs short jobs (housekeeping, file processing), and no more long ones."""
    runner = JobRunner(store, lease=30, poll=0.02, concurrency=1, long_concurrency=1)
    running, release, short_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def long(job):
        running.set()
        await release.wait()

    async def short(job):
        short_done.set()

    runner.handle("batch", long, long=True)
    runner.handle("sweep", short)
    await store.jobs.add(job_row("batch", {}, job_id="first"))
    await store.jobs.add(job_row("batch", {}, job_id="second"))
    await runner.start()
    try:
        await asyncio.wait_for(running.wait(), 30)
        await store.jobs.add(job_row("sweep", {}, job_id="sweep"))
        await asyncio.wait_for(short_done.wait(), 30)
        held = [(await store.jobs.get(j))["lease_owner"] for j in ("first", "second")]
        assert held.count(runner.owner) == 1  # the other long job waits for a place
        release.set()
        for _ in range(300):  # then it runs too (bounded wait)
            states = [(await store.jobs.get(j))["state"] for j in ("first", "second")]
            if states == ["done", "done"]:
                break
            await asyncio.sleep(0.05)
        assert states == ["done", "done"]
    finally:
        await runner.stop()
