"""Durable state shared by every process: the database (SQLite or Postgres, through SQLAlchemy's async engine and
Alembic migrations), read and written only through the per-resource repositories, which return typed records."""

from __future__ import annotations

from pathlib import Path

from .batches import Batches
from .caches import Caches, TooManyCaches
from .db import Database, StoreError, StoreUnavailable
from .files import Commit, Files, NameTaken, QuotaExceeded, Uploads
from .jobs import Jobs, job_row
from .projects import Keys, Projects
from .secrets import Secrets


class Store:
    """The repositories of one database. `await Store.open(...)` brings the schema up to date first."""

    def __init__(self, url: str | None, data_dir: Path, key_cache_seconds: float = 0.5) -> None:
        self.db = Database(url, data_dir)
        self.projects = Projects(self.db)
        self.keys = Keys(self.db, key_cache_seconds)
        self.files = Files(self.db)
        self.uploads = Uploads(self.db)
        self.jobs = Jobs(self.db)
        self.batches = Batches(self.db)
        self.caches = Caches(self.db)
        self.secrets = Secrets(self.db)

    @classmethod
    async def open(cls, url: str | None, data_dir: Path, key_cache_seconds: float = 0.5) -> Store:
        store = cls(url, data_dir, key_cache_seconds)
        try:
            await store.db.migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self.db.close()


__all__ = ["Commit", "NameTaken", "QuotaExceeded", "Store", "StoreError", "StoreUnavailable", "TooManyCaches",
           "job_row"]
