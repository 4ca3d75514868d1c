"""A fake vLLM OpenAI-compatible server, answering as vLLM's does, for Pollux's tests and benchmarks.

It imitates vLLM 0.33.0 (the PyPI wheel vllm-0.33.0, commit g4ba787ec9) started as

    vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser hermes \
        --enable-prompt-tokens-details          # prefix caching is on by default in the V1 engine

Field names, key order, chunk shapes and error bodies follow these files of that wheel:
  vllm/entrypoints/openai/chat_completion/{api_router,serving,protocol,stream_processor,message_assembly}.py
  vllm/entrypoints/generate/base/protocol.py        DeltaMessage, DeltaToolCall, StreamOptions, ResponseFormat
  vllm/entrypoints/serve/engine/{protocol,serving}.py  OpenAIBaseModel (unknown fields are ignored), ErrorResponse,
                                                   ModelCard, UsageInfo, the 404 "does not exist" wording
  vllm/entrypoints/serve/exception_handling/       error bodies: {"error": {"message", "type", "param", "code"}}
  vllm/entrypoints/serve/tokenize/{protocol,serving}.py, serve/instrumentator/{health,basic}.py
  vllm/entrypoints/serve/middleware/authenticate.py, vllm/entrypoints/pooling/embed/{protocol,serving}.py
  vllm/renderers/params.py                         the context-length and max_tokens wordings
  vllm/tool_parsers/{hermes_tool_parser,streaming}.py, vllm/parser/abstract_parser.py   tool-call deltas
  vllm/sampling_params.py, vllm/exceptions.py      validation wordings ("... (parameter=p, value=v)")
and were compared with vLLM 0.11.0 (vllm/entrypoints/openai/{protocol,serving_chat,serving_engine}.py), which sends
`reasoning_content` instead of `reasoning` (0.12 to ~0.16 sent both; see the `reasoning_field` knob).

The model is a deterministic stand-in so that tests can predict every answer:
  * tokens: special tokens (<|im_start|>, <think>, ...) are single tokens; other text splits into pieces, each a word
    or a punctuation mark with the whitespace before it (so pieces concatenate back to the text): `tokenize()`.
  * the prompt is a ChatML rendering (`render_chat()`); /tokenize and usage.prompt_tokens use the same one.
  * the generated tokens are `<think>`, "Let me think about: <last user text>", `</think>`, then the answer
    ("Echo: <last user text>", a JSON instance, a choice, or tool calls), then `<|im_end|>` (EOS). Think tags and
    EOS count as completion tokens, as in vLLM; usage.completion_tokens_details.reasoning_tokens counts the reasoning.
  * prefix caching: prompt tokens in full blocks of 16 shared with an earlier request of the same cache_salt.

Simplifications (the real server differs here): no `\\n` around the reasoning and no `\\n\\n` before the content
(Qwen3 really emits "<think>\\n...\\n</think>\\n\\n"); tool calls come out whole (no leftover content) and, with
parallel_tool_calls=false, only one is generated; `regex`/`grammar` outputs are a small fixed guess; pydantic's
type-error wording is approximated; the legacy `guided_*` fields are ignored, exactly as vLLM 0.33 does.

Use: `with FakeVLLM() as fake: ... fake.base_url ...`, or `python -m tests.fake_vllm --port 8001` (also
`python tests/fake_vllm.py`), `--fixed` for a benchmark upstream that answers one precomputed reply.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Self

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VLLM_VERSION = "0.33.0"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
REASONING_PREFIX = "Let me think about: "
CONTENT_PREFIX = "Echo: "
MEDIA_TOKENS = 10  # placeholder tokens per image/audio/video part
BLOCK_SIZE = 16  # vLLM's default KV-cache block size: prefix-cache hits come in whole blocks

# Qwen3's real ids for its special tokens, so token lists look like Qwen's.
SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|audio_pad|>": 151646,
    "<think>": 151667,
    "</think>": 151668,
}
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)) + ")")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_ID_TO_PIECE: dict[int, str] = {v: k for k, v in SPECIAL_TOKENS.items()}

# Content-part types and the modality each counts as (vllm/renderers/chat_utils/chat_message.py).
_MEDIA_PARTS = {"image_url": "image", "image_pil": "image", "image_embeds": "image", "input_image": "image",
                "input_audio": "audio", "audio_url": "audio", "audio_embeds": "audio",
                "video_url": "video", "video_embeds": "video"}
_PLACEHOLDER = {"image": "<|image_pad|>", "audio": "<|audio_pad|>", "video": "<|video_pad|>"}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and chat rendering (the same functions serve /tokenize, usage and the prefix cache, so counts agree)
# ---------------------------------------------------------------------------------------------------------------

def tokenize(text: str) -> list[str]:
    """Token strings of `text`: special tokens whole, else word-or-punctuation pieces with their leading space."""
    out: list[str] = []
    for segment in _SPECIAL_RE.split(text):
        if segment in SPECIAL_TOKENS:
            out.append(segment)
        elif segment:
            out.extend(_PIECE_RE.findall(segment))
    return out


def token_id(piece: str) -> int:
    """A stable id for a token string (a 31-bit CRC; remembered so /detokenize can invert it)."""
    tid = SPECIAL_TOKENS.get(piece)
    if tid is None:
        tid = zlib.crc32(piece.encode()) & 0x7FFFFFFF
        _ID_TO_PIECE.setdefault(tid, piece)
    return tid


def encode(text: str) -> list[int]:
    return [token_id(p) for p in tokenize(text)]


def decode(ids: list[int]) -> str:
    return "".join(_ID_TO_PIECE[i] for i in ids)


def count_tokens(text: str) -> int:
    return len(tokenize(text))


class _BadRequest(Exception):
    """A 400 the handler turns into vLLM's error body (a VLLMValidationError in vLLM)."""

    def __init__(self, message: str, parameter: str | None = None, value: Any = None, *, plain: bool = False):
        super().__init__(message)
        # vLLM's VLLMValidationError.__str__ appends "(parameter=..., value=...)" to the message it returns.
        extras = [f"{k}={v}" for k, v in (("parameter", parameter), ("value", value)) if v is not None]
        self.message = message if plain or not extras else f"{message} ({', '.join(extras)})"
        self.param = parameter


def _part(part: Any, media: list[tuple[str, str]]) -> tuple[bool, str]:
    """One content part as (is_media, prompt text); a media part becomes MEDIA_TOKENS placeholders and is appended
    to `media` as (modality, content hash)."""
    if isinstance(part, str):
        return False, part
    if not isinstance(part, dict):
        raise _BadRequest("Invalid 'type' field in multimodal part.", "type")
    ptype = part.get("type")
    if ptype is None:  # vLLM infers the type from the key when it is missing
        ptype = next((k for k in (*_MEDIA_PARTS, "text") if k in part), None)
        if ptype is None:
            raise _BadRequest("Missing 'type' field in multimodal part.", "type")
    if not isinstance(ptype, str):
        raise _BadRequest("Invalid 'type' field in multimodal part.", "type")
    if ptype in ("text", "input_text"):
        return False, str(part.get("text") or "")
    if ptype == "refusal":
        return False, str(part.get("refusal") or "")
    if ptype in ("thinking", "tool_reference"):
        return False, ""
    modality = _MEDIA_PARTS.get(ptype)
    if modality is None:
        supported = sorted([*_MEDIA_PARTS, "text", "refusal", "thinking", "tool_reference"])
        raise _BadRequest(f"Unsupported chat content part type: {ptype!r}. Supported types: {', '.join(supported)}.",
                          "type", ptype)
    # The media's identity feeds the prefix-cache key, as vLLM hashes multimodal inputs into its block hashes.
    media.append((modality, hashlib.sha256(orjson.dumps(part.get(ptype), option=orjson.OPT_SORT_KEYS)).hexdigest()))
    return True, _PLACEHOLDER[modality] * MEDIA_TOKENS


def _content_text(content: Any, media: list[tuple[str, str]]) -> str:
    """Message content as text: list parts' texts are joined with "\\n", media placeholders go first (vLLM's
    default when the text names no placeholder)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _BadRequest("Invalid message content: expected a string or a list of content parts.", "messages")
    placeholders, texts = [], []
    for part in content:
        is_media, text = _part(part, media)
        (placeholders if is_media else texts).append(text)
    return "".join(placeholders) + "\n".join(texts)


def _tool_call_text(call: dict) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    try:
        args = orjson.loads(args) if isinstance(args, str) else args
    except orjson.JSONDecodeError:
        pass
    return "<tool_call>\n" + _dumps_py({"name": fn.get("name"), "arguments": args}) + "\n</tool_call>"


def render_chat(messages: list[dict], tools: list[dict] | None = None, *, add_generation_prompt: bool = True,
                continue_final_message: bool = False, enable_thinking: bool = True,
                media: list[tuple[str, str]] | None = None) -> str:
    """The prompt text of a chat: Qwen3's ChatML, simplified.

    <|im_start|>system\\n# Tools\\n<tools>\\n{tool JSON per line}\\n</tools><|im_end|>\\n   (only with tools)
    <|im_start|>{role}\\n{content}<|im_end|>\\n                                          (per message; an assistant's
                                                                     tool_calls follow its content as <tool_call>s)
    <|im_start|>assistant\\n                         (add_generation_prompt; + "<think>\\n\\n</think>\\n\\n" when
                                                    enable_thinking is false, as Qwen3's template does)
    """
    media = [] if media is None else media
    out = []
    if tools:
        out.append("<|im_start|>system\n# Tools\n<tools>\n" + "\n".join(_dumps_py(t) for t in tools)
                   + "\n</tools><|im_end|>\n")
    for i, msg in enumerate(messages):
        text = _content_text(msg.get("content"), media)
        calls = msg.get("tool_calls") or []
        if calls:
            text = "\n".join([text, *(_tool_call_text(c) for c in calls)]) if text else "\n".join(
                _tool_call_text(c) for c in calls)
        last = i == len(messages) - 1
        out.append(f"<|im_start|>{msg['role']}\n{text}" + ("" if last and continue_final_message else "<|im_end|>\n"))
    if add_generation_prompt and not continue_final_message:
        out.append("<|im_start|>assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n"))
    return "".join(out)


def _dumps_py(obj: Any) -> str:
    """JSON as Python's json.dumps writes it by default (", " and ": "), which is how models and vLLM format it."""
    return json.dumps(obj, ensure_ascii=False)


def _normalize_tools(tools: list[dict] | None) -> list[dict] | None:
    """Tools as vLLM hands them to the chat template (ChatCompletionToolsParam.model_dump())."""
    if not tools:
        return None
    out = []
    for tool in tools:
        fn = tool.get("function") or {}
        entry: dict[str, Any] = {"name": fn.get("name"), "description": fn.get("description"),
                                 "parameters": fn.get("parameters")}
        if fn.get("strict") is not None:
            entry["strict"] = fn["strict"]
        out.append({"type": "function", "function": entry})
    return out


def last_user_text(messages: list[dict]) -> str:
    """The text of the last user message: a string, or its text parts joined with "\\n" (media ignored)."""
    for msg in reversed(messages):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        texts = []
        for part in content or []:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") in ("text", "input_text"):
                texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Structured outputs: a minimal instance of a JSON schema
# ---------------------------------------------------------------------------------------------------------------

def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small JSON value satisfying `schema`: objects with their required properties only, strings "x", numbers 0
    (moved into [minimum, maximum]), booleans false, enums and consts their first value, arrays of minItems items."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 32:
        return None
    if "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) and key else target
        return minimal_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")]
            return minimal_instance((options or schema[key])[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            sub = _resolve(sub, root)
            for k, v in sub.items():
                if k == "properties":
                    merged.setdefault("properties", {}).update(v)
                elif k == "required":
                    merged["required"] = [*merged.get("required", []), *v]
                else:
                    merged.setdefault(k, v)
        return minimal_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema or "required" in schema else "array" if "items" in schema else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: minimal_instance(props.get(name, {}), root, depth + 1) for name in schema.get("required", [])}
    if kind == "array":
        prefix = schema.get("prefixItems") or []
        count = max(int(schema.get("minItems", 0)), 0)
        items = [minimal_instance(s, root, depth + 1) for s in prefix[:count]]
        return items + [minimal_instance(schema.get("items") or {}, root, depth + 1)] * (count - len(items))
    if kind == "string":
        fmt = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00",
               "email": "x@example.com", "uri": "https://example.com", "uuid": "00000000-0000-0000-0000-000000000000"}
        text = fmt.get(schema.get("format"), "x")
        text = text * max(1, math.ceil(int(schema.get("minLength", 1)) / len(text)))
        return text[:schema["maxLength"]] if "maxLength" in schema else text
    if kind in ("integer", "number"):
        value: float = 0
        if "minimum" in schema and value < schema["minimum"]:
            value = math.ceil(schema["minimum"])
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = math.floor(schema["exclusiveMinimum"]) + 1
        if "maximum" in schema and value > schema["maximum"]:
            value = math.floor(schema["maximum"])
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            value = math.ceil(schema["exclusiveMaximum"]) - 1
        return int(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x"  # an unconstrained schema: any JSON value will do


def _resolve(schema: Any, root: Any) -> dict:
    if isinstance(schema, dict) and "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) and key else target
        return target if isinstance(target, dict) else {}
    return schema if isinstance(schema, dict) else {}


def _regex_guess(pattern: str) -> str:
    for candidate in ("x", "0", "a", "yes", "true", "A", "1", ""):
        try:
            if re.fullmatch(pattern, candidate):
                return candidate
        except re.error:
            break
    return "x"


# ---------------------------------------------------------------------------------------------------------------
# vLLM's error bodies
# ---------------------------------------------------------------------------------------------------------------

def _sanitize(message: str) -> str:
    """vllm/entrypoints/serve/exception_handling/utils.py: strip addresses, tracebacks and paths from messages."""
    message = re.sub(r" at 0x[0-9a-fA-F]+>", ">", message)
    message = re.sub(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?', "", message)
    message = re.sub(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+", "<path>", message)
    message = re.sub(r"(?:/[\w\-]+)+/[\w\-]+\.\w+", "<path>", message)
    return message.strip()


def error_body(message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None) -> dict:
    """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": _sanitize(message), "type": err_type, "param": param, "code": code}}


def default_error_body(status: int) -> dict:
    """The body vLLM sends for `status` in its commonest case of it."""
    if status == 400:
        return error_body("Bad request", "BadRequestError", 400)
    if status == 404:
        return error_body("The model `unknown` does not exist.", "NotFoundError", 404, "model")
    if status == 500:  # GenerationError (a request failed inside the engine)
        return error_body("Internal server error", "InternalServerError", 500)
    if status == 503:  # QueueOverflowError, a GracefulHTTPError: its type is the status phrase
        return error_body("The engine is currently busy and cannot accept new requests. Please try again later "
                          "or on a different instance.", "Service Unavailable", 503)
    phrase = HTTPStatus(status).phrase
    return error_body(phrase, phrase, status)


def _validation_body(loc: str, kind: str, msg: str, value: Any) -> dict:
    """A FastAPI RequestValidationError as vLLM words it (type "Bad Request", a pydantic error dict in the text)."""
    if isinstance(value, (list, tuple, dict, set)):
        shown: Any = f"<{type(value).__name__} of {len(value)} items>"
    else:
        shown = value
    err = {"type": kind, "loc": loc, "msg": msg, "input": shown}
    return error_body(f"1 validation error:\n  {err}", "Bad Request", 400, loc)


class _Invalid(Exception):
    def __init__(self, body: dict):
        super().__init__(body["error"]["message"])
        self.body = body


_TYPES: dict[str, tuple[type | tuple[type, ...], str, str]] = {
    "str": (str, "string_type", "Input should be a valid string"),
    "int": (int, "int_type", "Input should be a valid integer"),
    "num": ((int, float), "float_type", "Input should be a valid number"),
    "bool": (bool, "bool_type", "Input should be a valid boolean"),
    "list": (list, "list_type", "Input should be a valid list"),
    "dict": (dict, "dict_type", "Input should be a valid dictionary"),
}


def _check_type(body: dict, name: str, kind: str, *, nullable: bool = True) -> None:
    if name not in body or (body[name] is None and nullable):
        return
    types, err_type, msg = _TYPES[kind]
    value = body[name]
    ok = isinstance(value, types) and not (kind in ("int", "num") and isinstance(value, bool))
    if kind == "int" and isinstance(value, float) and value.is_integer():
        ok = True  # pydantic's lax mode accepts 3.0 for an int
    if not ok:
        raise _Invalid(_validation_body(f"body.{name}", err_type, msg, value))


# ---------------------------------------------------------------------------------------------------------------
# Prefix cache (vLLM's automatic prefix caching, by whole blocks, salted by cache_salt)
# ---------------------------------------------------------------------------------------------------------------

class PrefixCache:
    """Remembers the full blocks of every prompt; `cached()` is how many leading tokens an earlier prompt of the
    same salt already computed. As in vLLM, block hashes chain (a block only matches after the same prefix), the
    salt enters the first block's hash, media enter by content hash, and the last prompt token is always computed."""

    def __init__(self, block_size: int = BLOCK_SIZE):
        self.block_size = block_size
        self._blocks: set[int] = set()
        self._lock = threading.Lock()

    def _hashes(self, keys: list[Any], salt: str | None) -> list[int]:
        out, prev = [], hash(("salt", salt))
        for start in range(0, len(keys) - len(keys) % self.block_size, self.block_size):
            prev = hash((prev, tuple(keys[start:start + self.block_size])))
            out.append(prev)
        return out

    def lookup_and_insert(self, keys: list[Any], salt: str | None) -> int:
        hashes = self._hashes(keys, salt)
        usable = (len(keys) - 1) // self.block_size  # never the whole prompt: one token must be computed
        with self._lock:
            hits = 0
            for h in hashes[:usable]:
                if h not in self._blocks:
                    break
                hits += 1
            self._blocks.update(hashes)
        return hits * self.block_size

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()


# ---------------------------------------------------------------------------------------------------------------
# Generation: the token plan of one choice, and what it becomes (message, stream deltas, usage)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Tok:
    token: str  # the token string (logprobs, ids)
    text: str  # what it adds to the output text ("" for think tags and EOS), cut by a stop string
    kind: str  # think | reasoning | content | tool | eos
    call: int = -1  # tool tokens: which call
    role: str = ""  # tool tokens: pre | args | post


@dataclass
class _Call:
    name: str
    arguments: str  # JSON text, as json.dumps writes it
    id: str = ""


@dataclass
class _Choice:
    index: int
    tokens: list[_Tok]
    finish_reason: str
    stop_reason: str | int | None
    mode: str  # plain | auto | named | required
    calls: list[_Call] = field(default_factory=list)
    complete_calls: int = 0  # how many calls were generated whole
    reasoning_tokens: int = 0


def _pieces(text: str, kind: str, **kw: Any) -> list[_Tok]:
    return [_Tok(p, p, kind, **kw) for p in tokenize(text)]


def _call_tokens(mode: str, calls: list[_Call]) -> list[_Tok]:
    """The tokens a model writes for `calls`: hermes `<tool_call>` JSON (auto), the bare arguments (a named tool,
    constrained by vLLM's structured outputs) or a JSON array of {"name", "parameters"} (required)."""
    toks: list[_Tok] = []
    for j, call in enumerate(calls):
        if mode == "auto":
            pre = ["<tool_call>", *tokenize(f'\n{{"name": {_dumps_py(call.name)}, "arguments": ')]
            post = [*tokenize("}\n"), "</tool_call>", *(tokenize("\n") if j < len(calls) - 1 else [])]
        elif mode == "required":
            pre = tokenize(("[" if j == 0 else ", ") + f'{{"name": {_dumps_py(call.name)}, "parameters": ')
            post = tokenize("}" + ("]" if j == len(calls) - 1 else ""))
        else:
            pre, post = [], []
        toks += [_Tok(p, p, "tool", j, "pre") for p in pre]
        toks += [_Tok(p, p, "tool", j, "args") for p in tokenize(call.arguments)]
        toks += [_Tok(p, p, "tool", j, "post") for p in post]
    return toks


def _apply_stop(tokens: list[_Tok], stops: list[str], include: bool) -> tuple[list[_Tok], str | None]:
    """Cut the output at the first stop string, as vLLM's detokenizer does on the whole output text: the token that
    completes the stop string is the last one generated, and the text ends before the stop string (or after it,
    with include_stop_str_in_output), even when the stop string began in earlier tokens."""
    stops = [s for s in stops if s]
    if not stops:
        return tokens, None
    text, longest = "", max(len(s) for s in stops)
    for i, tok in enumerate(tokens):
        start = max(0, len(text) - longest + 1)
        text += tok.text
        hits = sorted((pos, stop) for stop in stops if (pos := text.find(stop, start)) >= 0)
        if not hits:
            continue
        pos, stop = hits[0]
        budget = pos + (len(stop) if include else 0)  # characters of output text that remain
        kept = []
        for t in tokens[:i + 1]:
            kept.append(_Tok(t.token, t.text[:max(budget, 0)], t.kind, t.call, t.role))
            budget -= len(t.text)
        return kept, stop
    return tokens, None


# ---------------------------------------------------------------------------------------------------------------
# The server state and its ASGI app
# ---------------------------------------------------------------------------------------------------------------

def _now() -> int:
    return int(time.time())


def _uuid16() -> str:
    """vllm.utils.random_uuid(): 16 hex characters."""
    return f"{uuid.uuid4().int & 0xFFFFFFFFFFFFFFFF:016x}"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


class _SSE:
    """An SSE response sending `events` one by one, `chunk_delay` apart. With `cut_after` it ends after that many
    events without [DONE]: "abort" drops the connection (the client sees an incomplete chunked body), "eof" ends the
    body cleanly. It counts client disconnects, and the request stays in flight until the stream ends."""

    # vLLM answers with Starlette's StreamingResponse(media_type="text/event-stream"), which adds the charset.
    headers: ClassVar = [(b"content-type", b"text/event-stream; charset=utf-8")]

    def __init__(self, events: list[bytes], fake: _Fake, cut_after: int | None, in_flight: bool = False):
        self.events, self.fake, self.cut_after, self.in_flight = events, fake, cut_after, in_flight

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            for i, event in enumerate(self.events):
                if self.cut_after is not None and i >= self.cut_after:
                    if self.fake.cut_stream_mode == "abort":
                        return  # uvicorn closes the connection without the terminating chunk
                    break
                if i and self.fake.chunk_delay:
                    await asyncio.sleep(self.fake.chunk_delay)
                if disconnected.is_set():
                    self.fake._count("disconnects")
                    return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            if self.in_flight:
                self.fake._count("in_flight", -1)


class _QuietIncomplete(logging.Filter):
    """Drops uvicorn's log line for a stream the fake ends on purpose without completing it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_QuietIncomplete())


class _Fake:
    """The server: knobs, records and handlers. FakeVLLM wraps it with a uvicorn thread."""

    def __init__(self, *, model: str = DEFAULT_MODEL, root: str | None = None, max_model_len: int = 32768,
                 version: str = VLLM_VERSION, reasoning: bool = True, reasoning_field: str = "reasoning",
                 tool_parser: bool = True, prompt_tokens_details: bool = True, embedding_dim: int = 8,
                 api_key: str | None = None, fixed: bool = False, fixed_text: str = "Hello from the fake vLLM.",
                 delay: float = 0.0, chunk_delay: float = 0.0, cut_stream_after: int | None = None,
                 cut_stream_mode: str = "abort", stream_error_after: int | None = None, down: bool | str = False,
                 block_size: int = BLOCK_SIZE, system_fingerprint: str | None = "auto"):
        if reasoning_field not in ("reasoning", "reasoning_content", "both"):
            raise ValueError("reasoning_field must be 'reasoning', 'reasoning_content' or 'both'")
        self.model, self.root, self.max_model_len, self.version = model, root or model, max_model_len, version
        self.reasoning, self.reasoning_field, self.tool_parser = reasoning, reasoning_field, tool_parser
        self.prompt_tokens_details, self.embedding_dim, self.api_key = prompt_tokens_details, embedding_dim, api_key
        self.fixed, self.fixed_text = fixed, fixed_text
        self.delay, self.chunk_delay = delay, chunk_delay
        self.cut_stream_after, self.cut_stream_mode, self.stream_error_after = cut_stream_after, cut_stream_mode, \
            stream_error_after
        self.down: bool | str = down
        if system_fingerprint == "auto":  # vLLM's default "full" mode: vllm-<version>-<8 hex of the config hash>
            system_fingerprint = f"vllm-{version}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
        self.system_fingerprint = system_fingerprint
        self.cache = PrefixCache(block_size)
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._failures: collections.deque[tuple[str | None, int, Any]] = collections.deque()
        self.stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "disconnects": 0}
        self.started = _now()
        self._fixed_cache: dict[tuple[bool, bool], Any] = {}
        self.app = Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/version", self.version_route, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/tokenize", self.tokenize_route, methods=["POST"]),
            Route("/detokenize", self.detokenize_route, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/_fake/requests", self.fake_requests, methods=["GET"]),
            Route("/_fake/control", self.fake_control, methods=["POST"]),
        ], exception_handlers={HTTPException: self._http_error})

    # -- records and knobs ----------------------------------------------------------------------------------------

    def _count(self, key: str, delta: int = 1) -> None:
        with self._lock:
            self.stats[key] += delta
            if key == "in_flight":
                self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])

    def fail_next(self, n: int = 1, status: int = 500, body: Any = None, path: str | None = None) -> None:
        with self._lock:
            self._failures.extend([(path, status, body)] * n)

    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            for key in self.stats:
                self.stats[key] = 0
        self.cache.clear()

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        # FastAPI's own handler answers unknown routes and methods: {"detail": "Not Found"}.
        assert isinstance(exc, HTTPException)
        return JSONResponse({"detail": exc.detail}, exc.status_code)

    async def _prelude(self, request: Request, *, api: bool = True) -> tuple[Response | None, Any]:
        """What every route does first: record the request, then the knobs that answer instead of vLLM (down,
        the API key, an injected failure, the delay), then FastAPI's checks of a JSON body."""
        raw = await request.body()
        bad_json: orjson.JSONDecodeError | None = None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            body, bad_json = None, exc
        path = request.url.path
        with self._lock:
            self.stats["requests"] += 1
            if not self.fixed:  # a benchmark would grow this list without end
                self._requests.append({"method": request.method, "path": path, "body": body,
                                       "headers": {k.lower(): v for k, v in request.headers.items()}})
        if not api:
            return None, body
        if self.down:
            return _json(default_error_body(503), 503), None
        if self.api_key and path.startswith(("/v1", "/v2")):  # vLLM guards only these prefixes
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token != self.api_key:
                return _json({"error": "Unauthorized"}, 401), None
        with self._lock:
            failure = next(((i, f) for i, f in enumerate(self._failures) if f[0] in (None, path)), None)
            if failure is not None:
                del self._failures[failure[0]]
        if failure is not None:
            _, status, fbody = failure[1]
            fbody = default_error_body(status) if fbody is None else fbody
            if isinstance(fbody, (dict, list)):
                return _json(fbody, status), None
            return Response(fbody, status, media_type="application/json"), None
        if self.delay and request.method == "POST":
            # As vLLM, a client that leaves while its answer is being made aborts it (counted in "disconnects").
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.delay
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(0.05, left))
                if await request.is_disconnected():
                    self._count("disconnects")
                    return Response(status_code=499), None
        if request.method != "POST":
            return None, body
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return _json(error_body("1 validation error:\n  Unsupported Media Type: Only 'application/json' is "
                                    "allowed", "Bad Request", 400), 400), None
        if bad_json is not None:
            err = {"type": "json_invalid", "loc": f"body.{bad_json.pos}", "msg": "JSON decode error",
                   "input": "<dict of 0 items>", "ctx": {"error": bad_json.msg}}
            return _json(error_body(f"1 validation error:\n  {err}", "Bad Request", 400, f"body.{bad_json.pos}"),
                         400), None
        if not isinstance(body, dict):
            return _json(_validation_body("body", "model_attributes_type",
                                          "Input should be a valid dictionary or object to extract fields from",
                                          body), 400), None
        return None, body

    def _check_model(self, body: dict) -> Response | None:
        model = body.get("model")
        if model and model != self.model:
            return _json(error_body(f"The model `{model}` does not exist. Valid aliases: {self.model}.",
                                    "NotFoundError", 404, "model"), 404)
        return None

    # -- simple routes --------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        await self._prelude(request, api=False)
        return Response(status_code=503 if self.down else 200)  # vLLM: 503 with no body when the engine is dead

    async def version_route(self, request: Request) -> Response:
        await self._prelude(request, api=False)
        return _json({"version": self.version})

    async def models(self, request: Request) -> Response:
        early, _ = await self._prelude(request)
        if early:
            return early
        created = _now()
        return _json({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": created, "owned_by": "vllm", "root": self.root,
            "parent": None, "max_model_len": self.max_model_len,
            "permission": [{"id": f"modelperm-{_uuid16()}", "object": "model_permission", "created": created,
                            "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                            "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                            "organization": "*", "group": None, "is_blocking": False}]}]})

    async def fake_requests(self, request: Request) -> Response:
        return _json({"requests": self.requests(), "stats": dict(self.stats)})

    async def fake_control(self, request: Request) -> Response:
        """Knobs for a fake run as a subprocess: {"fail_next": {"n", "status", "body", "path"}, "delay": s,
        "chunk_delay": s, "cut_stream_after": n, "cut_stream_mode": m, "stream_error_after": n, "down": b,
        "clear": true}."""
        body = orjson.loads(await request.body() or b"{}")
        if body.get("clear"):
            self.clear()
        if "fail_next" in body:
            self.fail_next(**body["fail_next"])
        for key in ("delay", "chunk_delay", "cut_stream_after", "cut_stream_mode", "stream_error_after", "down"):
            if key in body:
                setattr(self, key, body[key])
        return _json({"ok": True})

    # -- tokenize / detokenize -----------------------------------------------------------------------------------

    async def tokenize_route(self, request: Request) -> Response:
        early, body = await self._prelude(request)
        if early:
            return early
        try:
            if "messages" in body:
                _check_type(body, "messages", "list", nullable=False)
                self._check_messages(body["messages"])
                if body.get("continue_final_message") and body.get("add_generation_prompt"):
                    raise _BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
            else:
                if not isinstance(body.get("prompt"), str):
                    raise _Invalid(_validation_body("body.prompt", "missing" if "prompt" not in body else
                                                    "string_type", "Field required" if "prompt" not in body else
                                                    "Input should be a valid string", body.get("prompt")))
        except _Invalid as exc:
            return _json(exc.body, 400)
        except _BadRequest as exc:
            return _json(error_body(exc.message, "BadRequestError", 400, exc.param), 400)
        if (missing := self._check_model(body)) is not None:
            return missing
        try:
            ids, _, _ = self._prompt(body) if "messages" in body else (encode(body["prompt"]), [], [])
        except _BadRequest as exc:
            return _json(error_body(exc.message, "BadRequestError", 400, exc.param), 400)
        strs = [_ID_TO_PIECE[i] for i in ids] if body.get("return_token_strs") else None
        return _json({"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids, "token_strs": strs})

    async def detokenize_route(self, request: Request) -> Response:
        early, body = await self._prelude(request)
        if early:
            return early
        try:
            _check_type(body, "tokens", "list", nullable=False)
        except _Invalid as exc:
            return _json(exc.body, 400)
        if (missing := self._check_model(body)) is not None:
            return missing
        unknown = [i for i in body.get("tokens", []) if not isinstance(i, int) or i not in _ID_TO_PIECE]
        if unknown:
            return _json(error_body(f"Token id {unknown[0]} is out of vocabulary", "BadRequestError", 400), 400)
        return _json({"prompt": decode(body["tokens"])})

    # -- embeddings ----------------------------------------------------------------------------------------------

    def embed(self, text_or_ids: Any, dim: int | None = None) -> np.ndarray:
        """The fake's embedding: a unit vector from SHA-256 of the input (a text or a token-id list)."""
        dim = dim or self.embedding_dim
        seed = orjson.dumps(text_or_ids)
        raw = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(math.ceil(dim * 4 / 32)))
        vec = np.frombuffer(raw[:dim * 4], dtype="<u4").astype(np.float64) / 2**32 * 2 - 1
        return (vec / np.linalg.norm(vec)).astype(np.float32)

    async def embeddings(self, request: Request) -> Response:
        early, body = await self._prelude(request)
        if early:
            return early
        if (missing := self._check_model(body)) is not None:
            return missing
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, (str, list)) for i in inputs):
            return _json(_validation_body("body.input", "string_type", "Input should be a valid string", inputs), 400)
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return _json(_validation_body("body.encoding_format", "literal_error",
                                          "Input should be 'float', 'base64', 'bytes' or 'bytes_only'", fmt), 400)
        dim = body.get("dimensions")
        data, total = [], 0
        for idx, item in enumerate(inputs):
            n = len(item) if isinstance(item, list) else count_tokens(item)
            if n > self.max_model_len:
                return _json(self._too_long(n), 400)
            total += n
            vec = self.embed(item, dim)
            emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if fmt == "base64" else vec
            data.append({"index": idx, "object": "embedding", "embedding": emb})
        return _json({"id": f"embd-{_uuid16()}", "object": "list", "created": _now(), "model": self.model,
                      "data": data, "usage": {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0,
                                              "prompt_tokens_details": None, "completion_tokens_details": None}})

    # -- chat completions ----------------------------------------------------------------------------------------

    def _too_long(self, n: int) -> dict:
        # The tokenizer truncates at max_model_len + 1 tokens, hence vLLM's "at least".
        shown = min(n, self.max_model_len + 1)
        qualifier = "at least " if shown == self.max_model_len + 1 else ""
        err = _BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                          f"contains {qualifier}{shown} input tokens, which exceeds this limit even without any "
                          f"output tokens. Please reduce the length of the input prompt.", "input_tokens", shown)
        return error_body(err.message, "BadRequestError", 400, err.param)

    @staticmethod
    def _check_messages(messages: list) -> None:
        """The types vLLM's ChatCompletionMessageParam admits; tool_call_id need not match any call."""
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise _Invalid(_validation_body(f"body.messages.{i}", "dict_type",
                                                "Input should be a valid dictionary", msg))
            if not isinstance(msg.get("role"), str):
                raise _Invalid(_validation_body(f"body.messages.{i}.role", "missing" if "role" not in msg else
                                                "string_type", "Field required" if "role" not in msg else
                                                "Input should be a valid string", msg.get("role")))
            content = msg.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise _Invalid(_validation_body(f"body.messages.{i}.content", "string_type",
                                                "Input should be a valid string", content))
            if msg.get("tool_call_id") is not None and not isinstance(msg["tool_call_id"], str):
                raise _Invalid(_validation_body(f"body.messages.{i}.tool_call_id", "string_type",
                                                "Input should be a valid string", msg["tool_call_id"]))
            calls = msg.get("tool_calls")
            if calls is None:
                continue
            if not isinstance(calls, list):
                raise _Invalid(_validation_body(f"body.messages.{i}.tool_calls", "list_type",
                                                "Input should be a valid list", calls))
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                loc = f"body.messages.{i}.tool_calls.{j}"
                if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(fn, dict):
                    raise _Invalid(_validation_body(loc, "missing", "Field required", call))
                if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    raise _Invalid(_validation_body(f"{loc}.function.arguments", "string_type",
                                                    "Input should be a valid string", fn.get("arguments")))

    def _thinking(self, body: dict) -> bool:
        kwargs = body.get("chat_template_kwargs") or {}
        if "enable_thinking" in kwargs:
            return kwargs["enable_thinking"] is not False
        if body.get("reasoning_effort") is not None:  # vLLM maps reasoning_effort "none" to enable_thinking=False
            return body["reasoning_effort"] != "none"
        return True

    def _prompt(self, body: dict) -> tuple[list[int], list[Any], list[tuple[str, str]]]:
        """The prompt's token ids, its prefix-cache keys (media tokens keyed by their media) and its media."""
        media: list[tuple[str, str]] = []
        text = render_chat(body["messages"], _normalize_tools(body.get("tools")),
                           add_generation_prompt=body.get("add_generation_prompt", True) is not False,
                           continue_final_message=bool(body.get("continue_final_message")),
                           enable_thinking=self._thinking(body), media=media)
        ids = encode(text)
        pads = {SPECIAL_TOKENS[p] for p in _PLACEHOLDER.values()}
        keys: list[Any] = []
        seen = 0
        for tid in ids:
            if tid in pads:
                keys.append((tid, media[seen // MEDIA_TOKENS][1]))
                seen += 1
            else:
                keys.append(tid)
        return ids, keys, media

    def _validate_chat(self, body: dict) -> None:
        """ChatCompletionRequest's before-validators, in vLLM's wording."""
        for name, kind in (("messages", "list"), ("model", "str"), ("stream", "bool"), ("n", "int"),
                           ("max_tokens", "int"), ("max_completion_tokens", "int"), ("temperature", "num"),
                           ("top_p", "num"), ("logprobs", "bool"), ("tools", "list"), ("stream_options", "dict"),
                           ("chat_template_kwargs", "dict"), ("response_format", "dict"),
                           ("structured_outputs", "dict"), ("parallel_tool_calls", "bool"), ("seed", "int"),
                           ("thinking_token_budget", "int"), ("include_reasoning", "bool"), ("cache_salt", "str")):
            _check_type(body, name, kind, nullable=name != "messages")
        if "messages" not in body:
            raise _Invalid(_validation_body("body.messages", "missing", "Field required", None))
        self._check_messages(body["messages"])
        salt = body.get("cache_salt")
        if salt is not None and (not salt or len(salt) > 128 or any(c in "@/\\\x00" for c in salt)):
            raise _BadRequest("Parameter 'cache_salt' must be a non-empty string if provided." if not salt else
                              "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', "
                              "'/', '\\\\', or NUL.", "cache_salt")
        stop = body.get("stop")
        if stop is not None and not isinstance(stop, str) and not (
                isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise _Invalid(_validation_body("body.stop", "string_type", "Input should be a valid string", stop))
        if body.get("stream_options") and not body.get("stream"):
            raise _BadRequest("Stream options can only be defined when `stream=True`.", "stream_options")
        top = body.get("top_logprobs")
        if top is not None:
            if not isinstance(top, (int, float)):
                raise _BadRequest("`top_logprobs` must be an integer.", "top_logprobs", top)
            if top < 0 and top != -1:
                raise _BadRequest("`top_logprobs` must be a positive value or -1.", "top_logprobs", top)
            if (top == -1 or top > 0) and not body.get("logprobs"):
                raise _BadRequest("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
        rf = body.get("response_format")
        if rf is not None:
            if rf.get("type") not in ("text", "json_object", "json_schema", "structural_tag"):
                raise _Invalid(_validation_body("body.response_format.type", "literal_error",
                                                "Input should be 'text', 'json_object' or 'json_schema'",
                                                rf.get("type")))
            if rf.get("type") == "json_schema" and rf.get("json_schema") is None:
                raise _BadRequest("When response_format type is 'json_schema', the 'json_schema' field must be "
                                  "provided.", "response_format")
        so = body.get("structured_outputs")
        if so is not None:
            if sum(so.get(k) is not None for k in ("json", "regex", "choice")) > 1:
                raise _BadRequest("You can only use one kind of constraints for structured outputs ('json', "
                                  "'regex' or 'choice').")
            if any(so.get(k) is not None for k in ("json", "regex", "choice")) and isinstance(
                    body.get("tool_choice"), dict):
                raise _BadRequest("You can only either use constraints for structured outputs or tools, not both.")
        tools, choice = body.get("tools"), body.get("tool_choice")
        if tools == []:
            raise _BadRequest("`tools` must not be an empty array. Either provide at least one tool or omit the "
                              "field entirely.", "tools")
        for i, tool in enumerate(tools or []):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _Invalid(_validation_body(f"body.tools.{i}.function", "missing", "Field required", tool))
        if "tool_choice" not in body and tools:
            body["tool_choice"] = choice = "auto"  # vLLM's default when tools are given
        if choice not in (None, "none"):
            if tools is None:
                raise _BadRequest("When using `tool_choice`, `tools` must be set.", "tool_choice")
            if choice not in ("auto", "required") and not isinstance(choice, dict):
                raise _BadRequest(f"Invalid value for `tool_choice`: {choice}! Only named tools, \"none\", "
                                  "\"auto\" or \"required\" are supported.", "tool_choice")
            if isinstance(choice, dict):
                usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
                fn = choice.get("function")
                if not isinstance(fn, dict):
                    raise _BadRequest(f"Invalid value for `function`: `{fn}` in `tool_choice`! {usage}",
                                      "tool_choice.function")
                if "name" not in fn:
                    raise _BadRequest(f"Expected field `name` in `function` in `tool_choice`! {usage}",
                                      "tool_choice.function.name")
                if not any(t["function"]["name"] == fn["name"] for t in tools):
                    raise _BadRequest("The tool specified in `tool_choice` does not match any of the specified "
                                      "`tools`", "tool_choice")
        if body.get("continue_final_message") and body.get("add_generation_prompt"):
            raise _BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")

    def _sampling(self, body: dict, prompt_len: int) -> int:
        """SamplingParams' checks; returns the effective max_tokens (vLLM clamps to what the context leaves)."""
        requested = body.get("max_completion_tokens")
        param = "max_completion_tokens"
        if requested is None:
            requested, param = body.get("max_tokens"), "max_tokens"
        if requested is not None and requested > self.max_model_len:
            raise _BadRequest(f"{param}={requested} cannot be greater than max_model_len={self.max_model_len}. "
                              "Please request fewer output tokens.", param, requested)
        if prompt_len > self.max_model_len:
            raise _Invalid(self._too_long(prompt_len))
        max_tokens = self.max_model_len - prompt_len
        if requested is not None:
            max_tokens = min(max_tokens, int(requested))
        temperature = body.get("temperature")
        if temperature is not None and temperature < 0:
            raise _BadRequest(f"temperature must be non-negative, got {float(temperature)}.", "temperature",
                              float(temperature))
        if temperature is not None and temperature > 2:
            raise _BadRequest(f"temperature must be in [0, 2], got {float(temperature)}.", "temperature",
                              float(temperature))
        top_p = body.get("top_p")
        if top_p is not None and not 0 < top_p <= 1:
            raise _BadRequest(f"top_p must be in (0, 1], got {float(top_p)}.", "top_p", float(top_p))
        if max_tokens < 1:
            raise _BadRequest(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
        n = 1 if body.get("n") is None else body["n"]
        if n < 1:
            raise _BadRequest(f"n must be at least 1, got {n}.", "n", n)
        if n > 1 and temperature is not None and temperature < 1e-5:
            raise _BadRequest(f"n must be 1 when using greedy sampling, got {n}.")
        budget = body.get("thinking_token_budget")
        if budget is not None and budget < 0:
            raise _BadRequest("`thinking_token_budget` must be a non-negative integer or null.",
                              "thinking_token_budget", budget)
        return max_tokens

    def _answer(self, body: dict, index: int) -> tuple[str, str, list[_Call]]:
        """What choice `index` answers: its mode (plain, auto, named, required), its text and its tool calls."""
        user = last_user_text(body["messages"])
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        names = [t["function"]["name"] for t in tools]
        params = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
        wanted: list[str] = []
        mode = "plain"
        if isinstance(choice, dict):
            mode, wanted = "named", [choice["function"]["name"]]
        elif choice == "required":
            mode, wanted = "required", [n for n in names if n in user] or names[:1]
        elif choice == "auto" and tools:
            wanted = [n for n in names if n in user]
            mode = "auto" if wanted else "plain"
        if mode != "plain":
            if body.get("parallel_tool_calls") is False:
                wanted = wanted[:1]
            calls = [_Call(n, _dumps_py(minimal_instance(params[n])), f"chatcmpl-tool-{_uuid16()}") for n in wanted]
            return mode, "", calls
        so = dict(body.get("structured_outputs") or {})
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_object":
            so = {"json_object": True}
        elif rf.get("type") == "json_schema":
            so = {"json": (rf.get("json_schema") or {}).get("schema") or {}}
        if so.get("json") is not None:
            schema = so["json"]
            schema = orjson.loads(schema) if isinstance(schema, str) else schema
            return "plain", _dumps_py(minimal_instance(schema)), []
        if so.get("json_object"):
            return "plain", "{}", []
        if so.get("choice"):
            return "plain", str(so["choice"][0]), []
        if so.get("regex") is not None:
            return "plain", _regex_guess(so["regex"]), []
        if so.get("grammar") is not None:
            return "plain", "x", []
        return "plain", CONTENT_PREFIX + user + (f" #{index}" if index else ""), []

    def _generate(self, body: dict, index: int, max_tokens: int) -> _Choice:
        mode, text, calls = self._answer(body, index)
        toks: list[_Tok] = []
        thinking = self.reasoning and self._thinking(body)
        if thinking:
            reasoning = _pieces(REASONING_PREFIX + last_user_text(body["messages"]), "reasoning")
            budget = body.get("thinking_token_budget")
            if budget is not None:
                reasoning = reasoning[:budget]  # vLLM forces </think> once the budget is spent
            toks += [_Tok("<think>", "", "think"), *reasoning, _Tok("</think>", "", "think")]
        toks += _call_tokens(mode, calls) if calls else _pieces(text, "content")
        toks.append(_Tok("<|im_end|>", "", "eos"))
        full = toks
        finish, stop_reason = "stop", None
        if len(toks) > max_tokens:
            toks, finish = toks[:max_tokens], "length"
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        cut, hit = _apply_stop(toks, stops, bool(body.get("include_stop_str_in_output")))
        if hit is not None:
            toks, finish, stop_reason = cut, "stop", hit
        # A call counts as made when its last token was generated whole (vLLM parses only whole calls; for a
        # named tool it takes whatever argument text there is).
        last_of = {t.call: k for k, t in enumerate(full) if t.kind == "tool"}
        complete = 0
        while complete < len(calls) and last_of[complete] < len(toks) and \
                toks[last_of[complete]].text == toks[last_of[complete]].token:
            complete += 1
        if mode == "named" and any(t.kind == "tool" for t in toks):
            complete = 1
        return _Choice(index, toks, finish, stop_reason, mode, calls, complete,
                       sum(t.kind == "reasoning" for t in toks))

    def _reasoning_delta(self, text: str) -> dict:
        if self.reasoning_field == "both":
            return {"reasoning": text, "reasoning_content": text}
        return {self.reasoning_field: text}

    @staticmethod
    def _finish(choice: _Choice, made: bool) -> str:
        """resolve_finish_reason(): "tool_calls" only when calls were made (non-stream: parsed; stream: any call
        streamed), the model stopped by itself (a cut stays "length"), and no named tool was forced ("stop")."""
        if made and choice.finish_reason == "stop" and choice.mode != "named":
            return "tool_calls"
        return choice.finish_reason

    def _logprob_entry(self, tok: _Tok, top: int | None) -> dict:
        """One ChatCompletionLogProbsContent: the sampled token first, then lower alternatives (deterministic)."""
        def one(token: str, logprob: float) -> dict:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", errors="replace"))}
        alts = [one(tok.token, -0.1)] + [one(f" alt{k}", round(-1.0 - k, 4)) for k in range(1, 20)]
        return {**one(tok.token, -0.1), "top_logprobs": alts if top == -1 else alts[:top or 0]}

    def _message(self, choice: _Choice, body: dict) -> tuple[dict, Any]:
        """The non-streamed message of a choice, and its logprobs."""
        toks = choice.tokens
        reasoning = "".join(t.text for t in toks if t.kind == "reasoning") or None
        if body.get("include_reasoning") is False:
            reasoning = None
        tool_calls: list[dict] = []
        if choice.mode == "plain":
            content = "".join(t.text for t in toks if t.kind == "content") if any(
                t.kind == "content" for t in toks) else None
        elif choice.mode == "auto" and choice.complete_calls < len(choice.calls):
            # hermes cannot parse a cut <tool_call>: vLLM returns the raw text as content, with no calls
            content = "".join(t.text for t in toks if t.kind == "tool") or None
        else:
            content = None if choice.mode == "auto" else ""  # a forced tool call answers content ""
            for j, call in enumerate(choice.calls[:choice.complete_calls]):
                args = call.arguments
                if choice.mode == "named":
                    args = "".join(t.text for t in toks if t.kind == "tool")
                tool_calls.append({"id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": args}})
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": None,
                                   "audio": None, "function_call": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        if self.reasoning_field in ("reasoning", "both"):
            message["reasoning"] = reasoning
        if self.reasoning_field in ("reasoning_content", "both"):
            message["reasoning_content"] = reasoning
        logprobs = None
        if body.get("logprobs") and body.get("include_reasoning") is not False:
            logprobs = {"content": [self._logprob_entry(t, body.get("top_logprobs")) for t in toks]}
        return message, logprobs

    def _delta(self, choice: _Choice, pos: int, announced: set[int], body: dict) -> dict | None:
        """The stream delta of token `pos` (None: vLLM sends no chunk for it, e.g. a think tag)."""
        tok = choice.tokens[pos]
        if tok.kind == "reasoning":  # (a token a stop string removed whole sends nothing)
            return None if body.get("include_reasoning") is False or not tok.text else self._reasoning_delta(tok.text)
        if tok.kind == "content":
            return {"content": tok.text} if tok.text else None
        if tok.kind == "eos":
            if choice.mode == "plain":
                return {"content": ""}
            if choice.mode == "named":
                return {"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}
            return None
        if tok.kind != "tool":
            return None
        call = choice.calls[tok.call]
        if choice.mode == "auto":  # hermes: the name once it is complete, then argument fragments; content null
            if tok.role == "pre" and pos + 1 < len(choice.tokens) and choice.tokens[pos + 1].role != "pre":
                return {"content": None, "tool_calls": [{"id": call.id, "type": "function", "index": tok.call,
                                                         "function": {"name": call.name}}]}
            if tok.role == "args" and tok.text:
                return {"content": None, "tool_calls": [{"index": tok.call, "function": {"arguments": tok.text}}]}
            return None
        if tok.role != "args":
            return None
        if tok.call not in announced:  # named and required: the first chunk carries id, name and arguments
            announced.add(tok.call)
            return {"tool_calls": [{"id": call.id, "type": "function", "index": tok.call,
                                    "function": {"name": call.name, "arguments": tok.text}}]}
        function = {"arguments": tok.text} if choice.mode == "named" else {"name": None, "arguments": tok.text}
        return {"tool_calls": [{"index": tok.call, "function": function}]}

    def _usage(self, choices: list[_Choice], prompt_len: int, cached: int, media: list[tuple[str, str]], *,
               stream: bool, reasoning_parser: bool | None = None) -> dict:
        """UsageInfo; completion_tokens_details only with a reasoning parser, prompt_tokens_details only with
        --enable-prompt-tokens-details (both on here by default)."""
        reasoning_parser = self.reasoning if reasoning_parser is None else reasoning_parser
        completion = sum(len(c.tokens) for c in choices)
        usage: dict[str, Any] = {"prompt_tokens": prompt_len, "total_tokens": prompt_len + completion,
                                 "completion_tokens": completion}
        details = None
        if self.prompt_tokens_details:
            mm = dict(collections.Counter(m for m, _ in media for _ in range(MEDIA_TOKENS))) or None
            details = {"cached_tokens": cached, "created_cache_tokens": None, "multimodal_tokens": mm}
            if stream:  # the usage chunk is serialized with exclude_none
                details = {k: v for k, v in details.items() if v is not None}
        reasoning = {"reasoning_tokens": sum(c.reasoning_tokens for c in choices)} if reasoning_parser else None
        if stream:
            if details is not None:
                usage["prompt_tokens_details"] = details
            if reasoning is not None:
                usage["completion_tokens_details"] = reasoning
        else:
            usage["prompt_tokens_details"] = details
            usage["completion_tokens_details"] = reasoning
        return usage

    async def chat(self, request: Request) -> Any:
        self._count("in_flight")
        handed_off = False
        try:
            early, body = await self._prelude(request)
            if early:
                return early
            response = self._fixed_chat(body) if self.fixed else self._chat(body, request)
            handed_off = isinstance(response, _SSE)  # the stream ends the request's flight
            return response
        except _Invalid as exc:
            return _json(exc.body, 400)
        except _BadRequest as exc:
            return _json(error_body(exc.message, "BadRequestError", 400, exc.param), 400)
        finally:
            if not handed_off:
                self._count("in_flight", -1)

    def _chat(self, body: dict, request: Request) -> Response:
        self._validate_chat(body)
        if (missing := self._check_model(body)) is not None:
            return missing
        choice_mode = body.get("tool_choice")
        if not self.tool_parser and choice_mode not in (None, "none"):
            if choice_mode == "auto":
                raise _BadRequest('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to '
                                  "be set")
            desc = f'function "{choice_mode["function"]["name"]}"' if isinstance(choice_mode, dict) else \
                f'"{choice_mode}"'
            raise _BadRequest(f"tool_choice={desc} requires --tool-call-parser to be set")
        prompt_ids, keys, media = self._prompt(body)
        max_tokens = self._sampling(body, len(prompt_ids))
        cached = self.cache.lookup_and_insert(keys, body.get("cache_salt"))
        choices = [self._generate(body, i, max_tokens) for i in range(1 if body.get("n") is None else body["n"])]
        request_id = "chatcmpl-" + (request.headers.get("x-request-id") or body.get("request_id") or _uuid16())
        created = _now()
        if body.get("stream"):
            events = self._stream(body, choices, request_id, created, prompt_ids, cached, media)
            return _SSE(events, self, self.cut_stream_after, in_flight=True)
        out_choices = []
        for c in choices:
            message, logprobs = self._message(c, body)
            out_choices.append({"index": c.index, "message": message, "logprobs": logprobs,
                                "finish_reason": self._finish(c, "tool_calls" in message),
                                "stop_reason": c.stop_reason,
                                "token_ids": [token_id(t.token) for t in c.tokens] if body.get("return_token_ids")
                                else None, "routed_experts": None, "weight_versions": None})
        return _json({"id": request_id, "object": "chat.completion", "created": created, "model": self.model,
                      "choices": out_choices, "service_tier": None, "system_fingerprint": self.system_fingerprint,
                      "usage": self._usage(choices, len(prompt_ids), cached, media, stream=False),
                      "prompt_logprobs": None,
                      "prompt_token_ids": prompt_ids if body.get("return_token_ids") else None,
                      "prompt_text": None, "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None})

    def _stream(self, body: dict, choices: list[_Choice], request_id: str, created: int, prompt_ids: list[int],
                cached: int, media: list[tuple[str, str]], reasoning_parser: bool | None = None) -> list[bytes]:
        """The SSE events of a streamed answer, serialized as vLLM's model_dump_json(exclude_unset=True,
        exclude_none=not chunk.choices) leaves them: explicitly set nulls stay, except in the usage chunk."""
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        want_logprobs = bool(body.get("logprobs")) and body.get("include_reasoning") is not False
        token_ids = bool(body.get("return_token_ids"))
        head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": self.model}
        prompt_len = len(prompt_ids)
        reasoning_details = self.reasoning if reasoning_parser is None else reasoning_parser

        def running_usage(done: int, reasoning_done: int) -> dict:
            usage: dict[str, Any] = {"prompt_tokens": prompt_len, "total_tokens": prompt_len + done,
                                     "completion_tokens": done}
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_done} if reasoning_details else None
            return usage

        chunks: list[dict] = []
        for c in choices:  # the first chunk of each choice: the role, with content ""
            chunk = {**head, "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                          "logprobs": None, "finish_reason": None}]}
            if continuous:
                chunk["usage"] = running_usage(0, 0)
            chunk["prompt_token_ids"] = prompt_ids if token_ids else None
            chunk["prompt_text"] = None
            chunks.append(chunk)
        announced: list[set[int]] = [set() for _ in choices]
        for pos in range(max(len(c.tokens) for c in choices)):  # the engine steps all n sequences together
            for c in choices:
                if pos >= len(c.tokens):
                    continue
                last = pos == len(c.tokens) - 1
                delta = self._delta(c, pos, announced[c.index], body)
                logprobs = {"content": [self._logprob_entry(c.tokens[pos], body.get("top_logprobs"))]} \
                    if want_logprobs else None
                if delta is None:
                    if not last and logprobs is None and not token_ids:
                        continue
                    delta = {}
                entry: dict[str, Any] = {"index": c.index, "delta": delta, "logprobs": logprobs}
                entry["finish_reason"] = self._finish(c, any(t.kind == "tool" for t in c.tokens)) if last else None
                if last:
                    entry["stop_reason"] = c.stop_reason
                entry["token_ids"] = [token_id(c.tokens[pos].token)] if token_ids else None
                if last:
                    entry["weight_versions"] = None
                chunk = {**head, "choices": [entry]}
                if continuous:
                    chunk["usage"] = running_usage(pos + 1, sum(t.kind == "reasoning" for t in c.tokens[:pos + 1]))
                if last and not include_usage and self.system_fingerprint is not None:
                    chunk["system_fingerprint"] = self.system_fingerprint
                chunk["kv_transfer_params"] = None
                chunks.append(chunk)
        if include_usage:
            final = {**head, "choices": [], "usage": self._usage(choices, prompt_len, cached, media, stream=True,
                                                                 reasoning_parser=reasoning_details)}
            if self.system_fingerprint is not None:
                final["system_fingerprint"] = self.system_fingerprint
            chunks.append(final)
        events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
        if self.stream_error_after is not None and self.stream_error_after < len(events):
            # A GenerationError mid-stream: vLLM sends the error as a data event, then [DONE], still with status 200.
            events = events[:self.stream_error_after] + [
                b"data: " + orjson.dumps(error_body("Internal server error", "InternalServerError", 500)) + b"\n\n"]
        return [*events, b"data: [DONE]\n\n"]

    # -- fixed mode (benchmark upstream) -------------------------------------------------------------------------

    def _fixed_chat(self, body: dict) -> Any:
        """One precomputed answer (fixed_text, no reasoning, a fixed id and time), built once per (stream,
        include_usage); no per-request work beyond reading those two fields."""
        stream = bool(body.get("stream"))
        with_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        answer = self._fixed_cache.get((stream, with_usage))
        if answer is None:
            shape = {"messages": [], "stream_options": {"include_usage": with_usage}}
            choice = _Choice(0, [*_pieces(self.fixed_text, "content"), _Tok("<|im_end|>", "", "eos")], "stop", None,
                             "plain")
            prompt = encode("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
            if stream:
                answer = self._stream(shape, [choice], "chatcmpl-fixed", self.started, prompt, 0, [],
                                      reasoning_parser=False)
            else:
                message, _ = self._message(choice, shape)
                answer = orjson.dumps({
                    "id": "chatcmpl-fixed", "object": "chat.completion", "created": self.started,
                    "model": self.model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                                      "finish_reason": "stop", "stop_reason": None,
                                                      "token_ids": None, "routed_experts": None,
                                                      "weight_versions": None}],
                    "service_tier": None, "system_fingerprint": self.system_fingerprint,
                    "usage": self._usage([choice], len(prompt), 0, [], stream=False, reasoning_parser=False),
                    "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
                    "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None})
            self._fixed_cache[(stream, with_usage)] = answer
        if stream:
            return _SSE(answer, self, self.cut_stream_after, in_flight=True)
        return Response(answer, 200, media_type="application/json")


# ---------------------------------------------------------------------------------------------------------------
# The runner: uvicorn in a background thread
# ---------------------------------------------------------------------------------------------------------------

def _listen(host: str, port: int) -> socket.socket:
    """A listening socket. IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that name it, and without
    it every answer with a body waits ~40 ms for a delayed ACK (Nagle)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class FakeVLLM:
    """A fake vLLM on 127.0.0.1, served by uvicorn in a daemon thread of this process; a context manager.

    FakeVLLM(port=None, model="Qwen/Qwen3-0.6B", **knobs); port None picks a free port. The knobs are attributes
    too, settable while it runs: max_model_len=32768, root=None (ModelCard.root, default the model),
    version="0.33.0", reasoning=True (a --reasoning-parser: reasoning split off, completion_tokens_details sent),
    reasoning_field="reasoning" ("reasoning_content" as vLLM <= 0.11, "both" as 0.12 to ~0.16), tool_parser=True
    (--enable-auto-tool-choice --tool-call-parser hermes), prompt_tokens_details=True, embedding_dim=8,
    api_key=None, fixed=False, fixed_text, delay=0.0 (seconds before a POST is answered), chunk_delay=0.0
    (between SSE events), cut_stream_after=None (end a stream after N events, without [DONE]),
    cut_stream_mode="abort" (drop the connection) or "eof" (end the body cleanly), stream_error_after=None (after N
    events, vLLM's mid-stream error event then [DONE]), down=False (True: /health 503, every API route 503;
    "refuse": nothing listens on the port until down is set back), block_size=16, system_fingerprint="auto".
    """

    def __init__(self, port: int | None = None, model: str = DEFAULT_MODEL, *, host: str = "127.0.0.1", **knobs: Any):
        down = knobs.pop("down", False)
        object.__setattr__(self, "_fake", _Fake(model=model, **knobs))
        object.__setattr__(self, "_server", None)
        object.__setattr__(self, "_running", False)
        object.__setattr__(self, "_down", False)
        self.host, self.port = host, port or 0
        self.down = down

    # The knobs, records and helpers live on the server object; reading and setting them here reaches it.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._fake, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("host", "port", "down") or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._fake, name, value)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (/health, /version, /tokenize, /detokenize live here)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT/v1, what an OpenAI client is given."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[dict]:
        """Every request so far, oldest first: {"method", "path", "body" (parsed JSON or None), "headers"}."""
        return self._fake.requests()

    def bodies(self, path: str = "/v1/chat/completions") -> list[Any]:
        """The JSON bodies received on `path`, oldest first."""
        return [r["body"] for r in self._fake.requests() if r["path"] == path]

    @property
    def down(self) -> bool | str:
        return self._down

    @down.setter
    def down(self, value: bool | str) -> None:
        object.__setattr__(self, "_down", value)
        self._fake.down = bool(value) and value != "refuse"
        if self._running and value == "refuse":
            self._stop_server()
        elif self._running and self._server is None:
            self._start_server()

    def start(self) -> Self:
        object.__setattr__(self, "_running", True)
        if self._down != "refuse":
            self._start_server()
        elif not self.port:  # reserve a port number for later
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        return self

    def _start_server(self) -> None:
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(self._fake.app, log_level="warning", access_log=False, lifespan="off",
                                               timeout_graceful_shutdown=1))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                                  name=f"fake-vllm-{self.port}")
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake vLLM did not start")
            time.sleep(0.005)
        self._server, self._thread, self._sock = server, thread, sock

    def _stop_server(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def stop(self) -> None:
        self._stop_server()
        self._running = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake vLLM OpenAI-compatible server (see tests/fake_vllm.py).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when ready)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--fixed", action="store_true", help="answer one precomputed reply (benchmark upstream)")
    parser.add_argument("--fixed-text", default="Hello from the fake vLLM.")
    parser.add_argument("--no-reasoning", action="store_true", help="no reasoning parser")
    parser.add_argument("--reasoning-field", default="reasoning", choices=["reasoning", "reasoning_content", "both"])
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--api-key")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    fake = _Fake(model=args.model, max_model_len=args.max_model_len, fixed=args.fixed, fixed_text=args.fixed_text,
                 reasoning=not args.no_reasoning, reasoning_field=args.reasoning_field,
                 embedding_dim=args.embedding_dim, api_key=args.api_key, delay=args.delay)
    sock = _listen(args.host, args.port)  # listening before the line below, so a reader may connect at once
    print(f"fake vLLM listening on http://{args.host}:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(uvicorn.Config(fake.app, log_level=args.log_level, access_log=False, lifespan="off")).run(
        sockets=[sock])


if __name__ == "__main__":
    main()
