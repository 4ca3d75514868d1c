"""Counting a body's values without parsing it: exact, across the scan's chunk boundaries."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from pollux import jsonsize


def reference(value: Any) -> int:
    """What `count` promises: each object and array, and each value after the first inside one."""
    if isinstance(value, dict):
        return 1 + max(len(value) - 1, 0) + sum(reference(v) for v in value.values())
    if isinstance(value, list):
        return 1 + max(len(value) - 1, 0) + sum(reference(v) for v in value)
    return 0


def random_value(rng: random.Random, depth: int = 0) -> Any:
    # Strings full of the characters the scan must see through: quotes, backslashes, commas, brackets.
    def text() -> str:
        return "".join(rng.choice('ab,{["\\]}: é') for _ in range(rng.randint(0, 12)))
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return text()
    if roll < 0.4:
        return rng.choice([1, -2.5, True, None])
    if roll < 0.7:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {text(): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 22])
def test_count_matches_the_parsed_document(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(jsonsize, "_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(200):
        value = random_value(rng)
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        assert jsonsize.count(body) == reference(value), body
        assert jsonsize.estimate(body) >= jsonsize.count(body)


def test_a_run_of_backslashes_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonsize, "_CHUNK", 3)
    for n in range(0, 12):
        value = ["\\" * n + '"', [1, 2]]
        assert jsonsize.count(json.dumps(value).encode()) == reference(value)


async def test_check_counts_values_not_commas_in_strings() -> None:
    text_with_commas = json.dumps({"contents": [{"parts": [{"text": "," * 5000}]}]}).encode()
    await jsonsize.check(text_with_commas, 100)  # one string: a handful of values
    many = json.dumps({"values": list(range(500))}).encode()
    with pytest.raises(Exception, match=r"too many JSON values \(501\); the limit is 100"):
        await jsonsize.check(many, 100)
