"""The engine interface: normalised turns in, events out. No HTTP and no Gemini JSON below this line.

Every engine (the built-in emulator, transformers in-process, vLLM upstreams) implements `Engine`.
`generate` is an async generator; closing it (the client went away) cancels the generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union

from ..media.probe import MediaInfo


# Inputs -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    text: str
    thought: bool = False


@dataclass(frozen=True)
class Media:
    """Inline or uploaded media, already validated and measured. `modality` is the usage-accounting bucket (IMAGE,
    AUDIO, VIDEO, DOCUMENT). Inline bytes are in `data`; an uploaded file's are at `path` (never read whole unless
    an engine needs them)."""

    mime_type: str
    modality: str
    data: bytes = b""
    uri: str | None = None
    path: Path | None = None
    info: MediaInfo | None = None  # size, pixels, pages, duration
    resolution: str | None = None  # Gemini's media resolution for this part (the part's own, else the request's)
    clip: tuple[float, float | None] | None = None  # videoMetadata: start and end offsets in seconds
    fps: float | None = None  # videoMetadata.fps: frames sampled per second

    def read(self) -> bytes:
        return self.data if self.path is None else self.path.read_bytes()

    def clip_seconds(self) -> float:
        """The length of audio or video that is read: the whole, or the videoMetadata clip."""
        duration = (self.info.duration if self.info else None) or 0.0
        if self.clip is None:
            return duration
        start, end = self.clip
        end = duration if end is None else min(end, duration)
        return max(end - start, 0.0)


@dataclass(frozen=True)
class ToolCall:
    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ToolResult:
    name: str
    response: dict[str, Any]
    id: str | None = None


Segment = Union[Text, Media, ToolCall, ToolResult]


@dataclass
class Turn:
    role: Literal["user", "model"]
    segments: list[Segment]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str
    parameters: dict[str, Any] | None  # JSON Schema (OpenAPI declarations are converted before they get here)


@dataclass
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int = 0
    max_output_tokens: int = 8192
    stop_sequences: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: int | None = None  # None: no log probabilities; N: the chosen token and the top N alternatives


@dataclass
class ResponseFormat:
    kind: Literal["text", "json", "enum"] = "text"
    schema: dict[str, Any] | None = None  # JSON Schema for "json"; {"enum": [...]} for "enum"


@dataclass
class Thinking:
    enabled: bool = False
    budget: int | None = None  # None = dynamic: the engine decides
    include_thoughts: bool = False


@dataclass
class GenerateRequest:
    model: str
    turns: list[Turn]
    system: list[Segment] = field(default_factory=list)
    functions: list[FunctionSpec] = field(default_factory=list)
    tool_mode: Literal["AUTO", "ANY", "NONE", "VALIDATED"] = "AUTO"
    allowed_functions: list[str] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    thinking: Thinking = field(default_factory=Thinking)
    candidate_index: int = 0
    stream: bool = False  # a hint: whole answers may come as one delta when nobody watches them arrive
    # Opaque, per project, made by the service (never by the client): an engine that keeps KV state between
    # requests (a prefix cache) keeps it apart per tenant, e.g. as vLLM's `cache_salt`.
    tenant: str | None = None
    # A batch job's request: an engine whose server schedules by priority may serve it after online requests.
    background: bool = False


# Events -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenLogprob:
    token: str
    token_id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...] = ()  # (token, id, logprob) of the most likely alternatives


@dataclass(frozen=True)
class TextDelta:
    text: str
    thought: bool = False
    tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token, when the request asked for them


@dataclass(frozen=True)
class CallEvent:
    call: ToolCall
    tokens: int = 0


@dataclass(frozen=True)
class ImageDelta:
    """A picture the candidate answers with (responseModalities IMAGE): encoded bytes, and the output tokens Gemini
    bills for it."""

    mime_type: str
    data: bytes
    tokens: int = 0


@dataclass(frozen=True)
class Usage:
    """The engine's own count of a generation, sent before its `Finish` by engines that report usage (upstream
    servers do): then the service needs no separate token count. `output_tokens` includes `thought_tokens`."""

    prompt_tokens: int
    output_tokens: int
    thought_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the engine's prefix cache


@dataclass(frozen=True)
class Finish:
    reason: str  # a Gemini FinishReason name: STOP, MAX_TOKENS, ...
    cached_tokens: int = 0  # prompt tokens taken from the engine's prefix cache (engines that report no `Usage`)


Event = Union[TextDelta, CallEvent, ImageDelta, Usage, Finish]


@dataclass
class TokenCount:
    """Prompt tokens per modality (TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT)."""

    by_modality: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_modality.values())


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, declared rather than guessed from its attributes."""

    context_length: int | None = None  # the most tokens a request may hold; None: the catalogue's limits stand
    # Answers `candidateCount` > 1 in one call, `generate_candidates(request, n)` → (candidate index, event)
    # pairs; else the service runs one `generate` per candidate.
    native_candidates: bool = False
    constrained_decoding: bool = True  # schemas and forced calls are held by a grammar (else checked afterwards)
    thinking_budget: bool = True       # honours a thinking budget
    reports_usage: bool = False        # every generation ends with a `Usage` event: no count before it is needed
    counts_media: bool = False         # its counts include the media it reads (else Gemini's media accounting is
                                       # added by the service)
    keeps_prefixes: bool = False       # a `PrefixKeeper`: a context cache's prefix is computed ahead and kept


class Engine(Protocol):
    name: str
    capabilities: Capabilities

    def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        """Stream events; the last one is a `Finish`. Thought text arrives as `TextDelta(thought=True)`."""
        ...

    async def count_tokens(self, request: GenerateRequest) -> TokenCount:
        """The prompt tokens `generate(request)` would read: countTokens and usageMetadata agree."""
        ...

    async def close(self) -> None: ...


class PrefixKeeper(Protocol):
    """An engine that keeps prompt prefixes ready (declared by `Capabilities.keeps_prefixes`): the contents of a
    context cache are computed when the cache is made, and kept, so that a request starting with them reads them
    instead of computing them. Keys are the service's; what is kept stays the request's tenant's."""

    async def keep_prefix(self, request: GenerateRequest, key: str) -> int:
        """Compute `request`'s prompt (no answer) and keep its state under `key` until `drop_prefix(key)`, or until
        memory is needed; returns the tokens kept (0: none)."""
        ...

    def keeps_prefix(self, key: str) -> bool:
        """Whether `key`'s prefix is kept now."""
        ...

    async def drop_prefix(self, key: str) -> None: ...
