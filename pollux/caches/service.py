"""Context caches (reference/semantics.md §10): the resources, their rules, and what a request that names one reads.

A cache is immutable but for its expiry. What it holds (contents, system instruction, tools, tool config) is a blob
written once at creation, with a copy of each uploaded file it names, so that the cache stays usable after those
files expire or are deleted. Every lookup is by (project, id): another project's cache is answered exactly as a
missing one. Expired caches are missing at once; the housekeeping job deletes them with their blobs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson

from ..config import Limits, ModelSpec
from ..engines.base import Engine, GenerateRequest, TokenCount
from ..errors import ApiError
from ..files.service import FileService
from ..generate.protocol import Content, GenerateContentRequest, Tool, ToolConfig
from ..store import Store, TooManyCaches
from ..store.blobs import BlobMissing, BlobStore
from ..store.records import CachedFile, CacheRecord, cache_prefix
from ..wire import page_limit, page_of, page_position
from .protocol import CachedContent, expiry

if TYPE_CHECKING:
    from ..generate.service import GenerateService

log = logging.getLogger("pollux.caches")

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Parsed caches kept by each process (a cache never changes, so a copy cannot go stale), up to this many bytes of
# their stored JSON: a request naming a large cache neither reads nor parses it again.
_PARSED_BYTES = 256 * 1024 * 1024
# Prefixes computed ahead at once (each is a long prefill in the engine), and waiting at most.
_KEEPING, _KEEP_QUEUE = 2, 64
# How often this process lets go of prefixes its engines keep for caches that expired or that another process deleted.
_PRUNE_SECONDS = 5.0


def not_found() -> ApiError:
    return ApiError("PERMISSION_DENIED", "CachedContent not found (or permission denied)")


def cache_id_of(name: str) -> str:
    return name.strip().rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Cached:
    """What a request that names a cache reads before its own contents."""

    record: CacheRecord
    contents: list[Content]
    system_instruction: Content | None
    tools: list[Tool] | None
    tool_config: ToolConfig | None

    @property
    def tokens(self) -> TokenCount:
        return TokenCount(dict(self.record.token_details) or {"TEXT": self.record.token_count})


class CacheService:
    def __init__(self, store: Store, blobs: BlobStore, files: FileService, limits: Limits) -> None:
        self.store = store
        self.blobs = blobs
        self.files = files
        self.limits = limits
        self._parsed: OrderedDict[tuple[str, str], tuple[int, Cached]] = OrderedDict()
        self._parsed_bytes = 0
        self._unowned: dict[str, float] = {}  # blobs without a cache at the last sweep: when first seen so
        self._creating: set[str] = set()  # the blob prefixes of caches this process is making now
        # Prefixes this process's engines keep, by key: the engine and the cache's (project, id).
        self._kept: dict[str, tuple[Engine, tuple[str, str]]] = {}
        self._keeping = asyncio.Semaphore(_KEEPING)
        self._tasks: set[asyncio.Task[None]] = set()
        self._computing: set[str] = set()
        self._pruner: asyncio.Task[None] | None = None

    # Resources --------------------------------------------------------------------------------------------------
    async def create(self, project_id: str, model: ModelSpec, body: CachedContent,
                     generate: GenerateService) -> CacheRecord:
        now = datetime.now(timezone.utc)
        expire = expiry(body, now, timedelta(seconds=self.limits.cache_ttl_seconds))
        assert expire is not None
        if expire <= now:
            raise ApiError.invalid("* CachedContent.expiration: the cache would expire at once; set a positive ttl or "
                                   "an expire_time in the future.\n")
        if not body.contents and body.system_instruction is None:
            raise ApiError.invalid("* CachedContent.contents: a cache needs contents or a system instruction.\n")
        held = GenerateContentRequest(contents=body.contents, system_instruction=body.system_instruction,
                                      tools=body.tools, tool_config=body.tool_config)
        # Counted as the model reads it (which also checks every part and that each file it names is usable).
        counted = await generate.count_cache(model, held, project_id)
        if counted.total < model.cache_min_tokens:
            raise ApiError.invalid(f"Cached content is too small. total_token_count={counted.total}, "
                                   f"min_total_token_count={model.cache_min_tokens}")
        cache_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(40))
        prefix = cache_prefix(project_id, cache_id)
        self._creating.add(prefix)
        try:
            files, copied = await self._copy_files(project_id, prefix, body.contents or [])
            request = orjson.dumps(held.model_dump(mode="json", by_alias=True, exclude_none=True))
            await self.blobs.write(f"{prefix}/request", request)
            row = {"project_id": project_id, "id": cache_id, "model": model.id,
                   "display_name": body.display_name or "", "token_count": counted.total,
                   "token_details": counted.by_modality, "size_bytes": len(request) + copied,
                   "files": {uri: vars(f) for uri, f in files.items()}, "create_time": now, "update_time": now,
                   "expire_time": expire}
            await self.store.caches.create(row, self.limits.max_caches, self.limits.max_cache_bytes)
        except TooManyCaches:
            await self.blobs.delete_prefix(prefix)
            raise ApiError("RESOURCE_EXHAUSTED", f"The project holds as many context caches as it may "
                           f"({self.limits.max_caches} caches, {self.limits.max_cache_bytes} bytes in all). Delete "
                           "some, or let them expire.") from None
        except BaseException:
            await asyncio.shield(self.blobs.delete_prefix(prefix))  # the sweep would, later
            raise
        finally:
            self._creating.discard(prefix)
        record = await self.store.caches.get(project_id, cache_id)
        if record is None:  # expired already (an expireTime in the past), or deleted meanwhile
            raise not_found()
        await generate.keep_cache(model, Cached(record, held.contents or [], held.system_instruction, held.tools,
                                                held.tool_config), project_id)
        return record

    async def _copy_files(self, project_id: str, prefix: str, contents: list[Content]
                          ) -> tuple[dict[str, CachedFile], int]:
        """Copy the bytes of each uploaded file the contents name beside the cache: by URI, and the bytes copied."""
        files: dict[str, CachedFile] = {}
        copied = 0
        for content in contents:
            for part in content.parts or []:
                uri = part.file_data.file_uri or "" if part.file_data is not None else None
                if uri is None or uri in files:
                    continue
                record = await self.files.usable(project_id, uri)
                blob = f"{prefix}/files/{record.id}"
                try:
                    written = await self.blobs.write(blob, self.blobs.read(record.blob))
                except BlobMissing:
                    raise ApiError("FAILED_PRECONDITION", f"The File {record.id} cannot be read: its bytes are "
                                   "lost.") from None
                copied += written.size
                files[uri] = CachedFile(record.id, record.display_name, record.mime_type, record.size_bytes,
                                        record.sha256, record.info, blob)
        return files, copied

    async def get(self, project_id: str, name: str) -> CacheRecord:
        record = await self.store.caches.get(project_id, cache_id_of(name))
        if record is None:
            raise not_found()
        return record

    async def list(self, project_id: str, page_size: int | None, token: str | None
                   ) -> tuple[list[CacheRecord], str | None]:
        size = page_limit(page_size, self.limits.caches_page_default, self.limits.caches_page_max,
                              "ListCachedContentsRequest")
        return page_of(await self.store.caches.list(project_id, size + 1, page_position(token)), size)

    async def update(self, project_id: str, name: str, body: CachedContent, mask: str | None) -> CacheRecord:
        """Only the expiration changes ("only expiration is updatable"); without an updateMask (the SDKs send
        none), the fields the body sets are the mask."""
        fields = {f.strip() for f in mask.split(",") if f.strip()} if mask else None
        if fields is not None:
            unknown = fields - {"ttl", "expire_time", "expireTime"}
            if unknown:
                raise ApiError.invalid(f"* UpdateCachedContentRequest.update_mask: only the expiration (ttl or "
                                       f"expire_time) can be updated, not {', '.join(sorted(unknown))}.\n")
        immutable = [n for n, v in (("model", body.model), ("display_name", body.display_name),
                                    ("contents", body.contents), ("system_instruction", body.system_instruction),
                                    ("tools", body.tools), ("tool_config", body.tool_config)) if v is not None]
        if immutable and fields is None:
            raise ApiError.invalid(f"* UpdateCachedContentRequest.cached_content: only the expiration (ttl or "
                                   f"expire_time) can be updated, not {', '.join(immutable)}.\n")
        expire = expiry(body, datetime.now(timezone.utc), None)
        if expire is None:
            raise ApiError.invalid("* UpdateCachedContentRequest.cached_content: set ttl or expire_time.\n")
        record = await self.store.caches.set_expiry(project_id, cache_id_of(name), expire)
        if record is None:
            raise not_found()
        return record

    async def delete(self, project_id: str, name: str) -> None:
        cache_id = cache_id_of(name)
        if not await self.store.caches.delete(project_id, cache_id):
            raise not_found()
        self._forget(project_id, cache_id)
        await self._drop(prefix_key(project_id, cache_id))
        await self.blobs.delete_prefix(cache_prefix(project_id, cache_id))

    # Use --------------------------------------------------------------------------------------------------------
    async def use(self, project_id: str, name: str) -> Cached:
        """The cache a request names, live and the project's; else the real API's 403."""
        record = await self.store.caches.get(project_id, cache_id_of(name))
        if record is None:
            raise not_found()
        key = (project_id, record.id)
        hit = self._parsed.get(key)
        if hit is not None:
            self._parsed.move_to_end(key)
            return replace(hit[1], record=record)  # with the latest expiry
        try:
            raw = b"".join([chunk async for chunk in self.blobs.read(f"{record.prefix}/request")])
        except BlobMissing:  # deleted meanwhile
            raise not_found() from None
        # Large caches are parsed off the event loop (a book's worth of JSON holds it for a while).
        held = (await asyncio.to_thread(GenerateContentRequest.model_validate_json, raw) if len(raw) > 65536
                else GenerateContentRequest.model_validate_json(raw))
        cached = Cached(record, held.contents or [], held.system_instruction, held.tools, held.tool_config)
        if len(raw) <= _PARSED_BYTES // 4:
            self._parsed[key] = (len(raw), cached)
            self._parsed_bytes += len(raw)
            while self._parsed_bytes > _PARSED_BYTES:
                _, (size, _) = self._parsed.popitem(last=False)
                self._parsed_bytes -= size
        return cached

    # Prefixes kept by the engines ------------------------------------------------------------------------------
    def wants_kept(self, engine: Engine, record: CacheRecord) -> bool:
        """Whether the engine could keep the cache's prefix and does not now (nor is it being computed). Past
        `_KEEP_QUEUE` computations waiting, no: the cache's requests then compute its prefix themselves."""
        key = prefix_key(record.project_id, record.id)
        keeper: Any = engine
        return (engine.capabilities.keeps_prefixes and key not in self._computing
                and len(self._tasks) < _KEEP_QUEUE and not keeper.keeps_prefix(key))

    def keep(self, engine: Engine, request: GenerateRequest, record: CacheRecord) -> None:
        """Have an engine that keeps prefixes (`PrefixKeeper`) compute the cache's prompt (`request`) now and keep
        it while the cache lives, in the background."""
        if not self.wants_kept(engine, record):
            return
        key = prefix_key(record.project_id, record.id)
        keeper: Any = engine
        self._kept[key] = (engine, (record.project_id, record.id))
        self._computing.add(key)

        async def compute() -> None:
            try:
                async with self._keeping:
                    tokens = await keeper.keep_prefix(request, key)
                log.info("context cache %s: %d tokens kept by the engine", record.id, tokens)
            except Exception:  # noqa: BLE001 - a cache works without it: requests compute its prefix
                log.exception("computing the prefix of context cache %s failed", record.id)
            finally:
                self._computing.discard(key)

        task = asyncio.create_task(compute())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, key: str) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            keeper: Any = kept[0]
            await keeper.drop_prefix(key)
            log.info("context cache %s: the engine lets its prefix go", kept[1][1])

    def start(self) -> None:
        """Begin letting go of kept prefixes whose caches are gone, in this process (each keeps its own)."""
        self._pruner = asyncio.create_task(self._prune_forever())

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._pruner] if self._pruner else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._pruner] if self._pruner else []), return_exceptions=True)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(_PRUNE_SECONDS)
            try:
                await self.prune()
            except Exception:  # noqa: BLE001 - the store may be unreachable a while: try again later
                log.warning("letting go of kept prefixes failed; trying again", exc_info=True)

    async def prune(self) -> None:
        """Let go of prefixes kept for caches that expired, or that were deleted (by any process)."""
        if not self._kept:
            return
        live = await self.store.caches.live([owner for _, owner in self._kept.values()])
        for key, (_, owner) in list(self._kept.items()):
            if owner not in live:
                await self._drop(key)

    def _forget(self, project_id: str, cache_id: str) -> None:
        hit = self._parsed.pop((project_id, cache_id), None)
        if hit is not None:
            self._parsed_bytes -= hit[0]

    # Housekeeping -----------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Delete expired caches with what they hold (each by one process: the row's delete decides), and blobs no
        cache owns (a crash between the two). Returns how many caches went."""
        gone = 0
        for record in await self.store.caches.expired():
            if await self.store.caches.delete(record.project_id, record.id, live_only=False):
                await self.blobs.delete_prefix(record.prefix)
                self._forget(record.project_id, record.id)
                gone += 1
        # A cache's blobs are written before its row (copying its files may take minutes): blobs without a row are
        # deleted only once they have had none for ten sweep intervals, and never while this process makes them.
        stored = await self.blobs.keys("caches")
        owned = await self.store.caches.names()
        now, grace = time.monotonic(), 10 * self.limits.housekeeping_seconds
        unowned: dict[str, float] = {}
        for key in stored:
            parts = key.split("/")
            if len(parts) < 3 or (parts[1], parts[2]) in owned or "/".join(parts[:3]) in self._creating:
                continue
            unowned[key] = since = self._unowned.get(key, now)
            if now - since >= grace:
                await self.blobs.delete(key)
                del unowned[key]
        self._unowned = unowned
        return gone


def prefix_key(project_id: str, cache_id: str) -> str:
    """A cache's key with the engines that keep its prefix."""
    return f"{project_id}/{cache_id}"

