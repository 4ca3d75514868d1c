"""Server-wide secrets, kept in the database so that every process and replica shares them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import Database, secrets, utcnow


class Secrets:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_or_create(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The secret `name`; the first process to ask creates it with `make()` (of several racing, one wins)."""
        for _ in range(2):
            async with self.db.connect() as conn:
                row = (await conn.execute(select(secrets.c.value).where(secrets.c.name == name))).first()
            if row is not None:
                return bytes(row[0])
            try:
                async with self.db.begin() as conn:
                    await conn.execute(secrets.insert().values(name=name, value=make(), created_at=utcnow()))
            except IntegrityError:
                pass  # another process created it first: read theirs
        raise RuntimeError(f"secret {name!r} could not be read back")
