"""Attention of the shared batch's decode steps, request by request instead of over the whole step's keys.

In a step of the library's continuous batching, the keys of every request in the step are read from the paged cache
into one run, and one SDPA call attends the step's queries to that run through a block-diagonal mask. In a decode step
(one query a request) that is B queries against the keys of all B requests: work quadratic in the batch, of which one
B-th is kept. Here, in such a step, each request's keys are read into a row of their own (padded to the longest
request's), and one SDPA call attends each query to its own row with a padding mask: linear in the batch. Measured on
one CPU core with 16 requests of a 27 M-parameter Llama: ~10 % more tokens a second (BENCHMARKS.md, issue 14). Steps
of fewer than `MIN_REQUESTS` requests keep the library's attention.

Two seams of the library carry it: the paged cache's `update` (wrapped on Pollux's own cache: it reads the padded rows
instead of the run, through the allocator's own write-then-read) and the `sdpa` entry of transformers'
`AttentionInterface` (wrapped once per process: it lays the padded rows out as a batch and calls the library's own SDPA
function; a call that does not come from a wrapped cache's decode step passes unchanged). Prefill and mixed steps,
and models with other than full attention in every layer, take the library's path as they are.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.generation.continuous_batching.cache_allocators.full_attention import FullAttentionCacheAllocator
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# The kwarg that tells the attention function that the keys it gets are the padded rows of `Rows`.
MARK = "pollux_decode_rows"
# Steps of fewer requests take the library's path: its one masked attention is then as cheap, and steps of 2 or 3
# requests of a 27 M-parameter Llama were ~5 % slower with the padded rows (BENCHMARKS.md, issue 14).
MIN_REQUESTS = 4

_install_lock = threading.Lock()
_library_sdpa: Any = None


class Rows:
    """One decode step's padded layout: `index` reads each request's keys from the cache into a row of `width`
    (request b's at b * width, the padding repeating its first key), and `mask` [B, 1, 1, width] is True on its own."""

    __slots__ = ("index", "mask", "requests", "width")

    def __init__(self, read_index: torch.Tensor, cu_seq_lens_k: torch.Tensor) -> None:
        starts = cu_seq_lens_k[:-1].long()
        lengths = cu_seq_lens_k[1:].long() - starts
        self.requests = int(lengths.numel())
        self.width = int(lengths.max())
        offsets = torch.arange(self.width, device=read_index.device)
        own = offsets[None, :] < lengths[:, None]
        self.index = read_index[torch.where(own, starts[:, None] + offsets[None, :], starts[:, None]).flatten()]
        self.mask = own[:, None, None, :]


def supported(model: Any, cache: Any) -> bool:
    """Whether decode steps of this model and cache can take the per-request path: SDPA, and every layer's keys in a
    full-attention allocator (a sliding window reads a different set of keys)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return (getattr(config, "_attn_implementation", None) == "sdpa"
            and getattr(cache, "use_block_table", False) is False
            and all(type(a) is FullAttentionCacheAllocator for a in cache.cache_allocators.values()))


def install(cache: Any) -> None:
    """Wrap `cache.update` (this cache only) so that its decode steps read padded rows, and the process's SDPA entry
    so that it attends over them. The caller has checked `supported`."""
    _wrap_sdpa()
    original = cache.update
    # This step's layout (None: the library's path), shared by its layers, and the read index it was made for: the
    # same object means the same step (the loop is one thread).
    last: list[Any] = [None, None]

    def update(key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        allocator = cache.layer_to_allocator[layer_idx]
        read_index = kwargs["read_index"][allocator.index]
        if kwargs.get("max_length_q") == 1 and read_index.numel():
            if last[0] is not read_index:
                cu_seq_lens_k = kwargs["cu_seq_lens_k"][allocator.layer_type]
                last[:] = read_index, (Rows(read_index, cu_seq_lens_k) if len(cu_seq_lens_k) > MIN_REQUESTS else None)
            rows = last[1]
        else:
            rows = None
        if rows is not None:
            # The library's own update, reading back the padded rows instead of the run. `kwargs` is this layer's
            # own dict (the model passes `**kwargs` on), so the swap stays here.
            kwargs["read_index"] = [rows.index if i == allocator.index else index
                                    for i, index in enumerate(kwargs["read_index"])]
            kwargs[MARK] = rows
        return original(key_states, value_states, layer_idx, kwargs=kwargs)

    cache.update = update


def _wrap_sdpa() -> None:
    global _library_sdpa
    with _install_lock:
        if _library_sdpa is not None:
            return
        _library_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        AttentionInterface.register("sdpa", _sdpa)


def _sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
          **kwargs: Any) -> tuple[torch.Tensor, Any]:
    rows: Rows | None = kwargs.pop(MARK, None)
    if rows is None:
        return _library_sdpa(module, query, key, value, attention_mask, **kwargs)
    # query [1, heads, B, dim] -> [B, heads, 1, dim]; keys [1, kv heads, B * width, dim] -> [B, kv heads, width, dim]
    batch, width = rows.requests, rows.width
    query = query.transpose(0, 2)
    key, value = (x[0].unflatten(1, (batch, width)).transpose(0, 1) for x in (key, value))
    output, weights = _library_sdpa(module, query, key, value, rows.mask, **kwargs)
    # the library's output is [B, 1, heads, dim]; the model expects [1, B, heads, dim]
    return output.transpose(0, 1), weights
