"""Uploads, exactly as the SDKs speak them: Google's resumable protocol (start, chunks, query, finalize), and the
multipart and plain-media forms. Bytes stream to disk and are fsynced before they are acknowledged; the committed
offset lives in SQLite, so a server killed mid-upload resumes from it after a restart.

The upload URL carries a random capability (the Python SDK sends no key with chunks); only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import ApiError
from ..media import is_supported, normalize_mime
from .service import FileService, fsync_dir, link_into_place, sha256_of

# The granularity clients may use for chunks (the SDKs send 8 MiB); any size is accepted.
CHUNK_GRANULARITY = 8 * 1024 * 1024


def upload_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Progress:
    """The answer to a chunk or a query: `active` with the committed size, or `final` with the file."""

    status: str
    committed: int
    file: dict[str, Any] | None = None


class UploadService:
    def __init__(self, files: FileService, data_dir: Path, upload_ttl_seconds: int) -> None:
        self.files = files
        self.store = files.store
        self.ttl = upload_ttl_seconds
        self.dir = data_dir / "uploads"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def _part(self, key: str) -> Path:
        return self.dir / f"{key}.part"

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # Start --------------------------------------------------------------------------------------------------------
    def start(self, project_id: str, name: str | None, display_name: str | None, mime_type: str | None,
              size: int | None) -> str:
        """Open a resumable upload; returns the capability for the upload URL."""
        mime = check_mime(mime_type)
        if size is not None:
            if size < 0:
                raise ApiError.invalid("Invalid upload size.")
            self.files.check_quota(project_id, size)
        if display_name and len(display_name) > 512:
            raise ApiError.invalid("display_name is longer than 512 characters.")
        file_id = self.files.new_id(project_id, name)
        token = secrets.token_urlsafe(32)
        key = upload_key(token)
        now = datetime.now(timezone.utc)
        self._part(key).touch()
        fsync_dir(self.dir)
        self.store.insert_upload({"id": key, "project_id": project_id, "file_id": file_id,
                                  "display_name": display_name or "", "mime_type": mime, "declared_size": size,
                                  "committed": 0, "create_time": now, "expire_time": now + timedelta(seconds=self.ttl)})
        return token

    def session(self, token: str) -> dict[str, Any]:
        row = self.store.get_upload(upload_key(token))
        if row is None:
            raise ApiError.not_found("The upload was not found: it finished, was cancelled, or expired.")
        return row

    # Chunks -------------------------------------------------------------------------------------------------------
    async def chunk(self, token: str, offset: int | None, body: AsyncIterator[bytes], finalize: bool) -> Progress:
        key = upload_key(token)
        async with self._lock(key):
            row = self.session(token)
            committed = row["committed"]
            if offset is not None and offset != committed:
                raise ApiError.invalid(f"Invalid X-Goog-Upload-Offset {offset}: the upload has {committed} bytes. "
                                       "Query the upload for its offset and resume from there.")
            written = await self._append(self._part(key), committed, body, self._room(row))
            committed += written
            # Acknowledged only once the bytes are on disk; each chunk keeps a live upload from expiring.
            if not self.store.commit_upload(key, committed, datetime.now(timezone.utc) + timedelta(seconds=self.ttl)):
                raise ApiError.not_found("The upload was not found: it finished, was cancelled, or expired.")
            if not finalize:
                return Progress("active", committed)
            if row["declared_size"] is not None and committed != row["declared_size"]:
                raise ApiError.invalid(f"The upload has {committed} bytes, but {row['declared_size']} were declared "
                                       "(X-Goog-Upload-Header-Content-Length).")
            stored = await self._finish(key, row, committed)
            return Progress("final", committed, stored)

    def _room(self, row: dict[str, Any]) -> int:
        """How large the upload may grow: its declared size (checked against the quota at the start), else what the
        file limit and the project's remaining storage allow."""
        if row["declared_size"] is not None:
            return row["declared_size"]
        limits = self.files.limits
        others = self.store.project_bytes(row["project_id"]) - row["committed"]
        return max(0, min(limits.max_file_bytes, limits.max_project_bytes - others))

    async def _append(self, part: Path, at: int, body: AsyncIterator[bytes], limit: int) -> int:
        """Write the body after the committed bytes (dropping any torn tail of an interrupted write), then fsync."""
        written = 0
        if not part.exists() or part.stat().st_size < at:
            raise ApiError("FAILED_PRECONDITION", "The upload's stored bytes are incomplete. Start the upload again.")
        with part.open("r+b") as f:
            f.truncate(at)
            f.seek(at)
            async for piece in body:
                written += len(piece)
                if at + written > limit:
                    f.truncate(at)
                    raise ApiError.invalid(f"The upload exceeds its size, or the project's storage: at most {limit} "
                                           "bytes.")
                f.write(piece)
            f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())
        return written

    async def _finish(self, key: str, row: dict[str, Any], size: int) -> dict[str, Any]:
        part = self._part(key)
        project_id, file_id = row["project_id"], row["file_id"]
        self.files.check_quota(project_id, 0)  # the upload's own bytes are already counted
        digest = await asyncio.to_thread(sha256_of, part)
        # Bytes under the file's name first, then the row, with no await between (the sweep never sees them apart).
        link_into_place(part, self.files.path(project_id, file_id))
        self.store.finish_upload(key, self.files.new_row(project_id, file_id, row["display_name"], row["mime_type"],
                                                         size, digest))
        part.unlink(missing_ok=True)
        self._locks.pop(key, None)
        return await self.files.process(project_id, file_id)

    def query(self, token: str) -> Progress:
        row = self.session(token)
        return Progress("active", row["committed"])

    async def cancel(self, token: str) -> None:
        key = upload_key(token)
        async with self._lock(key):  # not while a chunk is being written
            self.session(token)
            self.store.delete_upload(key)
            self._part(key).unlink(missing_ok=True)
        self._locks.pop(key, None)

    # One-shot forms -----------------------------------------------------------------------------------------------
    async def whole(self, project_id: str, name: str | None, display_name: str | None, mime_type: str | None,
                    body: AsyncIterator[bytes]) -> dict[str, Any]:
        """A multipart or plain-media upload: the same path as a resumable one that finalizes at once."""
        token = self.start(project_id, name, display_name, mime_type, None)
        try:
            progress = await self.chunk(token, 0, body, finalize=True)
        except BaseException:
            if self.store.get_upload(upload_key(token)) is not None:
                await self.cancel(token)  # a one-shot upload that failed holds no name and no storage
            raise
        assert progress.file is not None
        return progress.file

    # Housekeeping -------------------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Expired uploads go with their bytes, and so do part files no session owns (a crash mid-start)."""
        gone = 0
        for row in self.store.expired_uploads():
            self.store.delete_upload(row["id"])
            self._part(row["id"]).unlink(missing_ok=True)
            self._locks.pop(row["id"], None)
            gone += 1
        live = self.store.upload_ids()
        for part in self.dir.glob("*.part"):
            if part.stem not in live:
                part.unlink(missing_ok=True)
        return gone


def check_mime(mime_type: str | None) -> str:
    mime = normalize_mime(mime_type or "")
    if not mime:
        raise ApiError.invalid("The upload has no MIME type: set X-Goog-Upload-Header-Content-Type or file.mimeType.")
    if not is_supported(mime):
        raise ApiError.invalid(f"Unsupported MIME type: {mime}")
    return mime
