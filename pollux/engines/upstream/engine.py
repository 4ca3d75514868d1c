"""Engine `openai`: any OpenAI-compatible model server (vLLM, SGLang, llama.cpp's server, Ollama) behind Pollux.

Requests are translated by `translate.py` for the server's flavor and sent to the least busy server of the pool
(`pool.py`). Streams are translated chunk by chunk as they arrive; closing the event stream (the client went away)
closes the upstream connection, which makes the server abort the generation. Usage comes from the server's own
`usage`, so a generation costs one round trip; countTokens asks the server's tokenizer about the chat exactly as
the generation renders it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from ...merged import END, Merged
from ..base import Capabilities, Event, GenerateRequest, Thinking, TokenCount, Usage
from ..errors import EngineError, Failure, Overloaded, Unavailable
from . import translate
from .flavors import flavor
from .pool import Pool, Response, Server, Unreachable, UpstreamOptions, http_error, parse_json

T = TypeVar("T")

_WARMED = 10_000  # context caches remembered as sent ahead (each a key)


class UpstreamEngine:
    name = "openai"

    def __init__(self, options: UpstreamOptions) -> None:
        self.options = options
        self.pool = Pool(options)
        self.capabilities = Capabilities(
            context_length=None,  # the server enforces its own; its 400 says so
            native_candidates=True,  # generate_candidates: OpenAI's `n` where the server has it
            constrained_decoding=True,
            # Per server once its flavor is known (vLLM and llama.cpp take a budget; others only on or off).
            thinking_budget=options.flavor is None or flavor(options.flavor).budget_field is not None,
            reports_usage=True,
            counts_media=True,  # the server's own count of what it read: images as its model sees them
            keeps_prefixes=True)  # a context cache's prompt is sent ahead, for the server's prefix cache
        self._warmed: dict[str, None] = {}  # keys whose prefix was sent, oldest first

    # Generation -------------------------------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        async with aclosing(self._run(request, 1)) as events:
            async for _, event in events:
                yield event

    async def generate_candidates(self, request: GenerateRequest, n: int) -> AsyncIterator[tuple[int, Event]]:
        """`n` candidates of one request, as (candidate index, event): one request with OpenAI's `n` where the
        server answers it (vLLM, SGLang: one prefill for all), else one request per candidate, side by side."""
        server = await self.pool.pick(set())  # its flavor decides (known once it answered)
        if server.flavor is not None and server.flavor.native_n:
            async with aclosing(self._run(request, n)) as events:
                async for item in events:
                    yield item
            return
        async with aclosing(_merge([self.generate(replace(request, candidate_index=i)) for i in range(n)])) as events:
            async for item in events:
                yield item

    async def _run(self, request: GenerateRequest, n: int) -> AsyncIterator[tuple[int, Event]]:
        skipped: EngineError | None = None  # an overloaded or failing server's answer, if no other server takes it
        tried: set[Server] = set()
        while True:
            try:
                server = await self.pool.pick(tried)
            except Unavailable:
                if skipped is not None:
                    raise skipped from None
                raise
            server.outstanding += 1
            try:
                # The body is not kept here: the request holds it only until it is sent.
                async with self.pool.send(server, f"{server.url}/chat/completions", await self._encode(
                        translate.body, request, server, stream=request.stream, n=n,
                        batch_priority=self.options.batch_priority)) as response:
                    if response.status != 200:
                        error = http_error(response, await response.read(), server)
                        if isinstance(error, Overloaded) or response.status >= 500:
                            skipped = error  # another server may take it
                            continue
                        raise error
                    enum = request.response_format.kind == "enum" and not (server.flavor and server.flavor.enum_choice)
                    answers = [translate.Answer(enum=enum) for _ in range(n)]
                    if request.stream:
                        async with aclosing(self._stream(response, answers)) as events:
                            async for item in events:
                                yield item
                    else:
                        for item in _whole(await response.read(), answers):
                            yield item
                    return
            except Unreachable as exc:
                self.pool.take_out(server, f"cannot connect ({exc})")
            finally:
                server.outstanding -= 1

    async def _stream(self, response: Response, answers: list[translate.Answer]) -> AsyncIterator[tuple[int, Event]]:
        usage = None
        done = False
        async for line in response.lines():  # read to the end of the body, so that the connection is reused
            if done or not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue
            chunk = parse_json(data)
            if "error" in chunk:  # an error after the stream began arrives as an event
                raise Failure(f"The model server failed during the answer: {_error_text(chunk['error'])}")
            for choice in chunk.get("choices") or []:
                index = choice.get("index", 0)
                if not 0 <= index < len(answers):
                    continue
                answer = answers[index]
                for event in answer.delta(choice.get("delta") or {}, choice.get("logprobs")):
                    yield index, event
                if choice.get("finish_reason"):
                    for event in answer.end(choice["finish_reason"]):
                        yield index, event
            if chunk.get("usage"):
                usage = chunk["usage"]
        if not done and any(a.finish is None for a in answers):
            raise Unavailable("The model server closed the stream before the answer ended.")
        for item in _ends(answers, usage):
            yield item

    # Context caches ---------------------------------------------------------------------------------------------
    async def keep_prefix(self, request: GenerateRequest, key: str) -> int:
        """Send the cache's prompt ahead, for one token, so that the server's prefix cache (vLLM's and SGLang's, kept
        apart per project by `cache_salt`; llama.cpp's slots) holds it when the cache's requests come. The server
        decides how long it stays; later requests keep it warm as they use it. Returns the prompt's tokens."""
        # No thinking: a budget cannot fit in one token, and only the prompt matters.
        warm = replace(request, stream=False, thinking=Thinking(enabled=False),
                       sampling=replace(request.sampling, max_output_tokens=1, logprobs=None))
        prompt = 0
        async with aclosing(self._run(warm, 1)) as events:
            async for _, event in events:
                if isinstance(event, Usage):
                    prompt = event.prompt_tokens
        self._warmed[key] = None
        while len(self._warmed) > _WARMED:
            del self._warmed[next(iter(self._warmed))]
        return prompt

    def keeps_prefix(self, key: str) -> bool:
        return key in self._warmed

    async def drop_prefix(self, key: str) -> None:
        self._warmed.pop(key, None)

    # Counting ---------------------------------------------------------------------------------------------------
    async def count_tokens(self, request: GenerateRequest) -> TokenCount:
        """The prompt tokens the server reads for this request, from its own tokenizer over the rendered chat:
        vLLM's /tokenize takes the messages; llama.cpp renders them with /apply-template, then /tokenize. Other
        servers have no tokenizer route: a one-token generation reports the prompt's tokens (its prefill is what
        the answer will reuse from the server's prefix cache)."""
        tried: set[Server] = set()
        while True:
            server = await self.pool.pick(tried)
            try:
                return TokenCount({"TEXT": await self._count(request, server)})
            except Unreachable as exc:
                self.pool.take_out(server, f"cannot connect ({exc})")

    async def _count(self, request: GenerateRequest, server: Server) -> int:
        assert server.flavor is not None and server.model is not None
        how = server.flavor.tokenize
        if how == "vllm":
            content = await self._encode(translate.tokenize_body, request, server)
            data = await self.pool.post_json(server, f"{server.root}/tokenize", content)
            return int(data["count"])
        if how == "llamacpp":
            full = await self._encode_dict(translate.body, request, server, stream=False)
            template = {k: full[k] for k in ("messages", "tools", "chat_template_kwargs") if k in full}
            rendered = await self.pool.post_json(server, f"{server.root}/apply-template", orjson.dumps(template))
            tokens = await self.pool.post_json(server, f"{server.root}/tokenize", orjson.dumps(
                {"content": rendered["prompt"], "add_special": True, "parse_special": True}))
            return len(tokens["tokens"])
        body = await self._encode_dict(translate.body, request, server, stream=False)
        body["max_tokens"] = 1
        body.pop("stop", None)
        data = await self.pool.post_json(server, f"{server.url}/chat/completions", orjson.dumps(body))
        return int((data.get("usage") or {}).get("prompt_tokens") or 0)

    # Helpers ----------------------------------------------------------------------------------------------------
    async def _encode_dict(self, build: Any, request: GenerateRequest, server: Server, **kw: Any) -> dict[str, Any]:
        return await self._off_loop(request, lambda: build(request, server.flavor, server.model,
                                                           context_length=server.context_length, **kw))

    async def _encode(self, build: Any, request: GenerateRequest, server: Server, **kw: Any) -> bytes:
        return await self._off_loop(request, lambda: orjson.dumps(build(
            request, server.flavor, server.model, context_length=server.context_length, **kw)))

    @staticmethod
    async def _off_loop(request: GenerateRequest, work: Callable[[], T]) -> T:
        """`work` on the event loop, or in a thread when the request holds media: decoding PDFs and videos and
        base64 of megabytes are no work for the loop."""
        if translate.has_media(request):
            return await asyncio.to_thread(work)
        return work()

    async def close(self) -> None:
        await self.pool.close()


def _whole(body: bytes, answers: list[translate.Answer]) -> list[tuple[int, Event]]:
    """A whole (not streamed) answer's events."""
    data = parse_json(body)
    choices = data.get("choices") or []
    if not choices:
        raise Failure("The model server answered without a choice.")
    out: list[tuple[int, Event]] = []
    for choice in choices:
        index = choice.get("index", 0)
        if 0 <= index < len(answers):
            out.extend((index, event) for event in translate.whole(choice, answers[index]))
    return out + _ends(answers, data.get("usage"))


def _ends(answers: list[translate.Answer], usage: Any) -> list[tuple[int, Event]]:
    """What closes the candidates once the server's answer is complete: the usage of them all (on the first), then
    each candidate's finish, so that a finish always comes with the final usage."""
    out: list[tuple[int, Event]] = []
    for index, answer in enumerate(answers):
        if answer.finish is None:
            out.extend((index, event) for event in answer.end("stop"))
    counted = translate.usage(usage, answers)
    if counted is not None:
        out.append((0, counted))
    out.extend((index, answer.finished()) for index, answer in enumerate(answers))
    return out


async def _merge(streams: list[AsyncIterator[Event]]) -> AsyncIterator[tuple[int, Event]]:
    """Several event streams side by side, each event tagged with its stream's index."""
    merged: Merged[tuple[int, Any]] = Merged(64)
    tasks = [asyncio.create_task(merged.pump(i, s)) for i, s in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            index, item = await merged.get()
            if item is END:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            if not task.done() and not task.cancelling():
                task.cancel()
        await asyncio.wait(tasks)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
