"""Regular expressions from requests (JSON Schema `pattern`, `patternProperties`): matched in bounded time and
sampled with bounded work.

Python's `re` backtracks: `^([a-z0-9]+\\.?)+@example\\.com$` against 60 characters that fail to match takes minutes and
holds the interpreter lock all along, so no thread or deadline can stop it. Patterns from requests are matched with
RE2, whose time grows with the text only. What RE2 lacks (lookaround, backreferences, counts over 1000) runs on the
`regex` module instead, with a time limit that interrupts the match and the interpreter lock released meanwhile; a
pattern that outruns it is refused. Strings for a pattern are drawn from its parse by a sampler that aims at a length
and pays for each character it writes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

import re2
import regex

# The parser of Python's own `re` (3.11+), whose trees the sampler walks.
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]

# The longest pattern taken: far beyond any real schema's, and it bounds parsing and compiling.
MAX_PATTERN_CHARS = 10_000
# The time one match may take on the backtracking engine (patterns RE2 cannot run).
MATCH_SECONDS = 0.1


class PatternError(ValueError):
    """A pattern that is malformed, too long, too slow to match, or one strings cannot be drawn for."""


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the caller's answer, not a line on the server's stderr
# Memory for a program and its DFA cache (RE2's default is 8 MB): cached programs stay within 128 x 1 MB. A pattern
# too large for it runs on the fallback; one whose DFA outgrows it is matched more slowly, still in linear time.
_OPTIONS.max_mem = 1 << 20
# ECMA-262 (JSON Schema's dialect) writes a code point as \uXXXX, which RE2 spells \x{XXXX}. Each match takes one
# backslash with what it escapes, so an escaped backslash before a `u` is left alone.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)


def _re2_syntax(pattern: str) -> str:
    return _ESCAPE.sub(lambda m: f"\\x{{{m[1]}}}" if m[1] else m[0], pattern)


class _Linear:
    """RE2: time linear in the text, whatever the pattern."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def search(self, text: str) -> bool:
        return self.compiled.search(text) is not None


# When set, the monotonic time by which every backtracking match in this context must be done.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("pattern_deadline", default=None)


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """All backtracking matches inside share `seconds`: for checks made where waiting holds others up."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class _TimeLimited:
    """The `regex` module for what RE2 cannot run: backtracking, so each match has a time limit."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def search(self, text: str) -> bool:
        limit = MATCH_SECONDS
        deadline = _deadline.get()
        if deadline is not None:
            limit = min(limit, max(deadline - time.monotonic(), 0.0))
        try:
            return self.compiled.search(text, timeout=limit, concurrent=True) is not None
        except TimeoutError:
            raise PatternError("matching the pattern took too long (it backtracks, and RE2 cannot run it in "
                               "linear time)") from None


@functools.lru_cache(maxsize=128)
def program(pattern: str) -> _Linear | _TimeLimited:
    """A matcher for a JSON Schema pattern; PatternError if the pattern is malformed."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return _Linear(re2.compile(_re2_syntax(pattern), _OPTIONS))
    except re2.error:
        pass
    try:
        return _TimeLimited(regex.compile(pattern))
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise PatternError(str(exc) or "the pattern nests too deeply") from None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches anywhere in `text` (JSON Schema's rule: patterns are not implicitly anchored)."""
    return program(pattern).search(text)


# -- Sampling ------------------------------------------------------------------------------------------------------
_C = sre_constants
_DIGITS = string.digits
_WORD = string.ascii_letters + string.digits + "_"
# What a negated class or `.` draws from: readable characters first.
_POOL = string.ascii_lowercase + string.ascii_uppercase + string.digits + " -_.,:;!?@#%&*+=/()[]{}<>'\"~^$|\\`"
_CATEGORY_CHARS = {
    _C.CATEGORY_DIGIT: _DIGITS,
    _C.CATEGORY_NOT_DIGIT: string.ascii_letters + " -_.",
    _C.CATEGORY_SPACE: " ",
    _C.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
    _C.CATEGORY_WORD: _WORD,
    _C.CATEGORY_NOT_WORD: " -.,:;!?",
}
# Extra characters a sampler adds beyond a pattern's shortest match, at most, when no length is asked for.
_NATURAL_EXTRA = 8


class TooLong(Exception):
    """This draw passed the longest string wanted: start another."""


@functools.lru_cache(maxsize=128)
def _parse(pattern: str) -> Any:
    program(pattern)
    try:
        parsed = sre_parse.parse(pattern)
        parsed.getwidth()  # computed (recursively) once here, where a pattern nested too deep is refused
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise PatternError(str(exc) or "the pattern nests too deeply") from None
    return parsed


def _width(node: Any) -> tuple[int, float]:
    low, high = node.getwidth()
    return low, (math.inf if high >= _C.MAXREPEAT - 1 else high)


class Sampler:
    """Draws strings matching a pattern (when the pattern allows one in the length asked for).

    Work is paid through `spend(units)`, one unit per ten characters or parse nodes visited, so a pattern whose
    strings nest repeats a thousand deep runs out of budget instead of out of memory."""

    def __init__(self, pattern: str, rng: Any, spend: Callable[[int], None]) -> None:
        self.parsed = _parse(pattern)
        self.rng = rng
        self.spend = spend
        self.min_width, self.max_width = _width(self.parsed)
        self._work = 0
        self._extra = 0
        self._written = 0
        self._limit = 0
        self._shortest = False
        self._groups: dict[int, str] = {}

    def sample(self, low: int, high: float, shortest: bool = False) -> str:
        """A string for the pattern, aimed at a length in [low, high]. `shortest` picks the narrowest branches (for
        tight upper bounds). May return a string outside the range, or not matching (`\\b`, `$` inside): callers
        check. Raises TooLong as soon as the draw passes `high`."""
        if self.min_width > high:
            raise TooLong(f"every string for the pattern has at least {self.min_width} characters")
        target = max(low, self.min_width)
        if not shortest:
            target += self.rng.randint(0, _NATURAL_EXTRA)
        target = min(target, high, self.max_width)
        self._extra = int(target - self.min_width)
        self._written = 0
        self._limit = high
        self._shortest = shortest
        self._groups.clear()
        out: list[str] = []
        self._emit(self.parsed, out)
        self._pay(0)
        return "".join(out)

    def _pay(self, units: int) -> None:
        self._work += units
        if self._work >= 10:
            self.spend(self._work // 10)
            self._work %= 10

    def _put(self, out: list[str], text: str) -> None:
        out.append(text)
        self._written += len(text)
        if self._written > self._limit:
            raise TooLong("the draw is longer than wanted")

    def _emit(self, nodes: Any, out: list[str]) -> None:
        for op, av in nodes:
            self._pay(1)
            if op is _C.LITERAL:
                self._put(out, chr(av))
            elif op is _C.NOT_LITERAL:
                self._put(out, self._pick(lambda c: c != chr(av)))
            elif op is _C.ANY:
                self._put(out, self._pick(lambda c: c != "\n"))
            elif op is _C.IN:
                self._put(out, self._from_class(av))
            elif op is _C.AT:
                continue
            elif op is _C.BRANCH:
                self._emit(self._branch(av[1]), out)
            elif op is _C.SUBPATTERN:
                start = len(out)
                self._emit(av[-1], out)
                if av[0] is not None:
                    self._groups[av[0]] = "".join(out[start:])
            elif op is _C.GROUPREF:
                self._put(out, self._groups.get(av, ""))
            elif op is _C.ASSERT:
                # A lookahead's own text usually helps the rest match (`(?=.*\d)` puts a digit in); a lookbehind's
                # would only stand in the way.
                if av[0] > 0:
                    self._emit(av[1], out)
            elif op is _C.ASSERT_NOT:
                continue
            elif op is _C.ATOMIC_GROUP:
                self._emit(av, out)
            elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
                self._repeat(*av, out)
            else:  # conditionals: too rare to draw from
                raise PatternError(f"cannot draw strings for {str(op).lower()}")

    def _branch(self, branches: list[Any]) -> Any:
        if self._shortest:
            return min(branches, key=lambda b: b.getwidth()[0])
        return self.rng.choice(branches)

    def _repeat(self, low: int, high: int, item: Any, out: list[str]) -> None:
        for _ in range(low):
            self._emit(item, out)
        count = low
        # Repeats past the minimum take up the length still wanted (the first repeats take it all).
        while count < high and self._extra > 0:
            before = self._written
            self._emit(item, out)
            grown = self._written - before
            if grown == 0:
                break
            self._extra -= grown
            count += 1

    def _pick(self, allowed: Callable[[str], bool]) -> str:
        for c in self.rng.sample(_POOL, len(_POOL)):
            if allowed(c):
                return c
        for code in range(0xA1, 0x3000):  # a class that excludes all of printable ASCII
            if allowed(chr(code)):
                return chr(code)
        raise PatternError("a character class excludes every character tried")

    def _from_class(self, items: list[Any]) -> str:
        if items and items[0][0] is _C.NEGATE:
            rest = items[1:]
            return self._pick(lambda c: not _in_class(c, rest))
        op, av = self.rng.choice(items)
        if op is _C.LITERAL:
            return chr(av)
        if op is _C.RANGE:
            return chr(self.rng.randint(av[0], av[1]))
        if op is _C.CATEGORY:
            return self.rng.choice(_CATEGORY_CHARS[av])
        raise PatternError(f"unsupported class item {op}")


def _in_class(c: str, items: list[Any]) -> bool:
    code = ord(c)
    for op, av in items:
        if op is _C.LITERAL and code == av or op is _C.RANGE and av[0] <= code <= av[1]:
            return True
        if op is _C.CATEGORY and _category(c, av):
            return True
    return False


def _category(c: str, category: Any) -> bool:
    checks = {
        _C.CATEGORY_DIGIT: c in _DIGITS, _C.CATEGORY_NOT_DIGIT: c not in _DIGITS,
        _C.CATEGORY_SPACE: c.isspace(), _C.CATEGORY_NOT_SPACE: not c.isspace(),
        _C.CATEGORY_WORD: c in _WORD, _C.CATEGORY_NOT_WORD: c not in _WORD,
    }
    return checks.get(category, False)
