"""Ids for the function calls and results of a history, as chat templates and OpenAI's API need them: Gemini's ids
are optional, theirs are not."""

from __future__ import annotations

from collections.abc import Callable

from .base import ToolCall, ToolResult


class CallIds:
    """Every call gets an id (its own, or `default(turn, k, name)` for the k-th call of a turn), and a result without
    an id answers the oldest unanswered call of its function, as Gemini pairs them. `normalize` maps ids to the
    shape a template accepts (Mistral's want 9 alphanumerics)."""

    def __init__(self, default: Callable[[int, int, str], str],
                 normalize: Callable[[str], str] = lambda call_id: call_id) -> None:
        self._default = default
        self._normalize = normalize
        self._pending: dict[str, list[str]] = {}  # function name → ids of its calls not answered yet

    def call(self, call: ToolCall, turn: int, k: int) -> str:
        call_id = self._normalize(call.id or self._default(turn, k, call.name))
        self._pending.setdefault(call.name, []).append(call_id)
        return call_id

    def result(self, result: ToolResult) -> str:
        waiting = self._pending.get(result.name) or []
        call_id = self._normalize(result.id) if result.id else (waiting[0] if waiting else
                                                                   self._normalize(result.name))
        if call_id in waiting:
            waiting.remove(call_id)
        return call_id
