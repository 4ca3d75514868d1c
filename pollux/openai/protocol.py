"""Wire types of OpenAI chat completions, as the openai SDKs send them. Fields this layer does not use are ignored,
as OpenAI-compatible servers do (the SDKs send `store`, `metadata`, `user`, ... freely).

Numbers are read as Gemini's compat layer reads them, by proto JSON rules (`wire.Float`, `wire.Int32`): never a
boolean, never more than the Gemini field they become can hold."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..wire import Float, Int32


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class FunctionCallIn(OpenAIModel):
    name: str
    arguments: str = "{}"


class ToolCallIn(OpenAIModel):
    id: str | None = None
    type: str = "function"
    function: FunctionCallIn
    extra_content: dict[str, Any] | None = None  # {"google": {"thought_signature": ...}} on Gemini 3


class Message(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class ChatCompletionRequest(OpenAIModel):
    model: str
    messages: list[Message]
    n: Int32 | None = None
    stop: str | list[str] | None = None
    max_tokens: Int32 | None = None
    max_completion_tokens: Int32 | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    seed: Int32 | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    logprobs: bool | None = None
    top_logprobs: Int32 | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    web_search_options: dict[str, Any] | None = None  # refused: Pollux has no search (see to_gemini)
    # Gemini's extensions: `{"extra_body": {"google": ...}}` as the Python docs send it, or `{"google": ...}`.
    extra_body: dict[str, Any] | None = None
    google: dict[str, Any] | None = None
