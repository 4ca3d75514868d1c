"""Scripted answers for the emulator: rules matched on the model and the last user text.

A fixtures file (YAML or JSON) is a list of rules, tried in order; the first match answers:

    - match: {model: gemini-2.5-flash, contains: "weather"}     # substring of the last user text
      respond: {text: "It is sunny."}
    - match: {regex: "^book .* flight"}                         # re.search on the last user text
      respond:
        function_calls: [{name: book_flight, args: {to: "SFO"}}]
    - match: {contains: "overloaded"}
      respond: {error: {code: 503, status: UNAVAILABLE, message: "The model is overloaded."}}

`match` keys are all optional (an empty match answers everything); `respond` has exactly one of
`text`, `function_calls` or `error`, and may add `thought` (a thought summary for the thinking path).

A rule that matches the prompt owns the turns that follow it: once the function responses to its calls come back
(automatic function calling sends them by itself), the emulator answers from them and calls nothing of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import STATUSES


@dataclass(frozen=True)
class Scripted:
    text: str | None = None
    function_calls: tuple[dict[str, Any], ...] = ()
    thought: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rule:
    model: str | None
    contains: str | None
    regex: re.Pattern[str] | None
    respond: Scripted

    def matches(self, model: str, text: str) -> bool:
        if self.model is not None and self.model != model:
            return False
        if self.contains is not None and self.contains not in text:
            return False
        return self.regex is None or self.regex.search(text) is not None


def _scripted(where: str, respond: Any) -> Scripted:
    if not isinstance(respond, dict):
        raise ValueError(f"{where}: 'respond' must be a mapping")
    kinds = [k for k in ("text", "function_calls", "error") if k in respond]
    unknown = set(respond) - {"text", "function_calls", "error", "thought"}
    if len(kinds) != 1 or unknown:
        raise ValueError(f"{where}: 'respond' needs exactly one of text, function_calls, error (and optionally thought)")
    calls = respond.get("function_calls") or []
    if not isinstance(calls, list):
        raise ValueError(f"{where}: function_calls must be a list")
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) \
                or not isinstance(call.get("args", {}), dict):
            raise ValueError(f"{where}: each function call needs a 'name' and, optionally, 'args' as a mapping")
    error = respond.get("error")
    if error is not None:
        if not isinstance(error, dict) or error.get("status", "INTERNAL") not in STATUSES:
            raise ValueError(f"{where}: error.status must be one of {sorted(STATUSES)}")
        code = error.get("code", 500)
        if not isinstance(code, int) or not 400 <= code <= 599:
            raise ValueError(f"{where}: error.code must be an HTTP error code (400-599)")
    for key in ("text", "thought"):
        if respond.get(key) is not None and not isinstance(respond[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    return Scripted(text=respond.get("text"), function_calls=tuple(calls), thought=respond.get("thought"), error=error)


def _compile(where: str, pattern: Any) -> re.Pattern[str]:
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise ValueError(f"{where}: bad regex {pattern!r}: {exc}") from None


def load_fixtures(path: Path) -> list[Rule]:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML or JSON: {exc}") from None
    if isinstance(doc, dict) and "rules" in doc:
        doc = doc["rules"]
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a list of rules")
    rules = []
    for i, entry in enumerate(doc):
        where = f"{path}: rule {i}"
        if not isinstance(entry, dict) or set(entry) - {"match", "respond"}:
            raise ValueError(f"{where}: a rule has 'match' and 'respond'")
        match = entry.get("match") or {}
        if set(match) - {"model", "contains", "regex"}:
            raise ValueError(f"{where}: match keys are model, contains, regex")
        model = match.get("model")
        rules.append(Rule(
            model=model.removeprefix("models/") if model else None,
            contains=match.get("contains"),
            regex=_compile(where, match["regex"]) if "regex" in match else None,
            respond=_scripted(where, entry.get("respond")),
        ))
    return rules


def find(rules: list[Rule], model: str, text: str) -> Scripted | None:
    return next((r.respond for r in rules if r.matches(model, text)), None)
