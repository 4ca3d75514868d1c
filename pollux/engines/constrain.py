"""Constrained decoding with llguidance: JSON schemas, enums and tool calls (forced or validated) as token masks.

Grammars are built per request; the tokenizer wrap (about a second for a real vocabulary) is built once per model.
Masks go through `llguidance.numpy` rather than `llguidance.torch`, whose `torch.compile` costs seconds on CPU.

A grammar also has to end: a `Matcher` can say how many tokens its shortest way to a complete document takes from
where it is (`tokens_to_close`), and which token goes that way (`closing_choice`), so that a sequence short of
tokens closes its JSON rather than being cut inside it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import numpy as np
import torch

from .decoding import GrammarError, ToolFormat

# No free whitespace inside JSON: a weak model pads with it forever otherwise (engine-notes §2).
_JSON_DEFAULTS = {"whitespace_flexible": False}

# The bytes that open and close JSON structure: tokens made of these (and whitespace) are how a document closes.
_STRUCTURE = frozenset(b'"{}[],: \t\n\r')


def _ordered(schema: Any) -> Any:
    """`propertyOrdering` (Gemini's key order) as the order of `properties`, which llguidance generates in."""
    if isinstance(schema, list):
        return [_ordered(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _ordered(v) for k, v in schema.items() if k != "propertyOrdering"}
    order = schema.get("propertyOrdering")
    if isinstance(out.get("properties"), dict) and isinstance(order, list):
        props = out["properties"]
        out["properties"] = {**{k: props[k] for k in order if k in props},
                             **{k: v for k, v in props.items() if k not in order}}
    return out


def _compile_json(schema: Any, what: str, options: dict[str, Any] | None = None) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(_ordered(schema), defaults=options or _JSON_DEFAULTS)
    except (ValueError, RuntimeError) as exc:
        raise GrammarError(f"Unsupported {what}: {exc}") from None


def json_grammar(schema: dict[str, Any]) -> str:
    return _compile_json(schema, "response schema")


def choice_grammar(values: list[str]) -> str:
    return llguidance.LLMatcher.grammar_from_regex("|".join(re.escape(v) for v in values))


def _json_options(fmt: ToolFormat) -> dict[str, Any]:
    """JSON written as the model's template writes it: no free whitespace, its own separators."""
    item, key = fmt.separators
    return {**_JSON_DEFAULTS, "item_separator": item, "key_separator": key}


def parameters_grammar(name: str, params: dict[str, Any], fmt: ToolFormat) -> tuple[str, str]:
    """(what it is, grammar) of one function's arguments alone: compiled (`TokenizerGrammars.matcher`) before the
    call grammar, a schema llguidance cannot follow is an error that names its function. In the union of all the
    functions it would be an error about the union, or a branch no call can take."""
    what = f"parameters schema for function {name}"
    return what, _compile_json(params or {"type": "object"}, what, _json_options(fmt))


def _calls_json(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """A call naming one of `calls` with arguments valid for its parameters schema (a non-empty list of them when the
    format writes lists), as a grammar's %json rule."""
    call = {"oneOf": [
        {"type": "object", "properties": {"name": {"const": name}, fmt.args_key: params or {"type": "object"}},
         "required": ["name", fmt.args_key], "additionalProperties": False}
        for name, params in calls]}
    schema = {"type": "array", "items": call, "minItems": 1} if fmt.many else call
    return f"%json{json.dumps(schema | {'x-guidance': _json_options(fmt)})}"


def _literal(text: str) -> str:
    """`text` as a grammar literal followed by a space, or nothing when it is empty."""
    return f"{json.dumps(text)} " if text else ""


def tool_call_grammar(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """The whole answer (mode ANY): calls only, laid out as the model's chat template writes them (the text between
    a marker and the JSON, and between one call and the next). Markers are single tokens, given by id."""
    body = f"body: {_calls_json(calls, fmt)}\n"
    if fmt.open is None:
        return f"start: {_literal(fmt.before)}body\n{body}"
    if fmt.close is None:
        return f"start: <[{fmt.open}]> {_literal(fmt.before)}body\n{body}"
    return (f"start: call ({_literal(fmt.between)}call)*\n"
            f"call: <[{fmt.open}]> {_literal(fmt.before)}body {_literal(fmt.after)}<[{fmt.close}]>\n{body}")


def tool_body_grammar(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """What follows the start of a call the model chose to make (mode VALIDATED): a valid call, then the close marker
    if the format has one. A format without an opening marker starts at the call's first token, spaces included."""
    close = f"{_literal(fmt.after)}<[{fmt.close}]>" if fmt.close is not None else ""
    lead = "SPACE? " if fmt.open is None else _literal(fmt.before)
    return f"start: {lead}body {close}\nbody: {_calls_json(calls, fmt)}\nSPACE: /[ \\t\\n]+/\n"


class _Scanner:
    """Where a JSON text stands: how deep in objects and lists, and whether inside a string. `open` is the number of
    things still to close, which a closing token should bring down."""

    __slots__ = ("depth", "escaped", "in_string")

    def __init__(self) -> None:
        self.depth, self.in_string, self.escaped = 0, False, False

    def copy(self) -> _Scanner:
        other = _Scanner()
        other.depth, other.in_string, other.escaped = self.depth, self.in_string, self.escaped
        return other

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif b == 0x5C:  # backslash
                    self.escaped = True
                elif b == 0x22:  # quote
                    self.in_string = False
            elif b == 0x22:
                self.in_string = True
            elif b in b"{[":
                self.depth += 1
            elif b in b"}]":
                self.depth -= 1

    @property
    def open(self) -> int:
        return self.depth + self.in_string

    def open_after(self, data: bytes) -> int:
        probe = self.copy()
        probe.feed(data)
        return probe.open


class TokenizerGrammars:
    """The llguidance view of one model's tokenizer, and matchers for it. `eos`: every token that ends a turn (each
    ends a complete document; llguidance alone would know only the tokenizer's own)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos: list[int] | None = None) -> None:
        self.vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=eos)
        self.eos = list(self._tokenizer.eos_tokens)
        self._bytes: dict[int, bytes] = {}
        # The tokens made of JSON punctuation and whitespace alone, by id, with their bytes.
        structural = []
        for token in range(min(vocab_size, self._tokenizer.vocab_size)):
            if self._tokenizer.is_special_token(token):
                continue
            data = self._tokenizer.decode_bytes([token])
            if data and all(b in _STRUCTURE for b in data):
                structural.append(token)
                self._bytes[token] = data
        self.structural = np.array(structural, dtype=np.int64)

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes as text (special tokens, the markers among them, add nothing to the JSON)."""
        data = self._bytes.get(token)
        if data is None:
            data = b"" if self._tokenizer.is_special_token(token) else self._tokenizer.decode_bytes([token])
            if len(self._bytes) < 200_000:
                self._bytes[token] = data
        return data

    def matcher(self, grammar: str, what: str = "response schema") -> Matcher:
        error = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer)
        if error:
            raise GrammarError(f"Unsupported {what}: {error}")
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"Unsupported {what}: {matcher.get_error()}")
        return Matcher(matcher, self)


class Matcher:
    """The grammar state of one sequence: masks the logits before sampling, advances with each chosen token."""

    def __init__(self, matcher: llguidance.LLMatcher, grammars: TokenizerGrammars,
                 scanner: _Scanner | None = None) -> None:
        self._m = matcher
        self._g = grammars
        self._bitmask = llguidance.numpy.allocate_token_bitmask(1, grammars.vocab_size)
        self._scan = scanner or _Scanner()
        self.estimate: int | None = None  # tokens to close, as last measured by the sequence...
        self.probe_at = 0  # ...and the room left at which it measures again

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of every token the grammar forbids to -inf, in place (a 1-D float row)."""
        llguidance.numpy.fill_next_token_bitmask(self._m, self._bitmask)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[:logits.shape[-1]]
        logits[torch.from_numpy(bits == 0)] = float("-inf")

    def advance(self, token: int) -> None:
        self._m.consume_token(token)
        if self._m.is_error():
            raise GrammarError(self._m.get_error())
        self._scan.feed(self._g.token_bytes(token))

    @property
    def finished(self) -> bool:
        """The grammar has matched a whole document and allows nothing more but the end."""
        return self._m.is_stopped()

    @property
    def accepting(self) -> bool:
        """What is there is a whole document (more may still follow: another call, more digits)."""
        return self._m.is_accepting()

    # Closing ----------------------------------------------------------------------------------------------------
    def _closer(self, allowed: np.ndarray, logits: torch.Tensor | None) -> int | None:
        """Among the allowed structural tokens, the one that leaves the least open (ties: the model's favourite, or
        without logits the one that closes most bytes at once); None when no structural token is allowed."""
        best, best_key = None, None
        for token in allowed:
            token = int(token)
            data = self._g.token_bytes(token)
            after = self._scan.open_after(data)
            blank = not data.strip()
            taste = float(logits[token]) if logits is not None else float(len(data))
            key = (after, blank, -taste)
            if best_key is None or key < best_key:
                best, best_key = token, key
        return best

    def _allowed_structural(self) -> np.ndarray:
        s = self._g.structural
        words = self._bitmask[0]
        return s[(words[s >> 5] >> (s & 31)) & 1 == 1]

    def closing_choice(self, logits: torch.Tensor) -> int | None:
        """The token that heads for the end of the document, given logits the grammar has masked: an end of turn
        once the document is whole, else text the grammar forces, else the allowed punctuation that closes most.
        None: no such token is allowed (a value's first letters, say); then any allowed token is as good as
        another."""
        if self.accepting:
            ends = [t for t in self._g.eos if t < logits.shape[-1] and logits[t] > float("-inf")]
            if ends:
                return max(ends, key=lambda t: float(logits[t]))
        forced = self._m.compute_ff_tokens()
        if forced and forced[0] < logits.shape[-1] and logits[forced[0]] > float("-inf"):
            return forced[0]  # text the grammar spells out, in its fewest tokens
        allowed = self._allowed_structural()
        allowed = allowed[allowed < logits.shape[-1]]
        allowed = allowed[(logits[torch.from_numpy(allowed)] > float("-inf")).numpy()] if len(allowed) else allowed
        return self._closer(allowed, logits) if len(allowed) else None

    def tokens_to_close(self, limit: int) -> int | None:
        """Tokens from here to a complete document, the end-of-turn token included unless the grammar stops by
        itself, going the closing way (`closing_choice` without a model: forced text as its canonical tokens, else
        the first allowed token). None when that takes more than `limit` or reaches a dead end."""
        probe = Matcher(self._m.deep_copy(), self._g, self._scan.copy())
        n = 0
        while n <= limit:
            if probe._m.is_stopped():
                return n
            if probe._m.is_accepting():
                return n + 1
            forced = probe._m.compute_ff_tokens()
            if forced:
                for token in forced:
                    probe.advance(token)
                n += len(forced)
                continue
            llguidance.numpy.fill_next_token_bitmask(probe._m, probe._bitmask)
            token = probe._closer(probe._allowed_structural(), None)
            if token is None:
                words = np.flatnonzero(probe._bitmask[0])
                if not len(words):
                    return None
                word = int(words[0])
                bits = int(probe._bitmask[0][word]) & 0xFFFFFFFF
                token = word * 32 + ((bits & -bits).bit_length() - 1)
                if token >= self._g.vocab_size:
                    return None
            try:
                probe.advance(token)
            except GrammarError:
                return None
            n += 1
        return None
