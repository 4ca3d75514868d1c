"""Uploads, exactly as the SDKs speak them: Google's resumable protocol (start, chunks, query, finalize), and the
multipart and plain-media forms. Bytes stream to disk and are fsynced before they are acknowledged; the committed
offset lives in SQLite, so a server killed mid-upload resumes from it after a restart.

The upload URL carries a random capability (the Python SDK sends no key with chunks); only its SHA-256 is stored.
An upload records the key that opened it: once that key is revoked or its project deleted, the upload is closed.
A finalized upload stays a while as the record of its file, which `query` answers with.
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
from .service import FileService, fsync_dir, link_into_place, not_found, sha256_of

# The granularity clients may use for chunks (the SDKs send 8 MiB); any size is accepted.
CHUNK_GRANULARITY = 8 * 1024 * 1024


def upload_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def upload_gone() -> ApiError:
    return ApiError.not_found("The upload was not found: it was cancelled or expired, or the API key that started it "
                              "was revoked or its project deleted.")


def upload_finalized() -> ApiError:
    return ApiError.not_found("The upload is already finalized: query it (X-Goog-Upload-Command: query) for its file.")


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
    def start(self, project_id: str, key_id: str | None, name: str | None, display_name: str | None,
              mime_type: str | None, size: int | None) -> str:
        """Open a resumable upload for the project of key `key_id`; returns the capability for the upload URL."""
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
                                  "committed": 0, "create_time": now, "expire_time": now + timedelta(seconds=self.ttl),
                                  "key_id": key_id, "state": "active"})
        return token

    def lookup(self, token: str) -> dict[str, Any]:
        """The upload in any state (`active`, `final`, `deleted`). One whose key was revoked or project deleted is
        closed, finalized or not (its URL was the key's to give): deleted with its bytes, now."""
        key = upload_key(token)
        row = self.store.get_upload(key)
        if row is not None and not row["owner_live"]:
            self._discard(key)
            row = None
        if row is None:
            raise upload_gone()
        return row

    def session(self, token: str) -> dict[str, Any]:
        """The upload, which must still take bytes."""
        row = self.lookup(token)
        if row["state"] != "active":
            raise upload_finalized()
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
                raise upload_gone()
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
        dest = self.files.path(project_id, file_id)
        self.files.check_quota(project_id, 0)  # the upload's own bytes are already counted
        try:
            digest = await asyncio.to_thread(sha256_of, part)
            link_into_place(part, dest)  # the bytes under the file's name, then its row: no await between
        except FileNotFoundError:
            # The CLI closed the upload meanwhile (key revoked, project deleted) and took its bytes.
            if self._open(key):
                raise
            raise upload_gone() from None
        file_row = self.files.new_row(project_id, file_id, row["display_name"], row["mime_type"], size, digest)
        # The record answers `query` for as long as an unfinished upload would live, never past its file.
        keep_until = min(datetime.now(timezone.utc) + timedelta(seconds=self.ttl), file_row["expire_time"])
        if not self.store.finish_upload(key, file_row, keep_until):
            dest.unlink(missing_ok=True)  # closed between the last chunk and now
            raise upload_gone()
        part.unlink(missing_ok=True)
        self._locks.pop(key, None)
        return await self.files.process(project_id, file_id)

    def query(self, token: str) -> Progress:
        """`active` with the committed size; or, once finalized, `final` with the file as it is now (missing if it
        was deleted since)."""
        row = self.lookup(token)
        if row["state"] == "active":
            return Progress("active", row["committed"])
        stored = self.store.get_file(row["project_id"], row["file_id"]) if row["state"] == "final" else None
        if stored is None:
            raise not_found(row["file_id"])
        return Progress("final", stored["size_bytes"], stored)

    async def cancel(self, token: str) -> None:
        key = upload_key(token)
        async with self._lock(key):  # not while a chunk is being written
            self.session(token)
            self._discard(key)

    def _open(self, key: str) -> bool:
        row = self.store.get_upload(key)
        return row is not None and row["state"] == "active" and bool(row["owner_live"])

    def _discard(self, key: str) -> None:
        """Delete an upload and its bytes (the row first: a crash in between leaves an orphan the sweep removes)."""
        self.store.delete_upload(key)
        self._part(key).unlink(missing_ok=True)
        self._locks.pop(key, None)

    def discard_parts(self, keys: list[str]) -> None:
        """The bytes of uploads whose rows were already deleted (by `pollux keys revoke` or `projects delete`)."""
        for key in keys:
            self._part(key).unlink(missing_ok=True)

    # One-shot forms -----------------------------------------------------------------------------------------------
    async def whole(self, project_id: str, key_id: str | None, name: str | None, display_name: str | None,
                    mime_type: str | None, body: AsyncIterator[bytes]) -> dict[str, Any]:
        """A multipart or plain-media upload: the same path as a resumable one that finalizes at once."""
        token = self.start(project_id, key_id, name, display_name, mime_type, None)
        key = upload_key(token)
        try:
            progress = await self.chunk(token, 0, body, finalize=True)
        except BaseException:
            row = self.store.get_upload(key)
            if row is not None and row["state"] == "active":
                async with self._lock(key):
                    self._discard(key)  # a one-shot upload that failed holds no name and no storage
            raise
        self.store.delete_upload(key)  # no one holds its capability, so no one can query it
        assert progress.file is not None
        return progress.file

    # Housekeeping -------------------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Expired and closed uploads go with their bytes, and so do part files no session owns (a crash mid-start, an
        upload the CLI closed)."""
        gone = 0
        for row in self.store.dead_uploads():
            self._discard(row["id"])
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
