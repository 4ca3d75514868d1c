"""Several async streams merged into one: a bounded channel with one reader, fed by a task per stream (a stream's
candidates in the generate service, an engine's per-candidate requests).

asyncio.Queue keeps three deques (~2 KiB) per stream, which a thousand open streams feel; this keeps a list, and
futures only while someone waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Generic, TypeVar

T = TypeVar("T")

END = object()  # what `pump` puts last, for each stream


class Merged(Generic[T]):
    __slots__ = ("_items", "_limit", "_reader", "_writers")

    def __init__(self, limit: int) -> None:
        self._items: list[T] = []
        self._limit = limit
        self._reader: asyncio.Future[None] | None = None
        self._writers: list[asyncio.Future[None]] | None = None  # writers waiting for room, first come first

    def empty(self) -> bool:
        return not self._items

    async def put(self, item: T) -> None:
        while len(self._items) >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            if self._writers is None:
                self._writers = []
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._writers:
                    self._writers.remove(waiter)
        self._items.append(item)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        item = self._items.pop(0)  # at most `limit` items: a short move
        while self._writers:
            waiter = self._writers.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        return item

    async def pump(self: Merged[tuple[Any, Any]], tag: Any, stream: AsyncIterator[Any]) -> None:
        """Puts `(tag, item)` for each item of `stream`, then `(tag, exception)` if it failed, and `(tag, END)`."""
        try:
            async with aclosing(stream) as items:  # type: ignore[type-var]
                async for item in items:
                    await self.put((tag, item))
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            await self.put((tag, exc))
        finally:
            await self.put((tag, END))
