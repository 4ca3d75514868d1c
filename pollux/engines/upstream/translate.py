"""A Gemini request as an OpenAI chat completion, and the completion's answer as engine events.

Nothing is dropped on the way: a feature the server's flavor cannot carry is refused (`Unsupported`, a 400 naming
it). Pure functions, apart from decoding media (PDF pages, video frames), which callers run off the event loop.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ...media import MediaError
from ...media.documents import PdfDocument
from ...media.video import sample_frames
from ..base import (CallEvent, Event, Finish, GenerateRequest, Media, Segment, Text, TextDelta, TokenLogprob,
                    ToolCall, ToolResult, Usage)
from ..calls import CallIds
from ..errors import InvalidInput, Unsupported
from .flavors import Flavor

MAX_VIDEO_FRAMES = 32
AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mp3": "mp3",
                 "audio/mpeg": "mp3", "audio/flac": "flac", "audio/ogg": "ogg", "audio/webm": "webm",
                 "audio/aac": "aac", "audio/aiff": "aiff"}
# OpenAI finish reasons as Gemini names them. A tool call ends the turn normally: Gemini says STOP.
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP",
          "content_filter": "SAFETY", "abort": "OTHER", "error": "OTHER"}


# Request → body ---------------------------------------------------------------------------------------------------
def messages(request: GenerateRequest, flavor: Flavor) -> list[dict[str, Any]]:
    """systemInstruction and contents as chat messages. Calls and their results keep their ids; a call without one
    (Gemini's ids are optional) gets one from its place in the history, and its result is matched to it by name,
    in order, as Gemini matches them."""
    out: list[dict[str, Any]] = []
    system = [s.text for s in request.system if isinstance(s, Text)]
    if system:
        out.append({"role": "system", "content": "\n".join(system)})
    ids = CallIds(lambda t, k, name: f"call_{t}_{k}")
    for t, turn in enumerate(request.turns):
        if turn.role == "model":
            text = "".join(s.text for s in turn.segments if isinstance(s, Text) and not s.thought)
            calls = []
            for k, s in enumerate(x for x in turn.segments if isinstance(x, ToolCall)):
                calls.append({"id": ids.call(s, t, k), "type": "function",
                              "function": {"name": s.name, "arguments": json.dumps(s.args, ensure_ascii=False)}})
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            # The reasoning behind it (restored from its thought signature): templates that keep reasoning
            # between a call and its result (Qwen3's) render it, as the model wrote it.
            reasoning = "".join(s.text for s in turn.segments if isinstance(s, Text) and s.thought)
            if reasoning and flavor.reasoning_input:
                message["reasoning_content"] = reasoning
            if calls:
                message["tool_calls"] = calls
            elif not text:
                message["content"] = ""
            out.append(message)
            continue
        parts: list[dict[str, Any]] = []
        for s in turn.segments:
            if isinstance(s, ToolResult):
                out.append({"role": "tool", "tool_call_id": ids.result(s),
                            "content": json.dumps(s.response, ensure_ascii=False)})
            elif isinstance(s, ToolCall):
                raise InvalidInput("A function call can only be in a model turn.")
            else:
                parts.extend(_user_parts(s, flavor))
        if parts:
            if all(p["type"] == "text" for p in parts):  # plain text as a string: every template takes that
                out.append({"role": "user", "content": "".join(p["text"] for p in parts)})
            else:
                out.append({"role": "user", "content": parts})
    return out


def _user_parts(segment: Segment, flavor: Flavor) -> list[dict[str, Any]]:
    if isinstance(segment, Text):
        return [{"type": "text", "text": segment.text}] if not segment.thought else []
    if not isinstance(segment, Media):
        return []
    media = segment
    if media.modality == "IMAGE":
        return [_image_url(media.mime_type, media.read())]
    if media.modality == "AUDIO":
        fmt = AUDIO_FORMATS.get(media.mime_type)
        if fmt is None:
            raise Unsupported(f"Audio of type {media.mime_type} cannot be sent to this model's server: use WAV or "
                              "MP3.")
        return [{"type": "input_audio", "input_audio": {"data": base64.b64encode(media.read()).decode(),
                                                          "format": fmt}}]
    if media.modality == "VIDEO":
        if flavor.video_url and media.clip is None and media.fps is None:
            return [{"type": "video_url", "video_url": {"url": _data_uri(media.mime_type, media.read())}}]
        start, end = media.clip or (0.0, None)
        try:
            frames = sample_frames(media.path or media.data, fps=media.fps or 1.0, start=start, end=end,
                                   max_frames=MAX_VIDEO_FRAMES)
        except MediaError as exc:
            raise InvalidInput(f"Unable to process input video: {exc}") from None
        return [_image_url("image/jpeg", _jpeg(frame)) for frame in frames]
    if media.modality == "DOCUMENT":
        # Each page as its text and its picture, as Gemini reads a PDF.
        parts: list[dict[str, Any]] = []
        with PdfDocument(media.path or media.data) as pdf:
            for i in range(pdf.page_count):
                parts.append({"type": "text", "text": f"[page {i + 1}]\n{pdf.page_text(i)}\n\n"})
                parts.append(_image_url("image/jpeg", _jpeg(pdf.render_page(i))))
        return parts
    raise Unsupported(f"{media.mime_type} input cannot be sent to this model's server.")


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _image_url(mime: str, data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": _data_uri(mime, data)}}


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def has_media(request: GenerateRequest) -> bool:
    return any(isinstance(s, Media) for turn in request.turns for s in turn.segments)


def tools(request: GenerateRequest, flavor: Flavor) -> tuple[list[dict[str, Any]] | None, Any]:
    """`tools` and `tool_choice`: AUTO → auto, ANY → required (one allowed function → that function), NONE → none.
    allowedFunctionNames narrows the tools offered."""
    if not request.functions:
        return None, None
    allowed = set(request.allowed_functions or [])
    functions = [f for f in request.functions if not allowed or f.name in allowed] \
        if request.tool_mode == "ANY" else request.functions
    declared = [{"type": "function", "function": {
        "name": f.name, "description": f.description,
        "parameters": f.parameters if f.parameters is not None else {"type": "object", "properties": {}}}}
        for f in functions]
    if request.tool_mode == "NONE":
        return declared, "none"
    if request.tool_mode == "ANY":
        if len(functions) == 1 and flavor.named_tool_choice:
            return declared, {"type": "function", "function": {"name": functions[0].name}}
        return declared, "required"
    return declared, "auto"


def body(request: GenerateRequest, flavor: Flavor, model: str, *, stream: bool,
         context_length: int | None = None, n: int = 1, batch_priority: int | None = None) -> dict[str, Any]:
    s = request.sampling
    out: dict[str, Any] = {"model": model, "messages": messages(request, flavor), "stream": stream}
    if n > 1:
        out["n"] = n
    # A limit the server's context cannot hold (Gemini's 65,536 default on a 32k model) is left to the server,
    # which then stops where its context ends: vLLM refuses a max_tokens over its max_model_len.
    if context_length is None or s.max_output_tokens < context_length:
        out["max_tokens"] = s.max_output_tokens
    if stream:
        out["stream_options"] = {"include_usage": True}
    if s.temperature is not None:
        out["temperature"] = s.temperature
    if s.top_p is not None:
        out["top_p"] = s.top_p
    # topK is not OpenAI's: a generic server is not sent it (every Gemini model has a default topK, so refusing
    # it would refuse every request); the README's engine table says so.
    if s.top_k is not None and flavor.top_k:
        out["top_k"] = s.top_k
    # One seed per candidate: candidates of one request differ, and each is the same again for the same seed.
    out["seed"] = s.seed + request.candidate_index
    if s.stop_sequences:
        out["stop"] = list(s.stop_sequences)
    if s.presence_penalty is not None:
        out["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        out["frequency_penalty"] = s.frequency_penalty
    if s.logprobs is not None:
        out["logprobs"] = True
        out["top_logprobs"] = s.logprobs
    declared, choice = tools(request, flavor)
    if declared:
        out["tools"] = declared
        out["tool_choice"] = choice
    _response_format(request, flavor, out)
    _thinking(request, flavor, out)
    if request.tenant and flavor.cache_salt:
        out["cache_salt"] = request.tenant
    if request.background and batch_priority is not None:
        out["priority"] = batch_priority  # vLLM and SGLang with priority scheduling on (see UpstreamOptions)
    return out


def _response_format(request: GenerateRequest, flavor: Flavor, out: dict[str, Any]) -> None:
    fmt = request.response_format
    if fmt.kind == "text":
        return
    if fmt.kind == "enum":
        choices = [str(v) for v in (fmt.schema or {}).get("enum", [])]
        if flavor.enum_choice:
            if flavor.schema_field == "structured_outputs":
                out["structured_outputs"] = {"choice": choices}
            else:
                out["guided_choice"] = choices
            return
        schema: dict[str, Any] = {"type": "string", "enum": choices}  # a JSON string, unquoted in `Answer`
    else:
        schema = fmt.schema or {}
    if not schema:  # JSON of any shape
        if flavor.schema_field == "json_schema":
            out["json_schema"] = {}
        else:
            out["response_format"] = {"type": "json_object"}
        return
    if flavor.schema_field == "structured_outputs":
        out["structured_outputs"] = {"json": schema}
    elif flavor.schema_field == "guided":
        out["guided_json"] = schema
    elif flavor.schema_field == "json_schema":
        out["json_schema"] = schema
    else:
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "response", "schema": schema, "strict": True}}


def _thinking(request: GenerateRequest, flavor: Flavor, out: dict[str, Any]) -> None:
    thinking = request.thinking
    if not thinking.enabled:
        if flavor.thinking_switch:
            out["chat_template_kwargs"] = {"enable_thinking": False}
        return
    if thinking.budget is not None and flavor.budget_field:
        out[flavor.budget_field] = thinking.budget


def tokenize_body(request: GenerateRequest, flavor: Flavor, model: str, **kw: Any) -> dict[str, Any]:
    """vLLM's /tokenize over the chat exactly as /v1/chat/completions renders it."""
    full = body(request, flavor, model, stream=False)
    out = {"model": model, "messages": full["messages"], "add_generation_prompt": True}
    for key in ("tools", "chat_template_kwargs"):
        if key in full:
            out[key] = full[key]
    return out


# Answer → events --------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """Folds one choice of a completion, whole or chunk by chunk, into engine events. Tool calls are gathered from
    their deltas and sent once complete."""

    enum: bool = False  # text/x.enum answered as a JSON string: sent unquoted
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None
    content: list[str] = field(default_factory=list)
    reasoning_chars: int = 0
    content_chars: int = 0

    def delta(self, delta: dict[str, Any], logprobs: Any = None) -> list[Event]:
        events: list[Event] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            self.reasoning_chars += len(reasoning)
            events.append(TextDelta(reasoning, thought=True))
        content = delta.get("content")
        if content:
            self.content_chars += len(content)
            if self.enum:
                self.content.append(content)
            else:
                events.append(TextDelta(content, logprobs=_logprobs(logprobs)))
        for call in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(call.get("index", len(self.calls))), {"id": None, "name": "", "args": ""})
            if call.get("id"):
                slot["id"] = call["id"]
            fn = call.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
            if fn.get("arguments"):
                slot["args"] += fn["arguments"] if isinstance(fn["arguments"], str) else json.dumps(fn["arguments"])
        return events

    def end(self, reason: str | None) -> list[Event]:
        """The events that close the choice's output: its enum answer and its calls (`finished` is its finish)."""
        self.finish = reason
        events: list[Event] = []
        if self.enum and self.content:
            text = "".join(self.content)
            try:
                value = json.loads(text)
                text = value if isinstance(value, str) else text
            except ValueError:
                pass
            events.append(TextDelta(text))
        for index in sorted(self.calls):
            slot = self.calls.pop(index)
            try:
                args = json.loads(slot["args"]) if slot["args"].strip() else {}
            except ValueError:
                self.finish = "malformed"
                continue
            if not isinstance(args, dict):
                self.finish = "malformed"
                continue
            events.append(CallEvent(ToolCall(slot["name"], args, slot["id"])))
        return events

    def finished(self) -> Finish:
        if self.finish == "malformed":
            return Finish("MALFORMED_FUNCTION_CALL")
        return Finish(FINISH.get(self.finish or "stop", "OTHER"))

def usage(usage: dict[str, Any] | None, answers: list[Answer]) -> Usage | None:
    """The server's usage of all the candidates. Its completion tokens include the reasoning; where it does not say
    how many were reasoning, they are shared out by characters (a thought and an answer token are about as long)."""
    if not usage:
        return None
    output = int(usage.get("completion_tokens") or 0)
    details = usage.get("completion_tokens_details") or {}
    thoughts = details.get("reasoning_tokens")
    if thoughts is None:
        reasoning = sum(a.reasoning_chars for a in answers)
        total = reasoning + sum(a.content_chars for a in answers)
        thoughts = round(output * reasoning / total) if total and reasoning else 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(int(usage.get("prompt_tokens") or 0), output, int(thoughts), int(cached))


def _logprobs(logprobs: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(logprobs, dict) or not logprobs.get("content"):
        return ()
    out = []
    for entry in logprobs["content"]:
        top = tuple((t.get("token", ""), -1, float(t.get("logprob", 0.0))) for t in entry.get("top_logprobs") or [])
        out.append(TokenLogprob(entry.get("token", ""), -1, float(entry.get("logprob", 0.0)), top))
    return tuple(out)


def whole(choice: dict[str, Any], answer: Answer) -> list[Event]:
    """A non-streamed choice: its message as one delta, then its end."""
    message = dict(choice.get("message") or {})
    calls = message.get("tool_calls") or []
    message["tool_calls"] = [{**c, "index": i} for i, c in enumerate(calls)]
    events = answer.delta(message, choice.get("logprobs"))
    return events + answer.end(choice.get("finish_reason"))
