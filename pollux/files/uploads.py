"""Uploads, exactly as the SDKs speak them: Google's resumable protocol (start, chunks, query, finalize), and the
multipart and plain-media forms. Each chunk streams into the blob store as a piece of its own and is durable before
it is acknowledged; the committed offset and the list of pieces live in the database, so an upload resumes after a
restart, and its chunks may arrive at different processes or replicas (a compare-and-set on the offset orders them).

The upload URL carries a random capability (the Python SDK sends no key with chunks); only its SHA-256 is stored.
An upload records the key that opened it: once that key is revoked or its project deleted, the upload is closed.
A finalized upload stays a while as the record of its file, which `query` answers with.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ApiError
from ..media import is_supported, normalize_mime
from ..store import Commit, NameTaken, QuotaExceeded
from ..store.blobs import BlobMissing, TooLarge
from ..store.records import FileRecord, Job, Piece, Upload, file_blob
from .service import PROCESS_JOB, FileService, already_exists, not_found

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
    file: FileRecord | None = None


class UploadService:
    def __init__(self, files: FileService, upload_ttl_seconds: int) -> None:
        self.files = files
        self.store = files.store
        self.blobs = files.blobs
        self.ttl = upload_ttl_seconds

    # Start --------------------------------------------------------------------------------------------------------
    async def start(self, project_id: str, key_id: str | None, name: str | None, display_name: str | None,
                    mime_type: str | None, size: int | None) -> str:
        """Open a resumable upload for the project of key `key_id`; returns the capability for the upload URL."""
        mime = check_mime(mime_type)
        if size is not None:
            if size < 0:
                raise ApiError.invalid("Invalid upload size.")
            self.files.check_size(size)
        if display_name and len(display_name) > 512:
            raise ApiError.invalid("display_name is longer than 512 characters.")
        limits = self.files.limits
        for _ in range(3):  # a generated name that another process took meanwhile: draw again
            file_id = await self.files.new_id(project_id, name)
            token = secrets.token_urlsafe(32)
            now = datetime.now(timezone.utc)
            row = {"id": upload_key(token), "project_id": project_id, "file_id": file_id,
                   "display_name": display_name or "", "mime_type": mime, "declared_size": size, "committed": 0,
                   "create_time": now, "expire_time": now + timedelta(seconds=self.ttl), "key_id": key_id,
                   "state": "active"}
            try:
                await self.store.uploads.start(row, limits.max_project_bytes)
            except QuotaExceeded:
                raise quota_exceeded(limits.max_project_bytes) from None
            except NameTaken:
                if name:
                    raise already_exists(file_id) from None
                continue
            return token
        raise ApiError("ABORTED", "Could not reserve a file name; retry.")

    async def lookup(self, token: str) -> Upload:
        """The upload in any state (`active`, `final`, `deleted`). One whose key was revoked or project deleted is
        closed, finalized or not (its URL was the key's to give): deleted with its bytes, now."""
        key = upload_key(token)
        upload = await self.store.uploads.get(key)
        if upload is not None and not upload.owner_live:
            await self._discard(key)
            upload = None
        if upload is None:
            raise upload_gone()
        return upload

    async def session(self, token: str) -> Upload:
        """The upload, which must still take bytes."""
        upload = await self.lookup(token)
        if upload.state != "active":
            raise upload_finalized()
        return upload

    # Chunks -------------------------------------------------------------------------------------------------------
    async def chunk(self, token: str, offset: int | None, body: AsyncIterator[bytes], finalize: bool) -> Progress:
        """Store a chunk as its own piece, then move the committed offset past it by compare-and-set: whichever
        process serves each chunk, two chunks racing at one offset cannot both count."""
        key = upload_key(token)
        upload = await self.session(token)
        committed = upload.committed
        if offset is not None and offset != committed:
            raise bad_offset(offset, committed)
        limits = self.files.limits
        room = await self._room(upload)
        blob = f"uploads/{key}/{committed:020d}-{secrets.token_hex(4)}"
        try:
            written = await self.blobs.write(blob, body, limit=max(0, room - committed))
        except TooLarge:
            raise ApiError.invalid(f"The upload exceeds its size, or the project's storage: at most {room} "
                                   "bytes.") from None
        # Acknowledged only once the bytes are stored; each chunk keeps a live upload from expiring.
        outcome = await self.store.uploads.commit(upload, Piece(committed, written.size, blob),
                                                  datetime.now(timezone.utc) + timedelta(seconds=self.ttl),
                                                  limits.max_project_bytes)
        if outcome is not Commit.DONE or not written.size:
            await self.blobs.delete(blob)  # lost the race, or empty: nothing refers to it
        if outcome is Commit.MOVED:
            current = await self.store.uploads.get(key)
            raise bad_offset(committed, current.committed if current else committed)
        if outcome is Commit.QUOTA:
            raise ApiError.invalid(f"The upload exceeds its size, or the project's storage: at most {room} bytes.")
        if outcome is Commit.GONE:
            raise upload_gone()
        committed += written.size
        if not finalize:
            return Progress("active", committed)
        if upload.declared_size is not None and committed != upload.declared_size:
            raise ApiError.invalid(f"The upload has {committed} bytes, but {upload.declared_size} were declared "
                                   "(X-Goog-Upload-Header-Content-Length).")
        return await self._finish(upload, committed)

    async def _room(self, upload: Upload) -> int:
        """How large the upload may grow: its declared size (reserved against the quota at the start), else what the
        file limit and the project's remaining storage allow now (the commit checks it again, atomically)."""
        if upload.declared_size is not None:
            return upload.declared_size
        limits = self.files.limits
        others = await self.store.files.project_bytes(upload.project_id) - upload.committed
        return max(0, min(limits.max_file_bytes, limits.max_project_bytes - others))

    async def _finish(self, upload: Upload, size: int) -> Progress:
        key = upload.id
        pieces = await self.store.uploads.pieces(key)
        if not _contiguous(pieces, size):
            raise ApiError("FAILED_PRECONDITION", "The upload's stored bytes are incomplete. Start the upload again.")
        dest = file_blob(upload.project_id, upload.file_id)
        try:
            written = await self.blobs.write(dest, self._concat(pieces))
        except BlobMissing:
            raise ApiError("FAILED_PRECONDITION", "The upload's stored bytes are incomplete. Start the upload "
                           "again.") from None
        file_row = self.files.new_row(upload.project_id, upload.file_id, upload.display_name, upload.mime_type,
                                      size, written.sha256)
        # The record answers `query` for as long as an unfinished upload would live, never past its file.
        keep_until = min(datetime.now(timezone.utc) + timedelta(seconds=self.ttl), file_row["expire_time"])
        jobs = self.files.jobs
        job = jobs.new(PROCESS_JOB, {"project_id": upload.project_id, "file_id": upload.file_id},
                       upload.project_id) if jobs else None
        if not await self.store.uploads.finish(key, file_row, keep_until, job):
            again = await self.store.uploads.get(key)
            if again is not None and again.state == "final" and again.owner_live:
                return await self.query_key(key)  # another process finalized it first: the same bytes, one file
            await self.blobs.delete(dest)  # closed between the last chunk and now
            raise upload_gone()
        await self._drop_pieces(key)
        record = await self.store.files.get(upload.project_id, upload.file_id)
        if record is None:
            raise not_found(upload.file_id)
        if jobs is not None and job is not None:
            await jobs.run(job_record(job))
            record = await self.store.files.get(upload.project_id, upload.file_id) or record
        else:
            record = await self.files.process(record)
        return Progress("final", size, record)

    async def _concat(self, pieces: list[Piece]) -> AsyncIterator[bytes]:
        for piece in pieces:
            got = 0
            async for block in self.blobs.read(piece.blob):
                got += len(block)
                yield block
            if got != piece.size:
                raise BlobMissing(piece.blob)

    async def query(self, token: str) -> Progress:
        """`active` with the committed size; or, once finalized, `final` with the file as it is now (missing if it
        was deleted since)."""
        upload = await self.lookup(token)
        if upload.state == "active":
            return Progress("active", upload.committed)
        return await self.query_key(upload.id)

    async def query_key(self, key: str) -> Progress:
        upload = await self.store.uploads.get(key)
        if upload is None:
            raise upload_gone()
        stored = await self.store.files.get(upload.project_id, upload.file_id) if upload.state == "final" else None
        if stored is None:
            raise not_found(upload.file_id)
        return Progress("final", stored.size_bytes, stored)

    async def cancel(self, token: str) -> None:
        await self.session(token)
        await self._discard(upload_key(token))

    async def _discard(self, key: str) -> None:
        """Delete an upload and its bytes (the row first: a crash in between leaves orphans the sweep removes)."""
        await self.store.uploads.delete(key)
        await self._drop_pieces(key)

    async def _drop_pieces(self, key: str) -> None:
        await self.blobs.delete_prefix(f"uploads/{key}")
        await self.blobs.delete(f"uploads/{key}.part")  # an upload from before pieces: its one part file

    async def discard_parts(self, keys: list[str]) -> None:
        """The bytes of uploads whose rows were already deleted (by `pollux keys revoke` or `projects delete`)."""
        for key in keys:
            await self._drop_pieces(key)

    # One-shot forms -----------------------------------------------------------------------------------------------
    async def whole(self, project_id: str, key_id: str | None, name: str | None, display_name: str | None,
                    mime_type: str | None, body: AsyncIterator[bytes]) -> FileRecord:
        """A multipart or plain-media upload: the same path as a resumable one that finalizes at once."""
        token = await self.start(project_id, key_id, name, display_name, mime_type, None)
        key = upload_key(token)
        try:
            progress = await self.chunk(token, 0, body, finalize=True)
        except BaseException:
            upload = await self.store.uploads.get(key)
            if upload is not None and upload.state == "active":
                await self._discard(key)  # a one-shot upload that failed holds no name and no storage
            raise
        await self.store.uploads.delete(key)  # no one holds its capability, so no one can query it
        assert progress.file is not None
        return progress.file

    # Housekeeping -------------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Expired and closed uploads go with their bytes, and so do pieces no open upload owns (a crash mid-start,
        an upload the CLI closed, a finalize cut short)."""
        gone = 0
        for upload in await self.store.uploads.dead():
            await self._discard(upload.id)
            gone += 1
        stored = await self.blobs.keys("uploads")  # listed before the owners are read, as for files
        live = await self.store.uploads.active_ids()
        for key in stored:
            owner = key.split("/")[1].removesuffix(".part") if key.count("/") >= 1 else ""
            if owner not in live:
                await self.blobs.delete(key)
        return gone


def _contiguous(pieces: list[Piece], size: int) -> bool:
    """Whether the pieces, in order, cover [0, size) with no gap and no overlap."""
    at = 0
    for piece in pieces:
        if piece.start != at:
            return False
        at += piece.size
    return at == size


def bad_offset(offset: int, committed: int) -> ApiError:
    return ApiError.invalid(f"Invalid X-Goog-Upload-Offset {offset}: the upload has {committed} bytes. "
                            "Query the upload for its offset and resume from there.")


def quota_exceeded(limit: int) -> ApiError:
    return ApiError("RESOURCE_EXHAUSTED", f"The project's file storage would exceed its limit of {limit} bytes. "
                    "Delete files, or wait for them to expire.")


def job_record(row: dict[str, Any]) -> Job:
    return Job(row["id"], row["kind"], row["project_id"], row["payload"], row["attempts"], row["lease_owner"])


def check_mime(mime_type: str | None) -> str:
    mime = normalize_mime(mime_type or "")
    if not mime:
        raise ApiError.invalid("The upload has no MIME type: set X-Goog-Upload-Header-Content-Type or file.mimeType.")
    if not is_supported(mime):
        raise ApiError.invalid(f"Unsupported MIME type: {mime}")
    return mime
