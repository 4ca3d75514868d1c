"""POST /v1beta/openai/chat/completions: an OpenAI request becomes a GenerateContentRequest, goes through the one
GenerateService, and its reply is written back in OpenAI's shape (a whole completion, or SSE chunks ending in
`data: [DONE]`)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..config import ModelSpec
from ..disconnect import ClientGone, StreamingResponse, until_disconnected
from ..errors import ApiError
from ..generate.protocol import GenerateContentRequest
from ..generate.results import Chunk, Reply, Usage
from ..generate.service import GenerateService
from ..generate.validation import MAX_LOGPROBS, SAMPLING_NAMES, check_range, check_sampling
from ..wire import JSONResponse, parse, payload_error, sse_event
from .protocol import ChatCompletionRequest, Message

log = logging.getLogger("pollux.openai")

# reasoning_effort → Gemini, as the docs' table has it.
EFFORT_LEVELS = {"minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH"}
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "BLOCKLIST": "content_filter", "SPII": "content_filter"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w=.-]+)*;base64,(?P<data>.*)$", re.DOTALL)


# Request ------------------------------------------------------------------------------------------------------------
def _sampling_names(req: ChatCompletionRequest) -> dict[str, str]:
    """Range errors name the OpenAI field the value came in."""
    max_tokens = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    return {**SAMPLING_NAMES, "top_p": "top_p", "candidate_count": "n", "max_output_tokens": max_tokens,
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
            "logprobs": "top_logprobs"}


def to_gemini(req: ChatCompletionRequest, google: dict[str, Any], model: ModelSpec) -> GenerateContentRequest:
    if req.web_search_options is not None:  # as Gemini's built-in tools are: an answer without search is no answer
        raise ApiError.invalid("web_search_options is not available on Pollux: it has no web search.")
    contents, system = _contents(req.messages)
    config: dict[str, Any] = {}
    if req.n is not None:
        config["candidateCount"] = req.n
    if req.stop is not None:
        config["stopSequences"] = [req.stop] if isinstance(req.stop, str) else req.stop
    if None not in (req.max_tokens, req.max_completion_tokens) and req.max_tokens != req.max_completion_tokens:
        raise ApiError.invalid("max_tokens and max_completion_tokens disagree: set one of them.")
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for field, name in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                        ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if getattr(req, field) is not None:
            config[name] = getattr(req, field)
    check_range("top_logprobs", req.top_logprobs, 0, MAX_LOGPROBS)  # checked even when logprobs is off
    if req.logprobs:
        config["responseLogprobs"] = True
        if req.top_logprobs:
            config["logprobs"] = req.top_logprobs
    config.update(_response_format(req.response_format))
    if "IMAGE" in model.output_modalities:
        # A chat completion carries text only: an image model answers here without its picture (not painted).
        config["responseModalities"] = ["TEXT"]
    thinking = _thinking(req, google, model)
    if thinking:
        config["thinkingConfig"] = thinking
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if config:
        body["generationConfig"] = config
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
    if req.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _tool_choice(req.tool_choice)}
    if google.get("cached_content"):
        body["cachedContent"] = google["cached_content"]
    try:
        gemini = GenerateContentRequest.model_validate(body)
    except ValidationError as exc:
        raise payload_error(exc) from None
    if gemini.generation_config is not None:
        check_sampling(gemini.generation_config, model, _sampling_names(req))
    return gemini


def _google(req: ChatCompletionRequest) -> dict[str, Any]:
    nested = _object((req.extra_body or {}).get("google"), "extra_body.google")
    flat = _object(req.google, "google")
    both = set(nested) & set(flat)
    if both:
        raise ApiError.invalid(f"{', '.join(sorted(both))} set both in extra_body.google and in google: set it once.")
    google = {**flat, **nested}
    unknown = set(google) - {"thinking_config", "cached_content", "thought_tag_marker"}
    if unknown:
        raise ApiError.invalid(f"Unknown field(s) in extra_body.google: {', '.join(sorted(unknown))}.")
    return google


def _thinking(req: ChatCompletionRequest, google: dict[str, Any], model: ModelSpec) -> dict[str, Any] | None:
    tc = google.get("thinking_config")
    if tc is not None:
        unknown = set(_object(tc, "extra_body.google.thinking_config")) - {
            "thinking_budget", "thinkingBudget", "thinking_level", "thinkingLevel", "include_thoughts",
            "includeThoughts"}
        if unknown:
            raise ApiError.invalid(f"Unknown field(s) in thinking_config: {', '.join(sorted(unknown))}.")
    if req.reasoning_effort is not None and tc is not None:
        raise ApiError.invalid("reasoning_effort and extra_body.google.thinking_config cannot both be set: they "
                               "overlap. Use one of them.")
    if req.reasoning_effort is not None:
        effort = req.reasoning_effort.lower()
        if effort == "none":
            if not model.thinking_can_disable:
                raise ApiError.invalid(f"reasoning_effort \"none\" is not supported by {model.id}: its reasoning "
                                       "cannot be turned off.")
            return {"thinkingBudget": 0}
        if effort not in EFFORT_BUDGETS:
            raise ApiError.invalid(f"Invalid reasoning_effort \"{req.reasoning_effort}\": use none, minimal, low, "
                                   "medium or high.")
        if model.thinking_control == "level":
            return {"thinkingLevel": EFFORT_LEVELS[effort]}
        return {"thinkingBudget": EFFORT_BUDGETS[effort]}
    if tc is None:
        return None
    out: dict[str, Any] = {}
    budget = tc.get("thinking_budget", tc.get("thinkingBudget"))
    if isinstance(budget, str):  # the docs send "low" | "medium" | "high"
        if budget.lower() not in EFFORT_BUDGETS:
            raise ApiError.invalid(f"Invalid thinking_budget \"{budget}\": use a number, low, medium or high.")
        budget = EFFORT_BUDGETS[budget.lower()]
    if budget is not None:
        out["thinkingBudget"] = budget
    level = tc.get("thinking_level", tc.get("thinkingLevel"))
    if level is not None:
        out["thinkingLevel"] = level
    include = tc.get("include_thoughts", tc.get("includeThoughts"))
    if include is not None:
        out["includeThoughts"] = include
    return out


def _object(value: Any, where: str) -> dict[str, Any]:
    """A nested field that must be a JSON object (a string there is a 400, not a crash)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError.invalid(f"{where} must be an object.")
    return value


def _response_format(fmt: dict[str, Any] | None) -> dict[str, Any]:
    if not fmt or fmt.get("type") in (None, "text"):
        return {}
    if fmt["type"] == "json_object":
        return {"responseMimeType": "application/json"}
    if fmt["type"] == "json_schema":
        schema = _object(fmt.get("json_schema"), "response_format.json_schema").get("schema")
        if not isinstance(schema, dict):
            raise ApiError.invalid("response_format.json_schema.schema must be a JSON Schema object.")
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise ApiError.invalid(f"Unsupported response_format type \"{fmt['type']}\": use text, json_object or "
                           "json_schema.")


def _declaration(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ApiError.invalid("Each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}.")
    out: dict[str, Any] = {"name": fn["name"], "description": fn.get("description") or ""}
    if fn.get("parameters") is not None:
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        if choice not in modes:
            raise ApiError.invalid(f"Invalid tool_choice \"{choice}\": use auto, none, required or a function.")
        return {"mode": modes[choice]}
    name = _object(choice.get("function"), "tool_choice.function").get("name")
    if choice.get("type") != "function" or not isinstance(name, str):
        raise ApiError.invalid("tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}.")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages as Gemini turns (consecutive messages of one role merge) and the system instruction."""
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system += _text_parts(m.content, i)
            continue
        if m.role == "assistant":
            role, parts = "model", _text_parts(m.content, i)
            for tc in m.tool_calls or []:
                try:
                    args = json.loads(tc.function.arguments or "{}")
                except json.JSONDecodeError:
                    raise ApiError.invalid(f"messages[{i}].tool_calls: arguments are not valid JSON.") from None
                call: dict[str, Any] = {"functionCall": {"name": tc.function.name, "args": args}}
                if tc.id:
                    call["functionCall"]["id"] = tc.id
                    call_names[tc.id] = tc.function.name
                signature = _object(_object(tc.extra_content, "extra_content").get("google"),
                                    "extra_content.google").get("thought_signature")
                if signature:
                    call["thoughtSignature"] = signature
                parts.append(call)
        elif m.role == "tool":
            role = "user"
            name = call_names.get(m.tool_call_id or "") or m.name
            if not name:
                raise ApiError.invalid(f"messages[{i}]: a tool message must answer a tool call (tool_call_id).")
            text = m.content if isinstance(m.content, str) else "".join(
                p.get("text", "") for p in m.content or [] if p.get("type") == "text")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            response = value if isinstance(value, dict) else {"result": value}
            parts = [{"functionResponse": {"name": name, "response": response,
                                           **({"id": m.tool_call_id} if m.tool_call_id else {})}}]
        else:
            role, parts = "user", _user_parts(m.content, i)
        if not parts:
            raise ApiError.invalid(f"messages[{i}] has no content.")
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def _text_parts(content: str | list[dict[str, Any]] | None, i: int) -> list[dict[str, Any]]:
    """System and assistant messages carry text only."""
    if isinstance(content, list):
        for p in content:
            if p.get("type") != "text":
                raise ApiError.invalid(f"messages[{i}]: only text content is supported in this role, not "
                                       f"\"{p.get('type')}\".")
    return [p for p in _user_parts(content, i) if p.get("text")]


def _user_parts(content: str | list[dict[str, Any]] | None, i: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            parts.append({"text": p.get("text", "")})
        elif kind == "image_url":
            image = p.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            match = _DATA_URL.match(url) if isinstance(url, str) else None
            if not match:
                raise ApiError.invalid(f"messages[{i}]: image_url must be a data: URL with base64 data (Pollux "
                                       "fetches nothing from the network).")
            parts.append({"inlineData": {"mimeType": match["mime"], "data": match["data"]}})
        elif kind == "input_audio":
            audio = _object(p.get("input_audio"), f"messages[{i}].content.input_audio")
            fmt = str(audio.get("format", "wav")).lower()
            if fmt not in ("wav", "mp3"):
                raise ApiError.invalid(f"Invalid audio format \"{fmt}\". Valid formats are: [wav, mp3]")
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio.get("data", "")}})
        else:
            raise ApiError.invalid(f"messages[{i}]: unsupported content part type \"{kind}\".")
    return parts


# Response -----------------------------------------------------------------------------------------------------------
def _usage(usage: Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.prompt.total, "completion_tokens": usage.output + usage.thoughts,
            "total_tokens": usage.total, "completion_tokens_details": {"reasoning_tokens": usage.thoughts},
            "prompt_tokens_details": {"cached_tokens": usage.cached}}


def _finish(chunk: Chunk, has_calls: bool) -> str | None:
    reason = chunk.candidate.finish
    if reason is None:
        return None
    if has_calls and reason == "STOP":
        return "tool_calls"
    return FINISH.get(reason, "stop")


class _Tags:
    """Thought summaries go inside one `<thought>…</thought>` block (the marker is configurable), as Gemini's compat
    layer writes them, however many chunks they are streamed in."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.open = False

    def text(self, text: str, thought: bool) -> str:
        prefix = ""
        if thought and not self.open:
            prefix, self.open = f"<{self.marker}>", True
        elif not thought and self.open:
            prefix, self.open = f"</{self.marker}>", False
        return prefix + text

    def close(self) -> str:
        if not self.open:
            return ""
        self.open = False
        return f"</{self.marker}>"


def _message(chunk: Chunk, tags: _Tags, first_call: int = 0) -> tuple[str | None, list[dict[str, Any]]]:
    """The text and the tool calls of a candidate's chunk; the thought block closes when the candidate finishes."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in chunk.parts:
        if part.call is not None:
            index = first_call + len(calls)
            call: dict[str, Any] = {"index": index, "id": part.call.id or f"call_{index}",
                                    "type": "function", "function": {
                                        "name": part.call.name, "arguments": json.dumps(part.call.args)}}
            if part.signature:
                call["extra_content"] = {"google": {"thought_signature": part.signature}}
            calls.append(call)
        elif part.text:
            text.append(tags.text(part.text, part.thought))
    if chunk.candidate.finish is not None:
        text.append(tags.close())
    joined = "".join(text)
    return (joined or None), calls


def _logprobs(chunk: Chunk) -> dict[str, Any] | None:
    """OpenAI's `logprobs.content` from the candidate's token log probabilities."""
    if not chunk.logprobs:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, p) for t, _, p in lp.top]}
                        for lp in chunk.logprobs]}


def completion_json(reply: Reply, model: str, created: int, marker: str) -> dict[str, Any]:
    choices = []
    for chunk in reply.chunks:
        content, calls = _message(chunk, _Tags(marker))
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        choices.append({"index": chunk.candidate.index, "message": message, "logprobs": _logprobs(chunk),
                        "finish_reason": _finish(chunk, bool(calls))})
    return {"id": f"chatcmpl-{reply.response_id}", "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": _usage(reply.usage)}


async def complete(service: GenerateService, project_id: str, req: ChatCompletionRequest, version: str, *,
                   background: bool = False) -> dict[str, Any]:
    """A chat completion, not streamed: the route's answer, and (`background`) a line of an OpenAI batch."""
    if req.stream:
        raise ApiError.invalid("* stream: a batch request cannot be streamed.\n")
    model = service.resolve(req.model, version, "generateContent")
    google = _google(req)
    gemini = to_gemini(req, google, model)
    reply = await service.generate(model, gemini, project_id, background=background)
    return completion_json(reply, req.model, int(time.time()), str(google.get("thought_tag_marker") or "thought"))


async def chat_completions(request: Request, service: GenerateService, project_id: str, body: bytes) -> Response:
    req = parse(ChatCompletionRequest, body)
    if not req.stream:
        try:
            answer = await until_disconnected(request, complete(service, project_id, req,
                                                                request.path_params["version"]))
        except ClientGone:
            return Response(status_code=499)
        return JSONResponse(answer)
    model = service.resolve(req.model, request.path_params["version"], "generateContent")
    google = _google(req)
    gemini = to_gemini(req, google, model)
    marker = str(google.get("thought_tag_marker") or "thought")
    created = int(time.time())
    replies = await service.stream(model, gemini, project_id)
    try:
        first = await anext(replies, None)  # an error before any output is still a plain HTTP error
    except BaseException:
        await replies.aclose()
        raise
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return StreamingResponse(_events(replies, first, req.model, created, marker, usage),
                             media_type="text/event-stream")


async def _events(replies: AsyncIterator[Reply], first: Reply | None, model: str, created: int, marker: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    started: set[int] = set()
    calls_so_far: dict[int, int] = {}
    tags: dict[int, _Tags] = {}
    last: Reply | None = None

    try:
        reply = first
        while reply is not None:
            last = reply
            choices = []
            for chunk in reply.chunks:
                index = chunk.candidate.index
                content, calls = _message(chunk, tags.setdefault(index, _Tags(marker)), calls_so_far.get(index, 0))
                calls_so_far[index] = calls_so_far.get(index, 0) + len(calls)
                delta: dict[str, Any] = {}
                if index not in started:
                    delta["role"] = "assistant"
                    started.add(index)
                if content:
                    delta["content"] = content
                if calls:
                    delta["tool_calls"] = calls
                finish = _finish(chunk, calls_so_far[index] > 0)
                choices.append({"index": index, "delta": delta, "logprobs": _logprobs(chunk), "finish_reason": finish})
            yield sse_event({"id": f"chatcmpl-{reply.response_id}", "object": "chat.completion.chunk",
                         "created": created, "model": model, "choices": choices})
            reply = await anext(replies, None)
    except ApiError as err:
        yield sse_event(err.body())
        return
    except Exception:
        log.exception("chat completion stream failed")
        yield sse_event(ApiError("INTERNAL", "An internal error has occurred.").body())
        return
    finally:
        await replies.aclose()
    if include_usage and last is not None:
        yield sse_event({"id": f"chatcmpl-{last.response_id}", "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [], "usage": _usage(last.usage)})
    yield b"data: [DONE]\r\n\r\n"
