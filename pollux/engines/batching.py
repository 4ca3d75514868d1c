"""One model's shared batch: transformers' continuous batching, with Pollux choosing every token.

What is whose:
- transformers (`generation/continuous_batching`) owns the scheduling and the model: a thread of its own runs one
  forward pass after another over whatever requests are live, admits new ones at the next step (their prefill cut
  into chunks of `max_batch_tokens` beside the others' decoding), lets a finished one go at once, keeps the KV state
  in a paged cache of a fixed number of blocks, and when the cache is full holds new requests back (or sets a running
  one aside and recomputes it later).
- Pollux owns the choice of each token. The library's sampling is per batch (one seed) and knows nothing of grammars,
  thinking budgets, stop sequences or top-k logprobs, so its logits processors are replaced by one (`_Choose`) that
  hands each row of the step's logits to its own request's `step` function (`decoding.Sequence`: own generator,
  llguidance matcher, budget, stops) and returns a one-hot row; the library's argmax (greedy mode) then takes exactly
  that token. A request whose sequence has ended gets the end token, which is the only one the library stops on.
- Pollux also owns admission (a bound on requests in flight, then `Overloaded`), the size of the cache (a memory
  budget, converted to blocks), and the check that a request fits in the cache at all (one that cannot would stop the
  library's loop for everyone).
- Images: the library's requests are token ids only. A request with images comes with its vision encoder's output
  (`MediaTokens`, computed before it joins); at each step that holds some of its image tokens, a hook before the
  model's forward pass embeds the step's ids itself and puts those rows in place of the placeholders' (what the model
  does with `pixel_values` in `generate`), and, for a model that attends within an image both ways (Gemma 3), opens
  each image's square of the step's attention mask. The scheduler is the library's FIFO one, except that a prefill
  chunk never ends inside an image (`_Scheduler`), so that each image is whole in one step.
- Decode steps attend over each request's own keys (`decode_attention`) instead of the library's one masked attention
  over the whole step's keys, where the model has full attention in every layer.

A failure in one request's `step` ends that request alone; an exception out of the processor would end the loop and
fail every request, so none escapes it. If the loop dies anyway (the model's forward pass failed), every live request
ends with the error and the next request starts a fresh loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.continuous_batching.requests import RequestStatus
from transformers.generation.continuous_batching.scheduler import SCHEDULER_MAPPING, FIFOScheduler
from transformers.generation.logits_process import LogitsProcessorList

from . import decode_attention
from .errors import Overloaded
from .prefixes import PIN_PREFIX, Pins, SaltedHashes, fresh_salt

log = logging.getLogger("pollux.engines.batching")

# The library's logger prints through a handler of its own; its records go through Pollux's logging instead, and its
# INFO lines (cache sizing, seeds) are the library's internals.
_library_log = logging.getLogger("ContinuousBatchingLogger")
for _handler in list(_library_log.handlers):
    _library_log.removeHandler(_handler)
_library_log.propagate = True
_library_log.setLevel(logging.WARNING)

# The CPU cache budget when none is configured (less when a smaller cache holds `max_batch_size` whole contexts). On a
# GPU the library sizes the cache from the free memory.
DEFAULT_CPU_KV_CACHE_MB = 1024
DEFAULT_CPU_BATCH_TOKENS = 512
PAGE_SIZE = 16  # tokens per cache page, vLLM's default (the library's is 256): prefixes are shared in whole pages


@dataclass(frozen=True)
class MediaTokens:
    """What a request's prompt holds besides token ids: its image tokens' embeddings, from the vision encoder, and for
    a model with positions in three dimensions (Qwen2-VL's M-RoPE), the prompt's positions."""

    positions: torch.Tensor  # prompt positions of the image tokens, ascending (int64)
    embeddings: torch.Tensor  # one row per position: what replaces that token's embedding
    blocks: tuple[tuple[int, int], ...]  # [start, end) of each image's run of tokens
    rope: torch.Tensor | None = None  # [3, prompt length]: the prompt's 3-D positions
    rope_delta: int = 0  # what a generated token's 3-D position adds to its index

    @classmethod
    def of(cls, prompt_ids: list[int], image_token: int, embeddings: torch.Tensor,
           rope: torch.Tensor | None = None, rope_delta: int = 0) -> MediaTokens:
        ids = torch.tensor(prompt_ids)
        positions = torch.nonzero(ids == image_token).flatten()
        if positions.numel() != embeddings.shape[0]:
            raise ValueError(f"{positions.numel()} image tokens in the prompt for {embeddings.shape[0]} embeddings")
        blocks: list[tuple[int, int]] = []
        for position in positions.tolist():
            if blocks and blocks[-1][1] == position:
                blocks[-1] = (blocks[-1][0], position + 1)
            else:
                blocks.append((position, position + 1))
        return cls(positions, embeddings, tuple(blocks), rope, rope_delta)


# A request's choice of its next token: (its row of the step's logits, (that row's argmax, its maximum)) -> the token,
# or None when the request is over.
Step = Callable[[Any, tuple[int, float]], "int | None"]


@dataclass
class _Entry:
    step: Step
    ended: Callable[[str | None], None]
    media: MediaTokens | None = None
    matched: Callable[[int], None] | None = None  # told how many prompt tokens came from the cache, if any


class _Scheduler(FIFOScheduler):
    """The library's FIFO scheduler, except that a prefill chunk never ends inside an image's run of tokens: the model
    must see the whole image in one step. A chunk that would is cut before the image; when the image is next, the
    request waits for a step whose budget holds it (decoding requests come first and each takes one token, so the
    first prefilling request has `max_batch_tokens - max_batch_size` tokens at least)."""

    blocks: dict[str, tuple[tuple[int, int], ...]] = {}  # request id -> its images' [start, end); SharedBatch's own

    def _schedule_request(self, state: Any, request_tokens: list[int], token_budget: int,
                          request_ids_to_remove_from_waiting: set[str]) -> None:
        blocks = self.blocks.get(state.request_id)
        if blocks and state.status != RequestStatus.DECODING and len(request_tokens) > token_budget:
            end = state.position_offset + token_budget
            for start, stop in blocks:
                if start < end < stop:
                    token_budget = max(0, start - state.position_offset)
                    break
        super()._schedule_request(state, request_tokens, token_budget, request_ids_to_remove_from_waiting)


SCHEDULER_MAPPING["pollux"] = _Scheduler


class CacheTooSmall(ValueError):
    """The configured KV budget cannot hold even one page of the model."""


def kv_bytes_per_token(config: Any, dtype_size: int) -> int:
    """Bytes of key and value state one token takes over all layers (what the library's pages hold)."""
    heads = int(getattr(config, "num_attention_heads", 1))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * dtype_size


class SharedBatch:
    """The continuous batch of one loaded model. `submit` and `cancel` are called on the event loop; the library's
    thread calls back into each request's `step`, and its end is reported on the loop through `ended`."""

    def __init__(self, model: Any, *, kv_cache_mb: int | None, max_batch_size: int, max_batch_tokens: int | None,
                 max_queue: int, end_token: int, context_length: int, images_both_ways: bool = False,
                 prefix_sharing: bool = True, decode_per_request: bool = True) -> None:
        self.model = model
        self.decode_per_request = decode_per_request  # `decode_attention`, where the model allows it
        self.prefix_sharing = prefix_sharing  # prompts reuse the cached KV blocks of their tenant's earlier ones
        self.images_both_ways = images_both_ways  # attention within an image runs both ways (Gemma 3)
        self.end_token = end_token
        self.max_batch_size = max_batch_size
        self.max_in_flight = max_batch_size + max_queue
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        on_cpu = model.device.type == "cpu"
        block = PAGE_SIZE * kv_bytes_per_token(config, torch.empty((), dtype=model.dtype).element_size())
        self.num_blocks: int | None = None
        if kv_cache_mb is not None:
            self.num_blocks = kv_cache_mb * 2**20 // block
            if self.num_blocks < 1:
                raise CacheTooSmall(f"kv_cache_mb = {kv_cache_mb} holds no page of this model: one page of "
                                    f"{PAGE_SIZE} tokens takes {block / 2**20:.1f} MiB")
        elif on_cpu:
            # No more than `max_batch_size` sequences of the whole context can use: a tiny model needs megabytes.
            most = max_batch_size * -(-context_length // PAGE_SIZE)
            self.num_blocks = max(1, min(DEFAULT_CPU_KV_CACHE_MB * 2**20 // block, most))
        self.max_batch_tokens = max_batch_tokens or (DEFAULT_CPU_BATCH_TOKENS if on_cpu else None)
        self._entries: dict[str, _Entry] = {}
        self._blocks: dict[str, tuple[tuple[int, int], ...]] = {}  # the images of requests in flight, by request id
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rows = 0  # sequences in the last step, logged when it changes
        self._restarting = threading.Lock()
        self._stepping = threading.local()  # on the library's thread, during a step: what `post` holds back
        self._chosen: torch.Tensor | None = None  # `_one_hot`'s buffer, and where it holds zeros
        self._chosen_at: tuple[torch.Tensor, torch.Tensor] | None = None
        self._manager: Any = None
        self._salts: dict[str, int] = {}  # request id -> where its block hashes start (`prefixes`)
        self._pins: Pins | None = None
        self._pinning = threading.Lock()
        self._start()

    # The library's loop ---------------------------------------------------------------------------------------------
    def _start(self) -> None:
        config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE, num_blocks=self.num_blocks, max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_batch_size,
            # Prefix blocks are shared, but only between requests of one tenant (`prefixes.SaltedHashes`).
            allow_block_sharing=self.prefix_sharing,
            # Double buffering runs the processor for one step while the next is prepared: Pollux's choice of a
            # token must come before the next step is built from it.
            use_async_batching=False, use_cuda_graph=False, scheduler_type="pollux")
        generation = GenerationConfig(do_sample=False, eos_token_id=[self.end_token], pad_token_id=self.end_token)
        manager = self.model.init_continuous_batching(generation_config=generation,
                                                      continuous_batching_config=config)
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([_Choose(self)]))
        processors.tensors_required = 1
        manager.logit_processor = processors
        with torch.inference_mode():  # the loop runs in the caller's inference mode
            manager.start()
        deadline = time.monotonic() + 300
        while manager.batch_processor is None and manager.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        processor = manager.batch_processor
        if processor is None:
            error = manager.background_thread_status.fatal_error
            manager.stop(block=True, timeout=10)
            raise RuntimeError(f"the continuous batching loop did not start: {error}")
        processor.scheduler.blocks = self._blocks
        cache = processor.cache
        for stale in [k for k in self._salts if k.startswith(PIN_PREFIX)]:  # pins of a loop that died
            del self._salts[stale]
        if cache.use_prefix_sharing:
            SaltedHashes(cache, self._salts, self._matched)
            self._pins = Pins(int(cache.num_blocks) // 2)  # explicit caches hold at most half of the KV memory
        else:
            self._pins = None  # e.g. a model with sliding-window layers, whose blocks the library does not share
        if self.decode_per_request and decode_attention.supported(self.model, cache):
            decode_attention.install(cache)
        self.capacity = int(cache.num_blocks) * PAGE_SIZE  # tokens of KV state the whole cache holds
        self.step_tokens = int(cache.max_batch_tokens)  # tokens one step holds
        self._manager = manager
        log.info("shared batch: %d KV blocks of %d tokens (%.0f MiB), up to %d sequences, %d tokens a step",
                 cache.num_blocks, PAGE_SIZE, cache.cache_tensor.numel() / 2**20, self.max_batch_size,
                 cache.max_batch_tokens)

    def _restart(self) -> Any:
        """A new loop in place of one that died (its forward pass failed: every request it held has ended with the
        error). Blocking: the cache is allocated again."""
        with self._restarting:
            manager = self._manager
            if manager.is_running():  # another request restarted it meanwhile
                return manager
            log.error("the shared batch's loop had stopped (%s); starting a new one",
                      manager.background_thread_status.fatal_error)
            manager.stop(block=True, timeout=10)
            self._start()
            return self._manager

    # Requests ---------------------------------------------------------------------------------------------------
    async def submit(self, prompt_ids: list[int], max_new_tokens: int, step: Step, ended: Callable[[str | None], None],
                     media: MediaTokens | None = None, salt: int | None = None,
                     matched: Callable[[int], None] | None = None) -> str:
        """Queue a request for the next step. `step(logits_row, (argmax, max))` picks each token (None: the request is
        over); `ended(error)` comes on this event loop once the library has let it go (not after `cancel`). `media`:
        the embeddings of the prompt's image tokens. `salt`: the tenant's (`prefixes.tenant_salt`), whose cached
        prefixes the prompt may reuse; `matched(tokens)` is then called on the library's thread when it does."""
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                raise Overloaded(retry_after=1)
            self._in_flight += 1
        rid = uuid.uuid4().hex
        try:
            manager = self._manager
            if not manager.is_running():
                manager = await asyncio.to_thread(self._restart)
            self._drop_strays(manager)
            entry = _Entry(step, ended, media, matched)
            with self._lock:
                self._entries[rid] = entry
                if media is not None:
                    self._blocks[rid] = media.blocks
                # Image placeholders are the same ids whatever the picture: such a request shares no block.
                self._salts[rid] = fresh_salt() if media is not None or salt is None else salt

            def on_output(output: Any) -> None:
                if output.is_finished() and self._release(rid):
                    entry.ended(output.error)

            manager.register_result_handler(rid, on_output)
            # The library's own queue is unbounded (Pollux bounds what is in flight), so this never blocks. Its
            # limit is the request's own: the sequence ends there too, as it has counted the same tokens.
            manager.add_request(prompt_ids, request_id=rid, max_new_tokens=max_new_tokens,
                                eos_token_id=[self.end_token])
        except BaseException:
            with self._lock:
                self._entries.pop(rid, None)
                self._blocks.pop(rid, None)
                self._salts.pop(rid, None)
                self._in_flight -= 1
            raise
        return rid

    def cancel(self, rid: str) -> None:
        """The client went away: the library drops the request at its next step and frees its blocks."""
        if not self._release(rid):
            return
        manager = self._manager
        if manager is not None:
            with manager.output_router._lock:
                manager.output_router.result_handlers.pop(rid, None)
            manager.cancel_request(rid)

    def _release(self, rid: str) -> bool:
        with self._lock:
            self._blocks.pop(rid, None)
            self._salts.pop(rid, None)
            if self._entries.pop(rid, None) is None:
                return False
            self._in_flight -= 1
            return True

    @staticmethod
    def _drop_strays(manager: Any) -> None:
        """Outputs of requests whose handler had gone (one that ended in the step its cancel arrived) land in the
        library's shared queue, which nobody reads."""
        strays = manager.output_router.output_queue
        while True:
            try:
                strays.get_nowait()
            except queue.Empty:
                return

    # Pinned prefixes (explicit context caches) ------------------------------------------------------------------
    def pin(self, key: str, salt: int, prompt_ids: list[int]) -> int:
        """Keep the cached blocks of `prompt_ids` (computed by an earlier request of the tenant whose salt this is)
        until `unpin(key)`, or until the pins need the room; returns the tokens kept. Blocking: the loop is held still
        meanwhile."""
        with self._pinning:
            if self._pins is None:
                return 0
            resume = self.hold()
            try:
                return self._pins.pin(self._manager.batch_processor.cache, self._salts, key, salt, prompt_ids)
            finally:
                resume()

    def unpin(self, key: str) -> None:
        """Let a pinned prefix go (its blocks stay cached until memory is short). Blocking, as `pin`."""
        with self._pinning:
            if self._pins is None or key not in self._pins:
                return
            resume = self.hold()
            try:
                self._pins.unpin(self._manager.batch_processor.cache, self._salts, key)
            finally:
                resume()

    @property
    def keeps_prefixes(self) -> bool:
        """Whether prompts share cached blocks here (the library shares none for models with sliding-window layers)."""
        return self._pins is not None

    def pinned(self, key: str) -> bool:
        """Whether `key` is pinned now (and so recently used)."""
        with self._pinning:
            return self._pins is not None and self._pins.touch(key)

    # The library's thread ---------------------------------------------------------------------------------------
    def _matched(self, rid: str, tokens: int) -> None:
        entry = self._entries.get(rid)
        if entry is not None and entry.matched is not None:
            entry.matched(tokens)

    def post(self, loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
        """`loop.call_soon_threadsafe(callback, *args)`, except during a step, whose calls go to each loop at once
        when the step is over: one wake-up of the loop a step, not one for each token of each request."""
        pending = getattr(self._stepping, "pending", None)
        if pending is None:
            loop.call_soon_threadsafe(callback, *args)
        else:
            pending.setdefault(loop, []).append((callback, args))

    def choose(self, rids: list[str], scores: torch.Tensor) -> torch.Tensor:
        """One step's tokens: row i of `scores` belongs to request `rids[i]`."""
        rows = scores.float().cpu()  # sampling, grammar masks and seeds all live on the CPU
        # Each row's maximum, in one op for the step: a greedy sequence that nothing masks takes it as it is.
        values, indices = rows.max(dim=-1)
        best = list(zip(indices.tolist(), values.tolist(), strict=True))
        with self._lock:
            entries = [self._entries.get(rid) for rid in rids]
        tokens = [self.end_token] * len(rids)
        self._stepping.pending = pending = {}
        try:
            for row, entry in enumerate(entries):
                if entry is not None:
                    try:
                        token = entry.step(rows[row], best[row])
                    except Exception:  # noqa: BLE001 - an exception out of here would end the loop for everyone
                        log.exception("a sequence's step failed")
                        token = None
                    if token is not None:
                        tokens[row] = token
        finally:
            self._stepping.pending = None
            for loop, calls in pending.items():
                try:
                    loop.call_soon_threadsafe(_run_all, calls)
                except RuntimeError:  # the loop was closed: nobody waits for these any more
                    pass
        if len(rids) != self._rows:
            self._rows = len(rids)
            log.debug("shared batch: %d sequences", len(rids))
        return self._one_hot(tokens, scores)

    def _one_hot(self, tokens: list[int], scores: torch.Tensor) -> torch.Tensor:
        """Rows of -inf but for a 0 at each chosen token, which the library's argmax then takes (`scores` may have
        more rows than tokens: one per request in the step, those without a new token last, all -inf). One buffer
        serves every step: the previous step's zeros are put back to -inf (the library has read them by now)."""
        rows, width = scores.shape
        buffer = self._chosen
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != width or buffer.dtype != scores.dtype \
                or buffer.device != scores.device:
            buffer = self._chosen = torch.full((max(rows, self.max_batch_size), width), float("-inf"),
                                               dtype=scores.dtype, device=scores.device)
        elif self._chosen_at is not None:
            buffer[self._chosen_at] = float("-inf")
        at = (torch.arange(len(tokens), device=scores.device),
              torch.tensor(tokens, dtype=torch.long, device=scores.device))
        buffer[at] = 0.0
        self._chosen_at = at
        return buffer[:rows]

    def merge_media(self, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A forward pre-hook (with kwargs) of the model: in a step of the library's loop that holds requests with
        images, the step's input embeddings with each image token's row replaced by its encoder's, each whole image's
        square of the attention mask opened where the model attends within an image both ways, and positions in three
        dimensions where the model has them. Other calls pass unchanged."""
        if not self._blocks or "cu_seq_lens_q" not in kwargs or kwargs.get("input_ids") is None:
            return None
        processor = self._manager.batch_processor
        requests = processor.inputs_and_outputs.requests_in_batch if processor is not None else []
        with self._lock:
            media = [entry.media if (entry := self._entries.get(r.state.request_id)) is not None else None
                     for r in requests]
        if not any(m is not None for m in media):
            return None
        cu_q = kwargs["cu_seq_lens_q"].tolist()
        flat = kwargs["position_ids"]  # [1, tokens]: each token's index in its own request
        ids = kwargs["input_ids"]
        embeds = rope = None
        for i, tokens in enumerate(media):
            start, length = cu_q[i], cu_q[i + 1] - cu_q[i]
            if tokens is None or length == 0:
                continue
            first = int(flat[0, start])
            if tokens.rope is not None:
                if rope is None:  # text requests' 3-D positions are their index thrice
                    rope = flat[None].expand(3, 1, -1).clone()
                index = torch.arange(first, first + length)
                prompt = index < tokens.rope.shape[1]
                rope[:, 0, start:start + length] = torch.where(
                    prompt, tokens.rope[:, index.clamp(max=tokens.rope.shape[1] - 1)], index + tokens.rope_delta)
            lo, hi = (int(x) for x in torch.searchsorted(tokens.positions, torch.tensor([first, first + length])))
            if lo == hi:
                continue
            if embeds is None:
                embed = model.get_input_embeddings()
                embeds = embed(torch.where(ids < embed.num_embeddings, ids, 0))
            embeds[0, start + tokens.positions[lo:hi] - first] = tokens.embeddings[lo:hi].to(embeds.dtype)
            if self.images_both_ways:
                self._open_images(kwargs, i, tokens, first, length)
        if rope is not None:
            kwargs = {**kwargs, "position_ids": rope}
        if embeds is not None:
            kwargs = {**kwargs, "input_ids": None, "inputs_embeds": embeds}
        return args, kwargs

    @staticmethod
    def _open_images(kwargs: dict[str, Any], i: int, tokens: MediaTokens, first: int, length: int) -> None:
        """Let each image whole in the step of request `i` (its tokens `first`..`first + length`) attend within
        itself both ways, in the step's masks of every layer type (in place: they are the library's)."""
        masks = kwargs.get("attention_mask")
        if masks is None:
            return
        if not isinstance(masks, dict):
            masks = {next(iter(kwargs["cu_seq_lens_k"])): masks}
        start = int(kwargs["cu_seq_lens_q"][i])
        for block_start, block_end in tokens.blocks:
            if block_start < first or block_end > first + length:
                continue
            rows = slice(start + block_start - first, start + block_end - first)
            for layer_type, mask in masks.items():
                # The request's keys end with this step's tokens: the image's are at the same offsets from the end.
                keys_end = int(kwargs["cu_seq_lens_k"][layer_type][i + 1])
                mask[..., rows, keys_end - (first + length - block_start):keys_end - (first + length - block_end)] = 0

    # Other users of the model -----------------------------------------------------------------------------------
    def hold(self) -> Callable[[], None]:
        """Stop the loop between two of its steps, so that another thread can run the model (transformers' models
        are not safe to run from two threads at once: a forward pass records its outputs in state the model
        shares). Returns what lets it go on. A loop that is not running has nothing to stop."""
        manager = self._manager
        pause = manager.pause()  # the library's own: the loop parks between steps, keeping its requests and cache
        try:
            pause.__enter__()
        except RuntimeError:  # no loop running, or it stopped meanwhile: the model is free
            return lambda: None
        return lambda: pause.__exit__(None, None, None)

    # Introspection and shutdown ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """What the batch holds now: requests in flight (Pollux's count), running and waiting (the library's), the
        shares of the KV cache that are free and that hold cached prefixes, and the blocks pinned for context
        caches."""
        manager = self._manager
        processor = manager.batch_processor if manager is not None else None
        stats: dict[str, Any] = {"in_flight": self._in_flight}
        if processor is not None:
            stats.update(running=len(processor.scheduler.active_requests),
                         waiting=len(processor.scheduler.waiting_requests),
                         free_kv=float(processor.cache.compute_free_capacity()),
                         cached_kv=_cached_share(processor.cache),
                         pinned_blocks=self._pins.blocks if self._pins is not None else 0)
        return stats

    async def close(self) -> None:
        manager = self._manager
        if manager is not None and manager.is_running():
            await asyncio.to_thread(manager.stop, block=True, timeout=10, hard_stop=True)


def _cached_share(cache: Any) -> float:
    """The share of the cache held by blocks no request holds, kept for their prefixes (evicted when memory is
    short)."""
    cached = sum(len(a.ledger.cached_blocks) * a.bytes_per_block for a in cache.cache_allocators.values())
    return cached / (cache.num_sectors * cache.bytes_per_sector)


def _run_all(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    for callback, args in calls:
        callback(*args)


class _Choose(ContinuousBatchingLogitsProcessor):
    """The library's per-request logits processor slot, used to learn which request each logits row belongs to
    (`prepare_tensor_args` gets the step's requests in row order) and to let each choose its token."""

    supported_kwargs: dict[str, type] = {}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self, batch: SharedBatch) -> None:
        self.batch = batch
        self.rids: list[str] = []

    def fill_defaults(self, tensor: torch.Tensor) -> None:
        tensor.fill_(0)

    def prepare_tensor_args(self, requests: list[Any]) -> torch.Tensor:
        self.rids = [request.state.request_id for request in requests]
        return torch.zeros(len(requests), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        return self.batch.choose(self.rids, scores)
