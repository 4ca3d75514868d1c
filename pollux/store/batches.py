"""Batch jobs and their results. Every state change is a compare-and-set on the row, so a cancel, an expiry and the
end of the run, from whichever processes, settle on one outcome; a result is inserted once (its key is the request's
place in the input), so a job run again after a crash never writes one twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .db import Database, aware, batch_results, batches, jobs, utcnow
from .files import lock_project
from .records import BatchCounts, BatchRecord, BatchResult

PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
LIVE = (PENDING, RUNNING)


class TooManyBatches(Exception):
    """The project has as many batches pending or running as it may."""


def _batch(row: Any) -> BatchRecord:
    return BatchRecord(row.project_id, row.id, row.kind, row.model, row.display_name, row.state, row.input_file,
                       row.request_count, int(row.priority), row.options or {}, row.output_file, row.error,
                       bool(row.cancel_requested), row.ending, aware(row.create_time), aware(row.update_time),
                       aware(row.end_time) if row.end_time else None, aware(row.expire_time))


def _insert_ignore(conn: AsyncConnection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class Batches:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, row: dict[str, Any], job: dict[str, Any], max_live: int) -> None:
        """The batch and the job that runs it, in one transaction: no batch is left without its job. Refused
        (`TooManyBatches`) when the project already has `max_live` batches pending or running, whichever processes
        create them at once (the project's row is held while counting)."""
        async with self.db.begin() as conn:
            await lock_project(conn, row["project_id"])
            live = (await conn.execute(select(func.count()).select_from(batches).where(
                batches.c.project_id == row["project_id"], batches.c.state.in_(LIVE)))).scalar_one()
            if live >= max_live:
                raise TooManyBatches(live)
            await conn.execute(batches.insert().values(**row))
            await conn.execute(jobs.insert().values(**job))

    async def get(self, project_id: str, batch_id: str) -> BatchRecord | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(batches).where(batches.c.project_id == project_id,
                                                            batches.c.id == batch_id))).first()
        return _batch(row) if row else None

    async def list(self, project_id: str, limit: int, before: tuple[datetime, str] | None,
                   kinds: tuple[str, ...] | None = None) -> list[BatchRecord]:
        """Newest first; `before` is the (create time, id) the previous page ended at; only `kinds` when given."""
        query = select(batches).where(batches.c.project_id == project_id)
        if kinds is not None:
            query = query.where(batches.c.kind.in_(kinds))
        if before is not None:
            created, batch_id = before
            query = query.where(or_(batches.c.create_time < created,
                                    and_(batches.c.create_time == created, batches.c.id < batch_id)))
        query = query.order_by(batches.c.create_time.desc(), batches.c.id.desc()).limit(limit)
        async with self.db.connect() as conn:
            return [_batch(r) for r in await conn.execute(query)]

    async def move(self, project_id: str, batch_id: str, to: str, *, came_from: tuple[str, ...] = LIVE,
                   **values: Any) -> bool:
        """Set the state to `to` if it is one of `came_from` now and the batch is not ending; False if another change
        came first."""
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.project_id == project_id, batches.c.id == batch_id, batches.c.state.in_(came_from),
                batches.c.ending.is_(None)).values(state=to, update_time=now, **values))
        return result.rowcount == 1

    async def start_ending(self, project_id: str, batch_id: str, to: str) -> bool:
        """Close a live batch to new results, as it ends in state `to` (its output files are written next). True for
        the one change that does so; a batch already ending in `to` (an end that a crash interrupted) is True too."""
        async with self.db.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.project_id == project_id, batches.c.id == batch_id, batches.c.state.in_(LIVE),
                or_(batches.c.ending.is_(None), batches.c.ending == to)).values(ending=to, update_time=utcnow()))
        return result.rowcount == 1

    async def end(self, project_id: str, batch_id: str, **values: Any) -> bool:
        """Settle an ending batch in the state it is ending in, with its end time, output and error."""
        async with self.db.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.project_id == project_id, batches.c.id == batch_id, batches.c.state.in_(LIVE),
                batches.c.ending.is_not(None)).values(state=batches.c.ending, ending=None, **values))
        return result.rowcount == 1

    async def request_cancel(self, project_id: str, batch_id: str) -> bool:
        """Mark a live batch for cancelling (its runner stops it); False if there is no such batch."""
        async with self.db.begin() as conn:
            await conn.execute(update(batches).where(batches.c.project_id == project_id, batches.c.id == batch_id,
                                                     batches.c.state.in_(LIVE))
                               .values(cancel_requested=1, update_time=utcnow()))
            found = (await conn.execute(select(batches.c.id).where(batches.c.project_id == project_id,
                                                                   batches.c.id == batch_id))).first()
        return found is not None

    async def delete(self, project_id: str, batch_id: str) -> bool:
        """Delete a batch with its results: True for the one caller that did."""
        async with self.db.begin() as conn:
            # The batch's row first, as `save` takes it first: the two never wait on each other in turn.
            result = await conn.execute(delete(batches).where(batches.c.project_id == project_id,
                                                              batches.c.id == batch_id))
            await conn.execute(delete(batch_results).where(batch_results.c.project_id == project_id,
                                                           batch_results.c.batch_id == batch_id))
        return result.rowcount == 1

    # Results ----------------------------------------------------------------------------------------------------
    async def save(self, project_id: str, batch_id: str, results: list[BatchResult]) -> bool:
        """Store results in one transaction, if the batch is still live and not ending (its row is held meanwhile, so
        that its end waits for them); one already stored (a run before a crash wrote it) is kept. False when the batch
        takes no more results: it is ending, has ended or is gone."""
        async with self.db.begin() as conn:
            held = await conn.execute(update(batches).where(
                batches.c.project_id == project_id, batches.c.id == batch_id, batches.c.state.in_(LIVE),
                batches.c.ending.is_(None)).values(id=batches.c.id))
            if held.rowcount != 1:
                return False
            if results:
                await conn.execute(_insert_ignore(conn, batch_results), [
                    {"project_id": project_id, "batch_id": batch_id, "idx": r.idx, "ok": int(r.ok), "body": r.body}
                    for r in results])
        return True

    async def done(self, project_id: str, batch_id: str) -> set[int]:
        """The places of the requests that have a result."""
        async with self.db.connect() as conn:
            return {r[0] for r in await conn.execute(select(batch_results.c.idx).where(
                batch_results.c.project_id == project_id, batch_results.c.batch_id == batch_id))}

    async def counts(self, project_id: str, batch_ids: list[str]) -> dict[str, BatchCounts]:
        if not batch_ids:
            return {}
        query = (select(batch_results.c.batch_id, func.sum(batch_results.c.ok),
                        func.sum(case((batch_results.c.ok == 0, 1), else_=0)))
                 .where(batch_results.c.project_id == project_id, batch_results.c.batch_id.in_(batch_ids))
                 .group_by(batch_results.c.batch_id))
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        found = {r[0]: BatchCounts(int(r[1] or 0), int(r[2] or 0)) for r in rows}
        return {b: found.get(b, BatchCounts(0, 0)) for b in batch_ids}

    async def results(self, project_id: str, batch_id: str, after: int, limit: int) -> list[BatchResult]:
        """Results in input order, from the first place after `after`."""
        async with self.db.connect() as conn:
            return [BatchResult(r.idx, bool(r.ok), r.body) for r in await conn.execute(
                select(batch_results.c.idx, batch_results.c.ok, batch_results.c.body)
                .where(batch_results.c.project_id == project_id, batch_results.c.batch_id == batch_id,
                       batch_results.c.idx > after)
                .order_by(batch_results.c.idx).limit(limit))]

    # Housekeeping -----------------------------------------------------------------------------------------------
    async def expiring(self, limit: int = 1000) -> list[BatchRecord]:
        """Batches past their expire time: live ones expire, ended ones are forgotten."""
        async with self.db.connect() as conn:
            return [_batch(r) for r in await conn.execute(
                select(batches).where(batches.c.expire_time <= utcnow()).limit(limit))]

    async def stalled_endings(self, before: datetime) -> list[BatchRecord]:
        """Batches whose end began before `before` and was never settled (the process ending them died)."""
        async with self.db.connect() as conn:
            return [_batch(r) for r in await conn.execute(select(batches).where(
                batches.c.state.in_(LIVE), batches.c.ending.is_not(None), batches.c.update_time < before))]

    async def states(self) -> dict[tuple[str, str], str]:
        """The state of every batch, by (project, id)."""
        async with self.db.connect() as conn:
            return {(r[0], r[1]): r[2] for r in await conn.execute(
                select(batches.c.project_id, batches.c.id, batches.c.state))}

    async def drop_orphan_results(self) -> int:
        """Results whose batch is gone (a run that saved as its batch was being deleted)."""
        owner = select(batches.c.id).where(batches.c.project_id == batch_results.c.project_id,
                                           batches.c.id == batch_results.c.batch_id).exists()
        async with self.db.begin() as conn:
            return (await conn.execute(delete(batch_results).where(~owner))).rowcount
