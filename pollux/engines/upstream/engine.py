"""Engine `openai`: any OpenAI-compatible model server (vLLM, SGLang, llama.cpp's server, Ollama) behind Pollux.

Requests are translated by `translate.py` for the server's flavor and sent to the least busy server of the pool
(`pool.py`). Streams are translated chunk by chunk as they arrive; closing the event stream (the client went away)
closes the upstream connection, which makes the server abort the generation. Usage comes from the server's own
`usage`, so a generation costs one round trip; countTokens asks the server's tokenizer about the chat exactly as
the generation renders it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from ..base import Capabilities, Event, GenerateRequest, TokenCount
from ..errors import EngineError, Failure, Overloaded, Timeout, Unavailable
from . import translate
from .flavors import flavor
from .pool import CONNECT_ERRORS, Pool, Server, UpstreamOptions, http_error

_JSON = {"Content-Type": "application/json"}


class UpstreamEngine:
    name = "openai"

    def __init__(self, options: UpstreamOptions) -> None:
        self.options = options
        self.pool = Pool(options)
        self.capabilities = Capabilities(
            context_length=None,  # the server enforces its own; its 400 says so
            native_candidates=False,
            constrained_decoding=True,
            # Per server once its flavor is known (vLLM and llama.cpp take a budget; others only on or off).
            thinking_budget=options.flavor is None or flavor(options.flavor).budget_field is not None,
            reports_usage=True,
            counts_media=True)  # the server's own count of what it read: images as its model sees them

    # Generation -------------------------------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        skipped: EngineError | None = None  # an overloaded or failing server's answer, if no other server takes it
        async with aclosing(self.pool.attempts()) as attempts:
            try:
                async for server in attempts:
                    content = await self._encode(translate.body, request, server, stream=request.stream)
                    server.outstanding += 1
                    try:
                        http = self.pool.client.build_request("POST", f"{server.url}/chat/completions",
                                                              content=content, headers=_JSON)
                        try:
                            response = await self.pool.client.send(http, stream=True)
                        except CONNECT_ERRORS as exc:
                            self.pool.take_out(server, f"cannot connect ({type(exc).__name__})")
                            continue
                        except httpx.TimeoutException:
                            raise self._timeout() from None
                        try:
                            if response.status_code != 200:
                                error = http_error(response, await response.aread(), server)
                                if isinstance(error, Overloaded) or response.status_code >= 500:
                                    skipped = error  # another server may take it
                                    continue
                                raise error
                            answer = translate.Answer(enum=request.response_format.kind == "enum"
                                                      and not (server.flavor and server.flavor.enum_choice))
                            events = self._stream(response, answer) if request.stream else \
                                self._whole(response, answer)
                            async with aclosing(events) as events:
                                async for event in events:
                                    yield event
                            return
                        finally:
                            await response.aclose()
                    finally:
                        server.outstanding -= 1
            except Unavailable:
                if skipped is not None:
                    raise skipped from None
                raise

    async def _stream(self, response: httpx.Response, answer: translate.Answer) -> AsyncIterator[Event]:
        usage = None
        done = False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = _json(data)
                if "error" in chunk:  # an error after the stream began arrives as an event
                    raise Failure(f"The model server failed during the answer: {_error_text(chunk['error'])}")
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    for event in answer.delta(choice.get("delta") or {}, choice.get("logprobs")):
                        yield event
                    if choice.get("finish_reason"):
                        for event in answer.end(choice["finish_reason"]):
                            yield event
                if chunk.get("usage"):
                    usage = answer.usage(chunk["usage"])
        except httpx.TimeoutException:
            raise self._timeout() from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise Unavailable(f"The model server broke off the answer ({type(exc).__name__}).") from None
        if not done and answer.finish is None:
            raise Unavailable("The model server closed the stream before the answer ended.")
        if answer.finish is None:
            for event in answer.end("stop"):
                yield event
        if usage is not None:
            yield usage
        yield answer.finished()

    async def _whole(self, response: httpx.Response, answer: translate.Answer) -> AsyncIterator[Event]:
        try:
            raw = await response.aread()
        except httpx.TimeoutException:
            raise self._timeout() from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise Unavailable(f"The model server broke off the answer ({type(exc).__name__}).") from None
        data = _json(raw)
        choices = data.get("choices") or []
        if not choices:
            raise Failure("The model server answered without a choice.")
        for event in translate.whole(choices[0], answer):
            yield event
        usage = answer.usage(data.get("usage"))
        if usage is not None:
            yield usage
        yield answer.finished()

    # Counting ---------------------------------------------------------------------------------------------------
    async def count_tokens(self, request: GenerateRequest) -> TokenCount:
        """The prompt tokens the server reads for this request, from its own tokenizer over the rendered chat:
        vLLM's /tokenize takes the messages; llama.cpp renders them with /apply-template, then /tokenize. Other
        servers have no tokenizer route: a one-token generation reports the prompt's tokens (its prefill is what
        the answer will reuse from the server's prefix cache)."""
        async with aclosing(self.pool.attempts()) as attempts:
            async for server in attempts:
                try:
                    count = await self._count(request, server)
                except CONNECT_ERRORS as exc:
                    self.pool.take_out(server, f"cannot connect ({type(exc).__name__})")
                    continue
                except httpx.TimeoutException:
                    raise self._timeout() from None
                return TokenCount({"TEXT": count})
        raise Unavailable("No model server is available.")  # unreachable: attempts() raises first

    async def _count(self, request: GenerateRequest, server: Server) -> int:
        assert server.flavor is not None and server.model is not None
        how = server.flavor.tokenize
        if how == "vllm":
            content = await self._encode(translate.tokenize_body, request, server)
            data = await self._post(f"{server.root}/tokenize", content, server)
            return int(data["count"])
        if how == "llamacpp":
            full = await self._encode_dict(translate.body, request, server, stream=False)
            template = {k: full[k] for k in ("messages", "tools", "chat_template_kwargs") if k in full}
            rendered = await self._post(f"{server.root}/apply-template", orjson.dumps(template), server)
            tokens = await self._post(f"{server.root}/tokenize", orjson.dumps(
                {"content": rendered["prompt"], "add_special": True, "parse_special": True}), server)
            return len(tokens["tokens"])
        body = await self._encode_dict(translate.body, request, server, stream=False)
        body["max_tokens"] = 1
        body.pop("stop", None)
        data = await self._post(f"{server.url}/chat/completions", orjson.dumps(body), server)
        return int((data.get("usage") or {}).get("prompt_tokens") or 0)

    async def _post(self, url: str, content: bytes, server: Server) -> Any:
        response = await self.pool.client.post(url, content=content, headers=_JSON)
        if response.status_code != 200:
            raise http_error(response, response.content, server)
        return _json(response.content)

    # Helpers ----------------------------------------------------------------------------------------------------
    async def _encode_dict(self, build: Any, request: GenerateRequest, server: Server, **kw: Any) -> dict[str, Any]:
        assert server.flavor is not None and server.model is not None
        kw["context_length"] = server.context_length
        if translate.has_media(request):  # decoding PDFs and videos, and base64 of megabytes: not on the loop
            return await asyncio.to_thread(build, request, server.flavor, server.model, **kw)
        return build(request, server.flavor, server.model, **kw)

    async def _encode(self, build: Any, request: GenerateRequest, server: Server, **kw: Any) -> bytes:
        assert server.flavor is not None and server.model is not None
        kw["context_length"] = server.context_length
        if translate.has_media(request):
            return await asyncio.to_thread(lambda: orjson.dumps(build(request, server.flavor, server.model, **kw)))
        return orjson.dumps(build(request, server.flavor, server.model, **kw))

    def _timeout(self) -> Timeout:
        return Timeout(f"The model server did not answer within {self.options.timeout:g} s.")

    async def close(self) -> None:
        await self.pool.close()


def _json(data: str | bytes) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Failure("The model server's answer is not JSON.") from None
    if not isinstance(value, dict):
        raise Failure("The model server's answer is not a JSON object.")
    return value


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
