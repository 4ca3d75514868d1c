"""Constrained decoding with llguidance: JSON schemas, enums and tool calls (forced or validated) as token masks.

Grammars are built per request; the tokenizer wrap (about a second for a real vocabulary) is built once per model.
Masks go through `llguidance.numpy` rather than `llguidance.torch`, whose `torch.compile` costs seconds on CPU.
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


def json_grammar(schema: dict[str, Any]) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(_ordered(schema), defaults=_JSON_DEFAULTS)
    except (ValueError, RuntimeError) as exc:
        raise GrammarError(f"Unsupported response schema: {exc}") from None


def choice_grammar(values: list[str]) -> str:
    return llguidance.LLMatcher.grammar_from_regex("|".join(re.escape(v) for v in values))


def _calls_json(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """A call naming one of `calls` with arguments valid for its parameters schema (a non-empty list of them when the
    format writes lists), as a grammar's %json rule."""
    call = {"oneOf": [
        {"type": "object", "properties": {"name": {"const": name}, fmt.args_key: params or {"type": "object"}},
         "required": ["name", fmt.args_key], "additionalProperties": False}
        for name, params in calls]}
    schema = {"type": "array", "items": call, "minItems": 1} if fmt.many else call
    return f"%json{json.dumps(schema | {'x-guidance': _JSON_DEFAULTS})}"


def tool_call_grammar(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """The whole answer (mode ANY): calls only, in the model's format. Markers are single tokens, given by id."""
    if fmt.open is None:
        return f"start: body\nbody: {_calls_json(calls, fmt)}\n"
    if fmt.close is None:
        return f"start: <[{fmt.open}]> body\nbody: {_calls_json(calls, fmt)}\n"
    return (f"start: call+\n"
            f"call: <[{fmt.open}]> body <[{fmt.close}]>\n"
            f"body: {_calls_json(calls, fmt)}\n")


def tool_body_grammar(calls: list[tuple[str, dict[str, Any]]], fmt: ToolFormat) -> str:
    """What follows the start of a call the model chose to make (mode VALIDATED): a valid call, then the close marker
    if the format has one. A format without an opening marker starts at the call's first token, spaces included."""
    close = f" <[{fmt.close}]>" if fmt.close is not None else ""
    lead = "SPACE? " if fmt.open is None else ""
    return f"start: {lead}body{close}\nbody: {_calls_json(calls, fmt)}\nSPACE: /[ \\t\\n]+/\n"


class TokenizerGrammars:
    """The llguidance view of one model's tokenizer, and matchers for it."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size)

    def matcher(self, grammar: str) -> Matcher:
        error = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer)
        if error:
            raise GrammarError(f"Unsupported response schema: {error}")
        return Matcher(llguidance.LLMatcher(self._tokenizer, grammar, log_level=0), self.vocab_size)


class Matcher:
    """The grammar state of one sequence: masks the logits before sampling, advances with each chosen token."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._m = matcher
        self._bitmask = llguidance.numpy.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of every token the grammar forbids to -inf, in place (a 1-D float row)."""
        llguidance.numpy.fill_next_token_bitmask(self._m, self._bitmask)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[:logits.shape[-1]]
        logits[torch.from_numpy(bits == 0)] = float("-inf")

    def advance(self, token: int) -> None:
        self._m.consume_token(token)
        if self._m.is_error():
            raise GrammarError(self._m.get_error())

    @property
    def finished(self) -> bool:
        """The grammar has matched a whole document and allows nothing more but the end."""
        return self._m.is_stopped()
