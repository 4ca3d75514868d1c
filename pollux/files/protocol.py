"""Wire types of the Files API: the upload's `{"file": {...}}` metadata in, the `File` resource out."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from ..store.records import FileRecord
from ..wire import ProtoModel


class FileMetadata(ProtoModel):
    """The `file` the SDKs send when an upload starts: `display_name`, `mime_type`, `size_bytes`, maybe `name`."""

    name: str | None = None
    display_name: str | None = None
    mime_type: str | None = None
    size_bytes: int | None = None


class CreateFileRequest(ProtoModel):
    file: FileMetadata | None = None


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as Google writes them."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_json(record: FileRecord, base_url: str) -> dict[str, Any]:
    """A `File` resource. `uri` is https (the SDK parses only https URIs) and ends in /files/{id}, which is how
    Pollux finds the file again when it comes back in `fileData.fileUri`."""
    out: dict[str, Any] = {
        "name": f"files/{record.id}",
        "displayName": record.display_name,
        "mimeType": record.mime_type,
        "sizeBytes": str(record.size_bytes),
        "createTime": timestamp(record.create_time),
        "updateTime": timestamp(record.update_time),
        "expirationTime": timestamp(record.expire_time),
        "sha256Hash": base64.b64encode(record.sha256.encode()).decode(),
        "uri": f"https://{base_url.split('://', 1)[-1]}/v1beta/files/{record.id}",
        "state": record.state,
        "source": record.source,
    }
    if not out["displayName"]:
        del out["displayName"]
    info = record.info or {}
    if info.get("duration") is not None and record.mime_type.startswith("video/"):
        out["videoMetadata"] = {"videoDuration": f"{info['duration']:.3f}".rstrip("0").rstrip(".") + "s"}
    if record.source == "GENERATED":
        out["downloadUri"] = f"{base_url}/download/v1beta/files/{record.id}:download?alt=media"
    if record.state == "FAILED":
        out["error"] = {"code": 400, "message": record.error or "The file could not be processed."}
    return out
