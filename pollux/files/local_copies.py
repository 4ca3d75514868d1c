"""Local copies of files kept in a remote blob store, for the decoders and engines that read a file by its path
(pypdfium2, PyAV). A file's bytes never change, so a copy is named by its SHA-256, downloaded once per process (one
download for any number of requests asking at once), and kept until the least recently used copies are dropped past
a byte budget."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from ..single_flight import SingleFlight
from ..store.blobs import BlobMissing, BlobStore


class LocalCopies:
    def __init__(self, blobs: BlobStore, root: Path, budget_bytes: int) -> None:
        self.blobs = blobs
        self.root = root
        self.budget = budget_bytes
        self._downloads: SingleFlight[str, Path] = SingleFlight()

    async def path(self, key: str, sha256: str, size: int) -> Path:
        dest = self.root / sha256
        if dest.exists():
            os.utime(dest)  # recently used: evicted last
            return dest
        return await self._downloads.run(sha256, lambda: self._fetch(key, dest, size))

    async def _fetch(self, key: str, dest: Path, size: int) -> Path:
        await self._download(key, dest, size)
        await asyncio.to_thread(self._evict, keep=dest)
        return dest

    async def _download(self, key: str, dest: Path, size: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{dest.name}.{secrets.token_hex(4)}"
        try:
            got = 0
            with open(temp, "wb") as f:
                async for block in self.blobs.read(key):
                    got += len(block)
                    await asyncio.to_thread(f.write, block)
            if got != size:
                raise BlobMissing(f"{key}: {got} of {size} bytes")
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        copies = []
        for entry in os.scandir(self.root):
            if entry.is_file() and not entry.name.startswith("."):
                stat = entry.stat()
                copies.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in copies)
        for _, size, path in sorted(copies):
            if total <= self.budget:
                break
            if path != keep:
                # A reader that already opened it keeps reading (POSIX); the next asks the blob store again.
                path.unlink(missing_ok=True)
                total -= size
