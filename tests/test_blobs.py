"""The blob seam, on both backends: a local directory, and S3 as a real moto server speaks it."""

from __future__ import annotations

import hashlib
import os
import secrets
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from s3_server import S3Server, free_port, start_s3_server

from pollux.store import blobs

MiB = 1 << 20
BUCKET = "pollux-blobs"
ODD = (1_000_003, 65_537, 3_000_001, 7)  # chunk sizes that line up with no part boundary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An AWS environment of the test's own: nothing read from the user's, no instance metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("NO_PROXY", "no_proxy"):  # the test server is local, whatever proxy the machine has
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[blobs.BlobStore]:
    if request.param == "local":
        opened = blobs.open_blobs(None, tmp_path)
    else:
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("aws_env")
        request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL_S3", server.url)
        opened = blobs.open_blobs(f"s3://{BUCKET}/run/{secrets.token_hex(6)}", tmp_path)  # a prefix per test
    yield opened
    await opened.close()


async def chunked(data: bytes, sizes: tuple[int, ...] = ODD) -> AsyncIterator[bytes]:
    at, i = 0, 0
    while at < len(data):
        yield data[at:at + sizes[i % len(sizes)]]
        at += sizes[i % len(sizes)]
        i += 1


async def read_all(store: blobs.BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in store.read(key, start, end)]
    assert all(len(chunk) <= blobs.CHUNK for chunk in chunks)
    return b"".join(chunks)


def written(data: bytes) -> blobs.Written:
    return blobs.Written(len(data), hashlib.sha256(data).hexdigest())


async def test_write_read_size_delete(store: blobs.BlobStore) -> None:
    data = os.urandom(3 * MiB + 17)
    assert await store.write("files/p1/a", chunked(data)) == written(data)
    assert await store.size("files/p1/a") == len(data)
    assert await read_all(store, "files/p1/a") == data
    assert await store.write("files/p1/a", b"short") == written(b"short")  # bytes, and a replacement
    assert await read_all(store, "files/p1/a") == b"short"
    await store.delete("files/p1/a")
    await store.delete("files/p1/a")  # absent is fine
    assert await store.size("files/p1/a") is None
    with pytest.raises(blobs.BlobMissing):
        await read_all(store, "files/p1/a")


async def test_ranges(store: blobs.BlobStore) -> None:
    data = os.urandom(2 * MiB + 5)
    await store.write("r", data)
    n = len(data)
    for start, end in [(0, None), (5, 10), (MiB - 1, MiB + 2), (n - 3, None), (n, None), (n + 10, None), (5, 5),
                       (0, n + 100), (n - 1, n)]:
        assert await read_all(store, "r", start, end) == data[start:end], (start, end)
    for start, end in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError):
            await read_all(store, "r", start, end)
    await store.write("empty", b"")
    assert await store.size("empty") == 0
    assert await read_all(store, "empty") == b""
    assert await read_all(store, "empty", 0, 0) == b""
    assert await read_all(store, "empty", 3) == b""


async def test_missing(store: blobs.BlobStore) -> None:
    for start, end in [(0, None), (0, 0), (4, 9)]:
        chunks = store.read("files/p/none", start, end)
        with pytest.raises(blobs.BlobMissing):
            await anext(chunks)  # before any bytes
    assert await store.size("files/p/none") is None
    await store.delete("files/p/none")
    with pytest.raises(blobs.BlobMissing):
        async with store.local_copy("files/p/none"):
            pass


async def test_write_limit(store: blobs.BlobStore) -> None:
    await store.write("kept", b"old bytes")
    with pytest.raises(blobs.TooLarge):
        await store.write("kept", chunked(os.urandom(100), (30,)), limit=99)
    with pytest.raises(blobs.TooLarge):
        await store.write("big", chunked(os.urandom(20 * MiB)), limit=17 * MiB)  # past the first parts
    with pytest.raises(RuntimeError):
        await store.write("broken", broken(os.urandom(10 * MiB)))
    assert await read_all(store, "kept") == b"old bytes"
    assert await store.size("big") is None and await store.size("broken") is None
    assert await store.keys("") == ["kept"]
    assert await store.write("exact", b"x" * 99, limit=99) == written(b"x" * 99)
    if isinstance(store, blobs.S3Blobs):  # the multipart uploads were aborted
        s3 = await store._client()
        assert not (await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix)).get("Uploads")


async def broken(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunked(data):
        yield chunk
    raise RuntimeError("the client went away")


async def test_multipart(store: blobs.BlobStore) -> None:
    data = os.urandom(20 * MiB + 123)
    assert await store.write("files/p/big", chunked(data)) == written(data)
    assert await store.size("files/p/big") == len(data)
    assert await read_all(store, "files/p/big") == data
    assert await read_all(store, "files/p/big", 8 * MiB - 10, 8 * MiB + 10) == data[8 * MiB - 10:8 * MiB + 10]


async def test_keys_and_delete_prefix(store: blobs.BlobStore) -> None:
    for key in ["files/p1/a", "files/p1/b", "files/p2/c", "other/x"]:
        await store.write(key, key.encode())
    assert await store.keys("files/p1") == ["files/p1/a", "files/p1/b"]
    assert await store.keys("files/p") == []  # under "prefix/" only
    assert await store.keys("files") == ["files/p1/a", "files/p1/b", "files/p2/c"]
    assert await store.keys("") == ["files/p1/a", "files/p1/b", "files/p2/c", "other/x"]
    assert await store.delete_prefix("files/p1") == 2
    assert await store.delete_prefix("files/p1") == 0
    assert await store.keys("files") == ["files/p2/c"]
    assert await store.size("files/p1/a") is None
    assert await read_all(store, "other/x") == b"other/x"


async def chained(store: blobs.BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    """The pieces' bytes one after another, the way the application assembles an upload's file."""
    for key in keys:
        async for chunk in store.read(key):
            yield chunk


def piece_key(upload: str, start: int) -> str:
    return f"uploads/{upload}/{start:020d}-{secrets.token_hex(4)}"


async def test_chained_write(store: blobs.BlobStore) -> None:
    """An upload's chunks are blobs of their own, and its file is written from their chained reads."""
    pieces = [os.urandom(3 * MiB + 7), os.urandom(9 * MiB + 3), os.urandom(1234)]  # under 5 MiB, multipart, tiny
    whole = b"".join(pieces)
    start, keys = 0, []
    for piece in pieces:
        keys.append(piece_key("up1", start))
        assert await store.write(keys[-1], chunked(piece)) == written(piece)
        start += len(piece)
    # A chunk that lost the compare-and-set on its offset is a blob of its own: deleting it tears nothing committed.
    loser = piece_key("up1", len(pieces[0]))
    await store.write(loser, os.urandom(100))
    await store.delete(loser)
    assert await store.keys("uploads/up1") == sorted(keys)
    assert await store.write("files/p/f", chained(store, keys)) == written(whole)
    assert await store.size("files/p/f") == len(whole)
    assert await read_all(store, "files/p/f") == whole
    seam = len(pieces[0])
    assert await read_all(store, "files/p/f", seam - 3, seam + 3) == whole[seam - 3:seam + 3]
    assert await store.write("files/p/f", chained(store, keys)) == written(whole)  # a finalize retried
    # A missing piece fails the write, past its first 8 MiB part on S3, and leaves nothing of it.
    with pytest.raises(blobs.BlobMissing):
        await store.write("files/p/g", chained(store, [keys[0], keys[1], "uploads/up1/gone"]))
    assert await store.size("files/p/g") is None
    assert await store.delete_prefix("uploads/up1") == 3
    assert await store.keys("") == ["files/p/f"]
    assert await read_all(store, "files/p/f") == whole  # the file outlives its pieces
    if isinstance(store, blobs.S3Blobs):  # the multipart upload of the failed write was aborted
        s3 = await store._client()
        assert not (await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix)).get("Uploads")


async def test_chained_write_memory_is_bounded(store: blobs.BlobStore) -> None:
    """48 MiB of pieces become a file while Python's allocations stay under half of that."""
    block = os.urandom(MiB)
    digest, keys = hashlib.sha256(), []
    for i in range(6):
        piece = (bytes([i]) + block[1:]) * 8
        keys.append(piece_key("up5", i * len(piece)))
        await store.write(keys[-1], chunked(piece, (MiB,)))
        digest.update(piece)
    tracemalloc.start()
    try:
        done = await store.write("files/p/k", chained(store, keys))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done == blobs.Written(48 * MiB, digest.hexdigest())
    assert peak < 24 * MiB, peak


async def test_local_copy(store: blobs.BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 1)
    await store.write("files/p/j", chunked(data))
    async with store.local_copy("files/p/j") as path:
        assert path.read_bytes() == data
    if isinstance(store, blobs.LocalBlobs):
        assert path == store.path("files/p/j") and path.exists()  # the blob itself, not a copy
    else:
        assert path.parent == tmp_path / "scratch" and not path.exists()


async def test_bad_keys(store: blobs.BlobStore) -> None:
    for key in ["../x", "/x", "a//b", "a/../b", "", "a b", ".uploads/x", "a/", "x/.tmp", "é"]:
        with pytest.raises(ValueError):
            await store.write(key, b"x")
        with pytest.raises(ValueError):
            await store.size(key)
        with pytest.raises(ValueError):
            await read_all(store, key)


async def test_unreachable_store(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = blobs.open_blobs(f"s3://{BUCKET}", tmp_path)
    try:
        with pytest.raises(blobs.BlobUnavailable):  # after two retries, within seconds
            await store.write("files/p/a", b"x")
    finally:
        await store.close()


async def test_missing_bucket(s3_server: S3Server, aws_env: None, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    """A configuration error, not a missing blob."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    store = blobs.open_blobs("s3://no-such-bucket", tmp_path)
    try:
        with pytest.raises(blobs.BlobError, match="does not exist") as raised:
            await store.size("files/p/a")
        assert type(raised.value) is blobs.BlobError
    finally:
        await store.close()


async def test_endpoint_from_the_environment(s3_server: S3Server, aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """botocore itself reads AWS_ENDPOINT_URL_S3, before AWS_ENDPOINT_URL; a bucket without a prefix works too."""
    bucket = f"pollux-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    store = blobs.open_blobs(f"s3://{bucket}/", tmp_path)
    try:
        await store.write("files/p/a", b"global")
        assert await store.keys("") == ["files/p/a"]
    finally:
        await store.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    store = blobs.open_blobs(f"s3://{bucket}", tmp_path)
    try:
        assert await read_all(store, "files/p/a") == b"global"
    finally:
        await store.close()


def test_open_blobs(tmp_path: Path) -> None:
    for url in [None, ""]:
        store = blobs.open_blobs(url, tmp_path)
        assert isinstance(store, blobs.LocalBlobs) and store.root == tmp_path / "blobs"
    store = blobs.open_blobs(str(tmp_path / "plain"), tmp_path)
    assert isinstance(store, blobs.LocalBlobs) and store.root == tmp_path / "plain"
    store = blobs.open_blobs(f"file://{tmp_path}/file%20url", tmp_path)
    assert isinstance(store, blobs.LocalBlobs) and store.root == tmp_path / "file url"
    s3 = blobs.open_blobs("s3://my-bucket/some/prefix/", tmp_path)
    assert isinstance(s3, blobs.S3Blobs)
    assert (s3.bucket, s3.prefix, s3.scratch) == ("my-bucket", "some/prefix/", tmp_path / "scratch")
    s3 = blobs.open_blobs("s3://my-bucket", tmp_path)
    assert isinstance(s3, blobs.S3Blobs) and (s3.bucket, s3.prefix) == ("my-bucket", "")
    for url in ["http://host/x", "s3://", "s3:///x", "s3://bucket/../x", "s3://bucket/a//b", "s3://bucket?x=1",
                "s3://key:secret@bucket", "file://host/x", "file:relative", "ftp://x/y"]:
        with pytest.raises(ValueError, match="Invalid blob URL"):
            blobs.open_blobs(url, tmp_path)
