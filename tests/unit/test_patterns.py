"""Patterns from requests: matched by RE2 (or the time-limited `regex` module), sampled with bounded work."""

from __future__ import annotations

import random

import pytest

from pollux import patterns
from pollux.schemas import SchemaMismatch, instance_for, validate_instance

# Patterns that make Python's backtracking `re` run for minutes on a string that almost matches.
EMAIL = r"^([a-z0-9]+\.?)+@example\.com$"
NESTED = r"^(a+)+$"


def test_backtracking_patterns_match_in_linear_time() -> None:
    assert isinstance(patterns.program(EMAIL), patterns._Linear)
    assert not patterns.search(EMAIL, "a" * 5000 + "!")
    assert not patterns.search(NESTED, "a" * 100_000 + "!")
    assert patterns.search(EMAIL, "first.last@example.com")


def test_ecma_code_point_escapes_are_understood() -> None:
    assert patterns.search(r"^\u00e9+$", "ééé")
    assert patterns.search(r"^\\u00e9$", "\\u00e9")  # an escaped backslash, then the letters
    assert not patterns.search(r"^\u00e9+$", "e")


@pytest.mark.parametrize("pattern, good, bad", [
    (r"^(?=.*[A-Z])(?=.*\d).{8,}$", "Password1", "password"),  # lookahead
    (r"^(\w+)-\1$", "ab-ab", "ab-ba"),  # backreference
    (r"^[a-z]{1,5000}$", "abc", "ABC"),  # a count over RE2's 1000
])
def test_what_re2_cannot_run_runs_with_a_time_limit(pattern: str, good: str, bad: str) -> None:
    assert isinstance(patterns.program(pattern), patterns._TimeLimited)
    assert patterns.search(pattern, good)
    assert not patterns.search(pattern, bad)


def test_a_time_limited_match_that_runs_out_is_refused() -> None:
    with patterns.time_budget(0), pytest.raises(patterns.PatternError, match="too long"):
        patterns.search(r"^(\w+)-\1$", "ab-ab")


@pytest.mark.parametrize("pattern", ["(", "[a-", "a{2,1}", "x" * (patterns.MAX_PATTERN_CHARS + 1)])
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(patterns.PatternError):
        patterns.program(pattern)


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": EMAIL, "maxLength": 64},
    {"type": "string", "pattern": NESTED, "minLength": 10_000},
    {"type": "string", "pattern": r"(((((a+)+)+)+)+)+b", "minLength": 50_000},
    {"type": "string", "pattern": r"^(a|aa)+$", "minLength": 100, "maxLength": 100},
    {"type": "string", "pattern": r"^(?=.*[A-Z])(?=.*\d).{8,}$"},
    {"type": "string", "pattern": r"^(\w+)-\1$"},
    {"type": "string", "pattern": r"^[^a-z]{3}$"},
    {"type": "string", "pattern": r"^\d{3}-\d{4}$"},
    {"type": "object", "patternProperties": {NESTED: {"type": "integer"}}, "minProperties": 2,
     "additionalProperties": False},
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instances_for_patterns(schema: dict, seed: int) -> None:
    value = instance_for(schema, random.Random(seed), ["hello", "world"])
    validate_instance(value, schema)


def test_an_impossible_length_names_where_it_failed() -> None:
    schema = {"type": "object", "required": ["user"], "properties": {"user": {
        "type": "object", "required": ["email"],
        "properties": {"email": {"type": "string", "pattern": EMAIL, "maxLength": 5}}}}}
    with pytest.raises(SchemaMismatch, match=r"at \$\.user\.email: .*example"):
        instance_for(schema, random.Random(0))


def test_the_sampler_pays_for_what_it_writes() -> None:
    spent: list[int] = []
    sampler = patterns.Sampler(r"^(a{1000}){1000}$", random.Random(0), spent.append)
    with pytest.raises(patterns.TooLong):
        sampler.sample(0, 10_000)  # a million characters are never written: the length bound stops the draw
    assert sampler.min_width == 1_000_000
    text = patterns.Sampler(r"^[a-z]+$", random.Random(0), spent.append).sample(5000, 6000)
    assert 5000 <= len(text) <= 6000 and sum(spent) >= 500
