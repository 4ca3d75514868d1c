"""generateContent, streamGenerateContent and countTokens: Gemini semantics between the wire and the engines.

Requests become an engine `GenerateRequest` (turns, tools, sampling, schema, thinking); engine events become
candidates, parts, finish reasons and usage, the same way for the streamed and the whole response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import patterns
from ..config import ModelSpec, Settings, find_model
from ..engines.base import (CallEvent, Engine, Finish, FunctionSpec, GenerateRequest, Media, ResponseFormat, Sampling,
                            Segment, Text, TextDelta, Thinking, TokenCount, ToolCall, ToolResult, Turn)
from ..errors import ApiError
from ..files.service import FileService
from ..media import MediaError, inspect_bytes
from ..media.probe import MediaInfo, modality_of
from ..schemas import SchemaMismatch, openapi_to_json_schema, validate_instance
from .protocol import Content, CountTokensRequest, GenerateContentRequest, GenerationConfig, Part
from .results import Candidate, Chunk, OutPart, Reply, Usage
from .signatures import Signer
from .validation import check_contents, check_request

MAX_TEXT_FILE_BYTES = 50 * 1024 * 1024  # a text-like file goes into the prompt whole

# Thinking levels as budgets (Gemini 3 maps levels to its own budgets; these keep the emulator's output in scale).
LEVEL_BUDGETS = {"MINIMAL": 128, "LOW": 1024, "MEDIUM": 8192, "HIGH": None}


class _ResponseIds:
    """Unique 22-character ids like Gemini's: a random per-process prefix and a counter (no syscall per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_bytes(8)
        self._count = itertools.count()

    def next(self) -> str:
        return base64.urlsafe_b64encode(self._prefix + next(self._count).to_bytes(8, "big")).decode()[:22]


_response_ids = _ResponseIds()
_NO_CONFIG = GenerationConfig()  # read-only stand-in for an absent generationConfig


@dataclass
class Prepared:
    """A validated request, ready for the engine."""

    model: ModelSpec
    engine: Engine
    request: GenerateRequest
    candidates: int
    include_thoughts: bool
    prompt: TokenCount
    sign: bool  # whether reasoning is returned as signatures (Gemini 3 always; 2.5 when functions are declared)
    response_id: str = field(default_factory=_response_ids.next)

    def reply(self, candidates: list[Candidate], chunks: list[Chunk]) -> Reply:
        usage = Usage(self.prompt, sum(c.output_tokens for c in candidates), sum(c.thought_tokens for c in candidates))
        return Reply(chunks, usage, f"{self.model.id} (pollux {self.engine.name})", self.response_id)


class GenerateService:
    def __init__(self, settings: Settings, engines: dict[str, Engine], signer: Signer, files: FileService) -> None:
        self.settings = settings
        self.engines = engines
        self.signer = signer
        self.files = files

    # Models -----------------------------------------------------------------------------------------------------
    def resolve(self, name: str, version: str, method: str) -> ModelSpec:
        """The model named in the path, if it exists and supports `method`; else the real API's 404."""
        return find_model(self.settings, name, version, method)

    # Entry points -----------------------------------------------------------------------------------------------
    async def generate(self, model: ModelSpec, req: GenerateContentRequest, project_id: str) -> Reply:
        prepared = await self.prepare(model, req, project_id, stream=False)
        candidates = [Candidate(i) for i in range(prepared.candidates)]

        async def run(cand: Candidate) -> None:
            async for event in prepared.engine.generate(self._for_candidate(prepared, cand.index)):
                self._apply(prepared, cand, event, cand.parts)

        if len(candidates) == 1:
            await run(candidates[0])
            return prepared.reply(candidates, [Chunk(c, c.parts, c.logprobs) for c in candidates])
        # Candidates run side by side, so an engine that batches can decode them together.
        tasks = [asyncio.create_task(run(c)) for c in candidates]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # also when the client went away and this request was cancelled
                task.cancel()
        return prepared.reply(candidates, [Chunk(c, c.parts, c.logprobs) for c in candidates])

    async def stream(self, model: ModelSpec, req: GenerateContentRequest, project_id: str) -> AsyncIterator[Reply]:
        """Validates before the first chunk (so errors are plain HTTP errors), then yields response chunks."""
        prepared = await self.prepare(model, req, project_id, stream=True)
        candidates = [Candidate(i) for i in range(prepared.candidates)]
        # Bounded, so that an engine cannot run far ahead of a slow client.
        merged: asyncio.Queue[tuple[Candidate, Any]] = asyncio.Queue(maxsize=64)
        end = object()

        async def run(cand: Candidate) -> None:
            try:
                async for event in prepared.engine.generate(self._for_candidate(prepared, cand.index)):
                    await merged.put((cand, event))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                await merged.put((cand, exc))
            finally:
                await merged.put((cand, end))

        async def replies() -> AsyncIterator[Reply]:
            tasks = [asyncio.create_task(run(c)) for c in candidates]
            running = len(tasks)
            try:
                while running:
                    cand, event = await merged.get()
                    if event is end:
                        running -= 1
                        continue
                    if isinstance(event, Exception):
                        raise event
                    parts: list[OutPart] = []
                    seen = len(cand.logprobs)
                    self._apply(prepared, cand, event, parts)
                    if cand.finish and not parts:
                        parts.append(OutPart(text=""))  # the JS SDK drops a streamed turn with an empty chunk
                    if parts:
                        yield prepared.reply(candidates, [Chunk(cand, parts, cand.logprobs[seen:])])
            finally:
                for task in tasks:  # a client that went away stops its generations here
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        return replies()

    async def count_tokens(self, model: ModelSpec, req: CountTokensRequest, project_id: str) -> TokenCount:
        if req.contents and req.generate_content_request:
            raise ApiError.invalid("* CountTokensRequest: contents and generate_content_request are mutually exclusive.\n")
        if req.generate_content_request is not None:
            inner = req.generate_content_request
            check_request(inner, model)
        else:
            check_contents(req.contents, "CountTokensRequest")
            inner = GenerateContentRequest(contents=req.contents)
        return await self._engine(model).count_tokens(await self._engine_request(model, inner, project_id, stream=False))

    # Request → engine -------------------------------------------------------------------------------------------
    def _engine(self, model: ModelSpec) -> Engine:
        engine = self.engines.get(model.engine_key)
        if engine is None:
            raise ApiError("UNAVAILABLE", f"The engine {model.engine!r} for {model.name} is not running.")
        return engine

    async def prepare(self, model: ModelSpec, req: GenerateContentRequest, project_id: str, stream: bool) -> Prepared:
        check_request(req, model)
        self._check_signatures(req.contents or [], model)
        if req.cached_content:
            # No cache can exist yet for any project: the real API's answer to an unknown cache.
            raise ApiError("PERMISSION_DENIED", "CachedContent not found (or permission denied)")
        request = await self._engine_request(model, req, project_id, stream)
        engine = self._engine(model)
        prompt = await engine.count_tokens(request)
        if prompt.total > model.input_token_limit:
            raise ApiError.invalid(f"The input token count ({prompt.total}) exceeds the maximum number of tokens "
                                   f"allowed ({model.input_token_limit}).")
        sign = model.thinking_control == "level" or bool(request.functions)
        return Prepared(model, engine, request, (req.generation_config or _NO_CONFIG).candidate_count or 1,
                        request.thinking.include_thoughts, prompt, sign)

    async def _engine_request(self, model: ModelSpec, req: GenerateContentRequest, project_id: str,
                              stream: bool) -> GenerateRequest:
        cfg = req.generation_config or _NO_CONFIG
        fcc = req.tool_config.function_calling_config if req.tool_config else None
        inputs = _Inputs(project_id, cfg.media_resolution)
        contents = req.contents or []
        if any(p.inline_data is not None or p.file_data is not None for c in contents for p in c.parts or []):
            turns = await asyncio.to_thread(self._turns, contents, inputs)  # decoding media is no work for the loop
        else:
            turns = self._turns(contents, inputs)
        return GenerateRequest(
            model=model.id, turns=turns, system=self._system(req.system_instruction),
            functions=self._functions(req),
            tool_mode=(fcc.mode if fcc and fcc.mode not in (None, "MODE_UNSPECIFIED") else "AUTO"),
            allowed_functions=(fcc.allowed_function_names or None) if fcc else None,
            sampling=Sampling(
                temperature=cfg.temperature if cfg.temperature is not None else model.temperature,
                top_p=cfg.top_p if cfg.top_p is not None else model.top_p,
                top_k=cfg.top_k if cfg.top_k is not None else model.top_k,
                seed=cfg.seed or 0,
                max_output_tokens=cfg.max_output_tokens or model.output_token_limit,
                stop_sequences=list(cfg.stop_sequences or []),
                presence_penalty=cfg.presence_penalty, frequency_penalty=cfg.frequency_penalty,
                logprobs=(cfg.logprobs or 0) if cfg.response_logprobs else None),
            response_format=self._response_format(cfg),
            thinking=self._thinking(cfg, model),
            stream=stream,
        )

    @staticmethod
    def _for_candidate(prepared: Prepared, index: int) -> GenerateRequest:
        return replace(prepared.request, candidate_index=index) if index else prepared.request

    def _turns(self, contents: list[Content], inputs: _Inputs) -> list[Turn]:
        turns = []
        for i, content in enumerate(contents):
            role = "model" if content.role == "model" else "user"
            segments: list[Segment] = []
            for j, part in enumerate(content.parts or []):
                segments.extend(self._segments(part, f"contents[{i}].parts[{j}]", inputs))
            turns.append(Turn(role, segments))
        return turns

    def _system(self, content: Content | None) -> list[Segment]:
        if content is None:
            return []
        return [Text(p.text) for p in content.parts or [] if p.text]

    def _segments(self, part: Part, path: str, inputs: _Inputs) -> list[Segment]:
        out: list[Segment] = []
        if part.thought_signature:
            restored = self.signer.open(part.thought_signature)
            if restored:
                out.append(Text(restored, thought=True))
        if part.text is not None:
            out.append(Text(part.text, thought=bool(part.thought)))
        elif part.inline_data is not None:
            blob = part.inline_data
            mime = (blob.mime_type or "").lower()
            if not mime:
                raise ApiError.invalid(f"* GenerateContentRequest.{path}.inline_data.mime_type: mime_type is not specified\n")
            data = _b64(blob.data or "", f"{path}.inline_data.data")
            out.append(self._media(part, mime, inputs, data=data))
        elif part.file_data is not None:
            stored = self.files.usable(inputs.project_id, part.file_data.file_uri or "")
            out.append(self._media(part, stored.row["mime_type"], inputs, path=stored.path,
                                   info=MediaInfo(**stored.row["info"]), uri=part.file_data.file_uri))
        elif part.function_call is not None:
            fc = part.function_call
            out.append(ToolCall(fc.name or "", dict(fc.args or {}), fc.id))
        elif part.function_response is not None:
            fr = part.function_response
            out.append(ToolResult(fr.name or "", dict(fr.response or {}), fr.id))
        elif part.executable_code is not None:
            out.append(Text(part.executable_code.code or ""))
        elif part.code_execution_result is not None:
            out.append(Text(part.code_execution_result.output or ""))
        return out

    def _media(self, part: Part, mime: str, inputs: _Inputs, *, data: bytes = b"", path: Path | None = None,
               info: MediaInfo | None = None, uri: str | None = None) -> Segment:
        """Inline data or an uploaded file as the engines see it: text for text-like types, else measured media."""
        modality = modality_of(mime)
        if modality is None:
            raise ApiError.invalid(f"Unsupported MIME type: {mime}")
        if modality == "TEXT":
            if path is not None and path.stat().st_size > MAX_TEXT_FILE_BYTES:
                raise ApiError.invalid(f"The text file {uri} is over {MAX_TEXT_FILE_BYTES} bytes: too long for a prompt.")
            return Text((path.read_bytes() if path is not None else data).decode("utf-8", errors="replace"))
        if info is None:
            try:
                info = inspect_bytes(data, mime)
            except MediaError as exc:
                raise ApiError.invalid(f"Unable to process input {modality.lower()}: {exc}") from None
        resolution = (part.media_resolution.level if part.media_resolution else None) or inputs.resolution
        clip, fps = None, None
        if part.video_metadata is not None:
            vm = part.video_metadata
            clip = (_seconds(vm.start_offset, "start_offset") or 0.0, _seconds(vm.end_offset, "end_offset"))
            if vm.fps is not None and not 0 < vm.fps <= 24:
                raise ApiError.invalid("video_metadata.fps must be in (0.0, 24.0].")
            fps = vm.fps
        return Media(info.mime_type, modality, data=data, uri=uri, path=path, info=info, resolution=resolution,
                     clip=clip, fps=fps)

    def _check_signatures(self, contents: list[Content], model: ModelSpec) -> None:
        """Gemini 3 requires the signature on each model function call of the current turn (since the last user text)."""
        if model.thinking_control != "level":
            return
        start = 0
        for i, content in enumerate(contents):
            if content.role != "model" and any(p.text for p in content.parts or []):
                start = i
        for content in contents[start:]:
            if content.role != "model":
                continue
            calls = [p for p in content.parts or [] if p.function_call is not None]
            if calls and not calls[0].thought_signature:
                position = (content.parts or []).index(calls[0]) + 1
                raise ApiError.invalid(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                    "to work correctly, and missing thought_signature may lead to degraded model performance. "
                    f"Additional data, function call `default_api:{calls[0].function_call.name}` , position "
                    f"{position}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                    "details.")

    @staticmethod
    def _functions(req: GenerateContentRequest) -> list[FunctionSpec]:
        specs = []
        for tool in req.tools or []:
            for fd in tool.function_declarations or []:
                if fd.parameters is not None:
                    params = openapi_to_json_schema(fd.parameters.to_dict())
                else:
                    params = fd.parameters_json_schema if isinstance(fd.parameters_json_schema, dict) else None
                specs.append(FunctionSpec(fd.name or "", fd.description or "", params))
        return specs

    @staticmethod
    def _response_format(cfg: GenerationConfig) -> ResponseFormat:
        mime = cfg.response_mime_type
        if cfg.response_schema is not None:
            schema: Any = openapi_to_json_schema(cfg.response_schema.to_dict())
        else:
            schema = cfg.response_json_schema
        if mime == "text/x.enum":
            return ResponseFormat("enum", schema)
        if mime == "application/json":
            return ResponseFormat("json", schema if isinstance(schema, dict) else {})
        return ResponseFormat("text")

    @staticmethod
    def _thinking(cfg: GenerationConfig, model: ModelSpec) -> Thinking:
        if not model.thinking:
            return Thinking(enabled=False)
        tc = cfg.thinking_config
        budget = tc.thinking_budget if tc else None
        level = tc.thinking_level if tc else None
        include = bool(tc and tc.include_thoughts)
        if budget == 0:
            return Thinking(enabled=False)
        if budget is not None and budget > 0:
            return Thinking(enabled=True, budget=budget, include_thoughts=include)
        if level and level in LEVEL_BUDGETS:
            return Thinking(enabled=True, budget=LEVEL_BUDGETS[level], include_thoughts=include)
        # Unset or -1: dynamic thinking where the model thinks by default.
        enabled = model.thinks_by_default or budget == -1
        return Thinking(enabled=enabled, budget=None, include_thoughts=include and enabled)

    # Engine events → results ------------------------------------------------------------------------------------
    def _apply(self, prepared: Prepared, cand: Candidate, event: Any, parts: list[OutPart]) -> None:
        """Fold one engine event into the candidate; the parts it adds go to `parts` (all parts, or this chunk's)."""
        if isinstance(event, TextDelta):
            if event.thought:
                cand.thought.append(event.text)
                cand.thought_tokens += event.tokens
                if prepared.include_thoughts and event.text:
                    _append_text(parts, event.text, thought=True)
            else:
                cand.output_tokens += event.tokens
                cand.logprobs.extend(event.logprobs)
                if event.text:
                    cand.answer.append(event.text)
                    _append_text(parts, event.text)
        elif isinstance(event, CallEvent):
            cand.output_tokens += event.tokens
            parts.append(OutPart(call=event.call, signature=self._signature(prepared, cand)))
        elif isinstance(event, Finish):
            cand.finish = event.reason
            fmt = prepared.request.response_format
            if fmt.kind == "json" and event.reason == "STOP" and cand.answer and not _fits(cand.answer, fmt.schema):
                cand.finish = "MALFORMED_RESPONSE"  # every engine's JSON is checked before it is returned
            signature = self._signature(prepared, cand)
            if signature:  # on the last part, or a part of its own when that is a thought
                if parts and parts[-1].text is not None and not parts[-1].thought and not parts[-1].signature:
                    parts[-1].signature = signature
                else:
                    parts.append(OutPart(signature=signature))

    def _signature(self, prepared: Prepared, cand: Candidate) -> str | None:
        """The signature of the candidate's reasoning, once: on its first function call, else on its last part."""
        if not prepared.sign or cand.signed or not cand.thought:
            return None
        cand.signed = True
        return self.signer.sign("".join(cand.thought))


@dataclass(frozen=True)
class _Inputs:
    """What reading a request's parts needs besides the parts: whose files they may name, the default resolution."""

    project_id: str
    resolution: str | None


def _fits(answer: list[str], schema: dict[str, Any] | None) -> bool:
    # On the event loop: patterns that must backtrack get a fifth of a second in all, then the answer does not fit.
    try:
        with patterns.time_budget(0.2):
            validate_instance(json.loads("".join(answer)), schema or {})
    except (ValueError, SchemaMismatch):
        return False
    return True


def _append_text(parts: list[OutPart], text: str, thought: bool = False) -> None:
    """Consecutive text of one kind joins one part, as Gemini returns it."""
    last = parts[-1] if parts else None
    if last is not None and last.text is not None and last.thought == thought and not last.signature:
        last.text += text
    else:
        parts.append(OutPart(text=text, thought=thought))


def _seconds(value: str | None, name: str) -> float | None:
    """A proto Duration ("12s", "1.5s") in seconds."""
    if value is None:
        return None
    try:
        seconds = float(value.removesuffix("s"))
        if not math.isfinite(seconds):
            raise ValueError(value)
    except ValueError:
        raise ApiError.invalid(f"Invalid value at 'video_metadata.{name}' (type.googleapis.com/google.protobuf.Duration), "
                               f"\"{value}\"") from None
    if seconds < 0:
        raise ApiError.invalid(f"video_metadata.{name} must not be negative.")
    return seconds


def _b64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4),
                                altchars=b"-_" if "-" in data or "_" in data else None, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError.invalid(f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for \"{data[:40]}\"") from None
