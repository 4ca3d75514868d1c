"""Tables and the queries the services need. Every resource row carries `project_id`."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (JSON, BigInteger, Column, DateTime, ForeignKey, Index, MetaData, String, Table, and_,
                        create_engine, delete, event, func, select, update)
from sqlalchemy.engine import Engine

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

# A resumable upload in progress. `id` is the SHA-256 of the capability in the upload URL, so the database alone does
# not let anyone write to an upload; `committed` is how many bytes are durably on disk.
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
)
Index("ix_uploads_project", uploads.c.project_id)


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

    def project_for_key_hash(self, key_hash: str) -> str | None:
        """The project of a live key, or None for an unknown or revoked one. Called on every request."""
        row = self._lookup.execute(
            "SELECT project_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)).fetchone()
        return row[0] if row else None

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
                                                                            uploads.c.file_id == file_id))).first()
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
        return result.rowcount == 1

    def file_names(self) -> set[tuple[str, str]]:
        """(project, id) of every file and of every upload's reserved file."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(files.c.project_id, files.c.id).union_all(
                select(uploads.c.project_id, uploads.c.file_id)))
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
                uploads.c.project_id == project_id)).scalar_one()
        return int(stored) + int(pending)

    # Uploads ------------------------------------------------------------------------------------------------------
    def insert_upload(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(uploads.insert().values(**row))

    def get_upload(self, upload_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(uploads).where(uploads.c.id == upload_id, uploads.c.expire_time > utcnow())).first()
        return dict(row._mapping) if row else None

    def commit_upload(self, upload_id: str, committed: int, expire_time: datetime) -> bool:
        """Record the durable offset (and keep a live upload from expiring); False if the upload is gone."""
        with self.engine.begin() as conn:
            result = conn.execute(update(uploads).where(uploads.c.id == upload_id)
                                  .values(committed=committed, expire_time=expire_time))
        return result.rowcount == 1

    def finish_upload(self, upload_id: str, file_row: dict) -> None:
        """The upload becomes a file in one transaction: a crash leaves either the session or the file."""
        with self.engine.begin() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))
            conn.execute(files.insert().values(**file_row))

    def delete_upload(self, upload_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    def expired_uploads(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(uploads).where(uploads.c.expire_time <= utcnow()))]

    def upload_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(uploads.c.id))}
