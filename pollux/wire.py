"""Proto-JSON rules shared by every native route: casing, enums, payload errors, JSON and SSE encoding.

Requests are parsed by pydantic models derived from `ProtoModel`: a known field is accepted in camelCase (its
JSON name) or snake_case (its proto name) at any depth, an unknown one is a 400 that names it, and user data
(`Struct`-typed fields, schema property names) is typed `dict[str, Any]` so it is never re-cased.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import Response

from . import jsonsize
from .errors import ApiError

PROTO_PACKAGE = "google.ai.generativelanguage.v1beta"


class ProtoModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
        extra="forbid", protected_namespaces=(), frozen=False,
    )


def enum(proto_name: str, *values: str) -> Any:
    """A proto enum field: a string, case-insensitive on input (the REST docs send `"low"`), upper-case after."""
    allowed = frozenset(values)

    def check(value: Any) -> str:
        if isinstance(value, str) and value.upper() in allowed:
            return value.upper()
        raise PydanticCustomError("proto_enum", "{type}", {"type": f"type.googleapis.com/{PROTO_PACKAGE}.{proto_name}"})

    return Annotated[str, BeforeValidator(check)]


# Proto scalars as proto3 JSON reads them: numbers, or the same in a string ("5", "0.5", and for floats "NaN",
# "Infinity", "-Infinity"); integers may be written as floats with nothing after the point (`"topK": 40.0`). A
# boolean is never a number, and a value the type cannot hold is refused, not wrapped or rounded to infinity.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")
# Unambiguous (no two ways to split the digits), so a long string of digits cannot make it backtrack.
_NUMBER_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
FLOAT32_MAX = 3.4028234663852886e38


def _scalar_error(type_name: str) -> PydanticCustomError:
    return PydanticCustomError("proto_scalar", "{type}", {"type": type_name})


def _integer(type_name: str, bits: int) -> Callable[[Any], int]:
    low, high = -2 ** (bits - 1), 2 ** (bits - 1) - 1

    def check(value: Any) -> int:
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is int and low <= value <= high:  # `type`, not isinstance: True is an int to Python
            return value
        raise _scalar_error(type_name)

    return check


def _floating(type_name: str, limit: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, str):
            if value in _NON_FINITE:
                return _NON_FINITE[value]
            if (len(value) > 64 or not _NUMBER_TEXT.fullmatch(value)
                    or not math.isfinite(float(value))):  # "1e999" is out of range
                raise _scalar_error(type_name)
            value = float(value)
        if type(value) not in (int, float):
            raise _scalar_error(type_name)
        if isinstance(value, float) and not math.isfinite(value):
            return value  # only the Python side (the OpenAI bridge) hands over one; the ranges decide on it
        if not -limit <= value <= limit:
            raise _scalar_error(type_name)
        return float(value)

    return check


Int32 = Annotated[int, PlainValidator(_integer("TYPE_INT32", 32))]
Int64 = Annotated[int, PlainValidator(_integer("TYPE_INT64", 64))]
Float = Annotated[float, PlainValidator(_floating("TYPE_FLOAT", FLOAT32_MAX))]
Double = Annotated[float, PlainValidator(_floating("TYPE_DOUBLE", sys.float_info.max))]


M = TypeVar("M", bound=BaseModel)

_TYPE_NAMES = {
    "float": "TYPE_FLOAT", "int": "TYPE_INT32", "bool": "TYPE_BOOL", "string": "TYPE_STRING",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _snake(str(part))
    return out


def number_text(value: float) -> str:
    """A number as Google's C++ stack prints one (`SimpleDtoa`): `1e+23`, `0.1`, `3000000000`, `NaN`."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.15g}"
    return text if float(text) == value else f"{value:.17g}"


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def payload_error(exc: ValidationError) -> ApiError:
    """Render pydantic's errors the way the real API words proto-JSON parse errors."""
    violations: list[tuple[str | None, str]] = []
    for err in exc.errors(include_url=False):
        kind, loc = err["type"], tuple(err["loc"])
        if kind == "json_invalid":
            violations.append((None, f"Invalid JSON payload received. {err['msg']}."))
        elif kind == "extra_forbidden":
            where = f" at '{_path(loc[:-1])}'" if len(loc) > 1 else ""
            violations.append((_path(loc[:-1]) or None,
                               f'Invalid JSON payload received. Unknown name "{loc[-1]}"{where}: Cannot find field.'))
        elif kind == "missing":
            violations.append((_path(loc), f"Missing required field '{_path(loc)}'."))
        elif kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
            violations.append((None, 'Invalid JSON payload received. Unknown name "": Root element must be a message.'))
        else:
            if kind in ("proto_enum", "proto_scalar"):
                type_name = (err.get("ctx") or {}).get("type", "TYPE_ENUM")
            else:
                type_name = next((t for k, t in _TYPE_NAMES.items() if kind.startswith(k)), "TYPE_MESSAGE")
            path = _path(loc)
            violations.append((path, f"Invalid value at '{path}' ({type_name}), {_json_value(err.get('input'))}"))
    return ApiError.bad_request_fields(violations)


def parse(model: type[M], body: bytes) -> M:
    """Parse a request body into a wire model, or raise the 400 the real API would."""
    if not body.strip():
        body = b"{}"
    try:
        # Strict JSON first: pydantic's parser takes NaN, Infinity and 1e999, which the API refuses (and which no
        # schema or sampler downstream should meet).
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError.bad_request_fields([(None, f"Invalid JSON payload received. {exc}.")]) from None
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise payload_error(exc) from None


async def read_body(request: Request, limit: int, max_values: int | None = None) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (never read whole first), or when it holds more
    than `max_values` JSON values (which would hold the event loop while parsed)."""
    too_large = ApiError.invalid(f"Request payload size exceeds the limit: {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise too_large
        body = await request.body()  # the server stops at the declared length
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        body = b"".join(chunks)
    if max_values is not None:
        await jsonsize.check(body, max_values)
    return body


def page_params(request: Request) -> tuple[int | None, str | None]:
    """`pageSize` and `pageToken` of a list call, in either casing; a page size that is not a number is the 400."""
    query = request.query_params
    size = query.get("pageSize") or query.get("page_size")
    token = query.get("pageToken") or query.get("page_token")
    if not size:
        return None, token
    try:
        return int(size), token
    except ValueError:
        raise ApiError.invalid(f"Invalid value at 'page_size' (TYPE_INT32), \"{size}\"") from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


class JSONResponse(Response):
    media_type = "application/json; charset=UTF-8"

    def render(self, content: Any) -> bytes:
        # numpy vectors (embeddings) go out at their own float32 precision: half the bytes of a float64 repr
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.code)


def sse_event(obj: Any) -> bytes:
    """One server-sent event: `data: <one-line JSON>` and a blank line (the only framing both SDKs accept)."""
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


def page_token(created: datetime, key: str) -> str:
    """A list's next-page token: where the page ended, in the order the list is read (creation time, then id)."""
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{key}".encode()).decode()


def page_limit(requested: int | None, default: int, most: int, request: str) -> int:
    """How many items a list call's page holds: `pageSize` (unset or 0: `default`), at most `most`; negative is
    the real API's 400, naming the `request` message (ListFilesRequest, ...)."""
    if requested is not None and requested < 0:
        raise ApiError.invalid(f"* {request}.page_size: page_size must not be negative\n")
    return min(requested or default, most)


def page_of(records: list[Any], size: int) -> tuple[list[Any], str | None]:
    """A listing's page from the `size + 1` records read for it: the first `size`, and the next page's token when
    there is more (never an empty page that carries a token). Records have `create_time` and `id`."""
    if len(records) <= size:
        return records, None
    last = records[size - 1]
    return records[:size], page_token(last.create_time, last.id)


def page_position(token: str | None) -> tuple[datetime, str] | None:
    """The (creation time, id) a `page_token` names; None for the first page; a 400 for a token it did not make."""
    if not token:
        return None
    try:
        created, _, key = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(created), key
    except (ValueError, binascii.Error):
        raise ApiError.invalid("Invalid page token.") from None
