"""The built-in model: deterministic answers that follow Gemini's semantics, with no weights.

Same request and seed, same bytes. It answers in text derived from the conversation, makes JSON that validates
against the requested schema, calls the functions the conversation points to with schema-valid arguments,
"thinks" within the budget, and honours maxOutputTokens and stop sequences. Fixtures script exact answers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import logging
import random
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..errors import ApiError
from ..schemas import SchemaMismatch, instance_for, validate_instance, words_of
from .accounting import clip_seconds, media_tokens
from .base import (CallEvent, Event, Finish, FunctionSpec, GenerateRequest, Media, Segment, Text, TextDelta,
                   TokenCount, TokenLogprob, ToolCall, ToolResult, Turn)
from .fixtures import Rule, Scripted, find

log = logging.getLogger("pollux.engines.emulator")

# A token is a short run of word characters or one symbol, with the whitespace before it: about 4 characters of
# English per token, like Gemini's. Joining the tokens gives the text back exactly, so truncation is exact.
_TOKEN = re.compile(r"\s*(?:\w{1,5}|[^\w\s])|\s+")

_FILLER = (
    "This answer comes from the Pollux emulator, a deterministic stand-in for a real model.",
    "It repeats the same words for the same request and seed, so tests can rely on them.",
    "Point Pollux at real weights to get real answers.",
    "The emulator follows the request's limits, schemas and tools as a real model would.",
    "Each sentence here is chosen from a fixed list by a seeded generator.",
    "Streaming splits this text into several chunks.",
)


_THINKING_STEPS = (
    "I should work out what is being asked and which facts matter.",
    "I will check the constraints of the request before I answer.",
    "Then I will write the answer plainly and keep it short.",
)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


@functools.cache
def _fixed(sentence: str) -> tuple[str, ...]:
    """The tokens of one of the emulator's own sentences, after a space: tokenized once, not per request."""
    return tuple(tokenize(" " + sentence))


def token_id(token: str) -> int:
    """A stable id for a token: the emulator has no vocabulary, so ids are hashes."""
    return zlib.crc32(token.encode()) & 0xFFFFF


def count_text(text: str, most: int | None = None) -> int:
    """The text's tokens, or `most` + 1 when there are more (a limit check need not count 100 MB)."""
    # No list: a 100 MB prompt would make one of 1.5 GB.
    return sum(1 for _ in itertools.islice(_TOKEN.finditer(text), None if most is None else most + 1))


def _segment_tokens(seg: Segment, model: str) -> tuple[str, int]:
    if isinstance(seg, Text):
        return "TEXT", count_text(seg.text)
    if isinstance(seg, ToolCall):
        return "TEXT", count_text(seg.name + json.dumps(seg.args, sort_keys=True))
    if isinstance(seg, ToolResult):
        return "TEXT", count_text(seg.name + json.dumps(seg.response, sort_keys=True))
    return media_tokens(seg, model)


class EmulatorEngine:
    name = "emulator"

    def __init__(self, fixtures: list[Rule] | None = None, stream_delay: float = 0.0, chunk_tokens: int = 8) -> None:
        self.fixtures = fixtures or []
        self.stream_delay = stream_delay
        self.chunk_tokens = chunk_tokens

    async def close(self) -> None:
        pass

    async def count_tokens(self, request: GenerateRequest) -> TokenCount:
        segments = [s for t in request.turns for s in t.segments] + list(request.system)
        chars = sum(len(s.text) for s in segments if isinstance(s, Text))
        if chars > 1_000_000:  # a long prompt takes a second or more to count: not on the event loop
            return await asyncio.to_thread(self._count_tokens, request, segments)
        return self._count_tokens(request, segments)

    def _count_tokens(self, request: GenerateRequest, segments: list[Segment]) -> TokenCount:
        counts: dict[str, int] = {}
        for seg in segments:
            modality, n = _segment_tokens(seg, request.model)
            counts[modality] = counts.get(modality, 0) + n
        for fn in request.functions:
            n = count_text(fn.name + " " + fn.description + json.dumps(fn.parameters or {}, sort_keys=True))
            counts["TEXT"] = counts.get("TEXT", 0) + n
        return TokenCount({k: v for k, v in counts.items() if v})

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        try:
            events = self._events(request)
            if request.response_format.kind == "json" or request.functions:
                # Values made from a schema can take a good part of a second: not on the event loop.
                events = iter(await asyncio.to_thread(list, events))
            for event in events:
                if self.stream_delay and isinstance(event, TextDelta):
                    # `stream_delay` paces every chunk of `chunk_tokens`; a whole answer waits for all of them at once.
                    chunks = 1 if request.stream else -(-event.tokens // self.chunk_tokens)
                    await asyncio.sleep(self.stream_delay * chunks)
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            log.info("emulator generation cancelled before its end")
            raise

    def _events(self, request: GenerateRequest) -> Iterator[Event]:
        """The whole generation, computed synchronously; `generate` paces it and keeps heavy ones off the loop."""
        rng = random.Random(_fingerprint(request))
        last_text = _last_user_text(request.turns)
        scripted = find(self.fixtures, request.model, last_text)
        if scripted and scripted.error:
            err = scripted.error
            raise ApiError(err.get("status", "INTERNAL"), err.get("message", "Scripted error."), code=err.get("code"))

        budget = request.sampling.max_output_tokens
        if request.thinking.enabled:
            thought_tokens = _thought(request, last_text, scripted, rng)
            if request.thinking.budget is not None:
                thought_tokens = thought_tokens[:max(request.thinking.budget, 0)]
            thought_tokens = thought_tokens[:budget]
            budget -= len(thought_tokens)
            yield from self._chunks(request, thought_tokens, thought=True, logprobs=None)
            if budget <= 0:
                yield Finish("MAX_TOKENS")
                return

        calls = _function_calls(request, last_text, scripted, rng)
        if calls:
            for call in calls:
                yield CallEvent(call, tokens=_segment_tokens(call, request.model)[1])
            yield Finish("STOP")
            return

        tokens = _answer(request, last_text, scripted, rng)
        reason = "STOP"
        stops = [s for s in request.sampling.stop_sequences if s]
        if stops:
            answer = "".join(tokens)
            cut = min((answer.index(s) for s in stops if s in answer), default=len(answer))
            tokens = tokenize(answer[:cut])
        if len(tokens) > budget:
            tokens, reason = tokens[:budget], "MAX_TOKENS"
        yield from self._chunks(request, tokens, thought=False, logprobs=request.sampling.logprobs)
        yield Finish(reason)

    def _chunks(self, request: GenerateRequest, tokens: list[str], thought: bool,
                logprobs: int | None) -> Iterator[TextDelta]:
        size = self.chunk_tokens if request.stream else max(len(tokens), 1)
        for i in range(0, len(tokens), size):
            chunk = tokens[i:i + size]
            # A deterministic model gives each token it emits probability 1, and no alternative a chance.
            probs = tuple(TokenLogprob(t, token_id(t), 0.0, ((t, token_id(t), 0.0),) if logprobs else ())
                          for t in chunk) if logprobs is not None else ()
            yield TextDelta("".join(chunk), thought=thought, tokens=len(chunk), logprobs=probs)


def _fingerprint(request: GenerateRequest) -> int:
    """A seed for the request's random choices: the conversation, the model, the seed and the candidate."""
    h = hashlib.blake2b(f"{request.model}|{request.sampling.seed}|{request.candidate_index}".encode(), digest_size=8)
    for turn in request.turns:
        h.update(b"\x00" + turn.role.encode())
        for seg in turn.segments:
            if isinstance(seg, Text):
                h.update(b"\x01" + seg.text.encode())
            elif isinstance(seg, Media):
                h.update(f"\x02{seg.mime_type}{seg.uri}".encode() + hashlib.blake2b(seg.data, digest_size=8).digest())
            else:
                h.update(b"\x03" + json.dumps(seg.__dict__, sort_keys=True, default=str).encode())
    return int.from_bytes(h.digest(), "big")


def _last_user_text(turns: list[Turn]) -> str:
    for turn in reversed(turns):
        if turn.role == "user":
            texts = [s.text for s in turn.segments if isinstance(s, Text) and not s.thought]
            if texts or any(isinstance(s, ToolResult) for s in turn.segments):
                return "\n".join(texts)
    return ""


def _pending_results(turns: list[Turn]) -> list[ToolResult]:
    """Function results in the last user turn: the model now answers with them."""
    if not turns or turns[-1].role != "user":
        return []
    return [s for s in turns[-1].segments if isinstance(s, ToolResult)]


def _thought(request: GenerateRequest, last_text: str, scripted: Scripted | None,
             rng: random.Random) -> list[str]:
    if scripted and scripted.thought:
        return tokenize(scripted.thought)
    topic = " ".join(last_text.split()[:12]) or "the conversation so far"
    tokens = tokenize(f"**Understanding the request**\n\nThe user wrote: \"{topic}\".")
    steps = list(_THINKING_STEPS)
    if request.functions and request.tool_mode != "NONE":
        steps.append("Some tools are available, so I will consider whether one of them fits.")
    steps += rng.sample(_FILLER, 2)
    for step in steps:
        tokens += _fixed(step)
    return tokens


def _callable(request: GenerateRequest) -> list[FunctionSpec]:
    if request.tool_mode == "NONE":
        return []
    allowed = request.allowed_functions
    return [f for f in request.functions if not allowed or f.name in allowed]


def _function_calls(request: GenerateRequest, last_text: str, scripted: Scripted | None,
                    rng: random.Random) -> list[ToolCall]:
    functions = _callable(request)
    forced = request.tool_mode == "ANY"
    # After a function's result the model answers with it (unless it must call again); NONE never calls.
    if request.tool_mode == "NONE" or _pending_results(request.turns) and not forced:
        return []
    if scripted is not None:
        allowed = request.allowed_functions
        return [ToolCall(c["name"], dict(c.get("args") or {}), c.get("id") or _call_id(rng))
                for c in scripted.function_calls if not allowed or c["name"] in allowed]
    if not functions:
        return []
    wanted = [f for f in functions if _points_to(f, last_text)]
    if not wanted and forced:
        wanted = [functions[0]]
    return [ToolCall(f.name, _arguments(f, rng, last_text), _call_id(rng)) for f in wanted]


def _points_to(fn: FunctionSpec, text: str) -> bool:
    """Whether the user's words name the function, or share a word with its name (e.g. "weather" for get_weather)."""
    lowered = text.lower()
    if fn.name.lower() in lowered:
        return True
    name_words = {w for w in re.split(r"[_\W\d]+|(?<=[a-z])(?=[A-Z])", fn.name) if len(w) >= 4}
    text_words = set(words_of(text))
    return any(w.lower() in text_words for w in name_words)


def _proper_nouns(text: str) -> list[str]:
    """Capitalised words that do not start a sentence: names and places."""
    return list(dict.fromkeys(re.findall(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)*\b", text.strip())))


def _prompt_words(text: str) -> list[str]:
    """Names first, then the other words: string values read like the prompt."""
    proper = _proper_nouns(text)
    return proper + [w for w in words_of(text) if w.capitalize() not in proper]


def _arguments(fn: FunctionSpec, rng: random.Random, text: str) -> dict[str, Any]:
    schema = fn.parameters or {"type": "object", "properties": {}}
    try:
        args = instance_for(schema, rng, _prompt_words(text))
    except SchemaMismatch as exc:
        raise ApiError.invalid(f"Function {fn.name}: its parameters schema cannot be satisfied: {exc}") from None
    if not isinstance(args, dict):
        return {}
    # Free-text arguments take the names the prompt mentions ("Boston"), as a model would.
    names = _proper_nouns(text)
    free = [k for k, sub in (schema.get("properties") or {}).items()
            if k in args and isinstance(sub, dict) and sub.get("type") == "string"
            and not set(sub) & {"enum", "const", "pattern", "format"}]
    if names and free:
        named = {**args, **{k: names[i % len(names)] for i, k in enumerate(free)}}
        try:
            validate_instance(named, schema)
            return named
        except SchemaMismatch:
            pass
    return args


def _call_id(rng: random.Random) -> str:
    return "call-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))


def _answer(request: GenerateRequest, last_text: str, scripted: Scripted | None,
            rng: random.Random) -> list[str]:
    """The answer's tokens."""
    fmt = request.response_format
    if scripted and scripted.text is not None:
        return tokenize(scripted.text)
    if fmt.kind == "enum":
        values = (fmt.schema or {}).get("enum") or [""]
        return tokenize(str(rng.choice(values)))
    if fmt.kind == "json":
        try:
            value = instance_for(fmt.schema or {"type": "object"}, rng, _prompt_words(last_text))
        except SchemaMismatch as exc:
            raise ApiError.invalid(f"The response schema cannot be satisfied: {exc}") from None
        return tokenize(json.dumps(value, ensure_ascii=False))
    results = _pending_results(request.turns)
    if results:
        return tokenize(" ".join(f"The {r.name} function returned {_describe(r.response)}." for r in results))
    return _prose(request, last_text, rng)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) == {"result"} or set(value) == {"output"}:
            return _describe(next(iter(value.values())))
        return ", ".join(f"{k} {_describe(v)}" for k, v in value.items()) or "nothing"
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def _prose(request: GenerateRequest, last_text: str, rng: random.Random) -> list[str]:
    snippet = " ".join(last_text.split()[:16])
    opening = f'You asked: "{snippet}".' if snippet else "Hello."
    media = [s for t in request.turns[-1:] for s in t.segments if isinstance(s, Media)]
    if media:
        listed = ", ".join(f"{describe(m)}" for m in media)
        opening += f" I received {len(media)} attachment{'s' if len(media) > 1 else ''}: {listed}."
    tokens = tokenize(opening)
    for sentence in rng.sample(_FILLER, rng.randint(2, 4)):
        tokens += _fixed(sentence)
    return tokens


def describe(media: Media) -> str:
    """What a segment is, in words: the emulator tells apps what it received."""
    info = media.info
    what = f"{media.mime_type}, {info.size_bytes if info else len(media.data)} bytes"
    if info is not None:
        if info.pages is not None:
            what += f", {info.pages} page{'s' if info.pages != 1 else ''}"
        if info.width and info.height:
            what += f", {info.width}x{info.height}"
        if info.duration is not None:
            what += f", {clip_seconds(media):.1f} s"
    return what
