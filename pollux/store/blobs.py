"""Where file bytes live: the blob seam.

Bytes are stored through a `BlobStore`, so that every process, on one host or many, sees the same bytes. Two
backends: a local directory (the default, `data_dir/blobs`, which processes on one host may share, or hosts over NFS)
and S3-compatible object storage (`s3://bucket/prefix`, through aiobotocore).

The seam is small: whole blobs, written durably (a blob appears whole or not at all, and is stored before `write`
returns), ranged reads, listing and deleting by prefix, and a local file for decoders that need a path. A resumable
upload's chunks are separate blobs, each written whole, whose list the database keeps; the file is then written from
their chained reads. So a chunk that loses the database's compare-and-set on the committed offset is a blob of its
own, deleted or swept, and never tears bytes already committed.

The database stays the authority on what exists: it records a blob's size and digest, and an upload's pieces. The
store only keeps bytes, so a row never names bytes that a crash could lose. What the store holds that no row names (an
interrupted finalize, a lost chunk) is an orphan that `keys` lets a sweep find.

Bytes stream through in bounded memory, at most about two 8 MiB parts per call: a file is never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20      # what `read` yields at most, and the unit of blocking file IO
PART = 8 << 20       # an S3 multipart part: S3 wants at least 5 MiB for all but the last
STALE_SECONDS = 86400  # temp files older than this were left by a crash

# Keys are '/'-separated segments of [A-Za-z0-9._-] that do not start with '.': that rules out '..', and keeps names
# starting with '.' for the store's own use (`.tmp`).
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


class BlobError(Exception):
    """The blob store failed."""


class BlobUnavailable(BlobError):
    """The store cannot be reached (connection refused, timeouts, 5xx): worth retrying later, answered with a 503."""


class BlobMissing(BlobError):
    """No such blob."""


class TooLarge(BlobError):
    """The body passed its limit; nothing of it remains stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The body is larger than its limit of {limit} bytes.")
        self.limit = limit


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str  # hex digest


class BlobStore(Protocol):
    async def write(self, key: str, body: AsyncIterable[bytes] | bytes, *, limit: int | None = None) -> Written:
        """Store a whole blob, replacing any; durable once this returns."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) in chunks of at most 1 MiB: an async generator (iterate it, don't await it) that
        raises BlobMissing before its first chunk if the blob is absent."""
        ...

    async def size(self, key: str) -> int | None: ...

    async def delete(self, key: str) -> None:
        """Absent is fine."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under `prefix/`; returns how many."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """The keys under `prefix/` ("" for all), sorted."""
        ...

    def local_copy(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A local file with the blob's bytes, for decoders that need a path: the blob itself where it is a local
        file, else a temp copy removed at exit. Treat it as read-only."""
        ...

    async def close(self) -> None: ...


def open_blobs(url: str | None, data_dir: Path) -> BlobStore:
    """The store that `blob_url` names: none for `data_dir/blobs`, a directory (a path or file:///abs/path), or
    s3://bucket/optional/prefix, configured by the standard AWS environment (see S3Blobs)."""
    if not url:
        return LocalBlobs(data_dir / "blobs")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        prefix = parts.path.strip("/")
        if not _BUCKET.fullmatch(parts.netloc) or parts.query or parts.fragment or (prefix and not _valid(prefix)):
            raise ValueError(f"Invalid blob URL {url!r}: expected s3://bucket or s3://bucket/prefix, the prefix "
                             "made of [A-Za-z0-9._-] segments.")
        return S3Blobs(parts.netloc, prefix, scratch=data_dir / "scratch")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query or parts.fragment:
            raise ValueError(f"Invalid blob URL {url!r}: expected file:///absolute/path.")
        return LocalBlobs(Path(unquote(parts.path)))
    if parts.scheme == "":
        return LocalBlobs(Path(url))
    raise ValueError(f"Invalid blob URL {url!r}: expected a directory, file:///absolute/path or s3://bucket/prefix.")


# Helpers ----------------------------------------------------------------------------------------------------------
def _valid(key: str) -> bool:
    return len(key) <= 1000 and _KEY.fullmatch(key) is not None


def check_key(key: str) -> str:
    if not _valid(key):
        raise ValueError(f"Invalid blob key {key!r}: '/'-separated segments of [A-Za-z0-9._-], none empty or "
                         "starting with '.'.")
    return key


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"Invalid range [{start}, {end}).")


async def _chunks(body: AsyncIterable[bytes] | bytes) -> AsyncGenerator[bytes, None]:
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        if chunk:  # servers end a request body with b""
            yield chunk


async def _hash(digest: Any, data: bytes | bytearray) -> None:
    # hashlib lets go of the GIL for large inputs: a big buffer is hashed in a thread, off the event loop.
    if len(data) >= CHUNK:
        await asyncio.to_thread(digest.update, data)
    else:
        digest.update(data)


def _write_all(f: BinaryIO, data: bytes | memoryview) -> None:
    # An unbuffered file may take less than asked (a full disk says so on the next write).
    view = memoryview(data)
    while view:
        view = view[f.write(view) or 0:]


async def _write(f: BinaryIO, data: bytes) -> None:
    if len(data) >= CHUNK:
        await asyncio.to_thread(_write_all, f, data)
    else:
        _write_all(f, data)


def _fsync_dir(path: Path) -> None:
    """A new or renamed entry is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents, syncing each parent that gained an entry."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with suppress(FileExistsError):  # another process was first
            directory.mkdir()
        _fsync_dir(directory.parent)


def _clear_stale(directory: Path) -> None:
    """Remove the temp files a crash left behind; young ones may be another process's work in progress."""
    cutoff = time.time() - STALE_SECONDS
    with suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


# A local directory ------------------------------------------------------------------------------------------------
class LocalBlobs:
    """Blobs as files under `root`. Files are written under `.tmp` and renamed into place, so a reader never sees
    half a blob."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        _clear_stale(self._tmp)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _temp(self) -> Path:
        return self._tmp / secrets.token_hex(12)

    async def write(self, key: str, body: AsyncIterable[bytes] | bytes, *, limit: int | None = None) -> Written:
        dest = self.path(key)
        tmp = self._temp()
        digest, size = hashlib.sha256(), 0
        try:
            with tmp.open("xb", buffering=0) as f:
                async for chunk in _chunks(body):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise TooLarge(limit)
                    await _write(f, chunk)
                    await _hash(digest, chunk)
                await asyncio.to_thread(os.fsync, f.fileno())
            if not dest.parent.is_dir():
                await asyncio.to_thread(_make_dirs, dest.parent)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(_fsync_dir, dest.parent)
        return Written(size, digest.hexdigest())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        _check_range(start, end)
        try:
            f = self.path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobMissing(key) from None
        with f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                data = await asyncio.to_thread(f.read, CHUNK if left is None else min(CHUNK, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data

    async def size(self, key: str) -> int | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    async def delete(self, key: str) -> None:
        with suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self.path(key).unlink()

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_tree, self.path(prefix))

    def _delete_tree(self, top: Path) -> int:
        count = 0
        for directory, _dirs, files in os.walk(top, topdown=False):
            for name in files:
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
                    count += 1
            with suppress(OSError):  # not empty: a writer got in meanwhile
                os.rmdir(directory)
        return count

    async def keys(self, prefix: str) -> list[str]:
        top = self.path(prefix) if prefix else self.root
        return await asyncio.to_thread(self._list_tree, top)

    def _list_tree(self, top: Path) -> list[str]:
        found = []
        for directory, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # the store's own: .tmp
            base = Path(directory).relative_to(self.root).as_posix()
            found += [f"{base}/{name}" if base != "." else name for name in files if _valid(name)]
        return sorted(found)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise BlobMissing(key)
        yield path

    async def close(self) -> None:
        pass


# S3-compatible object storage -------------------------------------------------------------------------------------
_UNAVAILABLE_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling",
                      "ThrottlingException"}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Translate what botocore and aiohttp raise into the store's errors."""
    import aiohttp
    from botocore import exceptions as bx

    try:
        yield
    except bx.ClientError as e:
        code = _error_code(e)
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _MISSING_CODES:
            raise BlobMissing(what) from e
        if status >= 500 or code in _UNAVAILABLE_CODES:
            raise BlobUnavailable(f"Object storage is unavailable ({what}): {e}") from e
        raise BlobError(f"Object storage refused {what}: {e}") from e
    except (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, aiohttp.ClientError, TimeoutError,
            ConnectionError) as e:
        raise BlobUnavailable(f"Object storage cannot be reached ({what}): {e}") from e
    except bx.BotoCoreError as e:  # no credentials, bad configuration
        raise BlobError(f"Object storage failed ({what}): {e}") from e


class S3Blobs:
    """Blobs as objects `{prefix}/{key}`, written by one PutObject, or by a multipart upload past 8 MiB.

    Configured the way the AWS SDKs are: credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    AWS_PROFILE, the shared config files, instance roles), the endpoint of an S3-compatible store (AWS_ENDPOINT_URL_S3,
    else AWS_ENDPOINT_URL: botocore reads both itself, since 1.31) and the region (AWS_REGION, else AWS_DEFAULT_REGION).
    `endpoint_url` and `client_args` (extra arguments to `create_client`) override the environment.
    """

    def __init__(self, bucket: str, prefix: str = "", *, scratch: Path, endpoint_url: str | None = None,
                 client_args: dict[str, Any] | None = None) -> None:
        try:
            import aiobotocore  # noqa: F401
        except ImportError:
            raise RuntimeError("s3:// blob storage needs aiobotocore: pip install 'pollux[s3]'.") from None
        self.bucket = bucket
        self.prefix = f"{check_key(prefix)}/" if prefix else ""
        self.scratch = scratch
        self._endpoint_url = endpoint_url
        self._client_args = dict(client_args or {})
        self._s3: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        scratch.mkdir(parents=True, exist_ok=True)
        _clear_stale(scratch)

    async def _client(self) -> Any:
        if self._s3 is None:
            async with self._lock:
                if self._s3 is None:
                    stack = contextlib.AsyncExitStack()
                    s3 = await stack.enter_async_context(self._create_client())
                    try:
                        await self._check_bucket(s3)
                    except BaseException:
                        await stack.aclose()
                        raise
                    self._s3, self._stack = s3, stack
        return self._s3

    async def _check_bucket(self, s3: Any) -> None:
        """A missing bucket is a configuration error, not a missing blob: said once, up front."""
        try:
            with _s3_errors(f"opening bucket {self.bucket}"):
                await s3.head_bucket(Bucket=self.bucket)
        except BlobMissing:
            raise BlobError(f"The bucket {self.bucket!r} does not exist.") from None
        except BlobUnavailable:
            raise
        except BlobError:
            pass  # credentials allowed only a prefix of the bucket: the calls that matter will say what they may

    def _create_client(self) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        # botocore resolves the endpoint itself, AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL (its
        # EndpointConfigProvider; test_endpoint_from_the_environment holds it to that): they are read here only to
        # choose the addressing style.
        endpoint = (self._endpoint_url or self._client_args.get("endpoint_url")
                    or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        config = AioConfig(
            # An unreachable store answers within seconds, not after minutes of retries.
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"},
            # Checksums only where S3 requires them: several S3-compatible stores reject the newer default ones,
            # and every blob's sha256 is computed here anyway.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            # S3-compatible stores (MinIO, Ceph, ...) mostly serve path-style URLs only; AWS itself is left to
            # botocore (and to `addressing_style` in the AWS config file).
            s3={"addressing_style": "path"} if endpoint else None,
        )
        args: dict[str, Any] = {"config": config}
        if self._endpoint_url:
            args["endpoint_url"] = self._endpoint_url
        if region := os.environ.get("AWS_REGION"):  # botocore reads only AWS_DEFAULT_REGION
            args["region_name"] = region
        return get_session().create_client("s3", **{**args, **self._client_args})

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def write(self, key: str, body: AsyncIterable[bytes] | bytes, *, limit: int | None = None) -> Written:
        return await self._upload(self._name(key), _chunks(body), limit)

    async def _upload(self, name: str, chunks: AsyncGenerator[bytes, None], limit: int | None) -> Written:
        """Stream chunks into object `name`: one PutObject when they fit a part, else a multipart upload of parts of
        at least 8 MiB. The object appears whole, or not at all."""
        s3 = await self._client()
        digest, size = hashlib.sha256(), 0
        buffer: list[bytes] = []
        buffered = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def take() -> io.BytesIO:
            """The buffered bytes, hashed, as a body: a BytesIO, which aiohttp sends in small writes (bytes would
            be copied whole into the transport's buffer)."""
            nonlocal buffered
            data = b"".join(buffer)
            buffer.clear()
            buffered = 0
            await _hash(digest, data)
            return io.BytesIO(data)  # shares `data`, no copy

        try:
            async with aclosing(chunks):  # a source left half read releases its connection now
                async for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise TooLarge(limit)
                    if buffered >= PART:  # more follows a full buffer: it is a part of a multipart upload
                        with _s3_errors(f"writing {name}"):
                            if upload_id is None:
                                started = await s3.create_multipart_upload(Bucket=self.bucket, Key=name)
                                upload_id = started["UploadId"]
                            sent = await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                        PartNumber=len(parts) + 1, Body=await take())
                        parts.append({"PartNumber": len(parts) + 1, "ETag": sent["ETag"]})
                    buffer.append(chunk)
                    buffered += len(chunk)
            with _s3_errors(f"writing {name}"):
                if upload_id is None:
                    await s3.put_object(Bucket=self.bucket, Key=name, Body=await take())
                else:
                    sent = await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                PartNumber=len(parts) + 1, Body=await take())
                    parts.append({"PartNumber": len(parts) + 1, "ETag": sent["ETag"]})
                    await s3.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                       MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:
                # Best effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) collects what this misses.
                with suppress(Exception):
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise
        return Written(size, digest.hexdigest())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        _check_range(start, end)
        async with aclosing(self._get(self._name(key), start, end)) as chunks:  # releases the connection early
            async for chunk in chunks:
                yield chunk

    async def _get(self, name: str, start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        s3 = await self._client()
        if end == start:  # nothing to read, but the object must exist
            if await self._head(name) is None:
                raise BlobMissing(name)
            return
        ranged = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else {}
        with _s3_errors(f"reading {name}"):
            try:
                got = await s3.get_object(Bucket=self.bucket, Key=name, **ranged)
            except Exception as e:
                if _error_code(e) == "InvalidRange":  # starts at or past the end
                    return
                raise
        body = got["Body"]
        try:
            while True:
                with _s3_errors(f"reading {name}"):
                    chunk = await body.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def _head(self, name: str) -> int | None:
        s3 = await self._client()
        try:
            with _s3_errors(f"reading {name}"):
                head = await s3.head_object(Bucket=self.bucket, Key=name)
        except BlobMissing:
            return None
        return int(head["ContentLength"])

    async def size(self, key: str) -> int | None:
        return await self._head(self._name(key))

    async def delete(self, key: str) -> None:
        name = self._name(key)
        s3 = await self._client()
        with _s3_errors(f"deleting {name}"):
            await s3.delete_object(Bucket=self.bucket, Key=name)

    async def _list(self, prefix: str) -> list[str]:
        """The names of the objects under `prefix`."""
        s3 = await self._client()
        found = []
        with _s3_errors(f"listing {prefix}"):
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [item["Key"] for item in page.get("Contents", [])]
        return found

    async def _delete_names(self, names: list[str]) -> None:
        s3 = await self._client()
        for at in range(0, len(names), 1000):  # the most one DeleteObjects takes
            batch = names[at:at + 1000]
            with _s3_errors(f"deleting {batch[0]}"):
                done = await s3.delete_objects(Bucket=self.bucket,
                                               Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True})
            if errors := done.get("Errors"):
                raise BlobError(f"Object storage did not delete {errors[0].get('Key')}: {errors[0].get('Message')}")

    async def delete_prefix(self, prefix: str) -> int:
        names = await self._list(f"{self._name(prefix)}/")
        await self._delete_names(names)
        return len(names)

    async def keys(self, prefix: str) -> list[str]:
        within = f"{self._name(prefix)}/" if prefix else self.prefix
        names = [name[len(self.prefix):] for name in await self._list(within)]
        return sorted(name for name in names if _valid(name))  # leaves out foreign objects

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        name = self._name(key)
        fd, tmp = tempfile.mkstemp(dir=self.scratch, prefix="blob-")
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                async with aclosing(self._get(name, 0, None)) as chunks:
                    async for chunk in chunks:
                        await _write(f, chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def close(self) -> None:
        self._s3 = None
        await self._stack.aclose()
