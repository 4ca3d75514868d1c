"""Files and resumable uploads. Quotas and per-upload ordering are enforced here, by the database, so they hold
whichever process or replica serves each request."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from .db import Database, api_keys, aware, files, jobs, projects, upload_pieces, uploads, utcnow
from .records import FileRecord, Piece, Upload


def _file(row) -> FileRecord:
    return FileRecord(row.project_id, row.id, row.display_name, row.mime_type, row.size_bytes, row.sha256, row.state,
                      row.source, row.error, row.info, aware(row.create_time), aware(row.update_time),
                      aware(row.expire_time))


def _upload(row) -> Upload:
    return Upload(row.id, row.project_id, row.file_id, row.display_name, row.mime_type, row.declared_size,
                  row.committed, aware(row.create_time), aware(row.expire_time), row.key_id, row.state,
                  bool(row.owner_live))


def _owner_live() -> ColumnElement[bool]:
    """The upload's project still exists and the key that opened it is still live: checked at every step, since the
    CLI revokes keys and deletes projects from another process."""
    project = select(projects.c.id).where(projects.c.id == uploads.c.project_id).exists()
    key = select(api_keys.c.id).where(api_keys.c.id == uploads.c.key_id, api_keys.c.revoked_at.is_(None)).exists()
    return and_(project, or_(uploads.c.key_id.is_(None), key))


def _open() -> ColumnElement[bool]:
    """An upload that may still take bytes."""
    return and_(uploads.c.state == "active", uploads.c.expire_time > utcnow(), _owner_live())


async def lock_project(conn: AsyncConnection, project_id: str) -> None:
    """Hold the project's row until the transaction ends: quota checks and the writes they allow are one step
    against every other process (Postgres: a row lock; SQLite: the database's write lock, taken now, not later)."""
    await conn.execute(update(projects).where(projects.c.id == project_id).values(id=projects.c.id))


async def _project_bytes(conn: AsyncConnection, project_id: str) -> int:
    """Bytes a project holds: its live files and what its open uploads have declared or written."""
    stored = (await conn.execute(select(func.coalesce(func.sum(files.c.size_bytes), 0)).where(
        files.c.project_id == project_id, files.c.expire_time > utcnow()))).scalar_one()
    bigger = func.greatest if conn.dialect.name == "postgresql" else func.max
    pending = (await conn.execute(select(func.coalesce(func.sum(
        bigger(func.coalesce(uploads.c.declared_size, 0), uploads.c.committed)), 0)).where(
        uploads.c.project_id == project_id, uploads.c.state == "active"))).scalar_one()
    return int(stored) + int(pending)


async def _name_taken(conn: AsyncConnection, project_id: str, file_id: str) -> bool:
    query = select(files.c.id).where(files.c.project_id == project_id, files.c.id == file_id).union_all(
        select(uploads.c.file_id).where(uploads.c.project_id == project_id, uploads.c.file_id == file_id,
                                        uploads.c.state == "active"))
    return (await conn.execute(query)).first() is not None


class QuotaExceeded(Exception):
    """The project's storage would pass its limit."""


class NameTaken(Exception):
    """The file name is taken in the project (by a file or an open upload)."""


class Files:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: dict[str, Any], max_project_bytes: int | None = None) -> None:
        """A new file (a generated one); with a quota, refused past it, atomically."""
        try:
            async with self.db.begin() as conn:
                if max_project_bytes is not None:
                    await lock_project(conn, row["project_id"])
                    if await _project_bytes(conn, row["project_id"]) + row["size_bytes"] > max_project_bytes:
                        raise QuotaExceeded
                await conn.execute(files.insert().values(**row))
        except IntegrityError:
            raise NameTaken from None

    async def get(self, project_id: str, file_id: str) -> FileRecord | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(files).where(files.c.project_id == project_id, files.c.id == file_id,
                                                          files.c.expire_time > utcnow()))).first()
        return _file(row) if row else None

    async def taken(self, project_id: str, file_id: str) -> bool:
        """Whether the id is taken in the project, by a file (expired or not: its bytes may remain) or an open
        upload."""
        async with self.db.connect() as conn:
            return await _name_taken(conn, project_id, file_id)

    async def list(self, project_id: str, limit: int, after: tuple[datetime, str] | None) -> list[FileRecord]:
        """Newest first; `after` is the (create_time, id) of the last file of the previous page."""
        query = select(files).where(files.c.project_id == project_id, files.c.expire_time > utcnow())
        if after is not None:
            at, file_id = after
            query = query.where((files.c.create_time < at) | and_(files.c.create_time == at, files.c.id < file_id))
        query = query.order_by(files.c.create_time.desc(), files.c.id.desc()).limit(limit)
        async with self.db.connect() as conn:
            return [_file(r) for r in await conn.execute(query)]

    async def update(self, project_id: str, file_id: str, **values: Any) -> FileRecord | None:
        async with self.db.begin() as conn:
            row = (await conn.execute(update(files).where(files.c.project_id == project_id, files.c.id == file_id)
                                      .values(update_time=utcnow(), **values).returning(*files.c))).first()
        return _file(row) if row else None

    async def delete(self, project_id: str, file_id: str) -> bool:
        """True for the one caller that deleted it (of any number of processes trying at once)."""
        async with self.db.begin() as conn:
            result = await conn.execute(delete(files).where(files.c.project_id == project_id, files.c.id == file_id))
            # The upload that made it no longer answers with it (not even with a later file of the same name).
            await conn.execute(update(uploads).where(uploads.c.project_id == project_id, uploads.c.file_id == file_id,
                                                     uploads.c.state == "final").values(state="deleted"))
        return result.rowcount == 1

    async def expired(self, limit: int = 1000) -> list[FileRecord]:
        async with self.db.connect() as conn:
            return [_file(r) for r in await conn.execute(
                select(files).where(files.c.expire_time <= utcnow()).limit(limit))]

    async def in_state(self, state: str) -> list[FileRecord]:
        async with self.db.connect() as conn:
            return [_file(r) for r in await conn.execute(select(files).where(files.c.state == state))]

    async def names(self) -> set[tuple[str, str]]:
        """(project, id) of every file and of every open upload's file (its bytes may be in place before its row)."""
        query = select(files.c.project_id, files.c.id).union_all(
            select(uploads.c.project_id, uploads.c.file_id).where(uploads.c.state == "active"))
        async with self.db.connect() as conn:
            return {(r[0], r[1]) for r in await conn.execute(query)}

    async def project_bytes(self, project_id: str) -> int:
        async with self.db.connect() as conn:
            return await _project_bytes(conn, project_id)


class Commit(enum.Enum):
    """How a chunk's compare-and-set on the committed offset ended."""

    DONE = "done"
    MOVED = "moved"  # another chunk committed first: the offset the client sent is stale
    GONE = "gone"    # closed, expired, finalized, or its key or project went
    QUOTA = "quota"  # the project's storage would pass its limit


class Uploads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self, row: dict[str, Any], max_project_bytes: int) -> None:
        """Open an upload, reserving its file name and (with a declared size) its storage, atomically."""
        try:
            async with self.db.begin() as conn:
                await lock_project(conn, row["project_id"])
                if await _name_taken(conn, row["project_id"], row["file_id"]):
                    raise NameTaken
                declared = row["declared_size"] or 0
                if declared and await _project_bytes(conn, row["project_id"]) + declared > max_project_bytes:
                    raise QuotaExceeded
                await conn.execute(uploads.insert().values(**row))
        except IntegrityError:  # the unique index: another process reserved the name between check and insert
            raise NameTaken from None

    async def get(self, upload_id: str) -> Upload | None:
        """An unexpired upload in any state; `owner_live` says whether its key and project are still live."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(uploads, _owner_live().label("owner_live"))
                                      .where(uploads.c.id == upload_id, uploads.c.expire_time > utcnow()))).first()
        return _upload(row) if row else None

    async def pieces(self, upload_id: str) -> list[Piece]:
        async with self.db.connect() as conn:
            return [Piece(r.start, r.size, r.blob) for r in await conn.execute(
                select(upload_pieces).where(upload_pieces.c.upload_id == upload_id).order_by(upload_pieces.c.start))]

    async def commit(self, upload: Upload, piece: Piece, expire_time: datetime, max_project_bytes: int) -> Commit:
        """Record a stored piece and the new committed offset, if the upload is still open and still at the piece's
        start (compare-and-set: of two chunks racing at one offset, one wins); each chunk keeps the upload alive."""
        async with self.db.begin() as conn:
            if upload.declared_size is None:  # its storage was not reserved at the start: check it now
                await lock_project(conn, upload.project_id)
                current = (await conn.execute(select(uploads.c.committed).where(uploads.c.id == upload.id))).first()
                others = await _project_bytes(conn, upload.project_id) - (current[0] if current else 0)
                if others + piece.start + piece.size > max_project_bytes:
                    return Commit.QUOTA
            result = await conn.execute(update(uploads).where(uploads.c.id == upload.id, _open(),
                                                              uploads.c.committed == piece.start)
                                        .values(committed=piece.start + piece.size, expire_time=expire_time))
            if result.rowcount != 1:
                still = (await conn.execute(select(uploads.c.committed)
                                            .where(uploads.c.id == upload.id, _open()))).first()
                return Commit.GONE if still is None else Commit.MOVED
            if piece.size:
                await conn.execute(upload_pieces.insert().values(upload_id=upload.id, start=piece.start,
                                                                 size=piece.size, blob=piece.blob))
        return Commit.DONE

    async def finish(self, upload_id: str, file_row: dict[str, Any], keep_until: datetime,
                     job: dict[str, Any] | None = None) -> bool:
        """The upload becomes a file in one transaction (a crash leaves either the session or the file) with the job
        that processes it, and stays until `keep_until` as the record of that file. False, with nothing done, if the
        upload is gone or closed."""
        async with self.db.begin() as conn:
            # The write comes first, so the check and the insert are one atomic step against other processes.
            result = await conn.execute(update(uploads).where(uploads.c.id == upload_id, _open())
                                        .values(state="final", expire_time=keep_until))
            if result.rowcount != 1:
                return False
            await conn.execute(files.insert().values(**file_row))
            await conn.execute(delete(upload_pieces).where(upload_pieces.c.upload_id == upload_id))
            if job is not None:
                await conn.execute(jobs.insert().values(**job))
        return True

    async def delete(self, upload_id: str) -> None:
        """The upload's row; its pieces' rows go with it (ON DELETE CASCADE, as when a project is deleted)."""
        async with self.db.begin() as conn:
            await conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    async def delete_of_key(self, key_id: str) -> list[str]:
        """Delete the uploads a (revoked) key opened, finalized ones too (their URLs were the key's to give); returns
        the ids of those still open, whose bytes the caller deletes."""
        async with self.db.begin() as conn:
            rows = (await conn.execute(delete(uploads).where(uploads.c.key_id == key_id)
                                       .returning(uploads.c.id, uploads.c.state))).all()
        return [r[0] for r in rows if r[1] == "active"]

    async def dead(self, limit: int = 1000) -> list[Upload]:
        """Uploads to delete with their bytes: expired ones, and those whose key was revoked or project deleted."""
        async with self.db.connect() as conn:
            return [_upload(r) for r in await conn.execute(
                select(uploads, _owner_live().label("owner_live")).where(or_(
                    uploads.c.expire_time <= utcnow(), not_(_owner_live()))).limit(limit))]

    async def active_ids(self) -> set[str]:
        """Ids of the uploads whose pieces must be kept (every other upload's bytes are orphans)."""
        async with self.db.connect() as conn:
            return {r[0] for r in await conn.execute(select(uploads.c.id).where(uploads.c.state == "active"))}
