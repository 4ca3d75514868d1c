"""Projects and their API keys."""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select, update

from ..single_flight import SingleFlight
from .db import Database, api_keys, aware, batch_results, batches, cached_contents, files, projects, uploads, utcnow
from .records import KeyListing, LiveKey, Project, ProjectDeletion


def _project(row) -> Project:
    return Project(row.id, row.name, aware(row.created_at))


class Projects:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, project_id: str, name: str) -> Project:
        project = Project(project_id, name, utcnow())
        async with self.db.begin() as conn:
            await conn.execute(projects.insert().values(id=project.id, name=name, created_at=project.created_at))
        return project

    async def list(self) -> list[Project]:
        async with self.db.connect() as conn:
            return [_project(r) for r in await conn.execute(select(projects).order_by(projects.c.created_at))]

    async def find(self, id_or_name: str) -> Project | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(projects).where(
                (projects.c.id == id_or_name) | (projects.c.name == id_or_name)))).first()
        return _project(row) if row else None

    async def rename(self, project_id: str, name: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(update(projects).where(projects.c.id == project_id).values(name=name))

    async def count(self) -> int:
        async with self.db.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(projects))).scalar_one()

    async def delete(self, project_id: str) -> ProjectDeletion | None:
        """Delete a project with its keys, files, uploads, caches and batches, in one transaction; None if there was no
        such project. The bytes are the caller's to delete (a crash in between leaves orphans the sweep finds)."""
        async with self.db.begin() as conn:
            gone_uploads = [r[0] for r in await conn.execute(
                delete(uploads).where(uploads.c.project_id == project_id).returning(uploads.c.id, uploads.c.state))
                if r[1] == "active"]
            gone_files = [r[0] for r in await conn.execute(
                delete(files).where(files.c.project_id == project_id).returning(files.c.id))]
            gone_caches = [r[0] for r in await conn.execute(delete(cached_contents).where(
                cached_contents.c.project_id == project_id).returning(cached_contents.c.id))]
            await conn.execute(delete(batches).where(batches.c.project_id == project_id))  # rows before results
            await conn.execute(delete(batch_results).where(batch_results.c.project_id == project_id))
            gone_keys = [r[0] for r in await conn.execute(
                delete(api_keys).where(api_keys.c.project_id == project_id).returning(api_keys.c.id))]
            if (await conn.execute(delete(projects).where(projects.c.id == project_id))).rowcount != 1:
                await conn.rollback()
                return None
        return ProjectDeletion(gone_keys, gone_files, gone_uploads, gone_caches)


class Keys:
    """API keys, stored as hashes. The lookup on every request is cached for `cache_seconds`: a key revoked by
    another process or replica is refused by this one within that time."""

    CACHE_ENTRIES = 10_000

    def __init__(self, db: Database, cache_seconds: float = 0.5) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, LiveKey | None]] = {}
        self._reads: SingleFlight[str, LiveKey | None] = SingleFlight()

    async def create(self, key_id: str, project_id: str, name: str, key_hash: str, hint: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(api_keys.insert().values(id=key_id, project_id=project_id, name=name, key_hash=key_hash,
                                                        hint=hint, created_at=utcnow(), revoked_at=None))

    async def list(self) -> list[KeyListing]:
        query = (select(api_keys.c.id, api_keys.c.name, api_keys.c.hint, api_keys.c.created_at, api_keys.c.revoked_at,
                        projects.c.id.label("project_id"), projects.c.name.label("project_name"))
                 .join(projects, projects.c.id == api_keys.c.project_id).order_by(api_keys.c.created_at))
        async with self.db.connect() as conn:
            return [KeyListing(r.id, r.name, r.hint, aware(r.created_at),
                               aware(r.revoked_at) if r.revoked_at else None, r.project_id, r.project_name)
                    for r in await conn.execute(query)]

    async def revoke(self, key_id: str) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                                        .values(revoked_at=utcnow()))
        self._cache.clear()  # this process sees its own revocation at once
        return result.rowcount == 1

    async def live(self, key_hash: str) -> LiveKey | None:
        """The live key with this hash, or None for an unknown or revoked one. Called on every request."""
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        # One query for all the requests that find the entry stale at once (each would otherwise take a connection).
        return await self._reads.run(key_hash, lambda: self._read(key_hash, now))

    async def _read(self, key_hash: str, now: float) -> LiveKey | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(api_keys.c.id, api_keys.c.project_id).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)))).first()
        found = LiveKey(row[0], row[1]) if row else None
        if len(self._cache) >= self.CACHE_ENTRIES:  # unknown keys cost a query each, never memory
            self._cache.clear()
        self._cache[key_hash] = (now + self.cache_seconds, found)
        return found
