"""Files: the resources, their bytes on disk, processing (PROCESSING → ACTIVE | FAILED), expiry and quotas.

Every lookup is by (project, id): another project's file is answered exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import Limits
from ..errors import ApiError
from ..media import MediaError, inspect
from ..store import Store

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


@dataclass(frozen=True)
class StoredFile:
    """A file's row and where its bytes are."""

    row: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return self.row["id"]


class FileService:
    def __init__(self, store: Store, data_dir: Path, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.files_dir = data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)

    # Names and places ---------------------------------------------------------------------------------------------
    def path(self, project_id: str, file_id: str) -> Path:
        return self.files_dir / project_id / file_id

    def new_id(self, project_id: str, requested: str | None) -> str:
        """A fresh id (12 lowercase alphanumerics, like Gemini's), or the caller's `files/{name}` if free and valid."""
        if requested:
            file_id = requested.removeprefix("files/")
            if not _ID.fullmatch(file_id):
                raise ApiError.invalid(f"Invalid file name: files/{file_id}. A file id is at most 40 lowercase letters, "
                                       "digits or dashes, and does not start or end with a dash.")
            if self.store.file_exists(project_id, file_id):
                raise ApiError("ALREADY_EXISTS", f"File files/{file_id} already exists.")
            return file_id
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        while True:
            file_id = "".join(secrets.choice(alphabet) for _ in range(12))
            if not self.store.file_exists(project_id, file_id):
                return file_id

    def check_quota(self, project_id: str, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise ApiError.invalid(f"File size {size} bytes exceeds the limit of {self.limits.max_file_bytes} bytes.")
        if self.store.project_bytes(project_id) + size > self.limits.max_project_bytes:
            raise ApiError("RESOURCE_EXHAUSTED", f"The project's file storage would exceed its limit of "
                           f"{self.limits.max_project_bytes} bytes. Delete files, or wait for them to expire.")

    # Resources ----------------------------------------------------------------------------------------------------
    def get(self, project_id: str, name: str) -> StoredFile:
        file_id = file_id_of(name)
        row = self.store.get_file(project_id, file_id)
        if row is None:
            raise not_found(file_id)
        return StoredFile(row, self.path(project_id, file_id))

    def list(self, project_id: str, page_size: int | None, page_token: str | None) -> tuple[list[dict], str | None]:
        if page_size is not None and page_size < 0:
            raise ApiError.invalid("* ListFilesRequest.page_size: page_size must not be negative\n")
        size = min(page_size or self.limits.files_page_default, self.limits.files_page_max)
        after = None
        if page_token:
            try:
                created, _, file_id = base64.urlsafe_b64decode(page_token.encode()).decode().partition("|")
                datetime.fromisoformat(created)
            except ValueError:
                raise ApiError.invalid("Invalid page token.") from None
            after = (created, file_id)
        rows = self.store.list_files(project_id, size + 1, after)
        if len(rows) <= size:
            return rows, None  # never an empty page that carries a token
        last = rows[size - 1]
        token = base64.urlsafe_b64encode(f"{last['create_time'].isoformat()}|{last['id']}".encode()).decode()
        return rows[:size], token

    def delete(self, project_id: str, name: str) -> None:
        file_id = file_id_of(name)
        if self.store.get_file(project_id, file_id) is None or not self.store.delete_file(project_id, file_id):
            raise not_found(file_id)
        self.path(project_id, file_id).unlink(missing_ok=True)

    def usable(self, project_id: str, uri: str) -> StoredFile:
        """A file named in `fileData.fileUri`, which must be ACTIVE to be read by a model."""
        stored = self.get(project_id, uri)
        if stored.row["state"] != "ACTIVE":
            why = f" It failed processing: {stored.row['error']}" if stored.row["state"] == "FAILED" else ""
            raise ApiError("FAILED_PRECONDITION", f"The File {stored.id} is not in an ACTIVE state and usage is not "
                           f"allowed.{why}")
        return stored

    # Arrival and processing ---------------------------------------------------------------------------------------
    def new_row(self, project_id: str, file_id: str, display_name: str, mime_type: str, size: int, sha256: str,
                source: str = "UPLOADED") -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {"project_id": project_id, "id": file_id, "display_name": display_name, "mime_type": mime_type,
                "size_bytes": size, "sha256": sha256, "state": "PROCESSING", "source": source, "error": None,
                "info": None, "create_time": now, "update_time": now,
                "expire_time": now + timedelta(seconds=self.limits.file_ttl_seconds)}

    async def process(self, project_id: str, file_id: str) -> dict[str, Any]:
        """Probe the bytes: ACTIVE with what was measured (pages, duration, size), or FAILED with the reason."""
        row = self.store.get_file(project_id, file_id)
        if row is None:  # deleted meanwhile (`pollux projects delete`)
            raise not_found(file_id)
        try:
            info = await asyncio.to_thread(inspect, self.path(project_id, file_id), row["mime_type"])
        except MediaError as exc:
            self.store.update_file(project_id, file_id, state="FAILED", error=str(exc))
            log.info("file %s failed processing: %s", file_id, exc)
        except Exception:  # a decoder bug must fail this file, not the upload or the next start-up
            log.exception("processing file %s failed", file_id)
            self.store.update_file(project_id, file_id, state="FAILED", error="The file could not be processed.")
        else:
            self.store.update_file(project_id, file_id, state="ACTIVE", info=dataclasses.asdict(info))
        updated = self.store.get_file(project_id, file_id)
        if updated is None:
            raise not_found(file_id)
        return updated

    async def recover(self) -> None:
        """After a restart: files whose processing was cut short are processed again."""
        for row in self.store.files_in_state("PROCESSING"):
            if self.path(row["project_id"], row["id"]).exists():
                await self.process(row["project_id"], row["id"])
            else:
                self.store.update_file(row["project_id"], row["id"], state="FAILED", error="The file's bytes are lost.")

    def discard_project(self, project_id: str) -> None:
        """The bytes of a deleted project's files (its rows are already gone; the sweep would get them later)."""
        shutil.rmtree(self.files_dir / project_id, ignore_errors=True)

    def sweep(self) -> int:
        """Delete expired files with their bytes, and bytes no file owns (a crash between the two). Returns how many
        files went."""
        gone = 0
        for row in self.store.expired_files():
            if self.store.delete_file(row["project_id"], row["id"]):
                self.path(row["project_id"], row["id"]).unlink(missing_ok=True)
                gone += 1
        owned = self.store.file_names()
        for path in self.files_dir.glob("*/*"):
            if (path.parent.name, path.name) not in owned:
                path.unlink(missing_ok=True)
        return gone


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """A rename is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_into_place(src: Path, dst: Path) -> None:
    """Give the upload's bytes their file's name, keeping the upload's own until the file's row exists: a crash in
    between leaves the upload whole (finalize again) and an orphan the sweep removes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)  # an orphan of an earlier, interrupted finalize of this upload
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)
    fsync_dir(dst.parent)
