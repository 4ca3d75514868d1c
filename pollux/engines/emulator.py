"""The built-in model: deterministic answers that follow Gemini's semantics, with no weights.

Same request and seed, same bytes. It answers in text derived from the conversation, makes JSON that validates
against the requested schema, calls the functions the prompt names with schema-valid arguments (turn after turn,
until each has answered, so agent loops run offline), "thinks" within the budget, and honours maxOutputTokens and
stop sequences. Fixtures script exact answers.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import itertools
import json
import logging
import math
import random
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from ..schemas import SchemaMismatch, instance_for, validate_instance, words_of
from .base import (CallEvent, Capabilities, Event, Finish, FunctionSpec, GenerateRequest, Media, Segment, Text,
                   TextDelta, TokenCount, TokenLogprob, ToolCall, ToolResult, Turn)
from .errors import InvalidInput
from .errors import Scripted as ScriptedError
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
    return "TEXT", 0  # media: Gemini's accounting, added by the service


class EmulatorEngine:
    name = "emulator"
    # No context of its own (the catalogue's limits stand); schemas and calls are made to fit, thinking is budgeted.
    capabilities = Capabilities(context_length=None, native_candidates=False, constrained_decoding=True,
                                thinking_budget=True, reports_usage=False)

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
            raise ScriptedError(err.get("status", "INTERNAL"), err.get("message", "Scripted error."), err.get("code"))

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

        # A prompt that a fixture answers belongs to the fixture: the model adds no calls of its own to its episode.
        prompt_scripted = False
        if request.functions and self.fixtures:
            prompt = _episode(request.turns).prompt
            rule = scripted if prompt == last_text else find(self.fixtures, request.model, prompt)
            prompt_scripted = rule is not None
        calls = _function_calls(request, scripted, prompt_scripted, rng)
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


# Function calling ---------------------------------------------------------------------------------------------------
# The emulator plans the calls of an "episode": the last user turn with text (the prompt) and the turns after it,
# where the model's calls and the client's function responses go back and forth (automatic function calling does
# this by itself). Each function the prompt names is called once an episode, in the order the prompt names them;
# a function named after "then" waits for the results of those named before it. When every named function has
# been called, the model answers in text from the responses.

_MAX_CALLS_PER_FUNCTION = 16  # one call per place the prompt names, but a long list of names is not 1,000 calls
# Words that put the functions after them in a later step ("find my location, then get the weather there").
_CHAIN = re.compile(r"\b(?:then|after that|afterwards)\b", re.IGNORECASE)
# A number on its own ("1000", "-2.5", "1,000"), not part of a word, a version or a run of digits too long to be exact.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d{1,15})(?:\.\d{1,15})?(?![\w.]*\w)")
# Names: capitalised words that do not start a sentence or a line (the parts of a turn are lines of its text),
# and absolute paths or URLs ("list /tmp/work").
_PROPER = re.compile(r"https?://[^\s\"'<>]*[^\s\"'<>.,;:!?)]|(?<![\w/.~])/[\w.\-]+(?:/[\w.\-]+)*/?"
                     r"|(?<![.!?]\s)(?<!^)(?<!\n)\b[A-Z][a-zA-Z]+(?:[ \t][A-Z][a-zA-Z]+)*\b")
_NAME_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class _Planned:
    """One named function: the step it belongs to, and the names and numbers the prompt gives it."""

    fn: FunctionSpec
    step: int
    names: tuple[str, ...]
    numbers: tuple[int | float, ...]


@dataclass
class _Episode:
    prompt: str  # the last text of the last user turn with text
    called: set[str]  # functions the model called, or the client answered, since the prompt
    results: list[ToolResult]  # the function responses since the prompt (its own turn included), in order


def _episode(turns: list[Turn]) -> _Episode:
    start = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "user"
                  and any(isinstance(s, Text) and not s.thought for s in turns[i].segments)), -1)
    # The prompt is the turn's last text: clients such as the Gemini CLI send their context (the date, a directory
    # listing) as earlier parts of the same turn, and what that context mentions is not a request to call anything.
    prompt = "" if start < 0 else next(
        s.text for s in reversed(turns[start].segments) if isinstance(s, Text) and not s.thought)
    segments = [s for t in turns[max(start, 0):] for s in t.segments if isinstance(s, (ToolCall, ToolResult))]
    return _Episode(prompt, {s.name for s in segments}, [s for s in segments if isinstance(s, ToolResult)])


def _function_calls(request: GenerateRequest, scripted: Scripted | None, prompt_scripted: bool,
                    rng: random.Random) -> list[ToolCall]:
    """The calls of this turn: none with mode NONE; a fixture's when one answers the request; else the named
    functions of the episode's next step that have not been called yet; with mode ANY, the first function when
    nothing is named or left."""
    if request.tool_mode == "NONE":
        return []
    forced = request.tool_mode == "ANY"
    if scripted is not None and (forced or not _pending_results(request.turns)):
        allowed = request.allowed_functions
        return [ToolCall(c["name"], dict(c.get("args") or {}), c.get("id") or _call_id(rng))
                for c in scripted.function_calls if not allowed or c["name"] in allowed]
    functions = _callable(request)
    if not functions:
        return []
    episode = _episode(request.turns)
    # A prompt a fixture answered is the fixture's: its calls were the whole plan, so the model now answers.
    plan = [] if prompt_scripted else _plan(functions, episode.prompt)
    left = [p for p in plan if p.fn.name not in episode.called]
    if left:
        step = min(p.step for p in left)
        # A later step reads the responses of the step just before it ("find my location, then ... there").
        before = {p.fn.name for p in plan if p.step == max((q.step for q in plan if q.step < step), default=-1)}
        inputs = [r for r in episode.results if r.name in before] or episode.results
        return [call for p in left if p.step == step for call in _calls_for(p, episode.prompt, inputs, rng)]
    if forced:  # ANY must call, whatever is left: the first allowed function, as a model made to would
        return [ToolCall(functions[0].name, _arguments(functions[0], rng, episode.prompt), _call_id(rng))]
    return []


def _calls_for(planned: _Planned, prompt: str, inputs: list[ToolResult], rng: random.Random) -> list[ToolCall]:
    """The calls to one function: one per name when it takes a single free-text argument ("the weather in Boston
    and in New York"), else one. Names and numbers come from the prompt's words about it, else (in a later step)
    from the responses it waited for, else from the whole prompt."""
    fn = planned.fn
    names, numbers = list(planned.names), list(planned.numbers)
    if planned.step and inputs:
        given_names, given_numbers = _result_values(inputs)
        names, numbers = names or given_names, numbers or given_numbers
    names = names or _proper_nouns(prompt)
    numbers = numbers or _numbers(prompt)
    if len(_free_fields(fn)) == 1 and len(names) > 1:
        return [ToolCall(fn.name, _arguments(fn, rng, prompt, [name], numbers), _call_id(rng))
                for name in names[:_MAX_CALLS_PER_FUNCTION]]
    return [ToolCall(fn.name, _arguments(fn, rng, prompt, names, numbers), _call_id(rng))]


def _plan(functions: list[FunctionSpec], text: str) -> list[_Planned]:
    """The functions the text names, in the order it names them, each with the names and numbers of its part of
    the text: from where it is named to where the next one is. A function whose part has none takes those of the
    next part in the same step ("the weather and the time in Paris")."""
    mentions = sorted((pos, i, f) for i, f in enumerate(functions) if (pos := _mention(f, text)) is not None)
    if not mentions:
        return []
    steps = [m.start() for m in _CHAIN.finditer(text)]
    offset = len(text) - len(text.lstrip())  # _proper_nouns reads the stripped text
    proper = [(m.start() + offset, m.group()) for m in _PROPER.finditer(text.strip())]
    numbers = [(m.start(), _number(m.group())) for m in _NUMBER.finditer(text)]
    proper_at, numbers_at = [at for at, _ in proper], [at for at, _ in numbers]
    parts = []
    for k, (pos, _, fn) in enumerate(mentions):
        begin = 0 if k == 0 else pos
        end = mentions[k + 1][0] if k + 1 < len(mentions) else len(text)
        names = proper[bisect.bisect_left(proper_at, begin):bisect.bisect_left(proper_at, end)]
        nums = numbers[bisect.bisect_left(numbers_at, begin):bisect.bisect_left(numbers_at, end)]
        parts.append(_Planned(fn, bisect.bisect_left(steps, pos), tuple(dict.fromkeys(n for _, n in names)),
                              tuple(v for _, v in nums)))
    for k in range(len(parts) - 2, -1, -1):  # from the end, so a run of bare names borrows from its last part
        this, after = parts[k], parts[k + 1]
        if this.step == after.step:
            parts[k] = _Planned(this.fn, this.step, this.names or after.names, this.numbers or after.numbers)
    return parts


def _mention(fn: FunctionSpec, text: str) -> int | None:
    """Where the text first names the function (see `_points_to`), or None."""
    if not _points_to(fn, text):
        return None
    lowered = _lowered(text)
    found = [lowered.index(fn.name.lower())] if fn.name.lower() in lowered else []
    name_words = {w.lower() for w in re.split(r"[_\W\d]+|(?<=[a-z])(?=[A-Z])", fn.name) if len(w) >= 4}
    first, words = _first_positions(text), _text_words(text)
    found += [first[w] for w in name_words if w in first and w in words]
    return min(found) if found else 0


def _points_to(fn: FunctionSpec, text: str) -> bool:
    """Whether the user's words name the function, or share a word with its name (e.g. "weather" for get_weather)."""
    lowered = _lowered(text)
    if fn.name.lower() in lowered:
        return True
    name_words = {w for w in re.split(r"[_\W\d]+|(?<=[a-z])(?=[A-Z])", fn.name) if len(w) >= 4}
    text_words = _text_words(text)
    return any(w.lower() in text_words for w in name_words)


# A turn reads the same prompt for every function and every call: its words are found once (a long prompt takes
# a good part of a second).
@functools.lru_cache(maxsize=4)
def _text_words(text: str) -> frozenset[str]:
    return frozenset(words_of(text)) | {word for word, _ in _operations(text)}


# Arithmetic between numbers names what it does ("1000/2" asks a `divide` function), as a model reads it.
_OPERATION = re.compile(r"(?<![\w.])\d[\d.,]{0,30}\s{0,3}([-+*/×÷^])\s{0,3}\d")
_OPERATION_WORDS = {"/": ("divide", "division", "quotient"), "÷": ("divide", "division", "quotient"),
                    "*": ("multiply", "product", "times"), "×": ("multiply", "product", "times"),
                    "+": ("add", "sum", "plus"), "-": ("subtract", "difference", "minus"), "^": ("power", "exponent")}


def _operations(text: str) -> list[tuple[str, int]]:
    """The words each arithmetic operation in the text stands for, with where it stands."""
    return [(word, m.start()) for m in _OPERATION.finditer(text)
            if m.group(1) != "-" or " - " in m.group()  # 2026-12-06 is a date, 7 - 2 a difference
            for word in _OPERATION_WORDS[m.group(1)]]


@functools.lru_cache(maxsize=4)
def _lowered(text: str) -> str:
    return text.lower()


@functools.lru_cache(maxsize=4)
def _first_positions(text: str) -> dict[str, int]:
    """Where each word (lower-cased) first occurs in the text."""
    first: dict[str, int] = {}
    for m in _NAME_WORD.finditer(text):
        first.setdefault(m.group().lower(), m.start())
    for word, at in _operations(text):
        first.setdefault(word, at)
    return first


def _result_values(results: list[ToolResult]) -> tuple[list[str], list[int | float]]:
    """The names and numbers in function responses, for the calls that wait on them: a short string is a name
    ("Boston"), a longer one gives its proper nouns."""
    names: list[str] = []
    numbers: list[int | float] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, (int, float)):
            if math.isfinite(value):
                numbers.append(value)
        elif isinstance(value, str):
            short = value.strip()
            if short and len(short.split()) <= 4 and not re.search(r"[.!?;:]\s|[.!?]$", short):
                names.append(short)
            else:
                names.extend(_proper_nouns(value))
            numbers.extend(_numbers(value))

    for result in results:
        walk(result.response)
    return list(dict.fromkeys(names)), numbers


def _proper_nouns(text: str) -> list[str]:
    """Capitalised words that do not start a sentence (names and places), paths and URLs."""
    return list(_proper_nouns_of(text))


@functools.lru_cache(maxsize=4)
def _proper_nouns_of(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_PROPER.findall(text.strip())))


def _numbers(text: str) -> list[int | float]:
    return list(_numbers_of(text))


@functools.lru_cache(maxsize=4)
def _numbers_of(text: str) -> tuple[int | float, ...]:
    return tuple(_number(m.group()) for m in _NUMBER.finditer(text))


def _number(text: str) -> int | float:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)


def _prompt_words(text: str) -> list[str]:
    """Names first, then the other words: string values read like the prompt."""
    return list(_prompt_words_of(text))


@functools.lru_cache(maxsize=4)
def _prompt_words_of(text: str) -> tuple[str, ...]:
    proper = _proper_nouns(text)
    return tuple(proper + [w for w in words_of(text) if w.capitalize() not in proper])


def _kind(sub: Any) -> str | None:
    """The type of a property free to take a value from the prompt: string, integer or number (nullable or not);
    None for others, and for one with an enum, constant, pattern or format to keep to."""
    if not isinstance(sub, dict) or set(sub) & {"enum", "const", "pattern", "format"}:
        return None
    declared = sub.get("type")
    kinds = [declared] if isinstance(declared, str) else [t for t in declared if t != "null"] \
        if isinstance(declared, list) else []
    return kinds[0] if len(kinds) == 1 and kinds[0] in ("string", "integer", "number") else None


# Fields that hold a name in most schemas (a person, a place, a company): a JSON answer puts the prompt's names there.
_NAME_KEY = re.compile(r"name|person|author|who|city|location|place|country|company|symbol", re.IGNORECASE)


def _named(value: Any, schema: Any, names: list[str], name_keys_only: bool = False, start: int = 0) -> Any:
    """`value` (an instance of `schema`) with the prompt's names in its free-text fields, walking properties and
    items: the i-th item of an array starts at the i-th name ("Summarize Shakespeare's work", "… Hemingway's" →
    one summary each). With `name_keys_only`, only fields whose key says they hold a name change."""
    if not names or not isinstance(schema, dict):
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_named(v, schema["items"], names, name_keys_only, start + i) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out, used = dict(value), 0
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out:
            continue
        if _kind(sub) == "string" and (not name_keys_only or _NAME_KEY.search(key)):
            out[key] = names[(start + used) % len(names)]
            used += 1
        elif isinstance(out[key], (dict, list)):
            out[key] = _named(out[key], sub, names, name_keys_only, start)
    return out


def _free_fields(fn: FunctionSpec) -> list[str]:
    """The free-text parameters a call must have (all of them when none is required)."""
    schema = fn.parameters or {}
    free = [k for k, sub in (schema.get("properties") or {}).items() if _kind(sub) == "string"]
    required = [k for k in free if k in (schema.get("required") or ())]
    return required or free


def _arguments(fn: FunctionSpec, rng: random.Random, text: str, names: list[str] | None = None,
               numbers: list[int | float] | None = None) -> dict[str, Any]:
    schema = fn.parameters or {"type": "object", "properties": {}}
    try:
        args = instance_for(schema, rng, _prompt_words(text))
    except SchemaMismatch as exc:
        raise InvalidInput(f"Function {fn.name}: its parameters schema cannot be satisfied: {exc}") from None
    if not isinstance(args, dict):
        return {}
    # Only the required arguments, as a model leaves out the options nobody asked for (a random `start_line` would
    # change what a client's tool does).
    required = set(schema.get("required") or [])
    args = _if_valid({}, {k: v for k, v in args.items() if k in required}, schema, fallback=args)
    props = schema.get("properties") or {}
    # Free-text arguments take the names the prompt mentions ("Boston"), as a model would; numeric ones its numbers
    # ("Divide 1000 by 2"), in order. Only the arguments the call has, and only if they still fit the schema.
    names = _proper_nouns(text) if names is None else names
    numbers = _numbers(text) if numbers is None else numbers
    free = [k for k, sub in props.items() if k in args and _kind(sub) == "string"]
    if names and free:
        args = _if_valid(args, {k: names[i % len(names)] for i, k in enumerate(free)}, schema)
    nested = {k: _named(args[k], sub, names) for k, sub in props.items()
              if k in args and isinstance(args[k], dict) and isinstance(sub, dict)}
    if names and nested:  # an object argument's own free text ({"city": {"name": "Boston"}})
        args = _if_valid(args, nested, schema)
    numeric = [k for k, sub in props.items() if k in args and _kind(sub) in ("integer", "number")]
    pool = list(numbers)
    filled = {}
    for key in numeric:
        integer = _kind(props[key]) == "integer"
        value = next((v for v in pool if not integer or isinstance(v, int) or v.is_integer()), None)
        if value is None:
            break
        pool.remove(value)
        filled[key] = int(value) if integer else value
    if filled:
        args = _if_valid(args, filled, schema)
    return args


def _if_valid(args: dict[str, Any], update: dict[str, Any], schema: dict[str, Any],
              fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """`args` with `update` if that still fits the schema, else `fallback` (by default `args` as they were)."""
    changed = {**args, **update}
    if _fits_schema(changed, schema):
        return changed
    return args if fallback is None else fallback


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
            raise InvalidInput(f"The response schema cannot be satisfied: {exc}") from None
        names = _proper_nouns(last_text)
        if names and isinstance(value, (dict, list)) and fmt.schema:
            items = fmt.schema.get("items")
            if (isinstance(value, list) and value and isinstance(items, dict)
                    and any(_NAME_KEY.search(k) for k in items.get("properties") or {})):
                # One item per name ("Summarize Shakespeare's work", "… Hemingway's"), if the schema allows as many.
                sized = [value[i % len(value)] for i in range(min(len(names), _MAX_CALLS_PER_FUNCTION))]
                value = sized if _fits_schema(sized, fmt.schema) else value
            named = _named(value, fmt.schema, names, name_keys_only=True)
            value = named if _fits_schema(named, fmt.schema) else value
        return tokenize(json.dumps(value, ensure_ascii=False))
    if _pending_results(request.turns):
        # Every response of the episode: a chain's answer tells what each step returned.
        episode = _episode(request.turns)
        calls = _calls_answered(request.turns, episode.results)
        return tokenize(" ".join(
            f"The {r.name} function{f', given {_describe(c.args)},' if c is not None and c.args else ''} returned "
            f"{_describe(r.response).rstrip('.')}." for r, c in zip(episode.results, calls, strict=True)))
    return _prose(request, last_text, rng)


def _calls_answered(turns: list[Turn], results: list[ToolResult]) -> list[ToolCall | None]:
    """The model's call each result answers: the one with its id, else the oldest unanswered one of its name."""
    calls = [s for t in turns if t.role == "model" for s in t.segments if isinstance(s, ToolCall)]
    out: list[ToolCall | None] = []
    for result in results:
        match = next((c for c in calls if result.id and c.id == result.id), None) \
            or next((c for c in calls if c.name == result.name), None)
        if match is not None:
            calls.remove(match)
        out.append(match)
    return out


def _fits_schema(value: Any, schema: dict[str, Any]) -> bool:
    try:
        validate_instance(value, schema)
    except SchemaMismatch:
        return False
    return True


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
            what += f", {media.clip_seconds():.1f} s"
    return what
