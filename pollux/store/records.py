"""What the repositories return: typed, immutable records (no row leaves the store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class LiveKey:
    """A key that authenticates: its id and its project."""

    id: str
    project_id: str


@dataclass(frozen=True)
class KeyListing:
    id: str
    name: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None
    project_id: str
    project_name: str


@dataclass(frozen=True)
class ProjectDeletion:
    """What went with a project: the ids of its keys and files, and the upload ids whose bytes the caller deletes."""

    keys: list[str]
    files: list[str]
    uploads: list[str]
    caches: list[str]


@dataclass(frozen=True)
class FileRecord:
    project_id: str
    id: str
    display_name: str
    mime_type: str
    size_bytes: int
    sha256: str  # hex digest
    state: str   # PROCESSING | ACTIVE | FAILED
    source: str  # UPLOADED | GENERATED
    error: str | None
    info: dict[str, Any] | None
    create_time: datetime
    update_time: datetime
    expire_time: datetime

    @property
    def blob(self) -> str:
        """Where its bytes are in the blob store."""
        return file_blob(self.project_id, self.id)


def file_blob(project_id: str, file_id: str) -> str:
    return f"files/{project_id}/{file_id}"


@dataclass(frozen=True)
class Upload:
    id: str
    project_id: str
    file_id: str
    display_name: str
    mime_type: str
    declared_size: int | None
    committed: int
    create_time: datetime
    expire_time: datetime
    key_id: str | None
    state: str        # active | final | deleted
    owner_live: bool  # its key and project are still live


@dataclass(frozen=True)
class Piece:
    start: int
    size: int
    blob: str


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    project_id: str | None
    payload: dict[str, Any]
    attempts: int
    lease_owner: str


@dataclass(frozen=True)
class BatchRecord:
    project_id: str
    id: str
    kind: str   # generate | embed | chat | embeddings
    model: str
    display_name: str
    state: str  # BATCH_STATE_*
    input_file: str | None
    request_count: int
    priority: int
    options: dict[str, Any]
    output_file: str | None
    error: dict[str, Any] | None
    cancel_requested: bool
    ending: str | None  # the state it is ending in, while its output files are written (it takes no more results)
    create_time: datetime
    update_time: datetime
    end_time: datetime | None
    expire_time: datetime

    @property
    def input_blob(self) -> str:
        """Where its requests are, one JSON line each, as written at creation."""
        return batch_input_blob(self.project_id, self.id)


def batch_input_blob(project_id: str, batch_id: str) -> str:
    return f"batches/{project_id}/{batch_id}/input"


@dataclass(frozen=True)
class BatchCounts:
    succeeded: int
    failed: int


@dataclass(frozen=True)
class BatchResult:
    idx: int
    ok: bool
    body: str  # JSON


@dataclass(frozen=True)
class CachedFile:
    """An uploaded file a cache names, as the cache keeps it: a copy of its bytes at `blob`, and the file's
    description when the cache was made."""

    id: str
    display_name: str
    mime_type: str
    size_bytes: int
    sha256: str
    info: dict[str, Any] | None
    blob: str


@dataclass(frozen=True)
class CacheRecord:
    project_id: str
    id: str
    model: str  # without `models/`
    display_name: str
    token_count: int
    token_details: dict[str, int]  # per modality
    size_bytes: int
    files: dict[str, CachedFile]  # by the URI its parts name
    create_time: datetime
    update_time: datetime
    expire_time: datetime

    @property
    def prefix(self) -> str:
        """Where its blobs are: the request (`/request`) and its file copies (`/files/{id}`)."""
        return cache_prefix(self.project_id, self.id)


def cache_prefix(project_id: str, cache_id: str) -> str:
    return f"caches/{project_id}/{cache_id}"
