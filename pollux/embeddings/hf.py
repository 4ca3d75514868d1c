"""Sentence-transformers and transformers encoders in-process (engine `transformers` on an embedding model).

The model is read the way sentence-transformers reads it, without depending on that package: `modules.json` says
whether the vectors are L2-normalised (a `Normalize` module), the pooling module's `config.json` (usually
`1_Pooling/`) picks CLS, mean, max or last-token pooling, and `sentence_bert_config.json` the longest input. A plain
transformers model gets mean pooling over the attention mask and no normalisation.

Requests wait in a bounded queue (503 UNAVAILABLE with RetryInfo when it is full). One worker thread takes what
arrives within a few milliseconds of the first request, up to `max_batch_size` texts, and encodes it in passes of
similar-length texts, so concurrent single-text requests share forward passes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.errors import Failure, Overloaded
from ..engines.loading import EngineLoadError, device_and_dtype, load_failed, model_name, options_from

log = logging.getLogger("pollux.embeddings.hf")

_POOLING_MODES = {  # sentence-transformers' pooling config keys → our names
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_lasttoken": "last",
}


@dataclass(frozen=True)
class EmbedOptions:
    """How to load and run one encoder. `source` is `hf:ORG/NAME` (the hub, through its cache) or a local directory."""

    source: str
    device: str = "auto"          # auto: cuda if present, else cpu
    dtype: str = "auto"           # auto: float16 on a GPU, else float32
    trust_remote_code: bool = False
    revision: str | None = None
    max_batch_size: int = 64      # texts encoded in one forward pass
    max_queue: int = 256          # requests waiting, then 503
    batch_wait_ms: float = 5.0    # a batch closes when no request has arrived for this long...
    batch_max_wait_ms: float = 50.0  # ...or this long after its first request
    threads: int = 0              # torch threads; 0: all cores but one, which stays free for HTTP

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> EmbedOptions:
        return options_from(cls, options, "transformers embedding")


@dataclass(frozen=True)
class Layout:
    """What sentence-transformers' files say about a model."""

    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None
    lower_case: bool = False


def _reader(options: EmbedOptions) -> tuple[str, Any]:
    """The name to give `from_pretrained`, and a function reading a JSON file of the model (None when absent)."""
    source = options.source
    if source.startswith("hf:"):
        repo = model_name(source)  # checks the hub id first: the reads below would each retry an unreachable hub

        def read_hub(filename: str) -> Any:
            from huggingface_hub import hf_hub_download
            try:
                return json.loads(Path(hf_hub_download(repo, filename, revision=options.revision)).read_text())
            except Exception:  # noqa: BLE001 - absent from the repo (or not cached offline): not an ST file
                return None

        return repo, read_hub
    path = Path(model_name(source))

    def read_local(filename: str) -> Any:
        file = path / filename
        return json.loads(file.read_text()) if file.is_file() else None

    return str(path), read_local


def read_layout(read: Any) -> Layout:
    modules = read("modules.json") or []
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
    unsupported = set(kinds) - {"Transformer", "Pooling", "Normalize"}
    if unsupported:
        # A Dense or other layer would change the vectors; serving them without it would be silently wrong.
        raise EngineLoadError(f"sentence-transformers module(s) {sorted(unsupported)} are not supported "
                              "(supported: Transformer, Pooling, Normalize)")
    pooling = "mean"
    if "Pooling" in kinds:
        config = read(f"{kinds['Pooling'].get('path') or '1_Pooling'}/config.json") or {}
        modes = [name for key, name in _POOLING_MODES.items() if config.get(key)]
        if len(modes) > 1:
            raise EngineLoadError(f"pooling with several modes at once ({', '.join(modes)}) is not supported")
        if config.get("pooling_mode_weightedmean_tokens"):
            raise EngineLoadError("weighted-mean pooling is not supported")
        pooling = modes[0] if modes else "mean"
    st = read("sentence_bert_config.json") or {}
    return Layout(pooling=pooling, normalize="Normalize" in kinds,
                  max_seq_length=st.get("max_seq_length"), lower_case=bool(st.get("do_lower_case")))


def _load(options: EmbedOptions) -> tuple[Any, Any, Layout, str]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    name, read = _reader(options)
    layout = read_layout(read)
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code, "revision": options.revision}
    device, dtype = device_and_dtype(options.device, options.dtype, "float16")
    log.info("loading embedding model %s on %s (%s, %s pooling%s)", name, device, dtype, layout.pooling,
             ", normalised" if layout.normalize else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModel.from_pretrained(name, dtype=getattr(torch, dtype), **kwargs)
    except OSError as exc:
        raise load_failed(name, exc) from None
    model.to(device).eval()
    tokenizer.padding_side = "right"  # last-token pooling reads the last unmasked position
    return model, tokenizer, layout, device


@dataclass
class _Job:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def finish(self, result: np.ndarray | BaseException) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


class TransformersEmbedder:
    name = "transformers"

    def __init__(self, options: EmbedOptions, model: Any = None, tokenizer: Any = None,
                 layout: Layout | None = None, device: str = "cpu") -> None:
        self.options = options
        if model is None:
            model, tokenizer, layout, device = _load(options)
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.layout = layout or Layout()
        config = model.config
        self.dimension = int(config.hidden_size)
        limits = [n for n in (self.layout.max_seq_length, getattr(config, "max_position_embeddings", None),
                              getattr(tokenizer, "model_max_length", None)) if n and n < 1_000_000]
        self.input_token_limit = int(min(limits)) if limits else 512
        # Counting runs on the event loop (or, for long texts, in a thread) while the worker encodes: a call sets
        # padding and truncation state on a fast tokenizer, so counting has a copy of its own, used one at a time.
        self._counter = copy.deepcopy(tokenizer)
        self._counter_lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="pollux-embed", daemon=True)
        self._worker.start()

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._worker.join, 10)

    def _prepare(self, text: str) -> str:
        return text.lower() if self.layout.lower_case else text

    async def dimensions(self) -> int:
        return self.dimension

    async def count_tokens(self, texts: list[str]) -> list[int]:
        if sum(len(t) for t in texts) > 100_000:  # tokenizing takes a while: not on the event loop
            return await asyncio.to_thread(self.count_now, texts)
        return self.count_now(texts)

    def count_now(self, texts: list[str]) -> list[int]:
        with self._counter_lock:
            encoded = self._counter([self._prepare(t) for t in texts], add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    async def embed(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop, loop.create_future())
        with self._pending_lock:
            if self._pending >= self.options.max_queue:
                raise Overloaded(retry_after=1)
            self._pending += 1
        self._queue.put(job)
        try:
            return await job.future
        finally:
            job.cancelled.set()  # a caller that went away is skipped if its batch has not started

    # The worker -------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        import torch
        torch.set_num_threads(self.options.threads or max(1, (os.cpu_count() or 2) - 1))
        limit = self.options.max_batch_size
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size = [first], len(first.texts)
            # Gather while requests keep coming (a burst takes milliseconds to arrive through HTTP), but never
            # longer than `batch_max_wait_ms` after the first.
            start = time.monotonic()
            stop = False
            while size < limit:
                wait = min(self.options.batch_wait_ms,
                           self.options.batch_max_wait_ms - (time.monotonic() - start) * 1000)
                try:
                    job = self._queue.get(timeout=max(wait, 0) / 1000)
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
                size += len(job.texts)
            with self._pending_lock:
                self._pending -= len(batch)
            live = [j for j in batch if not j.cancelled.is_set()]
            log.debug("embedding batch: %d requests, %d texts", len(live), sum(len(j.texts) for j in live))
            try:
                vectors = self.encode([t for j in live for t in j.texts])
            except Exception as exc:  # reported to every request of the batch
                log.exception("embedding failed")
                for job in live:
                    job.finish(Failure(f"The model failed to embed: {exc}"))
            else:
                at = 0
                for job in live:
                    job.finish(vectors[at:at + len(job.texts)])
                    at += len(job.texts)
            if stop:
                return

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for `texts`, in passes of up to `max_batch_size` texts of similar length (less padding)."""
        import torch

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = self.options.max_batch_size
        with torch.inference_mode():
            for at in range(0, len(order), step):
                rows = order[at:at + step]
                encoded = self.tokenizer([self._prepare(texts[i]) for i in rows], padding=True, truncation=True,
                                         max_length=self.input_token_limit, return_tensors="pt").to(self.device)
                hidden = self.model(**encoded).last_hidden_state
                pooled = self._pool(hidden, encoded["attention_mask"])
                if self.layout.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
        return out

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        pooling = self.layout.pooling
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "last":
            last = mask.sum(dim=1) - 1  # right padding: the last real token
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if pooling == "max":
            return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        summed = (hidden * weights).sum(dim=1)
        counts = weights.sum(dim=1).clamp(min=1e-9)
        return summed / (counts.sqrt() if pooling == "mean_sqrt_len" else counts)
