"""Tables and the queries the services need. Every resource row carries `project_id`."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (JSON, BigInteger, Column, DateTime, ForeignKey, Index, MetaData, String, Table, and_,
                        create_engine, delete, event, func, not_, or_, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

projects = Table(
    "projects", metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String, primary_key=True),
    Column("project_id", String, ForeignKey("projects.id"), nullable=False),
    Column("name", String, nullable=False),
    Column("key_hash", String, nullable=False, unique=True),
    Column("hint", String, nullable=False),  # the last 4 characters, to tell keys apart in listings
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)
Index("ix_api_keys_project", api_keys.c.project_id)

# A file's id is unique within its project only: another project can neither see it nor learn that it exists.
files = Table(
    "files", metadata,
    Column("project_id", String, ForeignKey("projects.id"), primary_key=True),
    Column("id", String, primary_key=True),
    Column("display_name", String, nullable=False),
    Column("mime_type", String, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String, nullable=False),  # hex digest
    Column("state", String, nullable=False),   # PROCESSING | ACTIVE | FAILED
    Column("source", String, nullable=False),  # UPLOADED | GENERATED
    Column("error", String),                   # why it FAILED
    Column("info", JSON),                      # what probing measured: pages, duration, width, height
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
)
Index("ix_files_expire_time", files.c.expire_time)

# A resumable upload. `id` is the SHA-256 of the capability in the upload URL, so the database alone does not let
# anyone write to an upload; `committed` is how many bytes are durably on disk. `state` is `active` while bytes may
# arrive, then `final` (kept until the upload TTL or the file's expiry, so a client that lost the finalize response can
# query for its file), or `deleted` once that file is deleted. `key_id` is the key that opened it (no foreign key: the
# upload is closed, not kept, when its key is revoked); NULL for uploads opened before 0003.
uploads = Table(
    "uploads", metadata,
    Column("id", String, primary_key=True),
    Column("project_id", String, ForeignKey("projects.id"), nullable=False),
    Column("file_id", String, nullable=False),
    Column("display_name", String, nullable=False),
    Column("mime_type", String, nullable=False),
    Column("declared_size", BigInteger),
    Column("committed", BigInteger, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("key_id", String),
    Column("state", String, nullable=False, server_default="active"),  # active | final | deleted
)
Index("ix_uploads_project", uploads.c.project_id)
Index("ix_uploads_key", uploads.c.key_id)


def _upload_owner_live() -> ColumnElement[bool]:
    """The upload's project still exists and the key that opened it is still live: checked at every step, since the
    CLI revokes keys and deletes projects from another process."""
    project = select(projects.c.id).where(projects.c.id == uploads.c.project_id).exists()
    key = select(api_keys.c.id).where(api_keys.c.id == uploads.c.key_id, api_keys.c.revoked_at.is_(None)).exists()
    return and_(project, or_(uploads.c.key_id.is_(None), key))


def _upload_open() -> ColumnElement[bool]:
    """An upload that may still take bytes."""
    return and_(uploads.c.state == "active", uploads.c.expire_time > utcnow(), _upload_owner_live())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")   # readers (the server) never block the CLI's writes
    cur.execute("PRAGMA synchronous=FULL")   # acknowledged means on disk
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """The database of one data dir. Opening it brings its schema up to date."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "pollux.db"
        self.engine = create_engine(f"sqlite:///{path}")
        event.listen(self.engine, "connect", _sqlite_pragmas)
        _migrate(self.engine)
        # The per-request key lookup skips SQLAlchemy: a plain indexed SELECT on one connection costs
        # microseconds and always sees the CLI's latest commit (keys revoked while the server runs).
        self._lookup = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        _sqlite_pragmas(self._lookup, None)

    def close(self) -> None:
        self._lookup.close()
        self.engine.dispose()

    # Projects ---------------------------------------------------------------------------------------------------
    def create_project(self, project_id: str, name: str) -> dict:
        row = {"id": project_id, "name": name, "created_at": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(projects.insert().values(**row))
        return row

    def list_projects(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(projects).order_by(projects.c.created_at))]

    def find_project(self, id_or_name: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(projects).where(
                (projects.c.id == id_or_name) | (projects.c.name == id_or_name))).first()
        return dict(row._mapping) if row else None

    def rename_project(self, project_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(projects).where(projects.c.id == project_id).values(name=name))

    def count_projects(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(projects)).scalar_one()

    # API keys ---------------------------------------------------------------------------------------------------
    def create_key(self, key_id: str, project_id: str, name: str, key_hash: str, hint: str) -> dict:
        row = {"id": key_id, "project_id": project_id, "name": name, "key_hash": key_hash, "hint": hint,
               "created_at": utcnow(), "revoked_at": None}
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        return row

    def list_keys(self) -> list[dict]:
        query = (select(api_keys.c.id, api_keys.c.name, api_keys.c.hint, api_keys.c.created_at, api_keys.c.revoked_at,
                        projects.c.id.label("project_id"), projects.c.name.label("project_name"))
                 .join(projects, projects.c.id == api_keys.c.project_id).order_by(api_keys.c.created_at))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                                  .values(revoked_at=utcnow()))
        return result.rowcount == 1

    def live_key(self, key_hash: str) -> tuple[str, str] | None:
        """(key id, project id) of a live key, or None for an unknown or revoked one. Called on every request."""
        row = self._lookup.execute(
            "SELECT id, project_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)).fetchone()
        return (row[0], row[1]) if row else None

    def delete_key_uploads(self, key_id: str) -> list[str]:
        """Delete the uploads a (revoked) key opened, finalized ones too (their URLs were the key's to give); returns
        the ids of those still open, whose part files the caller deletes."""
        with self.engine.begin() as conn:
            rows = conn.execute(delete(uploads).where(uploads.c.key_id == key_id)
                                .returning(uploads.c.id, uploads.c.state)).all()
        return [r[0] for r in rows if r[1] == "active"]

    def delete_project(self, project_id: str) -> dict[str, list[str]] | None:
        """Delete a project with its keys, files and uploads, in one transaction; returns the ids of what went (of the
        uploads, those still open: the caller deletes the bytes), or None if there was no such project."""
        with self.engine.begin() as conn:
            gone = {
                "uploads": [r[0] for r in conn.execute(delete(uploads).where(uploads.c.project_id == project_id)
                                                       .returning(uploads.c.id, uploads.c.state)) if r[1] == "active"],
                "files": [r[0] for r in conn.execute(delete(files).where(files.c.project_id == project_id)
                                                     .returning(files.c.id))],
                "keys": [r[0] for r in conn.execute(delete(api_keys).where(api_keys.c.project_id == project_id)
                                                    .returning(api_keys.c.id))],
            }
            if conn.execute(delete(projects).where(projects.c.id == project_id)).rowcount != 1:
                conn.rollback()
                return None
        return gone

    # Files --------------------------------------------------------------------------------------------------------
    def insert_file(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(files.insert().values(**row))

    def get_file(self, project_id: str, file_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(files).where(files.c.project_id == project_id, files.c.id == file_id,
                                                   files.c.expire_time > utcnow())).first()
        return dict(row._mapping) if row else None

    def file_exists(self, project_id: str, file_id: str) -> bool:
        """Whether the id is taken in the project, expired or not (its bytes may still be on disk)."""
        with self.engine.connect() as conn:
            taken = conn.execute(select(files.c.id).where(files.c.project_id == project_id, files.c.id == file_id)
                                 .union_all(select(uploads.c.file_id).where(uploads.c.project_id == project_id,
                                                                            uploads.c.file_id == file_id,
                                                                            uploads.c.state == "active"))).first()
        return taken is not None

    def list_files(self, project_id: str, limit: int, after: tuple[str, str] | None) -> list[dict]:
        """Newest first; `after` is the (create_time ISO, id) of the last file of the previous page."""
        query = select(files).where(files.c.project_id == project_id, files.c.expire_time > utcnow())
        if after is not None:
            at = datetime.fromisoformat(after[0])
            query = query.where((files.c.create_time < at) | and_(files.c.create_time == at, files.c.id < after[1]))
        query = query.order_by(files.c.create_time.desc(), files.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def update_file(self, project_id: str, file_id: str, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(files).where(files.c.project_id == project_id, files.c.id == file_id)
                         .values(update_time=utcnow(), **values))

    def delete_file(self, project_id: str, file_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(files).where(files.c.project_id == project_id, files.c.id == file_id))
            # The upload that made it no longer answers with it (not even with a later file of the same name).
            conn.execute(update(uploads).where(uploads.c.project_id == project_id, uploads.c.file_id == file_id,
                                               uploads.c.state == "final").values(state="deleted"))
        return result.rowcount == 1

    def file_names(self) -> set[tuple[str, str]]:
        """(project, id) of every file and of every upload's reserved file."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(files.c.project_id, files.c.id).union_all(
                select(uploads.c.project_id, uploads.c.file_id).where(uploads.c.state == "active")))
            return {(r[0], r[1]) for r in rows}

    def expired_files(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(files).where(files.c.expire_time <= utcnow()))]

    def files_in_state(self, state: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(files).where(files.c.state == state))]

    def project_bytes(self, project_id: str) -> int:
        """Bytes a project holds: its live files and what its open uploads have declared or written."""
        with self.engine.connect() as conn:
            stored = conn.execute(select(func.coalesce(func.sum(files.c.size_bytes), 0)).where(
                files.c.project_id == project_id, files.c.expire_time > utcnow())).scalar_one()
            pending = conn.execute(select(func.coalesce(func.sum(
                func.max(func.coalesce(uploads.c.declared_size, 0), uploads.c.committed)), 0)).where(
                uploads.c.project_id == project_id, uploads.c.state == "active")).scalar_one()
        return int(stored) + int(pending)

    # Uploads ------------------------------------------------------------------------------------------------------
    def insert_upload(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(uploads.insert().values(**row))

    def get_upload(self, upload_id: str) -> dict | None:
        """An unexpired upload in any state; `owner_live` says whether its key and project are still live."""
        with self.engine.connect() as conn:
            row = conn.execute(select(uploads, _upload_owner_live().label("owner_live"))
                               .where(uploads.c.id == upload_id, uploads.c.expire_time > utcnow())).first()
        return dict(row._mapping) if row else None

    def commit_upload(self, upload_id: str, committed: int, expire_time: datetime) -> bool:
        """Record the durable offset (and keep a live upload from expiring); False if the upload is gone or closed."""
        with self.engine.begin() as conn:
            result = conn.execute(update(uploads).where(uploads.c.id == upload_id, _upload_open())
                                  .values(committed=committed, expire_time=expire_time))
        return result.rowcount == 1

    def finish_upload(self, upload_id: str, file_row: dict, keep_until: datetime) -> bool:
        """The upload becomes a file in one transaction (a crash leaves either the session or the file), and stays
        until `keep_until` as the record of that file. False, with nothing done, if the upload is gone or closed."""
        with self.engine.begin() as conn:
            # The write comes first, so the check and the insert are one atomic step against the CLI's writes.
            result = conn.execute(update(uploads).where(uploads.c.id == upload_id, _upload_open())
                                  .values(state="final", expire_time=keep_until))
            if result.rowcount != 1:
                return False
            conn.execute(files.insert().values(**file_row))
        return True

    def delete_upload(self, upload_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    def dead_uploads(self) -> list[dict]:
        """Uploads to delete with their bytes: expired ones, and those whose key was revoked or project deleted."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(uploads).where(or_(
                uploads.c.expire_time <= utcnow(), not_(_upload_owner_live()))))]

    def upload_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(uploads.c.id))}
