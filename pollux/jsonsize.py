"""How many values a JSON body holds, counted without parsing it and without holding the interpreter's lock.

Parsing holds the lock for as long as it takes (about 1.3 µs a value into the wire models), so a 100 MB body of tiny
values would stall every other request for seconds. Bodies are therefore bounded by their number of values, and
counting them must itself be cheap: `estimate` is an upper bound at C speed, and `count` the exact number, in numpy
operations that release the lock, for the rare bodies whose strings hold many commas or brackets.
"""

from __future__ import annotations

import asyncio

import numpy as np

from .errors import ApiError

_COMMA, _BRACE, _BRACKET, _QUOTE, _BACKSLASH = 44, 123, 91, 34, 92
_CHUNK = 1 << 22  # bytes scanned at once: bounds the scan's temporary arrays to some 40 MB


def estimate(body: bytes) -> int:
    """An upper bound of `count`: the same characters, inside strings too."""
    return body.count(b",") + body.count(b"{") + body.count(b"[")


def count(body: bytes) -> int:
    """The `{`, `[` and `,` outside strings: one for each object and array and for each value after the first in
    one, so about one for each value in the document."""
    data = np.frombuffer(body, np.uint8)
    total = 0
    in_string = 0  # whether the previous chunk ended inside a string
    run = 0  # backslashes that ended the previous chunk
    for start in range(0, len(data), _CHUNK):
        chunk = data[start:start + _CHUNK]
        # The index of the last character at or before each position that is not a backslash (-1 - run: before
        # the chunk), so the backslashes just before a quote are its index less that one, less one.
        last = np.where(chunk == _BACKSLASH, np.int32(-1 - run), np.arange(len(chunk), dtype=np.int32))
        np.maximum.accumulate(last, out=last)
        quotes = chunk == _QUOTE
        at = np.flatnonzero(quotes)
        if len(at):
            before = np.where(at > 0, last[at - 1], np.int32(-1 - run))
            escaped = ((at - 1 - before) & 1) == 1  # an odd run of backslashes escapes the quote
            quotes[at[escaped]] = False
        # Inside a string after an odd number of real quotes (uint8 wraps around, which keeps the parity).
        inside = np.cumsum(quotes, dtype=np.uint8) & 1
        inside ^= np.uint8(in_string)
        structural = (chunk == _COMMA) | (chunk == _BRACE) | (chunk == _BRACKET)
        total += int(np.count_nonzero(structural & (inside == 0)))
        in_string = int(inside[-1])
        run = len(chunk) - 1 - int(last[-1])
    return total


# Below this size a body is checked on the event loop: counting a megabyte takes under a millisecond.
_INLINE = 1 << 20


def _over(body: bytes, limit: int) -> int | None:
    """The body's value count if it passes `limit`, else None (the exact count only when the estimate passes it)."""
    if estimate(body) <= limit:
        return None
    values = count(body)
    return values if values > limit else None


async def check(body: bytes, limit: int) -> None:
    """Refuse a body of more than `limit` values with the 400 a too-large payload gets."""
    if len(body) <= limit:  # each value takes a byte at least
        return
    values = _over(body, limit) if len(body) <= _INLINE else await asyncio.to_thread(_over, body, limit)
    if values is not None:
        raise ApiError.invalid(f"Request payload has too many JSON values ({values}); the limit is {limit}.")
