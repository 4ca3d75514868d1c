"""Files: the resources, their bytes in the blob store, processing (PROCESSING → ACTIVE | FAILED), expiry.

Every lookup is by (project, id): another project's file is answered exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import Limits
from ..errors import ApiError
from ..jobs import JobRunner
from ..media import MediaError, inspect
from ..store import Store, StoreUnavailable
from ..store.blobs import BlobMissing, BlobStore, BlobUnavailable, LocalBlobs
from ..store.records import FileRecord, Job, file_blob
from ..wire import page_limit, page_of, page_position
from .local_copies import LocalCopies

log = logging.getLogger("pollux.files")

# Both are matched whole (fullmatch, or \Z): `$` would also match before a trailing newline.
_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")  # Gemini's rule for file ids
_URI_ID = re.compile(r"(?:^|/)files/([a-z0-9-]+)\Z")


def not_found(file_id: str) -> ApiError:
    return ApiError("PERMISSION_DENIED", f"You do not have permission to access the File {file_id} or it may not exist.")


def file_id_of(name_or_uri: str) -> str:
    """The id in `files/abc`, `abc` or `https://host/v1beta/files/abc`."""
    match = _URI_ID.search(name_or_uri.strip().rstrip("/"))
    return match.group(1) if match else name_or_uri.strip().rstrip("/").rsplit("/", 1)[-1]


class FileService:
    def __init__(self, store: Store, blobs: BlobStore, limits: Limits, jobs: JobRunner | None = None,
                 scratch: Path | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self.jobs = jobs
        self._copies = LocalCopies(blobs, scratch or Path("."), limits.local_copies_mb * 1024 * 1024)
        if jobs is not None:
            jobs.handle(PROCESS_JOB, self._process_job)

    # Names --------------------------------------------------------------------------------------------------------
    async def new_id(self, project_id: str, requested: str | None) -> str:
        """A fresh id (12 lowercase alphanumerics, like Gemini's), or the caller's `files/{name}` if free and valid.
        The name is reserved only when its upload is opened (the database's unique index decides a race)."""
        if requested:
            file_id = requested.removeprefix("files/")
            if not _ID.fullmatch(file_id):
                raise ApiError.invalid(f"Invalid file name: files/{file_id}. A file id is at most 40 lowercase letters, "
                                       "digits or dashes, and does not start or end with a dash.")
            if await self.store.files.taken(project_id, file_id):
                raise already_exists(file_id)
            return file_id
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        while True:
            file_id = "".join(secrets.choice(alphabet) for _ in range(12))
            if not await self.store.files.taken(project_id, file_id):
                return file_id

    def check_size(self, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise ApiError.invalid(f"File size {size} bytes exceeds the limit of {self.limits.max_file_bytes} bytes.")

    # Resources ----------------------------------------------------------------------------------------------------
    async def get(self, project_id: str, name: str) -> FileRecord:
        file_id = file_id_of(name)
        record = await self.store.files.get(project_id, file_id)
        if record is None:
            raise not_found(file_id)
        return record

    async def list(self, project_id: str, page_size: int | None, token: str | None
                   ) -> tuple[list[FileRecord], str | None]:
        size = page_limit(page_size, self.limits.files_page_default, self.limits.files_page_max,
                              "ListFilesRequest")
        return page_of(await self.store.files.list(project_id, size + 1, page_position(token)), size)

    async def delete(self, project_id: str, name: str) -> None:
        file_id = file_id_of(name)
        if await self.store.files.get(project_id, file_id) is None or \
                not await self.store.files.delete(project_id, file_id):
            raise not_found(file_id)
        await self.blobs.delete(file_blob(project_id, file_id))

    async def usable(self, project_id: str, uri: str) -> FileRecord:
        """A file named in `fileData.fileUri`, which must be ACTIVE to be read by a model."""
        record = await self.get(project_id, uri)
        if record.state != "ACTIVE":
            why = f" It failed processing: {record.error}" if record.state == "FAILED" else ""
            raise ApiError("FAILED_PRECONDITION", f"The File {record.id} is not in an ACTIVE state and usage is not "
                           f"allowed.{why}")
        return record

    async def local_path(self, record: FileRecord) -> Path:
        """The file's bytes as a local file, for decoders and engines that read a path."""
        return await self.local_blob(record.blob, record.sha256, record.size_bytes)

    async def local_blob(self, key: str, sha256: str, size: int) -> Path:
        """A blob of file bytes (a file's, or a context cache's copy of one) as a local file: the blob itself in a
        local blob store, else a local copy (kept while recently used)."""
        if isinstance(self.blobs, LocalBlobs):
            path = self.blobs.path(key)
            if not path.exists():
                raise BlobMissing(key)
            return path
        return await self._copies.path(key, sha256, size)

    # Arrival and processing ---------------------------------------------------------------------------------------
    def new_row(self, project_id: str, file_id: str, display_name: str, mime_type: str, size: int, sha256: str,
                source: str = "UPLOADED") -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {"project_id": project_id, "id": file_id, "display_name": display_name, "mime_type": mime_type,
                "size_bytes": size, "sha256": sha256, "state": "PROCESSING", "source": source, "error": None,
                "info": None, "create_time": now, "update_time": now,
                "expire_time": now + timedelta(seconds=self.limits.file_ttl_seconds)}

    async def _process_job(self, job: Job) -> None:
        """A leased job: the process that made the file runs it at once; if it dies first, another process does."""
        record = await self.store.files.get(job.payload["project_id"], job.payload["file_id"])
        if record is not None and record.state == "PROCESSING":
            await self.process(record)

    async def process(self, record: FileRecord) -> FileRecord:
        """Probe the bytes: ACTIVE with what was measured (pages, duration, size), or FAILED with the reason."""
        project_id, file_id = record.project_id, record.id
        try:
            path = await self.local_path(record)
            info = await asyncio.to_thread(inspect, path, record.mime_type)
        except BlobMissing:
            updated = await self.store.files.update(project_id, file_id, state="FAILED",
                                                    error="The file's bytes are lost.")
        except MediaError as exc:
            updated = await self.store.files.update(project_id, file_id, state="FAILED", error=str(exc))
            log.info("file %s failed processing: %s", file_id, exc)
        except (BlobUnavailable, StoreUnavailable):
            raise  # not the file's fault: the job is retried, the file stays PROCESSING
        except Exception:  # a decoder bug must fail this file, not the upload or the next start-up
            log.exception("processing file %s failed", file_id)
            updated = await self.store.files.update(project_id, file_id, state="FAILED",
                                                    error="The file could not be processed.")
        else:
            updated = await self.store.files.update(project_id, file_id, state="ACTIVE", info=dataclasses.asdict(info))
        if updated is None:  # deleted meanwhile (`pollux projects delete`)
            raise not_found(file_id)
        return updated

    async def discard_project(self, project_id: str) -> None:
        """The bytes of a deleted project's files (its rows are already gone; the sweep would get them later)."""
        await self.blobs.delete_prefix(f"files/{project_id}")

    async def sweep(self) -> int:
        """Delete expired files with their bytes (each by exactly one process: the row's delete decides), and bytes
        no file owns (a crash between the two). Returns how many files went."""
        gone = 0
        for record in await self.store.files.expired():
            if await self.store.files.delete(record.project_id, record.id):
                await self.blobs.delete(record.blob)
                gone += 1
        # Listed before the owners are read: a blob written after the listing is not judged by an older list.
        stored = await self.blobs.keys("files")
        owned = await self.store.files.names()
        for key in stored:
            _, project_id, file_id = (key.split("/", 2) + ["", ""])[:3]
            if (project_id, file_id) not in owned:
                await self.blobs.delete(key)
        return gone


PROCESS_JOB = "process-file"


def already_exists(file_id: str) -> ApiError:
    return ApiError("ALREADY_EXISTS", f"File files/{file_id} already exists.")
