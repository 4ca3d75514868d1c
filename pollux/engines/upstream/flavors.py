"""What each kind of OpenAI-compatible server understands beyond OpenAI's own fields, and how Pollux tells them apart.

A flavor decides which extensions a request uses: how a schema or an enum is enforced, how thinking is switched off
or budgeted, whether prefix-cache state can be salted per tenant, and where the server's tokenizer is. `generic`
uses only OpenAI's fields; a feature it lacks is refused with a 400 naming it, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

FlavorName = Literal["vllm", "sglang", "llamacpp", "ollama", "generic"]
FLAVORS: tuple[FlavorName, ...] = ("vllm", "sglang", "llamacpp", "ollama", "generic")


@dataclass(frozen=True)
class Flavor:
    name: FlavorName
    # Constrained decoding: "structured_outputs" (vLLM ≥ 0.10.2), "guided" (older vLLM, SGLang's guided_* fields),
    # "json_schema" (llama.cpp's top-level field), "response_format" (OpenAI's json_schema; Ollama, generic).
    schema_field: str
    enum_choice: bool          # a bare-choice constraint for text/x.enum (else a JSON string, unquoted afterwards)
    thinking_switch: bool      # chat_template_kwargs.enable_thinking turns a thinking model's reasoning off
    budget_field: str | None   # the per-request thinking budget: vLLM's thinking_token_budget, llama.cpp's
                               # thinking_budget_tokens; None: only on or off
    cache_salt: bool           # per-request prefix-cache isolation
    tokenize: Literal["vllm", "llamacpp", "none"]  # how countTokens reaches the server's tokenizer
    video_url: bool            # takes video as a `video_url` part (else frames as images)
    top_k: bool                # accepts top_k beside OpenAI's sampling fields
    native_n: bool             # answers `n` choices
    named_tool_choice: bool    # honours tool_choice naming one function (llama.cpp reads it as "auto")
    reasoning_input: bool = False  # takes earlier reasoning back as an assistant message's `reasoning_content`


_TABLE = {
    "vllm": Flavor("vllm", schema_field="structured_outputs", enum_choice=True, thinking_switch=True,
                   budget_field="thinking_token_budget", cache_salt=True, tokenize="vllm", video_url=True, top_k=True,
                   native_n=True, named_tool_choice=True, reasoning_input=True),
    "sglang": Flavor("sglang", schema_field="response_format", enum_choice=False, thinking_switch=True,
                     budget_field=None, cache_salt=True, tokenize="none", video_url=False, top_k=True, native_n=True,
                     named_tool_choice=True, reasoning_input=True),
    # llama.cpp's `n` reports one choice's usage only: one request per candidate instead.
    "llamacpp": Flavor("llamacpp", schema_field="json_schema", enum_choice=False, thinking_switch=True,
                       budget_field="thinking_budget_tokens", cache_salt=False, tokenize="llamacpp", video_url=False,
                       top_k=True, native_n=False, named_tool_choice=False, reasoning_input=True),
    "ollama": Flavor("ollama", schema_field="response_format", enum_choice=False, thinking_switch=False,
                     budget_field=None, cache_salt=False, tokenize="none", video_url=False, top_k=True, native_n=False,
                     named_tool_choice=True),
    "generic": Flavor("generic", schema_field="response_format", enum_choice=False, thinking_switch=False,
                      budget_field=None, cache_salt=False, tokenize="none", video_url=False, top_k=False,
                      native_n=False, named_tool_choice=True),
}


def flavor(name: str) -> Flavor:
    if name not in _TABLE:
        raise ValueError(f"unknown flavor {name!r} (one of: {', '.join(FLAVORS)})")
    return _TABLE[name]


def vllm_flavor(version: str) -> Flavor:
    """vLLM renamed its guided_* fields to `structured_outputs` in 0.10.2 and dropped the old names in 0.12."""
    try:
        major, minor, patch = (int("".join(ch for ch in part if ch.isdigit()) or 0)
                               for part in (version.split(".") + ["0", "0"])[:3])
    except ValueError:
        return _TABLE["vllm"]
    if (major, minor, patch) < (0, 10, 2):
        return replace(_TABLE["vllm"], schema_field="guided", budget_field=None)
    return _TABLE["vllm"]
