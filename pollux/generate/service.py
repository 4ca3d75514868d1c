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
import logging
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import patterns
from ..caches.service import Cached, CacheService
from ..config import ModelSpec, Settings, find_model
from ..engines.base import (CallEvent, Engine, Event, Finish, FunctionSpec, GenerateRequest, ImageDelta, Media,
                            ResponseFormat, Sampling, Segment, Text, TextDelta, Thinking, TokenCount, ToolCall,
                            ToolResult, Turn, Usage as EngineUsage)
from ..engines.errors import EngineError
from ..errors import ApiError, from_engine
from ..files.service import FileService
from ..images.engines import ImageEngine, build_image_engines, image_engine_key, paints_answers
from ..images.sizes import output_image
from ..media import MediaError, inspect_bytes
from ..merged import END, Merged
from ..media.probe import MediaInfo, modality_of
from ..schemas import SchemaMismatch, openapi_to_json_schema, validate_instance
from ..store.blobs import BlobMissing
from ..store.records import CachedFile
from .accounting import with_media
from .protocol import Content, CountTokensRequest, GenerateContentRequest, GenerationConfig, Part
from .results import Candidate, Chunk, OutPart, Reply, Usage
from .signatures import Signer
from .validation import check_contents, check_request, check_system_instruction, check_tools, response_modalities

log = logging.getLogger("pollux.generate")

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


@dataclass(frozen=True)
class Picture:
    """The picture a request on an image-output model answers with (responseModalities IMAGE): what to paint, how
    big, and the output tokens Gemini bills for it."""

    engine: ImageEngine
    prompt: str
    width: int
    height: int
    tokens: int
    seed: int | None

    async def paint(self, model: str) -> bytes:
        return (await self.engine.generate(model, self.prompt, 1, self.width, self.height, self.seed))[0]


@dataclass
class Prepared:
    """A validated request, ready for the engine."""

    model: ModelSpec
    engine: Engine
    request: GenerateRequest
    candidates: int
    include_thoughts: bool
    prompt: TokenCount  # counted before, or (engines that report usage) from the generation's own Usage
    sign: bool  # whether reasoning is returned as signatures (Gemini 3 always; 2.5 when functions are declared)
    text: bool = True  # whether the answer holds text (responseModalities TEXT, the default)
    picture: Picture | None = None  # the picture it holds too (responseModalities IMAGE)
    response_id: str = field(default_factory=_response_ids.next)
    cached: int = 0  # prompt tokens read from a context cache or the engine's prefix cache
    cached_count: TokenCount | None = None  # those of a context cache, per modality

    def reply(self, candidates: list[Candidate], chunks: list[Chunk]) -> Reply:
        text = sum(c.output_tokens for c in candidates)
        images = sum(c.image_tokens for c in candidates)
        # Per-modality output counts are reported, as Gemini does, when the answer holds a picture (and always by
        # the models that always report them).
        reported = images or self.model.output_details
        details = {m: n for m, n in (("TEXT", text), ("IMAGE", images)) if n} if reported else None
        usage = Usage(self.prompt, text + images, sum(c.thought_tokens for c in candidates), details, self.cached,
                      self.cached_count.by_modality if self.cached_count else None)
        return Reply(chunks, usage, f"{self.model.id} (pollux {self.engine.name})", self.response_id)


class GenerateService:
    def __init__(self, settings: Settings, engines: dict[str, Engine], signer: Signer, files: FileService,
                 caches: CacheService, image_engines: dict[str, ImageEngine] | None = None) -> None:
        """`image_engines` paint for the image-output models (keyed by `image_engine_key`); when not given, the
        service starts its own for them."""
        self.settings = settings
        self.engines = engines
        self.signer = signer
        self.files = files
        self.caches = caches
        self.image_engines = (image_engines if image_engines is not None
                              else build_image_engines(settings, predict=False, generate=True))

    # Models -----------------------------------------------------------------------------------------------------
    def resolve(self, name: str, version: str, method: str) -> ModelSpec:
        """The model named in the path, if it exists and supports `method`; else the real API's 404."""
        return find_model(self.settings, name, version, method)

    # Entry points -----------------------------------------------------------------------------------------------
    async def generate(self, model: ModelSpec, req: GenerateContentRequest, project_id: str, *,
                       background: bool = False) -> Reply:
        """A whole answer; `background` for a batch job's request (see `GenerateRequest.background`)."""
        prepared = await self.prepare(model, req, project_id, stream=False, background=background)
        candidates = [Candidate(i) for i in range(prepared.candidates)]

        async def run(cand: Candidate) -> None:
            async with aclosing(self._candidate_events(prepared, cand.index)) as events:
                async for event in events:
                    self._apply(prepared, cand, event, cand.parts)

        if len(candidates) == 1:
            await run(candidates[0])
            return prepared.reply(candidates, [Chunk(c, c.parts, c.logprobs) for c in candidates])
        if _native(prepared):
            async with aclosing(self._all_candidates(prepared)) as tagged:
                async for index, event in tagged:
                    self._apply(prepared, candidates[index], event, candidates[index].parts)
            return prepared.reply(candidates, [Chunk(c, c.parts, c.logprobs) for c in candidates])
        # Candidates run side by side, so an engine that batches can decode them together.
        tasks = [asyncio.create_task(run(c)) for c in candidates]
        try:
            await asyncio.gather(*tasks)
        finally:
            _stop(tasks)  # also when the client went away and this request was cancelled
        return prepared.reply(candidates, [Chunk(c, c.parts, c.logprobs) for c in candidates])

    async def stream(self, model: ModelSpec, req: GenerateContentRequest, project_id: str) -> AsyncIterator[Reply]:
        """Validates before the first chunk (so errors are plain HTTP errors), then yields response chunks.

        As Gemini's, the last chunk of a candidate holds its last output together with finishReason and the final
        usage, and no chunk is empty: each candidate's latest chunk is held until its next event, which either is
        the finish (joined to it) or makes it go out. So one chunk at most waits per candidate, for one event."""
        prepared = await self.prepare(model, req, project_id, stream=True)
        candidates = [Candidate(i) for i in range(prepared.candidates)]
        # Bounded, so that an engine cannot run far ahead of a slow client.
        merged: Merged[tuple[Candidate, Any]] = Merged(64)

        async def run_all() -> None:
            """All candidates from one engine call (an engine that answers `candidateCount` itself)."""
            try:
                async with aclosing(self._all_candidates(prepared)) as tagged:
                    async for index, event in tagged:
                        await merged.put((candidates[index], event))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                await merged.put((candidates[0], exc))
            finally:
                for cand in candidates:
                    await merged.put((cand, END))

        async def replies() -> AsyncIterator[Reply]:
            if _native(prepared) and len(candidates) > 1:
                tasks = [asyncio.create_task(run_all())]
            else:
                tasks = [asyncio.create_task(merged.pump(c, self._candidate_events(prepared, c.index)))
                         for c in candidates]
            running = len(candidates)  # each candidate's end comes once
            held: dict[int, Reply] = {}  # per candidate: its latest chunk, not sent yet
            started: set[int] = set()  # candidates that sent a chunk
            try:
                while running:
                    cand, event = await merged.get()
                    if event is END:
                        running -= 1
                        if cand.index in held:  # an engine that ended without a finish: what it made still goes
                            yield held.pop(cand.index)
                        continue
                    if isinstance(event, Exception):
                        if cand.index in held:  # the output before the error, then the error
                            yield held.pop(cand.index)
                        raise event
                    last = held.pop(cand.index, None)
                    if isinstance(event, Finish):
                        chunk = last.chunks[0] if last is not None else Chunk(cand, [], [])
                        self._apply(prepared, cand, event, chunk.parts)
                        if not chunk.parts:
                            # A candidate with no output at all still sends a part: the JS SDK records a turn
                            # whose chunk has no parts as invalid, and leaves it out of a chat's history.
                            chunk.parts.append(OutPart(text=""))
                        yield prepared.reply(candidates, [chunk])  # with the final usage
                        continue
                    parts: list[OutPart] = []
                    seen = len(cand.logprobs)
                    self._apply(prepared, cand, event, parts)
                    if not parts:  # a thought the client does not see: nothing to send yet
                        if last is not None:
                            held[cand.index] = last
                        continue
                    if (last is not None and isinstance(event, CallEvent)
                            and all(p.call is not None for p in last.chunks[0].parts)):
                        # Parallel calls go in one chunk, as Gemini sends them.
                        last.chunks[0].parts.extend(parts)
                        held[cand.index] = prepared.reply(candidates, last.chunks)
                        continue
                    if last is not None:
                        started.add(cand.index)
                        yield last
                    chunk = prepared.reply(candidates, [Chunk(cand, parts, cand.logprobs[seen:])])
                    if cand.index not in started and isinstance(event, TextDelta) and merged.empty():
                        # A candidate's first words go out as soon as they come, when nothing follows them yet
                        # (an engine that writes token by token): holding them would add a token's time to the
                        # first chunk. Later chunks wait for the next event, so the last carries the finish.
                        started.add(cand.index)
                        yield chunk
                    else:
                        held[cand.index] = chunk
            finally:
                _stop(tasks)  # a client that went away stops its generations here
                # `wait`, not `gather`: a cancelled gather cancels its tasks again, in the middle of their clean-up
                # (the HTTP server re-cancels this task at each await once its client has gone).
                await asyncio.wait(tasks)

        return replies()

    async def count_tokens(self, model: ModelSpec, req: CountTokensRequest, project_id: str
                           ) -> tuple[TokenCount, TokenCount | None]:
        """The prompt's tokens, and those of them that a context cache it names holds."""
        if req.contents and req.generate_content_request:
            raise ApiError.invalid("* CountTokensRequest: contents and generate_content_request are mutually exclusive.\n")
        if req.generate_content_request is not None:
            inner = req.generate_content_request
            check_request(inner, model)
        else:
            check_contents(req.contents, "CountTokensRequest")
            inner = GenerateContentRequest(contents=req.contents)
        cache = await self._cache(model, inner, project_id)
        request = await self._engine_request(model, inner, project_id, stream=False, cache=cache)
        return await self._count(self._engine(model), request), cache.tokens if cache else None

    async def count_cache(self, model: ModelSpec, held: GenerateContentRequest, project_id: str) -> TokenCount:
        """The tokens of what a new context cache holds (contents, system instruction, tools), checked as a
        request's would be."""
        if held.contents:
            check_contents(held.contents, "CachedContent")
        check_system_instruction(held.system_instruction)
        check_tools(held.tools, held.tool_config)
        request = await self._engine_request(model, held, project_id, stream=False)
        return await self._count(self._engine(model), request)

    async def keep_cache(self, model: ModelSpec, cache: Cached, project_id: str) -> None:
        """Have the model's engine compute the cache's prompt ahead and keep it, if it can (in the background)."""
        engine = self._engine(model)
        if self.caches.wants_kept(engine, cache.record):
            request = await self._engine_request(model, GenerateContentRequest(), project_id, stream=False,
                                                 cache=cache)
            self.caches.keep(engine, request, cache.record)

    async def _cache(self, model: ModelSpec, req: GenerateContentRequest, project_id: str) -> Cached | None:
        """The context cache the request names, if any: the project's, live, and made for this model."""
        if not req.cached_content:
            return None
        cache = await self.caches.use(project_id, req.cached_content)
        if cache.record.model != model.id:
            raise ApiError.invalid(f"Model used by GenerateContent request ({model.name}) and CachedContent "
                                   f"(models/{cache.record.model}) has to be the same.")
        return cache

    @staticmethod
    async def _count(engine: Engine, request: GenerateRequest) -> TokenCount:
        """The prompt's tokens: the engine's count, and Gemini's for media where the engine does not count them."""
        try:
            counted = await engine.count_tokens(request)
        except EngineError as exc:
            raise from_engine(exc) from None
        return counted if engine.capabilities.counts_media else with_media(counted, request)

    # Request → engine -------------------------------------------------------------------------------------------
    def _engine(self, model: ModelSpec) -> Engine:
        engine = self.engines.get(model.engine_key)
        if engine is None and paints_answers(model) and image_engine_key(model) == model.engine_key:
            engine = self.engines.get("emulator")  # its engine paints; the built-in model writes the text beside
        if engine is None:
            raise ApiError("UNAVAILABLE", f"The engine {model.engine!r} for {model.name} is not running.")
        return engine

    async def prepare(self, model: ModelSpec, req: GenerateContentRequest, project_id: str, stream: bool,
                      background: bool = False) -> Prepared:
        check_request(req, model)
        self._check_signatures(req.contents or [], model)
        cache = await self._cache(model, req, project_id)
        request = await self._engine_request(model, req, project_id, stream, cache=cache)
        request.background = background
        engine = self._engine(model)
        if cache is not None:
            await self.keep_cache(model, cache, project_id)  # again, if the engine let it go (memory, a restart)
        if engine.capabilities.reports_usage:
            prompt = TokenCount({"TEXT": 0})  # the generation says; the engine enforces its own context length
        else:
            prompt = await self._count(engine, request)
        if prompt.total > model.input_token_limit:
            raise ApiError.invalid(f"The input token count ({prompt.total}) exceeds the maximum number of tokens "
                                   f"allowed ({model.input_token_limit}).")
        sign = model.thinking_control == "level" or bool(request.functions)
        cfg = req.generation_config or _NO_CONFIG
        modalities = response_modalities(cfg, model)
        picture = self._picture(model, cfg, request) if "IMAGE" in modalities else None
        return Prepared(model, engine, request, cfg.candidate_count or 1, request.thinking.include_thoughts, prompt,
                        sign, text="TEXT" in modalities, picture=picture,
                        cached=cache.record.token_count if cache else 0, cached_count=cache.tokens if cache else None)

    def _picture(self, model: ModelSpec, cfg: GenerationConfig, request: GenerateRequest) -> Picture:
        """What an image-output model paints: the last user turn's words, at the size imageConfig asks for (without
        an aspect ratio, that of the conversation's latest picture, as Gemini edits keep it; else square)."""
        engine = self.image_engines.get(image_engine_key(model))
        if engine is None:
            raise ApiError("UNAVAILABLE", f"The image engine for {model.name} is not running.")
        ic = cfg.image_config
        source = next(((s.info.width, s.info.height) for turn in reversed(request.turns)
                       for s in reversed(turn.segments) if isinstance(s, Media) and s.modality == "IMAGE"
                       and s.info is not None and s.info.width and s.info.height), None)
        size = output_image(model, ic.aspect_ratio if ic else None, ic.image_size if ic else None, source)
        prompt = next((" ".join(s.text for s in turn.segments if isinstance(s, Text) and not s.thought)
                       for turn in reversed(request.turns) if turn.role == "user"
                       and any(isinstance(s, Text) and not s.thought for s in turn.segments)), "")
        return Picture(engine, prompt, size.width, size.height, size.tokens, cfg.seed)

    async def _all_candidates(self, prepared: Prepared) -> AsyncIterator[tuple[int, Event]]:
        """Every candidate's events, tagged with its index, from an engine with native candidates."""
        try:
            engine: Any = prepared.engine
            async with aclosing(engine.generate_candidates(prepared.request, prepared.candidates)) as tagged:
                async for item in tagged:
                    yield item
        except EngineError as exc:
            raise from_engine(exc) from None

    async def _candidate_events(self, prepared: Prepared, index: int) -> AsyncIterator[Event]:
        """One candidate's events, the engine's errors as Gemini's: the text engine's, and when the answer holds a
        picture, the picture after the text and before the finish. The picture is painted while the text is
        written."""
        request = self._for_candidate(prepared, index)
        picture = prepared.picture
        try:
            if picture is None:
                async with aclosing(prepared.engine.generate(request)) as events:
                    async for event in events:
                        yield event
                return
            painting = asyncio.create_task(picture.paint(prepared.model.id))
            try:
                finish = Finish("STOP")
                if prepared.text:
                    async with aclosing(prepared.engine.generate(request)) as events:
                        async for event in events:
                            if isinstance(event, Finish):
                                finish = event
                            else:
                                yield event
                yield ImageDelta("image/png", await painting, picture.tokens)
                yield finish
            finally:
                painting.cancel()  # the client went away, or the text failed: the picture is not wanted
        except EngineError as exc:
            raise from_engine(exc) from None

    async def _engine_request(self, model: ModelSpec, req: GenerateContentRequest, project_id: str,
                              stream: bool, cache: Cached | None = None) -> GenerateRequest:
        """The engine's request. With a context cache, the cache's contents come first and its system instruction,
        tools and tool config are the request's (a request that names a cache sets none of its own)."""
        cfg = req.generation_config or _NO_CONFIG
        turns = await self._read_turns(req.contents or [], _Inputs(project_id, cfg.media_resolution))
        held: GenerateContentRequest = req
        if cache is not None:
            inputs = _Inputs(project_id, cfg.media_resolution, files={
                uri: _Readable(f.mime_type, f.info, await self._cached_copy(f))
                for uri, f in cache.record.files.items()})
            turns = await self._read_turns(cache.contents, inputs) + turns
            held = GenerateContentRequest(system_instruction=cache.system_instruction, tools=cache.tools,
                                          tool_config=cache.tool_config)
        fcc = held.tool_config.function_calling_config if held.tool_config else None
        return GenerateRequest(
            model=model.id, turns=turns, system=self._system(held.system_instruction),
            functions=self._functions(held),
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
            tenant=self.signer.tenant(project_id),
        )

    async def _read_turns(self, contents: list[Content], inputs: _Inputs) -> list[Turn]:
        if any(p.inline_data is not None or p.file_data is not None for c in contents for p in c.parts or []):
            await self._find_files(contents, inputs)
            return await asyncio.to_thread(self._turns, contents, inputs)  # decoding media is no work for the loop
        return self._turns(contents, inputs)

    async def _cached_copy(self, copy: CachedFile) -> Path:
        try:
            return await self.files.local_blob(copy.blob, copy.sha256, copy.size_bytes)
        except BlobMissing:
            raise ApiError("FAILED_PRECONDITION", f"The File {copy.id} of the cached content cannot be read: its bytes "
                           "are lost.") from None

    @staticmethod
    def _for_candidate(prepared: Prepared, index: int) -> GenerateRequest:
        return replace(prepared.request, candidate_index=index) if index else prepared.request

    async def _find_files(self, contents: list[Content], inputs: _Inputs) -> None:
        """The uploaded files the parts name, looked up (they must be ACTIVE and the project's) and made readable
        locally, before the parts are read off the event loop."""
        for content in contents:
            for part in content.parts or []:
                uri = part.file_data.file_uri or "" if part.file_data is not None else None
                if uri is not None and uri not in inputs.files:
                    record = await self.files.usable(inputs.project_id, uri)
                    try:
                        inputs.files[uri] = _Readable(record.mime_type, record.info,
                                                      await self.files.local_path(record))
                    except BlobMissing:
                        raise ApiError("FAILED_PRECONDITION", f"The File {record.id} cannot be read: its bytes are "
                                       "lost.") from None

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
        _note_ignored(part)
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
            readable = inputs.files[part.file_data.file_uri or ""]
            out.append(self._media(part, readable.mime_type, inputs, path=readable.path,
                                   info=MediaInfo(**(readable.info or {})), uri=part.file_data.file_uri))
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
        elif part.tool_call is not None:  # a built-in tool's call and result in the history: read as text
            out.append(Text(json.dumps(part.tool_call.args or {}, sort_keys=True)))
        elif part.tool_response is not None:
            out.append(Text(json.dumps(part.tool_response.response or {}, sort_keys=True)))
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
            clip = (_seconds(vm.start_offset, "video_metadata.start_offset") or 0.0,
                    _seconds(vm.end_offset, "video_metadata.end_offset"))
            if vm.fps is not None and not 0 < vm.fps <= 24:
                raise ApiError.invalid("video_metadata.fps must be in (0.0, 24.0].")
            fps = vm.fps
        elif part.audio_metadata is not None:
            if modality == "AUDIO":  # the stretch of the audio that is read, as video_metadata's for video
                am = part.audio_metadata
                clip = (_seconds(am.start_offset, "audio_metadata.start_offset") or 0.0,
                        _seconds(am.end_offset, "audio_metadata.end_offset"))
            else:
                _note("audioMetadata")
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
        elif isinstance(event, EngineUsage):
            # The engine's own count (an upstream server's `usage`): it replaces what the deltas said.
            prepared.prompt = TokenCount({"TEXT": event.prompt_tokens})
            prepared.cached = max(prepared.cached, event.cached_tokens)  # a context cache's count stands
            cand.output_tokens = event.output_tokens - event.thought_tokens
            cand.thought_tokens = event.thought_tokens
        elif isinstance(event, ImageDelta):
            cand.image_tokens += event.tokens
            parts.append(OutPart(data=event.data, mime_type=event.mime_type))
        elif isinstance(event, Finish):
            # What the engine read from its prefix cache (implicit caching), as upstream servers report it in usage.
            prepared.cached = max(prepared.cached, event.cached_tokens)
            cand.finish = event.reason
            fmt = prepared.request.response_format
            if fmt.kind == "json" and event.reason == "STOP" and cand.answer and not _fits(cand.answer, fmt.schema):
                cand.finish = "MALFORMED_RESPONSE"  # every engine's JSON is checked before it is returned
            signature = self._signature(prepared, cand)
            if signature:  # on the last part (answer text or picture), or a part of its own after a thought
                last = parts[-1] if parts else None
                if (last is not None and not last.signature and not last.thought
                        and (last.text is not None or last.data is not None)):
                    last.signature = signature
                else:
                    parts.append(OutPart(signature=signature))

    def _signature(self, prepared: Prepared, cand: Candidate) -> str | None:
        """The signature of the candidate's reasoning, once: on its first function call, else on its last part."""
        if not prepared.sign or cand.signed or not cand.thought:
            return None
        cand.signed = True
        return self.signer.sign("".join(cand.thought))


def _native(prepared: Prepared) -> bool:
    """Whether the engine answers all the candidates in one call (not when a picture is painted beside them)."""
    return prepared.candidates > 1 and prepared.engine.capabilities.native_candidates and prepared.picture is None


def _stop(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel each task once: a second cancel would break into the clean-up the first began (an upstream engine
    closing its connection, so that the server stops generating)."""
    for task in tasks:
        if not task.done() and not task.cancelling():
            task.cancel()


@dataclass(frozen=True)
class _Readable:
    """An uploaded file as a part reads it: its type, what probing measured, and its bytes as a local file."""

    mime_type: str
    info: dict[str, Any] | None
    path: Path


@dataclass(frozen=True)
class _Inputs:
    """What reading a request's parts needs besides the parts: whose files they may name, the default resolution,
    and the files they name (by URI)."""

    project_id: str
    resolution: str | None
    files: dict[str, _Readable] = field(default_factory=dict)


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
    """A proto Duration ("12s", "1.5s") in seconds; `name` is the field's path (video_metadata.start_offset)."""
    if value is None:
        return None
    try:
        seconds = float(value.removesuffix("s"))
        if not math.isfinite(seconds):
            raise ValueError(value)
    except ValueError:
        raise ApiError.invalid(f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Duration), "
                               f"\"{value}\"") from None
    if seconds < 0:
        raise ApiError.invalid(f"{name} must not be negative.")
    return seconds


# Part fields the SDKs send that change nothing here, by wire name: each is noted in the log the first time it
# is seen (the name only, never the value), so that a user can tell it was read and had no effect.
_IGNORED_PART_FIELDS = {"media_processing": "mediaProcessing", "speech_metadata": "speechMetadata",
                        "document_metadata": "documentMetadata", "spreadsheet_metadata": "spreadsheetMetadata",
                        "audio_transcription": "audioTranscription"}
_noted: set[str] = set()


def _note(name: str) -> None:
    if name not in _noted:
        _noted.add(name)
        log.info("request part field %s has no effect on Pollux: accepted and ignored (noted once)", name)


def _note_ignored(part: Part) -> None:
    for attr, name in _IGNORED_PART_FIELDS.items():
        if getattr(part, attr) is not None:
            _note(name)
    if part.audio_metadata is not None and not (part.inline_data or part.file_data):
        _note("audioMetadata")  # on anything but audio it clips nothing (on audio, see `_media`)
    if part.inline_data is not None and part.inline_data.display_name is not None:
        _note("inlineData.displayName")
    if part.file_data is not None and part.file_data.display_name is not None:
        _note("fileData.displayName")
    if part.media_resolution is not None and part.media_resolution.num_tokens is not None:
        _note("mediaResolution.numTokens")
    if part.video_metadata is not None and part.video_metadata.content_layers:
        _note("videoMetadata.contentLayers")
    if part.tool_call is not None or part.tool_response is not None:
        _note("toolCall/toolResponse (read as text)")


def _b64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4),
                                altchars=b"-_" if "-" in data or "_" in data else None, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError.invalid(f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for \"{data[:40]}\"") from None
