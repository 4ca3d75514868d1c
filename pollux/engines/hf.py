"""Hugging Face models in-process (engine `transformers`): chat templates, continuous batching, streaming.

Requests join the model's shared batch (`batching.SharedBatch`, transformers' continuous batching) at its next step
and leave it as soon as they end, so no request waits for another's whole generation. Each request's
`decoding.Sequence` chooses its own tokens there: its sampling parameters, seed, grammar, thinking budget and stops.
A request with images joins it too, with its images encoded first (`batching.MediaTokens`), on the vision models
whose positions and image attention the batch reproduces (`_IMAGES_IN_BATCH`: Gemma 3, Qwen2-VL and 2.5-VL, LLaVA).
On the others, or with `media_in_batch = false`, it decodes beside the batch through `model.generate`, up to
`media_workers` at once, their forward passes taking turns in order, each between two of the batch's steps. Events go
back to each request's asyncio queue as they are made, so streams are token by token. A sequence whose step fails
(sampling, grammar, stops, detokenizing) ends with an error for its own request; the others decode on.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..admission import BUDGET, keep_step_blocks
from ..media import MediaError
from ..media.documents import DEFAULT_MAX_SIDE, PdfDocument
from ..media.probe import register_heif
from ..media.video import sample_frames
from .base import (Capabilities, Event, Finish, FunctionSpec, GenerateRequest, Media, Segment, Text, TokenCount,
                   ToolCall, ToolResult, Turn)
from .batching import CacheTooSmall, MediaTokens, SharedBatch
from .calls import CallIds
from .constrain import (GrammarError, TokenizerGrammars, choice_grammar, json_grammar, parameters_grammar,
                        tool_body_grammar, tool_call_grammar)
from .errors import Failure, InvalidInput, Overloaded, Unsupported
from .loading import EngineLoadError, device_and_dtype, load_failed, model_name, options_from, own_memory
from .prefixes import tenant_salt
from .decoding import (CLOSE_PROBE_LIMIT, HERMES, LLAMA3, MISTRAL, Sequence, SequenceParams, SpecialTokens, ToolFormat,
                       constrained_thinking_budget)

log = logging.getLogger("pollux.engines.hf")

MAX_VIDEO_FRAMES = 32  # frames of one video given to a vision model (each costs the model an image's tokens)
_END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "</s>")


@dataclass(frozen=True)
class HFOptions:
    """How to load and run one model. `source` is `hf:ORG/NAME` (the hub, through its cache) or a local directory."""

    source: str
    device: str = "auto"          # auto: cuda if present, else cpu
    dtype: str = "auto"           # auto: bfloat16 on a GPU that has it (else float16), float32 on the CPU
    trust_remote_code: bool = False
    revision: str | None = None
    max_batch_size: int = 32      # sequences decoded in one step
    max_queue: int = 64           # requests waiting beyond those (for a place, or for KV memory), then 503
    kv_cache_mb: int | None = None  # the KV cache's budget; None: on the CPU max_batch_size whole contexts, at most
                                    # 1024 MiB; on a GPU sized from the free memory
    max_batch_tokens: int | None = None  # tokens one step holds (long prompts prefill in chunks of it); CPU: 512
    threads: int = 0              # torch threads; 0: all cores but one, which stays free for HTTP
    media_workers: int = 4        # requests with images decoded at once beside the batch, taking turns per token
    media_in_batch: bool = True   # requests with images join the shared batch where the model allows it
    prefix_cache: bool = True     # prompts reuse the KV state of their project's earlier prompts (and context caches)
    decode_attention: str = "per-request"  # decode steps attend over each request's own keys; "library": the step's

    def __post_init__(self) -> None:
        if self.decode_attention not in ("per-request", "library"):
            raise ValueError(f"transformers engine option decode_attention must be \"per-request\" or \"library\", "
                             f"not {self.decode_attention!r}")
        for name in ("media_in_batch", "prefix_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"transformers engine option {name} must be true or false, not "
                                 f"{getattr(self, name)!r}")
        for name in ("max_batch_size", "kv_cache_mb", "max_batch_tokens", "media_workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"transformers engine option {name} must be a positive whole number, not {value!r}")
        if not isinstance(self.max_queue, int) or isinstance(self.max_queue, bool) or self.max_queue < 0:
            raise ValueError(f"transformers engine option max_queue must be a whole number, not {self.max_queue!r}")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> HFOptions:
        options = dict(options)
        for gone in _BEFORE_CONTINUOUS_BATCHING & set(options):
            log.warning("engine option %s no longer applies: requests join the running batch at its next step", gone)
            del options[gone]
        return options_from(cls, options, "transformers")


# Vision models whose requests with images join the shared batch, and what the batch must do for them beyond putting
# the images' embeddings in place: "both ways", open attention within each image (Gemma 3's tokens of one image see
# each other at prefill); "3-D positions", give the 3-D positions the model's `get_rope_index` computes (Qwen2-VL's
# M-RoPE) instead of the library's 1-D ones; "causal", nothing more (LLaVA). Other families decode beside the batch;
# one joins this list once a test shows its answers inside the batch equal `generate`'s.
_IMAGES_IN_BATCH = {"gemma3": "both ways", "qwen2_vl": "3-D positions", "qwen2_5_vl": "3-D positions",
                    "llava": "causal"}

# Options of the static batches this engine formed before continuous batching; a config that has them still loads.
_BEFORE_CONTINUOUS_BATCHING = {"batch_wait_ms", "batch_max_wait_ms", "workers"}


def _load(options: HFOptions) -> tuple[Any, Any, Any | None]:
    """(model, tokenizer, processor or None), on the chosen device and dtype."""
    import torch
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                              AutoTokenizer)

    name = model_name(options.source)
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code, "revision": options.revision}
    device, dtype = device_and_dtype(options.device, options.dtype,
                                     "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else "float16")
    log.info("loading %s on %s (%s)", name, device, dtype)
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
        multimodal = getattr(config, "vision_config", None) is not None
        if multimodal:
            processor = AutoProcessor.from_pretrained(name, **kwargs)
            tokenizer = processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(name, dtype=getattr(torch, dtype), **kwargs)
        else:
            processor = None
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype), **kwargs)
    except OSError as exc:
        raise load_failed(name, exc) from None
    model.to(device).eval()
    if device == "cpu":
        own_memory(model)
        keep_step_blocks()
    tokenizer.padding_side = "left"
    return model, tokenizer, processor


def _plain_backend(tokenizer: Any) -> Any | None:
    """The Rust tokenizer under a fast tokenizer whose `decode` adds nothing to it (no clean-up of spaces, no
    override): each token of each sequence is decoded twice, and transformers' wrapper costs three times the decode
    itself."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "_tokenizer", None)
    plain = (isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._decode is TokenizersBackend._decode
             and type(tokenizer).decode is TokenizersBackend.decode and not tokenizer.clean_up_tokenization_spaces)
    return backend if plain and backend is not None else None


def _token_id(tokenizer: Any, text: str) -> int | None:
    vocab = tokenizer.get_vocab()
    return vocab.get(text)



def _tool_format(tokenizer: Any, template: Any = None) -> ToolFormat | None:
    """The tool-call format the vocabulary's marker tokens give away (README, "Function calling formats"), laid out
    as the chat template writes calls (`template`: what renders it, the tokenizer or the processor)."""
    vocab = tokenizer.get_vocab()
    if "<tool_call>" in vocab and "</tool_call>" in vocab:
        fmt = ToolFormat(HERMES, vocab["<tool_call>"], vocab["</tool_call>"])
        markers = ("<tool_call>", "</tool_call>")
    elif "[TOOL_CALLS]" in vocab:
        fmt, markers = ToolFormat(MISTRAL, vocab["[TOOL_CALLS]"], None, many=True), ("[TOOL_CALLS]", None)
    elif "<|eom_id|>" in vocab and "<|python_tag|>" in vocab:
        fmt, markers = ToolFormat(LLAMA3, None, None, args_key="parameters"), (None, None)
    else:
        return None
    return _call_layout(template if template is not None else tokenizer, fmt, *markers)


_PROBE_ARGS = ({"pollux_probe": 1, "n": [1, 2]}, {"pollux_probe": 2, "n": [3, 4]})


def _call_layout(template: Any, fmt: ToolFormat, open_text: str | None, close_text: str | None) -> ToolFormat:
    """`fmt` as the chat template lays calls out: two probe calls rendered in an assistant turn show the text around
    the JSON (Qwen 2.5/3 put `<tool_call>` and the JSON on lines of their own), between calls, the JSON's separators
    and the key of the arguments. The model was trained on exactly this; a grammar that forbids it (a call on one
    line, say) pushes the model off what it knows. Whatever the probe cannot read keeps the format's defaults."""
    from dataclasses import replace

    user = {"role": "user", "content": "x"}
    calls = [{"type": "function", "id": f"pollux00{i}", "function": {"name": f"pollux_probe_{i}", "arguments": args}}
             for i, args in enumerate(_PROBE_ARGS)]
    text = None
    for count in (2, 1):  # some templates refuse parallel calls (Llama 3.1's)
        try:
            prompt = template.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
            text = template.apply_chat_template(
                [user, {"role": "assistant", "content": "", "tool_calls": calls[:count]}], tokenize=False)
            break
        except Exception:  # noqa: BLE001 - a template that cannot render the probe: the format as the vocabulary says
            log.debug("the chat template does not render %d tool calls", count, exc_info=True)
    if text is None:
        return fmt
    start = text.find("pollux_probe_0")
    if start == -1:
        return fmt
    decoder = json.JSONDecoder()
    changes: dict[str, Any] = {}
    if open_text is not None:
        marker = text.rfind(open_text, 0, start)
        if marker == -1:
            return fmt
        at = marker + len(open_text)
    else:  # the answer itself is the call: what comes between the generation prompt and the JSON
        if not text.startswith(prompt.rstrip()):
            return fmt
        at = len(prompt.rstrip())
    body = next((i for i in range(at, start) if text[i] in "{["), -1)
    if body == -1 or text[at:body].strip():
        return fmt
    if open_text is not None:
        changes["before"] = text[at:body]
    try:
        payload, end = decoder.raw_decode(text, body)
    except json.JSONDecodeError:
        return fmt
    first = payload[0] if isinstance(payload, list) and payload else payload
    if isinstance(first, dict):
        keys = [k for k, v in first.items() if v == _PROBE_ARGS[0]]
        if keys:
            changes["args_key"] = keys[0]
    for separators in ((", ", ": "), (",", ":"), (", ", ":"), (",", ": ")):
        if json.dumps(_PROBE_ARGS[0], separators=separators) in text[body:end]:
            changes["separators"] = separators
            break
    if close_text is not None:
        close = text.find(close_text, end)
        if close == -1 or text[end:close].strip():
            return replace(fmt, **changes)
        changes["after"] = text[end:close]
        following = text.find(open_text, close) if open_text else -1
        if following != -1 and not text[close + len(close_text):following].strip():
            changes["between"] = text[close + len(close_text):following]
    return replace(fmt, **changes)


def _allowed(request: GenerateRequest) -> list[tuple[str, dict[str, Any]]]:
    """(name, parameters schema) of the functions the request lets the model call."""
    return [(f.name, f.parameters or {}) for f in request.functions
            if not request.allowed_functions or f.name in request.allowed_functions]


def _prompt_functions(request: GenerateRequest) -> list[FunctionSpec]:
    """Mode NONE leaves the declarations out of the prompt: the model cannot call what it is not shown."""
    return request.functions if request.tool_mode != "NONE" else []


def _longest_run(ids: list[int], token: int) -> int:
    """The longest run of `token` in `ids` (an image's placeholder tokens)."""
    longest = run = 0
    for i in ids:
        run = run + 1 if i == token else 0
        longest = max(longest, run)
    return longest


def _failed(exc: Exception) -> Failure:
    return Failure(f"The model failed to generate: {exc}")


class _Turns:
    """The model's forward passes for requests with images: one at a time, in the order their threads ask (so each of
    several image requests gets a token in turn, and none waits for another's whole generation), each between two of
    the shared batch's steps (transformers' models are not safe to run from two threads at once)."""

    def __init__(self, batch: SharedBatch) -> None:
        self._batch = batch
        self._changed = threading.Condition()
        self._waiting: deque[int] = deque()
        self._holder: int | None = None
        self._resume: Callable[[], None] | None = None
        self.given = 0  # turns so far

    def take(self) -> None:
        me = threading.get_ident()
        with self._changed:
            if self._holder == me:
                return
            self._waiting.append(me)
            while self._holder is not None or self._waiting[0] != me:
                self._changed.wait()
            self._waiting.popleft()
            self._holder = me
            self.given += 1
        self._resume = self._batch.hold()

    def give(self) -> None:
        """End this thread's turn, if it has one (also after a forward pass that raised)."""
        me = threading.get_ident()
        with self._changed:
            if self._holder != me:
                return
            resume, self._resume = self._resume, None
        if resume is not None:
            resume()
        with self._changed:
            self._holder = None
            self._changed.notify_all()


def _step(seq: Sequence, logits: Any, best: tuple[int, float] | None = None) -> int | None:
    """One token of one sequence: chosen, then folded in. A failure ends this sequence alone (None)."""
    try:
        token = seq.choose(logits, best)
        seq.accept(token)
        return token
    except Exception as exc:  # noqa: BLE001 - whatever broke, it broke for this request only
        log.exception("a sequence failed; the others decode on")
        seq.fail(_failed(exc))
        return None


def _next_token(seq: Sequence, logits: Any, best: tuple[int, float]) -> int | None:
    """The token the shared batch feeds back for `seq`; None once the sequence is over (it then stops there)."""
    if seq.done:
        return None
    token = _step(seq, logits, best)
    return None if seq.done else token


def _ended(seq: Sequence, error: str | None) -> None:
    """The batch let the sequence go: if it had not ended itself, it failed (`error`) or ran out of room."""
    if seq.done:
        return
    if error:
        seq.fail(_failed(RuntimeError(error)))
        return
    try:
        seq.finish("MAX_TOKENS")
    except Exception as exc:  # noqa: BLE001 - a failure in the last text is this request's
        log.exception("a sequence failed to finish")
        seq.fail(_failed(exc))


@dataclass
class _Job:
    sequence: Sequence
    prompt_ids: list[int]
    images: list[Any]
    prompt_text: str
    media: MediaTokens | None = None  # the images, encoded, for a request that joins the shared batch
    cancelled: threading.Event = field(default_factory=threading.Event)


class TransformersEngine:
    name = "transformers"

    def __init__(self, options: HFOptions, model: Any = None, tokenizer: Any = None, processor: Any = None) -> None:
        self.options = options
        if model is None:
            model, tokenizer, processor = _load(options)
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.multimodal = processor is not None
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 0) or 8192
        # One sequence per candidate (seeded by its index); llguidance holds schemas and calls; usage is counted apart.
        self.capabilities = Capabilities(context_length=self.context_length, native_candidates=False,
                                         constrained_decoding=True, thinking_budget=True, reports_usage=False)
        vocab_size = int(getattr(config, "vocab_size", 0) or len(tokenizer))
        eos = set()
        for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            eos.update(source if isinstance(source, list) else [source] if source is not None else [])
        eos.update(i for t in _END_OF_TURN if (i := _token_id(tokenizer, t)) is not None)
        self.special = SpecialTokens(
            eos=frozenset(eos),
            think_open=_token_id(tokenizer, "<think>"), think_close=_token_id(tokenizer, "</think>"),
            tools=_tool_format(tokenizer, processor if self.multimodal else tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        self._grammars: TokenizerGrammars | None = None
        self._grammars_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._vocab_size = vocab_size
        self._backend = _plain_backend(tokenizer)
        self._reads_thinking = not self.multimodal or "enable_thinking" in str(processor.chat_template)
        import torch
        torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 2) - 1))
        # Python's switch interval stays at its default (5 ms): a shorter one (0.5 ms) made the batch's thread and the
        # event loop trade the interpreter's lock more often, and cost 1-15 % of the tokens a second (BENCHMARKS.md).
        images = _IMAGES_IN_BATCH.get(getattr(model.config, "model_type", ""))
        try:
            self._batch = SharedBatch(model, kv_cache_mb=options.kv_cache_mb, max_batch_size=options.max_batch_size,
                                      max_batch_tokens=options.max_batch_tokens, max_queue=options.max_queue,
                                      end_token=self.pad_id, context_length=self.context_length,
                                      images_both_ways=images == "both ways", prefix_sharing=options.prefix_cache,
                                      decode_per_request=options.decode_attention == "per-request")
        except CacheTooSmall as exc:
            raise EngineLoadError(str(exc)) from None
        self._rope_3d = images == "3-D positions"
        self._image_token = self._images_in_batch(images is not None)
        # A request's prompt and answer must fit in the KV cache, or the batch could never hold it.
        self.context_length = min(self.context_length, self._batch.capacity)
        self.capabilities = replace(self.capabilities, context_length=self.context_length,
                                    keeps_prefixes=self._batch.keeps_prefixes)
        # Requests with images: up to `media_workers` at once beside the batch, each in a thread of its own through
        # `model.generate`, their forward passes taking turns in order, each between two of the batch's steps.
        self._media: queue.Queue[_Job | None] = queue.Queue()
        self._media_pending = 0
        self._media_lock = threading.Lock()
        self._turns = _Turns(self._batch)
        self._media_workers = [threading.Thread(target=self._work, name=f"pollux-hf-media-{i}", daemon=True)
                               for i in range(options.media_workers)]
        self._media_threads = frozenset(self._media_workers)
        model.register_forward_pre_hook(self._take_turn)
        model.register_forward_hook(self._end_turn)
        for worker in self._media_workers:
            worker.start()

    def _images_in_batch(self, listed: bool) -> int | None:
        """The image placeholder token, when requests with images join the shared batch (None: they decode beside
        it)."""
        if not (self.multimodal and listed and self.options.media_in_batch):
            return None
        config = self.model.config
        token = getattr(config, "image_token_id", None)
        if token is None:
            token = getattr(config, "image_token_index", None)
        if token is None:
            return None
        self.model.register_forward_pre_hook(self._batch.merge_media, with_kwargs=True)
        return int(token)

    def stats(self) -> dict[str, Any]:
        """What the shared batch holds now (`SharedBatch.stats`)."""
        return self._batch.stats()

    async def close(self) -> None:
        for _ in self._media_workers:
            self._media.put(None)
        for worker in self._media_workers:
            await asyncio.to_thread(worker.join, 10)
        await self._batch.close()

    # Prompts ----------------------------------------------------------------------------------------------------
    def _messages(self, turns: list[Turn], system: list[Segment],
                  counting: bool = False) -> tuple[list[dict[str, Any]], list[Any]]:
        """Turns in the chat-template shape transformers uses; images decoded with Pillow. A PDF becomes its pages'
        text and, for a vision model, their rendered images. `counting` leaves media out (Gemini's accounting
        charges them apart) and decodes nothing."""
        messages: list[dict[str, Any]] = []
        images: list[Any] = []
        system_text = "\n".join(s.text for s in system if isinstance(s, Text))
        if system_text:
            messages.append({"role": "system", "content": system_text})
        ids = CallIds(lambda t, k, name: f"{t}.{k}.{name}", self._call_id)
        for t, turn in enumerate(turns):
            if turn.role == "model":
                msg: dict[str, Any] = {"role": "assistant", "content": ""}
                thoughts = [s.text for s in turn.segments if isinstance(s, Text) and s.thought]
                if thoughts:
                    msg["reasoning_content"] = "".join(thoughts)
                msg["content"] = "".join(s.text for s in turn.segments if isinstance(s, Text) and not s.thought)
                calls = [s for s in turn.segments if isinstance(s, ToolCall)]
                if calls:
                    msg["tool_calls"] = [{"type": "function", "id": ids.call(c, t, k), "function": {
                        "name": c.name, "arguments": c.args}} for k, c in enumerate(calls)]
                messages.append(msg)
                continue
            parts: list[dict[str, Any]] = []
            for seg in turn.segments:
                if isinstance(seg, ToolResult):
                    messages.append({"role": "tool", "name": seg.name, "tool_call_id": ids.result(seg),
                                     "content": json.dumps(seg.response, ensure_ascii=False)})
                elif isinstance(seg, Text) and not seg.thought:
                    parts.append({"type": "text", "text": seg.text})
                elif isinstance(seg, Media):
                    self._check_readable(seg)
                    if counting:
                        continue
                    if seg.modality == "VIDEO":
                        for frame in self._frames(seg):
                            parts.append({"type": "image"})
                            images.append(frame)
                    elif seg.modality == "DOCUMENT":
                        texts, pages = self._document(seg)
                        for text, page in zip(texts, pages or [None] * len(texts), strict=True):
                            if page is not None:
                                parts.append({"type": "image"})
                                images.append(page)
                            parts.append({"type": "text", "text": text})
                    else:
                        parts.append({"type": "image"})
                        images.append(self._image(seg))
            if parts:
                if images and self.multimodal:
                    messages.append({"role": "user", "content": parts})
                else:
                    messages.append({"role": "user", "content": "".join(p.get("text", "") for p in parts)})
        return messages, images

    def _call_id(self, call_id: str) -> str:
        """Call ids as the template accepts them: Mistral's insist on 9 alphanumeric characters."""
        if self.special.tools is not None and self.special.tools.name == MISTRAL and \
                not (len(call_id) == 9 and call_id.isalnum()):
            return hashlib.sha256(call_id.encode()).hexdigest()[:9]
        return call_id

    def _check_readable(self, media: Media) -> None:
        if media.modality not in ("IMAGE", "DOCUMENT", "VIDEO"):
            raise InvalidInput(f"This model cannot read {media.mime_type} input.")
        if media.modality in ("IMAGE", "VIDEO") and not self.multimodal:
            raise InvalidInput("This model cannot read images: it is a text-only model. Send text, or configure "
                               "a vision-language model for this model id.")

    def _image(self, media: Media) -> Any:
        from PIL import Image, UnidentifiedImageError
        register_heif()
        try:
            image = Image.open(io.BytesIO(media.read()))
            # Decoding and converting hold the pixels twice, 4 bytes each at most: claimed from the memory budget.
            with BUDGET.held(image.width * image.height * 8):
                image.load()
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInput(f"Unable to process input image: {exc}") from None

    def _frames(self, media: Media) -> list[Any]:
        """A video as a vision model sees it: frames sampled at videoMetadata.fps (1 a second by default), within its
        clip, at most MAX_VIDEO_FRAMES spread over the whole of it."""
        start, end = media.clip or (0.0, None)
        try:
            return sample_frames(media.path or media.data, fps=media.fps or 1.0, start=start, end=end,
                                 max_frames=MAX_VIDEO_FRAMES)
        except MediaError as exc:
            raise InvalidInput(f"Unable to process input video: {exc}") from None

    def _document(self, media: Media) -> tuple[list[str], list[Any] | None]:
        """Each page's native text, and its rendered image when the model can see."""
        with PdfDocument(media.path or media.data) as pdf:
            texts = [f"[page {i + 1}]\n{pdf.page_text(i)}\n\n" for i in range(pdf.page_count)]
            pages = None
            if self.multimodal:
                # Up to 1000 pages of 768-px RGB: claimed from the memory budget while they are rendered.
                with BUDGET.held(pdf.page_count * DEFAULT_MAX_SIDE * DEFAULT_MAX_SIDE * 3):
                    pages = [pdf.render_page(i) for i in range(pdf.page_count)]
        return texts, pages

    def _render(self, messages: list[dict[str, Any]], functions: list[FunctionSpec], thinking: bool) -> str:
        tools = [{"type": "function", "function": {"name": f.name, "description": f.description,
                                                   "parameters": f.parameters or {"type": "object", "properties": {}}}}
                 for f in functions] or None
        target = self.processor if self.multimodal else self.tokenizer
        # A processor takes a variable its template does not read for one of its own (and warns at each request).
        extra = {"enable_thinking": thinking} if self._reads_thinking else {}
        return target.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **extra)

    def _encode(self, text: str) -> list[int]:
        # Requests are prepared in threads, and a fast tokenizer's call may reset its truncation and padding state,
        # which fails with "Already borrowed" when two threads do it at once.
        with self._encode_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def count_tokens(self, request: GenerateRequest) -> TokenCount:
        return await asyncio.to_thread(self._count_tokens, request)

    def _count_tokens(self, request: GenerateRequest) -> TokenCount:
        """The rendered prompt's text tokens, as `generate` renders it (media: Gemini's accounting, in the
        service)."""
        messages, _ = self._messages(request.turns, request.system, counting=True)
        text_only = [m if isinstance(m.get("content"), str) else
                     {**m, "content": "".join(p.get("text", "") for p in m["content"])} for m in messages]
        return TokenCount({"TEXT": len(self._encode(self._render(text_only, _prompt_functions(request),
                                                                 thinking=request.thinking.enabled)))})

    # Generation -------------------------------------------------------------------------------------------------
    def _grammar_for(self, request: GenerateRequest) -> str | None:
        """The grammar of the whole answer; one that cannot be built is the request's 400."""
        try:
            if request.tool_mode == "ANY" and request.functions:
                if self.special.tools is None:
                    # A feature this model lacks, not a fault of the request's.
                    raise Unsupported("Function calling mode ANY is not available for this model: it writes tool "
                                      "calls in none of the formats Pollux reads (Hermes, Mistral, Llama 3).")
                self._check_parameters(request)
                return tool_call_grammar(_allowed(request), self.special.tools)
            fmt = request.response_format
            if fmt.kind == "json":
                return json_grammar(fmt.schema or {"type": "object"})
            if fmt.kind == "enum":
                return choice_grammar([str(v) for v in (fmt.schema or {}).get("enum", [])])
        except GrammarError as exc:
            raise InvalidInput(str(exc)) from None
        return None

    def _call_matchers(self, request: GenerateRequest) -> Callable[[], Any] | None:
        """Mode VALIDATED: the model may answer in text, but each call it opens must be valid for an allowed function."""
        if request.tool_mode != "VALIDATED" or not request.functions or self.special.tools is None:
            return None
        try:
            self._check_parameters(request)
            grammar = tool_body_grammar(_allowed(request), self.special.tools)
        except GrammarError as exc:
            raise InvalidInput(str(exc)) from None
        self._matcher(grammar)  # a schema llguidance cannot compile is the request's 400, before decoding starts
        return lambda: self._matcher(grammar)

    def _check_parameters(self, request: GenerateRequest) -> None:
        """Each callable function's parameters compile on their own (a 400 that names the function, if not)."""
        assert self.special.tools is not None
        for name, params in _allowed(request):
            what, grammar = parameters_grammar(name, params, self.special.tools)
            self._matcher(grammar, what)

    def _matcher(self, grammar: str, what: str = "response schema") -> Any:
        with self._grammars_lock:
            if self._grammars is None:
                self._grammars = TokenizerGrammars(self.tokenizer, self._vocab_size, sorted(self.special.eos))
        try:
            return self._grammars.matcher(grammar, what)
        except GrammarError as exc:
            raise InvalidInput(str(exc)) from None

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | BaseException] = asyncio.Queue()

        def emit(event: Event | BaseException) -> None:
            self._batch.post(loop, events.put_nowait, event)

        # Rendering, tokenizing and compiling grammars take a while on long prompts and large schemas: not on the loop.
        job = await asyncio.to_thread(self._job, request, emit)
        sequence = job.sequence
        rid = None
        cached = [0]  # prompt tokens the batch took from its prefix cache

        def matched(tokens: int) -> None:
            cached[0] = tokens

        if job.images and job.media is None:
            self._submit_media(job)
        else:
            rid = await self._batch.submit(job.prompt_ids, sequence.params.max_new_tokens,
                                           lambda row, best: _next_token(sequence, row, best),
                                           lambda error: _ended(sequence, error), job.media,
                                           tenant_salt(request.tenant), matched)
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, Finish):
                    yield replace(event, cached_tokens=cached[0]) if cached[0] else event
                    return
                yield event
        finally:
            if not sequence.done:
                sequence.cancel()
                job.cancelled.set()
                if rid is not None:
                    self._batch.cancel(rid)
                log.info("generation cancelled: the client went away")

    # Context caches -----------------------------------------------------------------------------------------------
    async def keep_prefix(self, request: GenerateRequest, key: str) -> int:
        """Prefill the request's prompt in the shared batch (one token is chosen, so that the library registers the
        prompt's blocks), then pin those blocks under `key` (`SharedBatch.pin`). Prompts with images are not kept:
        their blocks are never shared."""
        if not self._batch.keeps_prefixes:
            return 0
        prompt_ids = await asyncio.to_thread(self._text_prompt_ids, request)
        if prompt_ids is None or len(prompt_ids) >= self.context_length:
            return 0
        salt = tenant_salt(request.tenant)
        done = asyncio.Event()
        failed: list[str | None] = [None]

        chosen = False

        def step(row: Any, best: tuple[int, float]) -> int | None:
            nonlocal chosen
            if chosen:
                return None
            chosen = True
            # Not the end token: a request that ends at its first token has its blocks let go unregistered.
            return best[0] if best[0] != self.pad_id else (self.pad_id + 1) % self._vocab_size

        def ended(error: str | None) -> None:
            failed[0] = error
            done.set()

        rid = await self._batch.submit(prompt_ids, 2, step, ended, None, salt)
        try:
            await done.wait()
        finally:
            if not done.is_set():
                self._batch.cancel(rid)
        if failed[0]:
            log.warning("computing a context cache's prefix failed: %s", failed[0])
            return 0
        return await asyncio.to_thread(self._batch.pin, key, salt, prompt_ids)

    def keeps_prefix(self, key: str) -> bool:
        return self._batch.pinned(key)

    async def drop_prefix(self, key: str) -> None:
        await asyncio.to_thread(self._batch.unpin, key)

    def _text_prompt_ids(self, request: GenerateRequest) -> list[int] | None:
        """The request's prompt as `_job` tokenizes it; None when it holds images."""
        messages, images = self._messages(request.turns, request.system)
        if images:
            return None
        return self._encode(self._render(messages, _prompt_functions(request), thinking=request.thinking.enabled))

    def _job(self, request: GenerateRequest, emit: Callable[[Event | BaseException], None]) -> _Job:
        """The request as the worker decodes it: the rendered prompt's ids, its images, and the sequence's state."""
        thinking = request.thinking
        functions = _prompt_functions(request)
        messages, images = self._messages(request.turns, request.system)
        prompt = self._render(messages, functions, thinking=thinking.enabled)
        inputs = None
        if images and self._image_token is not None:
            # The processor writes each image's placeholder tokens into the prompt and prepares its pixels.
            inputs = self.processor(text=[prompt], images=[images], return_tensors="pt")
            prompt_ids = inputs["input_ids"][0].tolist()
            if _longest_run(prompt_ids, self._image_token) + self.options.max_batch_size > self._batch.step_tokens:
                # Each image must be whole in one step beside a full batch's decoding tokens (`batching._Scheduler`):
                # one larger than that decodes beside the batch.
                log.info("an image of the request is too large for one step of the shared batch: beside it")
                inputs = None
                prompt_ids = self._encode(prompt)
        else:
            prompt_ids = self._encode(prompt)
        if len(prompt_ids) >= self.context_length:
            raise InvalidInput(f"The input token count ({len(prompt_ids)}) exceeds the maximum number of tokens "
                               f"allowed ({self.context_length}).")
        grammar = self._grammar_for(request)
        matcher = self._matcher(grammar) if grammar else None
        s = request.sampling
        max_new_tokens = min(s.max_output_tokens, self.context_length - len(prompt_ids))
        budget = thinking.budget if thinking.enabled else 0
        if budget is None and matcher is not None:
            # Dynamic thinking leaves the answer room to follow its grammar (explicit budgets are the caller's).
            sight = min(max_new_tokens, CLOSE_PROBE_LIMIT)
            shortest = matcher.tokens_to_close(sight)
            if shortest is None and sight < max_new_tokens:
                shortest = sight + 1  # further than the probe looks, which is not yet more than the limit
            budget = constrained_thinking_budget(max_new_tokens, shortest)
        params = SequenceParams(
            temperature=s.temperature if s.temperature is not None else 1.0,
            top_p=s.top_p if s.top_p is not None else 1.0, top_k=s.top_k or 0,
            seed=s.seed * 1000 + request.candidate_index,
            max_new_tokens=max_new_tokens,
            stop_sequences=list(s.stop_sequences),
            presence_penalty=s.presence_penalty or 0.0, frequency_penalty=s.frequency_penalty or 0.0,
            logprobs=s.logprobs,
            thinking_budget=budget,
            starts_thinking=(thinking.enabled and self.special.think_open is not None
                             and prompt.rstrip().endswith("<think>")),
            tools=self._reads_calls(request, functions),
            tool_names=frozenset(f.name for f in functions
                                 if not request.allowed_functions or f.name in request.allowed_functions))
        sequence = Sequence(params, self.special, self._decode, emit, matcher,
                            self._call_matchers(request) if params.tools else None)
        media = self._encode_images(prompt_ids, inputs) if inputs is not None else None
        return _Job(sequence, prompt_ids, images, prompt, media)

    def _encode_images(self, prompt_ids: list[int], inputs: Any) -> MediaTokens:
        """The vision encoder's rows for the prompt's image tokens (and its 3-D positions, for a model that has them),
        computed between two steps of the shared batch (the model is not safe to run from two threads at once)."""
        import torch

        assert self._image_token is not None
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        grid = {"image_grid_thw": inputs["image_grid_thw"]} if "image_grid_thw" in inputs else {}
        self._turns.take()
        try:
            with torch.inference_mode():
                features = self.model.get_image_features(pixel_values=pixels, return_dict=True, **grid).pooler_output
                rope, delta = None, 0
                if self._rope_3d:
                    positions, deltas = self.model.model.get_rope_index(
                        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], **grid)
                    rope, delta = positions[:, 0].cpu(), int(deltas.flatten()[0])
        except Exception as exc:  # noqa: BLE001 - the model failed on this request's images
            raise _failed(exc) from None
        finally:
            self._turns.give()
        if isinstance(features, (list, tuple)):  # one tensor per image
            features = torch.cat(list(features))
        try:
            return MediaTokens.of(prompt_ids, self._image_token, features.reshape(-1, features.shape[-1]), rope, delta)
        except ValueError as exc:
            raise _failed(exc) from None

    def _reads_calls(self, request: GenerateRequest, functions: list[FunctionSpec]) -> bool:
        """Whether calls are read out of the answer. Under a response schema, a format without call markers cannot
        tell a call from the JSON answer (both start with "{"), and in mode VALIDATED the call's grammar and the
        schema's then leave no token at all: the answer is the answer, as in the marker formats, whose schema
        grammar has no room for a marker."""
        fmt = self.special.tools
        schema = request.response_format.kind != "text" and not (request.tool_mode == "ANY" and request.functions)
        return bool(functions) and not (schema and fmt is not None and fmt.open is None)

    def _decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _submit_media(self, job: _Job) -> None:
        with self._media_lock:
            if self._media_pending >= self.options.max_queue:
                raise Overloaded(retry_after=1)
            self._media_pending += 1
        self._media.put(job)

    # Requests with images ---------------------------------------------------------------------------------------
    def _take_turn(self, module: Any, args: Any) -> None:
        if threading.current_thread() in self._media_threads:
            self._turns.take()

    def _end_turn(self, module: Any, args: Any, output: Any) -> None:
        if threading.current_thread() in self._media_threads:
            self._turns.give()

    def _work(self) -> None:
        import torch
        torch.set_grad_enabled(False)
        while (job := self._media.get()) is not None:
            with self._media_lock:
                self._media_pending -= 1
            if job.cancelled.is_set():
                continue
            try:
                self._generate_alone(job)
            except Exception as exc:  # noqa: BLE001 - the model itself failed: this request
                log.exception("generation failed")
                job.sequence.fail(_failed(exc))
            finally:
                self._turns.give()  # a forward pass that raised did not reach its end-of-turn hook

    def _generate_alone(self, job: _Job) -> None:
        """One request with images through `model.generate`, its sequence choosing each token."""
        import torch
        from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                                  StoppingCriteriaList)

        sequence = job.sequence

        class Choose(LogitsProcessor):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
                chosen = torch.full_like(scores, float("-inf"))
                token = _step(sequence, scores[0].float().cpu()) if not sequence.done else None
                chosen[0, 0 if token is None else token] = 0.0
                return chosen

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                return torch.tensor([sequence.done], dtype=torch.bool, device=input_ids.device)

        inputs = self.processor(text=[job.prompt_text], images=[job.images], return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        config = GenerationConfig(max_new_tokens=sequence.params.max_new_tokens, do_sample=False,
                                  pad_token_id=self.pad_id, eos_token_id=sorted(self.special.eos))
        self.model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList([Choose()]),
                            stopping_criteria=StoppingCriteriaList([Stop()]))
        _ended(sequence, None)  # the model ran out of room before the sequence ended on its own
