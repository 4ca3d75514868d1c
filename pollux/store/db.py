"""The database: tables, the async engine, migrations. SQLite by default; Postgres for several hosts.

Every resource row carries `project_id`. The repositories beside this module hold the queries; nothing else sees a
row. The same SQLAlchemy tables and Alembic migrations serve both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
# anyone write to an upload; `committed` is how many bytes are durably stored (its pieces, below). `state` is
# `active` while bytes may arrive, then `final` (kept until the upload TTL or the file's expiry, so a client that lost
# the finalize response can query for its file), or `deleted` once that file is deleted. `key_id` is the key that
# opened it (no foreign key: the upload is closed, not kept, when its key is revoked); NULL for uploads before 0003.
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
# One open upload per file name in a project: two processes reserving the same name cannot both succeed.
Index("ux_uploads_open_file", uploads.c.project_id, uploads.c.file_id, unique=True,
      sqlite_where=uploads.c.state == "active", postgresql_where=uploads.c.state == "active")

# The stored pieces of an upload, in offset order: each chunk is its own blob (written before its row), so a chunk
# that lost the compare-and-set on `uploads.committed` leaves only an orphan blob, never torn bytes.
upload_pieces = Table(
    "upload_pieces", metadata,
    Column("upload_id", String, ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True),
    Column("start", BigInteger, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("blob", String, nullable=False),
)

# Leased background work, shared by every process: housekeeping (expiry, sweeps), file processing and batches. A job
# is `queued` until a worker finishes it; a worker holds it while `lease_until` is ahead and renews it by heartbeats;
# a worker that dies loses it when the lease runs out, and another takes it.
jobs = Table(
    "jobs", metadata,
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("project_id", String),
    Column("payload", JSON, nullable=False),
    Column("state", String, nullable=False),  # queued | done | failed
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String),
    Column("lease_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", String),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_jobs_due", jobs.c.state, jobs.c.run_at)

# Batch jobs (Batch Mode, both surfaces). The inputs are a blob written at creation (`batches/{project}/{id}/input`);
# each request's result is a row of `batch_results`, written once (its primary key), so a job resumed by another
# process after a crash skips what is done and never writes a result twice. `cancel_requested` is how a cancel
# reaches the process running the job; `ending` closes it to new results while its output files are written;
# `expire_time` is when a pending or running job expires, and once it has ended, when it is forgotten.
batches = Table(
    "batches", metadata,
    Column("project_id", String, ForeignKey("projects.id"), primary_key=True),
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),      # generate | embed | chat (OpenAI) | embeddings (OpenAI)
    Column("model", String, nullable=False),     # the model id (OpenAI batches: the first line's)
    Column("display_name", String, nullable=False),
    Column("state", String, nullable=False),     # BATCH_STATE_{PENDING,RUNNING,SUCCEEDED,FAILED,CANCELLED,EXPIRED}
    Column("input_file", String),                # the file id of a file input; NULL for inline requests
    Column("request_count", Integer, nullable=False),
    Column("priority", BigInteger, nullable=False, server_default="0"),
    Column("options", JSON),                     # what a surface keeps besides: OpenAI's endpoint, window, metadata
    Column("output_file", String),               # the generated responses file's id, once written
    Column("error", JSON),                       # why the whole job FAILED
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("ending", String),                    # the state it is ending in, while its output files are written
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True)),
    Column("expire_time", DateTime(timezone=True), nullable=False),
)
Index("ix_batches_list", batches.c.project_id, batches.c.create_time)
Index("ix_batches_expire_time", batches.c.expire_time)

batch_results = Table(
    "batch_results", metadata,
    Column("project_id", String, primary_key=True),
    Column("batch_id", String, primary_key=True),
    Column("idx", Integer, primary_key=True),  # the request's place in the input
    Column("ok", Integer, nullable=False),     # 1: a response; 0: an error
    Column("body", Text, nullable=False),      # the response or the error, as JSON
)

# Context caches (`cachedContents`). What a cache holds (contents, system instruction, tools) is a blob written before
# its row (`caches/{project}/{id}/request`), with a copy of each uploaded file it names beside it (`.../files/{id}`):
# the cache keeps them readable after the files themselves expire. `files` maps each named file URI to that copy's
# description; `token_count` is what the model's engine counted at creation (its usage's cachedContentTokenCount).
cached_contents = Table(
    "cached_contents", metadata,
    Column("project_id", String, ForeignKey("projects.id"), primary_key=True),
    Column("id", String, primary_key=True),
    Column("model", String, nullable=False),         # the model id, without `models/`
    Column("display_name", String, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("token_details", JSON),                   # the count per modality
    Column("size_bytes", BigInteger, nullable=False),  # the request blob and the file copies
    Column("files", JSON),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
)
Index("ix_cached_contents_list", cached_contents.c.project_id, cached_contents.c.create_time)
Index("ix_cached_contents_expire_time", cached_contents.c.expire_time)

# Server-wide secrets every replica must share (the thought-signature key).
secrets = Table(
    "secrets", metadata,
    Column("name", String, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored one is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class StoreError(Exception):
    """The database refuses to start: unknown URL, a schema newer than this Pollux."""


class StoreUnavailable(Exception):
    """The database cannot be reached (or timed out): the request gets a 503 with RetryInfo, nothing is lost."""


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means the server is unreachable or overloaded, not that the query was wrong."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (TimeoutError, ConnectionError, OSError))


def database_url(url: str | None, data_dir: Path) -> str:
    """The async SQLAlchemy URL for a configured one (None: the data dir's SQLite file)."""
    if not url:
        return f"sqlite+aiosqlite:///{data_dir / 'pollux.db'}"
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        if not driver:  # postgresql://… as libpq writes it: psycopg, the driver that speaks both sync and async
            parsed, driver = parsed.set(drivername="postgresql+psycopg"), "psycopg"
        if driver not in ("psycopg", "asyncpg"):
            raise StoreError(f"database_url {parsed.render_as_string(hide_password=True)!r}: use postgresql+psycopg:// "
                             "or postgresql+asyncpg://")
        return parsed.render_as_string(hide_password=False)
    raise StoreError(f"database_url {parsed.render_as_string(hide_password=True)!r}: Pollux speaks SQLite "
                     "(sqlite:///path) and Postgres (postgresql+psycopg:// or postgresql+asyncpg://)")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")   # readers never block the other processes' writes
    cur.execute("PRAGMA synchronous=FULL")   # acknowledged means on disk
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")  # several processes write one file: wait for the lock, do not fail
    cur.close()


MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = int.from_bytes(hashlib.sha256(b"pollux migrations").digest()[:8], "big", signed=True)


def _upgrade(conn: Connection) -> None:
    """Bring the schema to this Pollux's head, refusing a database that some newer Pollux has migrated past it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(cfg)
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise StoreError(f"the database is at migration {current}, newer than this Pollux knows (its newest is "
                         f"{scripts.get_current_head()}): run the newer Pollux, or upgrade this one")
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Database:
    """One async engine. `begin()` for a transaction, `connect()` to read; errors that mean "unreachable" become
    `StoreUnavailable`."""

    def __init__(self, url: str | None, data_dir: Path) -> None:
        self.url = database_url(url, data_dir)
        self.sqlite = self.url.startswith("sqlite")
        if self.sqlite:
            path = Path(make_url(self.url).database or "")
            if not path.name or str(path) == ":memory:":
                raise StoreError("database_url: SQLite needs a file (sqlite:///path/to/pollux.db)")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(self.url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._lock_path: Path | None = path.with_name(path.name + ".lock")
        else:
            # A bounded pool: connections are a server-side resource shared by every replica.
            connect_args = {"timeout": 5} if "+asyncpg" in self.url else {"connect_timeout": 5}
            self.engine = create_async_engine(self.url, pool_size=10, max_overflow=10, pool_timeout=10,
                                              pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args)
            self._lock_path = None

    async def migrate(self) -> None:
        """Run the migrations once, whichever of several processes starting at the same moment gets there first."""
        try:
            if self._lock_path is not None:
                await asyncio.to_thread(self._sqlite_upgrade, self._lock_path)
            else:
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
                    try:
                        await conn.run_sync(_upgrade)
                        await conn.commit()
                    finally:
                        await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                        await conn.commit()
        except StoreError:
            raise
        except Exception as exc:
            if unavailable(exc):
                raise StoreError(f"cannot reach the database: {exc.__class__.__name__}: {_first_line(exc)}") from exc
            raise

    def _sqlite_upgrade(self, lock: Path) -> None:
        # SQLite has no advisory lock: a file lock beside the database (its processes share a host), and a plain
        # synchronous engine for Alembic, in a thread.
        engine = create_engine(self.url.replace("+aiosqlite", ""))
        event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with _file_lock(lock), engine.begin() as conn:
                _upgrade(conn)
        finally:
            engine.dispose()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._reachable(self.engine.begin())

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._reachable(self.engine.connect())

    @contextlib.asynccontextmanager
    async def _reachable(self, opening: AbstractAsyncContextManager[AsyncConnection]
                         ) -> AsyncIterator[AsyncConnection]:
        try:
            async with opening as conn:
                yield conn
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(_first_line(exc)) from exc
            raise

    async def close(self) -> None:
        await self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
