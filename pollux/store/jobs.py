"""Leased jobs: background work that runs once across every process and replica.

A worker claims a due job for `lease` seconds (`FOR UPDATE SKIP LOCKED` on Postgres, so workers never wait on one
another; SQLite's single writer does the same), renews the lease by heartbeats while it works, and finishes it. A
worker that dies stops renewing: once its lease runs out another worker claims the job and runs it again, so a job's
handler must be safe to run twice (each step checks what is already done).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from .db import Database, jobs, utcnow
from .records import Job


def job_row(kind: str, payload: dict[str, Any], *, project_id: str | None = None, job_id: str | None = None,
            run_at: datetime | None = None, owner: str | None = None, lease: float = 0) -> dict[str, Any]:
    """A new job's row; with `owner`, already leased to that worker (the process that creates it runs it first)."""
    now = utcnow()
    return {"id": job_id or secrets.token_hex(12), "kind": kind, "project_id": project_id, "payload": payload,
            "state": "queued", "run_at": run_at or now, "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease) if owner else None, "attempts": 1 if owner else 0,
            "error": None, "created_at": now, "updated_at": now}


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, row: dict[str, Any]) -> None:
        async with self.db.begin() as conn:
            await conn.execute(jobs.insert().values(**row))

    async def ensure(self, row: dict[str, Any]) -> None:
        """Add a job with a fixed id unless it exists (every process seeds the recurring ones at start)."""
        try:
            await self.add(row)
        except IntegrityError:
            pass

    async def due_now(self, job_id: str) -> None:
        """Bring a queued job's next run forward to now (recurring housekeeping runs when a process starts)."""
        now = utcnow()
        async with self.db.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == "queued", jobs.c.run_at > now)
                               .values(run_at=now, updated_at=now))

    async def claim(self, owner: str, lease: float, kinds: list[str]) -> Job | None:
        """Lease the most overdue job of these kinds that no live worker holds."""
        now = utcnow()
        due = (select(jobs.c.id).where(jobs.c.state == "queued", jobs.c.run_at <= now, jobs.c.kind.in_(kinds),
                                       or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now))
               .order_by(jobs.c.run_at).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        async with self.db.begin() as conn:
            row = (await conn.execute(
                update(jobs).where(jobs.c.id == due).values(
                    lease_owner=owner, lease_until=now + timedelta(seconds=lease), attempts=jobs.c.attempts + 1,
                    updated_at=now)
                .returning(jobs.c.id, jobs.c.kind, jobs.c.project_id, jobs.c.payload, jobs.c.attempts))).first()
        return Job(row.id, row.kind, row.project_id, row.payload, row.attempts, owner) if row else None

    async def heartbeat(self, job: Job, lease: float) -> bool:
        """Renew the lease; False if the worker lost it (it ran out and another worker took the job)."""
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.lease_owner == job.lease_owner,
                                                           jobs.c.state == "queued")
                                        .values(lease_until=now + timedelta(seconds=lease), updated_at=now))
        return result.rowcount == 1

    async def finish(self, job: Job, *, again_at: datetime | None = None, error: str | None = None,
                     failed: bool = False) -> bool:
        """Done (or failed for good); or, with `again_at`, queued again for then (recurring work, retries).
        False if the worker no longer held the job."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": utcnow(), "error": error}
        if again_at is not None:
            values.update(run_at=again_at)
        else:
            values.update(state="failed" if failed else "done")
        async with self.db.begin() as conn:
            result = await conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.lease_owner == job.lease_owner)
                                        .values(**values))
        return result.rowcount == 1

    async def purge(self, before: datetime) -> int:
        """Forget finished jobs last touched before `before`."""
        async with self.db.begin() as conn:
            result = await conn.execute(delete(jobs).where(jobs.c.state.in_(("done", "failed")),
                                                           jobs.c.updated_at < before))
        return result.rowcount

    async def get(self, job_id: str) -> dict[str, Any] | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
        return dict(row._mapping) if row else None
