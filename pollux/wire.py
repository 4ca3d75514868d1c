"""Proto-JSON rules shared by every native route: casing, enums, payload errors, JSON and SSE encoding.

Requests are parsed by pydantic models derived from `ProtoModel`: a known field is accepted in camelCase (its
JSON name) or snake_case (its proto name) at any depth, an unknown one is a 400 that names it, and user data
(`Struct`-typed fields, schema property names) is typed `dict[str, Any]` so it is never re-cased.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import Response

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


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
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
            if kind == "proto_enum":
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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (never read whole first)."""
    too_large = ApiError.invalid(f"Request payload size exceeds the limit: {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise too_large
        return await request.body()  # the server stops at the declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


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
