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

# No free whitespace inside JSON: a weak model pads with it forever otherwise (engine-notes §2).
_JSON_DEFAULTS = {"whitespace_flexible": False}


class GrammarError(ValueError):
    """The request's schema or grammar cannot be compiled."""


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


def _calls_json(calls: list[tuple[str, dict[str, Any]]]) -> str:
    """`{"name": ..., "arguments": {...}}` naming one of `calls`, with arguments valid for its parameters schema."""
    schema = {"oneOf": [
        {"type": "object", "properties": {"name": {"const": name}, "arguments": params or {"type": "object"}},
         "required": ["name", "arguments"], "additionalProperties": False}
        for name, params in calls]}
    return f"%json{json.dumps(schema | {'x-guidance': _JSON_DEFAULTS})}"


def tool_call_grammar(calls: list[tuple[str, dict[str, Any]]], open_id: int, close_id: int,
                      parallel: bool = True) -> str:
    """The whole answer (mode ANY): one or more `<tool_call>{...}</tool_call>` blocks. The markers are single tokens,
    given by id."""
    repeat = "+" if parallel else ""
    return (f"start: call{repeat}\n"
            f"call: <[{open_id}]> body <[{close_id}]>\n"
            f"body: {_calls_json(calls)}\n")


def tool_body_grammar(calls: list[tuple[str, dict[str, Any]]], close_id: int) -> str:
    """What follows an opening `<tool_call>` marker the model chose (mode VALIDATED): a valid call, then the close."""
    return f"start: body <[{close_id}]>\nbody: {_calls_json(calls)}\n"


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
