"""What a generation produced, in domain terms: the native and OpenAI encoders both read these."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.base import TokenCount, TokenLogprob, ToolCall


@dataclass
class OutPart:
    """One part of a candidate: text (a thought summary when `thought`), a function call, or inline data (a
    picture: `data` of type `mime_type`); any may carry the signature of the reasoning behind it, and a part may be
    a bare signature."""

    text: str | None = None
    thought: bool = False
    call: ToolCall | None = None
    signature: str | None = None
    data: bytes | None = None
    mime_type: str | None = None


@dataclass
class Candidate:
    index: int
    parts: list[OutPart] = field(default_factory=list)
    finish: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    output_tokens: int = 0  # text and function calls
    image_tokens: int = 0   # pictures
    thought_tokens: int = 0
    thought: list[str] = field(default_factory=list)  # the whole reasoning, summarised or not, for the signature
    answer: list[str] = field(default_factory=list)   # the whole answer text, to check it against a schema
    signed: bool = False


@dataclass
class Usage:
    prompt: TokenCount
    output: int
    thoughts: int
    output_by_modality: dict[str, int] | None = None  # candidatesTokensDetails, when reported
    cached: int = 0  # prompt tokens read from a cache (cachedContentTokenCount); part of `prompt`
    cached_by_modality: dict[str, int] | None = None  # a context cache's, per modality (cacheTokensDetails)

    @property
    def total(self) -> int:
        return self.prompt.total + self.output + self.thoughts


@dataclass
class Chunk:
    """A candidate's contribution to one response: all of it, or what a stream chunk adds."""

    candidate: Candidate
    parts: list[OutPart]
    logprobs: list[TokenLogprob]


@dataclass
class Reply:
    """A whole response, or one chunk of a stream (usage is cumulative either way)."""

    chunks: list[Chunk]
    usage: Usage
    model_version: str
    response_id: str
