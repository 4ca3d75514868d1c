"""Prefix reuse in the shared batch, kept apart per tenant.

transformers' paged cache can share KV blocks between requests (`allow_block_sharing`): each full block of a request's
tokens is registered under a hash chained from the first block's, and a new request whose prompt starts with the
same blocks takes them instead of computing them again (`search_prefix_match`); blocks no request holds any more stay
cached until memory is short. The library's chain starts from nothing, so two projects sending the same prefix would
share its state. Here the chain starts from a salt: the tenant's (opaque, per project) for text requests, a fresh one
for a request with images (its placeholder tokens are the same ids whatever the pictures, so its blocks must never
match another's). Everything else is the library's.

On top, `Pins` keep the blocks of explicit context caches (`cachedContents`) referenced while the cache lives, so
that they are not evicted: a pin is a request id that never runs, holding the matched blocks. Pins are bounded by a
share of the cache's blocks; past it, the least recently used pin is let go (its blocks stay cached, evictable, and a
later request computes again what was evicted).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers.generation.continuous_batching.cache_allocators.cache_allocator import compute_block_hash

PIN_PREFIX = "pollux-pin-"  # the request ids of pins


def tenant_salt(tenant: str | None) -> int:
    """The hash chain's start for a tenant's requests (64 bits, as the library's block hashes)."""
    return int.from_bytes(hashlib.blake2b((tenant or "").encode(), digest_size=8, person=b"pollux-kv").digest(),
                          "little")


def fresh_salt() -> int:
    """A chain no other request shares."""
    return secrets.randbits(64)


class SaltedHashes:
    """Installs salted block hashing on a paged cache (the library's `PagedAttentionCache`). `salts` maps request ids
    to their salt (a request without one gets a fresh salt: it shares nothing); `matched(request_id, tokens)` is
    called when a request takes a prefix from the cache. All of it runs on the library's thread."""

    def __init__(self, cache: Any, salts: dict[str, int], matched: Callable[[str, int], None]) -> None:
        self._salts = salts
        self._matching = 0
        search = cache.search_prefix_match

        def search_prefix_match(request_id: str, prompt_ids: list[int]) -> int:
            self._matching = self._salt(request_id)
            found = search(request_id, prompt_ids)
            if found:
                matched(request_id, found)
            return found

        cache.search_prefix_match = search_prefix_match
        for allocator in cache.cache_allocators.values():
            allocator.match_prefix_blocks = self._matcher(allocator)
            allocator.mark_complete_blocks = self._marker(allocator)

    def _salt(self, request_id: str) -> int:
        salt = self._salts.get(request_id)
        return salt if salt is not None else fresh_salt()

    def _matcher(self, allocator: Any) -> Callable[[list[int]], list[int]]:
        def match_prefix_blocks(prompt_ids: list[int]) -> list[int]:
            # The library's `match_prefix_blocks`, its chain started from the request's salt.
            page = allocator.tokens_per_page
            matched: list[int] = []
            current = self._matching
            for b in range((len(prompt_ids) - 1) // page):
                current = compute_block_hash(current, prompt_ids[b * page:(b + 1) * page])
                block_id = allocator.ledger.hash_to_block.get(current)
                if block_id is None:
                    break
                matched.append(block_id)
            return matched
        return match_prefix_blocks

    def _marker(self, allocator: Any) -> Callable[[str, list[int], int], None]:
        def mark_complete_blocks(request_id: str, token_ids: list[int], new_blocks: int) -> None:
            # The library's `mark_complete_blocks`, its chain started from the request's salt.
            block_table = allocator.block_table[request_id]
            ledger = allocator.ledger
            page = allocator.tokens_per_page
            parent = self._salt(request_id)
            for i, block_id in enumerate(block_table):
                block_hash = ledger.block_to_hash.get(block_id)
                if block_hash is None:
                    tokens = token_ids[i * page:(i + 1) * page]
                    if new_blocks == 0 or len(tokens) < page:
                        break
                    block_hash = compute_block_hash(parent, tokens)
                    new_blocks -= 1
                    identical = ledger.register_new_hash(block_id, block_hash)
                    if identical is not None:  # the same content is cached already: take that block
                        ledger.acquire(identical)
                        block_table[i] = identical
                        if ledger.release(block_id):
                            allocator.pool.free_blocks(allocator.index, [block_id])
                parent = block_hash
        return mark_complete_blocks


@dataclass
class _Pin:
    request_id: str
    blocks: int


class Pins:
    """The pinned prefixes of one cache (the library's), by key. Not thread-safe: the caller holds the batch still."""

    def __init__(self, budget_blocks: int) -> None:
        self.budget = budget_blocks
        self._pins: OrderedDict[str, _Pin] = OrderedDict()  # least recently used first

    def __contains__(self, key: str) -> bool:
        return key in self._pins

    @property
    def blocks(self) -> int:
        return sum(p.blocks for p in self._pins.values())

    def touch(self, key: str) -> bool:
        if key in self._pins:
            self._pins.move_to_end(key)
            return True
        return False

    def pin(self, cache: Any, salts: dict[str, int], key: str, salt: int, prompt_ids: list[int]) -> int:
        """Hold the cached blocks of `prompt_ids` (as computed for `salt`) under `key`; returns the tokens held (0: none
        were cached, or they do not fit the budget)."""
        self.unpin(cache, salts, key)
        request_id = f"{PIN_PREFIX}{secrets.token_hex(8)}"
        salts[request_id] = salt
        tokens = cache.search_prefix_match(request_id, prompt_ids)
        blocks = len(next(iter(cache.cache_allocators.values())).block_table.get(request_id, []))
        if not tokens or blocks > self.budget:
            cache.free_blocks(request_id)
            salts.pop(request_id, None)
            return 0
        while self._pins and self.blocks + blocks > self.budget:
            self.unpin(cache, salts, next(iter(self._pins)))
        self._pins[key] = _Pin(request_id, blocks)
        return tokens

    def unpin(self, cache: Any, salts: dict[str, int], key: str) -> None:
        pin = self._pins.pop(key, None)
        if pin is not None:
            cache.free_blocks(pin.request_id)  # its blocks stay cached until memory is short
            salts.pop(pin.request_id, None)

    def clear(self) -> None:
        """The cache they were in is gone (the loop restarted)."""
        self._pins.clear()
