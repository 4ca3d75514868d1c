"""Wire types of context caching (reference/wire-protocol.md §9): the `CachedContent` a create or a patch sends, and
the resource every route answers with. As the real API, the answer never holds the contents back."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ApiError
from ..files.protocol import timestamp
from ..generate.protocol import Content, Tool, ToolConfig
from ..store.records import CacheRecord
from ..wire import ProtoModel


class CachedContent(ProtoModel):
    model: str | None = None
    display_name: str | None = None
    contents: list[Content] | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    # The expiration, one of the two.
    ttl: str | None = None
    expire_time: str | None = None
    # Output-only; a client that echoes a cache back may send them.
    name: str | None = None
    create_time: str | None = None
    update_time: str | None = None
    usage_metadata: dict[str, Any] | None = None


def cache_json(record: CacheRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f"cachedContents/{record.id}", "model": f"models/{record.model}"}
    if record.display_name:
        out["displayName"] = record.display_name
    out.update(createTime=timestamp(record.create_time), updateTime=timestamp(record.update_time),
               expireTime=timestamp(record.expire_time), usageMetadata={"totalTokenCount": record.token_count})
    return out


def expiry(body: CachedContent, now: datetime, default: timedelta | None) -> datetime | None:
    """When a cache expires from its `ttl` or `expireTime` (they exclude each other, a proto oneof); `default` when
    neither is set (None: the caller requires one)."""
    if body.ttl is not None and body.expire_time is not None:
        raise ApiError.invalid("Invalid JSON payload received. Oneof field 'expiration' is already set. "
                               "Cannot set 'expireTime'")
    if body.ttl is not None:
        try:
            return now + timedelta(seconds=duration(body.ttl, "ttl"))
        except OverflowError:  # a valid Duration, yet past the last instant a datetime (and a Timestamp) holds
            raise ApiError.invalid(f"* CachedContent.ttl: a ttl of {body.ttl} expires after "
                                   "9999-12-31T23:59:59Z, the latest time a cache may expire.\n") from None
    if body.expire_time is not None:
        return parse_timestamp(body.expire_time, "expire_time")
    return now + default if default is not None else None


_DURATION = re.compile(r"(-?)(\d{1,12})(?:\.(\d{1,9}))?s")
_MAX_SECONDS = 315_576_000_000  # proto Duration's range: ±10,000 years


def duration(value: str, name: str) -> float:
    """A proto Duration ("3600s", "1.5s") in seconds; no cache lives a negative time."""
    match = _DURATION.fullmatch(value.strip())
    seconds = (int(match.group(2)) + float(f"0.{match.group(3) or 0}")) if match else math.nan
    if not match or seconds > _MAX_SECONDS:
        raise ApiError.invalid(f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Duration), "
                               f"\"{value}\"")
    if match.group(1) and seconds:
        raise ApiError.invalid(f"* CachedContent.{name}: a cache's ttl must not be negative.\n")
    return seconds


def parse_timestamp(value: str, name: str) -> datetime:
    """An RFC 3339 time (`Z` or an offset), in UTC; one without a zone is read as UTC. In UTC because SQLite keeps a
    datetime's wall-clock digits and drops its offset: 09:30+02:00 would be read back as 09:30Z."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
        return parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1 to 9999
        raise ApiError.invalid(f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Timestamp), "
                               f"\"{value}\"") from None
