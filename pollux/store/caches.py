"""Context caches. A cache is visible only before its expire time (the sweep deletes it later), so an expired cache
is missing at once to every process. Counts and bytes per project are checked with the project's row held."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from .db import Database, aware, cached_contents, utcnow
from .files import lock_project
from .records import CachedFile, CacheRecord

_C = cached_contents.c
_LIVE_GROUP = 200  # caches asked about in one query by `live`


class TooManyCaches(Exception):
    """The project holds as many caches, or as many bytes of them, as it may."""


def _cache(row: Any) -> CacheRecord:
    files = {uri: CachedFile(**f) for uri, f in (row.files or {}).items()}
    return CacheRecord(row.project_id, row.id, row.model, row.display_name, int(row.token_count),
                       dict(row.token_details or {}), int(row.size_bytes), files, aware(row.create_time),
                       aware(row.update_time), aware(row.expire_time))


def _live(project_id: str) -> Any:
    return and_(_C.project_id == project_id, _C.expire_time > utcnow())


class Caches:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, row: dict[str, Any], max_count: int, max_bytes: int) -> None:
        """Insert a cache, refused (`TooManyCaches`) when the project would pass `max_count` live caches or
        `max_bytes` bytes of them, whichever processes create at once."""
        async with self.db.begin() as conn:
            await lock_project(conn, row["project_id"])
            count, size = (await conn.execute(select(func.count(), func.coalesce(func.sum(_C.size_bytes), 0))
                                              .where(_live(row["project_id"])))).one()
            if count >= max_count or int(size) + row["size_bytes"] > max_bytes:
                raise TooManyCaches(count)
            await conn.execute(cached_contents.insert().values(**row))

    async def get(self, project_id: str, cache_id: str) -> CacheRecord | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(cached_contents).where(_live(project_id), _C.id == cache_id))).first()
        return _cache(row) if row else None

    async def list(self, project_id: str, limit: int, before: tuple[datetime, str] | None) -> list[CacheRecord]:
        """Newest first; `before` is the (create time, id) the previous page ended at."""
        query = select(cached_contents).where(_live(project_id))
        if before is not None:
            created, cache_id = before
            query = query.where(or_(_C.create_time < created, and_(_C.create_time == created, _C.id < cache_id)))
        query = query.order_by(_C.create_time.desc(), _C.id.desc()).limit(limit)
        async with self.db.connect() as conn:
            return [_cache(r) for r in await conn.execute(query)]

    async def set_expiry(self, project_id: str, cache_id: str, expire_time: datetime) -> CacheRecord | None:
        """The one change a cache allows; None if it is missing (or expired already)."""
        async with self.db.begin() as conn:
            row = (await conn.execute(update(cached_contents).where(_live(project_id), _C.id == cache_id)
                                      .values(expire_time=expire_time, update_time=utcnow())
                                      .returning(*cached_contents.c))).first()
        return _cache(row) if row else None

    async def delete(self, project_id: str, cache_id: str, *, live_only: bool = True) -> bool:
        """True for the one caller that deleted it; `live_only`: an expired cache counts as missing."""
        where = _live(project_id) if live_only else _C.project_id == project_id
        async with self.db.begin() as conn:
            result = await conn.execute(delete(cached_contents).where(where, _C.id == cache_id))
        return result.rowcount == 1

    async def delete_project(self, project_id: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(cached_contents).where(_C.project_id == project_id))

    # Housekeeping -----------------------------------------------------------------------------------------------
    async def expired(self, limit: int = 1000) -> list[CacheRecord]:
        async with self.db.connect() as conn:
            return [_cache(r) for r in await conn.execute(
                select(cached_contents).where(_C.expire_time <= utcnow()).limit(limit))]

    async def names(self) -> set[tuple[str, str]]:
        """(project, id) of every cache, expired or not."""
        async with self.db.connect() as conn:
            return {(r[0], r[1]) for r in await conn.execute(select(_C.project_id, _C.id))}

    async def live(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (project, id) are caches still live. Asked in groups: SQLite refuses a condition of more than
        a thousand terms."""
        found: set[tuple[str, str]] = set()
        async with self.db.connect() as conn:
            for start in range(0, len(keys), _LIVE_GROUP):
                wanted = or_(*(and_(_C.project_id == p, _C.id == i) for p, i in keys[start:start + _LIVE_GROUP]))
                found.update((r[0], r[1]) for r in await conn.execute(
                    select(_C.project_id, _C.id).where(wanted, _C.expire_time > utcnow())))
        return found
