"""A batch's input as creation writes it and its run reads it: one JSON line per request, `{"r": request}` with the
inline request's metadata (`"m"`) or the input line's key (`"k"`: `key`, OpenAI's `custom_id`), or `{"e": why}` for a
line that is no request (it gets an error entry). Files are read here line by line in a thread: whole, but never a
line of more than the request limit at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..errors import ApiError


def _model_named(request: dict[str, Any]) -> str | None:
    named = request.get("model")
    return named.removeprefix("models/") if isinstance(named, str) and named else None


def inline_lines(items: list[Any], model_id: str) -> tuple[bytes, int]:
    """The inline requests as input lines: `{"m": metadata, "r": request}`, or `{"e": why}` for one without a
    request. A request for another model fails the creation."""
    out: list[bytes] = []
    for i, item in enumerate(items):
        line: dict[str, Any] = {}
        if item.metadata is not None:
            line["m"] = item.metadata
        if item.request is None:
            line["e"] = f"* batch.input_config.requests.requests[{i}].request: a request is required.\n"
        else:
            named = _model_named(item.request)
            if named is not None and named != model_id:
                raise ApiError.invalid(f"* batch.input_config.requests.requests[{i}].request.model: the batch runs "
                                       f"models/{model_id}; this request names models/{named}.\n")
            line["r"] = item.request
        out.append(orjson.dumps(line))
    return b"\n".join(out) + b"\n", len(out)


def file_lines(source: Path, dest: Path, model_id: str, file_id: str, max_line: int) -> int:
    """An input file's lines (`{"key", "request"}` each) as input lines: `{"k": key, "r": request}`, or `{"e": why}`
    for a line that is not one. A file with no request at all is not a batch input; one naming another model fails
    the creation. Runs in a thread: it reads the whole file."""
    valid = 0

    def fill(obj: dict[str, Any], number: int, line: dict[str, Any]) -> None:
        nonlocal valid
        if "key" in obj:
            line["k"] = obj["key"]
        request = obj.get("request")
        if not isinstance(request, dict):
            line["e"] = f"Line {number} has no request object."
            return
        named = _model_named(request)
        if named is not None and named != model_id:
            raise ApiError.invalid(f"Line {number} of files/{file_id} names models/{named}; the batch runs "
                                   f"models/{model_id}.")
        line["r"] = request
        valid += 1

    count = _convert(source, dest, max_line, fill)
    if not valid:
        raise ApiError.invalid(f"files/{file_id} is not a batch input file: it must be JSONL, one "
                               '{"key": ..., "request": {...}} object per line.')
    return count


def _convert(source: Path, dest: Path, max_line: int,
             fill: Callable[[dict[str, Any], int, dict[str, Any]], None]) -> int:
    """Each line of `source` as an input line of `dest`: what `fill(object, line number, line)` makes of a JSON
    object, or `{"e": why}` for a line that is none. Returns how many lines."""
    count = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        for number, raw in _raw_lines(src, max_line):
            line: dict[str, Any] = {}
            obj = _json_object(raw, number, max_line, line)
            if obj is not None:
                fill(obj, number, line)
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


def _raw_lines(src: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """The file's non-blank lines with their numbers; None for one longer than `max_line` (never read whole)."""
    number = 0
    while raw := src.readline(max_line + 1):
        number += 1
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while (rest := src.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # the rest of an overlong line
            yield number, None
        elif raw.strip():
            yield number, raw


def _json_object(raw: bytes | None, number: int, max_line: int, line: dict[str, Any]) -> dict[str, Any] | None:
    """The line's JSON object, or None with why in `line["e"]`."""
    if raw is None:
        line["e"] = f"Line {number} is longer than {max_line} bytes."
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line["e"] = f"Line {number} is not valid JSON: {exc}."
        return None
    if not isinstance(obj, dict):
        line["e"] = f"Line {number} is not a JSON object."
        return None
    return obj


def openai_lines(source: Path, dest: Path, endpoint: str, file_id: str, max_line: int) -> tuple[int, str | None]:
    """An OpenAI batch file's lines (`{"custom_id", "method", "url", "body"}`) as input lines: `{"k": custom_id, "r":
    body}`, or `{"e": why}`. Every line must be for `endpoint` and one model, which is returned. Runs in a thread."""
    model: str | None = None

    def fill(obj: dict[str, Any], number: int, line: dict[str, Any]) -> None:
        nonlocal model
        if "custom_id" in obj:
            line["k"] = obj["custom_id"]
        body = obj.get("body")
        url = obj.get("url")
        if url is not None and url != endpoint:
            raise ApiError.invalid(f"Line {number} of files/{file_id} is for {url}; the batch's endpoint is "
                                   f"{endpoint}.")
        named = body.get("model") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            line["e"] = f"Line {number} has no body object."
        elif not isinstance(named, str) or not named:
            line["e"] = f"Line {number}: the body names no model."
        elif model is not None and named.removeprefix("models/") != model:
            raise ApiError.invalid(f"Line {number} of files/{file_id} is for {named}; a batch runs one model and its "
                                   f"first request is for {model}.")
        else:
            model = named.removeprefix("models/")
            line["r"] = body

    count = _convert(source, dest, max_line, fill)
    if model is None:
        raise ApiError.invalid(f"files/{file_id} is not a batch input file: it must be JSONL, one "
                               '{"custom_id": ..., "method": "POST", "url": ..., "body": {...}} object per line.')
    return count, model


async def read_file(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as fh:
        while block := await asyncio.to_thread(fh.read, 1 << 20):
            yield block
