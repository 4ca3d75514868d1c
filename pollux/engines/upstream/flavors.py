"""What each kind of OpenAI-compatible server understands beyond OpenAI's own fields, and how Pollux tells them apart.

A flavor decides which extensions a request uses: how a schema or an enum is enforced, how thinking is switched off
or budgeted, whether prefix-cache state can be salted per tenant, and where the server's tokenizer is. `generic`
uses only OpenAI's fields; a feature it lacks is refused with a 400 naming it, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
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


_TABLE = {
    "vllm": Flavor("vllm", "structured_outputs", True, True, "thinking_token_budget", True, "vllm", True, True, True,
                   True),
    "sglang": Flavor("sglang", "response_format", False, True, None, True, "none", False, True, True, True),
    "llamacpp": Flavor("llamacpp", "json_schema", False, True, "thinking_budget_tokens", False, "llamacpp", False,
                       True, True, False),
    "ollama": Flavor("ollama", "response_format", False, False, None, False, "none", False, True, False, True),
    "generic": Flavor("generic", "response_format", False, False, None, False, "none", False, False, False, True),
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
        return Flavor("vllm", "guided", True, True, None, True, "vllm", True, True, True, True)
    return _TABLE["vllm"]
