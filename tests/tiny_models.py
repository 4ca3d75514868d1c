"""Tiny Hugging Face models built offline, for tests and benchmarks.

No weights can be downloaded where Pollux is tested, so every model here is made from scratch:

- ``build_tokenizer``: a byte-level BPE (vocab 4096) trained on the stdlib's ``.py`` files plus synthetic JSON,
  with Qwen3-style ChatML special tokens and a chat template (system, tools, tool calls, tool responses, thinking).
- ``build_llama``: a random 2-layer ``LlamaForCausalLM`` (0.6 M parameters) with that tokenizer.
- ``build_small_llama``: the same recipe at 27.4 M parameters (8 layers, hidden 512), for benchmarks.
- ``build_scripted``: the tiny Llama overfit on ``SCRIPTED_CHATS`` so that greedy decoding reproduces each canned
  answer exactly: deterministic end-to-end tests of plain text, JSON, tool calls, thinking and multi-byte UTF-8.
- ``build_gemma3_mm``: a random multimodal Gemma 3 (SigLIP tower, 64x64 images, 16 tokens per image) with a
  ``Gemma3Processor``.
- ``build_qwen3`` / ``build_qwen3_thinking``: a random ``Qwen3ForCausalLM`` with Qwen's own chat template (tool calls
  as ``<tool_call>\n{...}\n</tool_call>``), and the same weights with the thinking-only template variant.
- ``build_mistral_format`` / ``build_llama3_format``: the random tiny Llama with Mistral's and Llama 3.1's tokens and
  tool templates.

Every builder takes a root directory, builds into a sub-directory of it and returns that path. Builds are cached:
a directory holding a complete build of the same recipe version (its marker file, written last) is returned at
once. Builds happen in a temporary sibling directory that is renamed into place, so concurrent test processes
never see half a model.

Run ``python tests/tiny_models.py OUTDIR`` to build everything into OUTDIR.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Bump when a recipe changes, so that cached builds of the old recipe are rebuilt.
RECIPE_VERSION = 1
MARKER = ".pollux-tiny-model.json"

SEED = 1234

# --------------------------------------------------------------------------------------------------------------------
# Special tokens and chat templates

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Qwen3 marks these as added but *not* special, so `decode(skip_special_tokens=True)` keeps them and the engine can
# still parse thoughts and tool calls out of the text. We do the same.
CHATML_SPECIAL = [ENDOFTEXT, IM_START, IM_END]
CHATML_MARKUP = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
                 "<start_of_image>", "<end_of_image>", "<image_soft_token>"]

BPE_VOCAB = 4096 - len(CHATML_SPECIAL) - len(CHATML_MARKUP)  # so the ChatML tokenizer has exactly 4096 tokens

# Qwen3's template, simplified: reasoning is rendered for every assistant turn that has it (Qwen3 drops thoughts
# before the last user query, which would break token-exact prefix reuse), and tool calls are written on one line,
# `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the same form the scripted model is taught to emit.
CHATML_TEMPLATE = r"""
{%- macro text_of(content) -%}
    {%- if content is string -%}{{- content -}}
    {%- elif content is iterable -%}
        {%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- text_of(messages[0].content) + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within '
        '<tool_call></tool_call> XML tags:\n<tool_call>{"name": <function-name>, "arguments": <args-json-object>}'
        '</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + text_of(messages[0].content) + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- set content = text_of(message.content) %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.reasoning_content is string and message.reasoning_content %}
            {{- '<think>\n' + message.reasoning_content.strip('\n') + '\n</think>\n\n' }}
        {%- endif %}
        {{- content }}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if content or not loop.first %}{{- '\n' }}{%- endif %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '<tool_call>{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is mapping %}{{- message.content | tojson }}{%- else %}{{- content }}{%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
""".strip()

# Gemma 3's own template: a system turn is folded into the first user turn, the assistant role is "model", and an
# image part becomes <start_of_image>, which Gemma3Processor expands into the soft-token sequence.
GEMMA3_TEMPLATE = r"""
{{- bos_token }}
{%- if messages[0].role == 'system' -%}
    {%- if messages[0].content is string -%}
        {%- set first_user_prefix = messages[0].content + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0].content[0].text + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message.role == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set role = 'model' if message.role == 'assistant' else message.role -%}
    {{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') -}}
    {%- if message.content is string -%}
        {{- message.content | trim -}}
    {%- else -%}
        {%- for item in message.content -%}
            {%- if item.type == 'image' -%}
                {{- '<start_of_image>' -}}
            {%- elif item.type == 'text' -%}
                {{- item.text | trim -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
""".strip()

# --------------------------------------------------------------------------------------------------------------------
# The scripted model's canned chats

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name, e.g. Boston"}},
            "required": ["location"],
        },
    },
}

# Each chat: the messages (and tools / enable_thinking) the prompt is rendered from, and the exact completion the
# scripted model produces greedily, i.e. the assistant text up to and including <|im_end|>.
SCRIPTED_CHATS: list[dict[str, Any]] = [
    {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "completion": "The capital of France is Paris.<|im_end|>",
    },
    {
        "messages": [{"role": "user", "content": "Give me a JSON object describing a cat."}],
        "completion": '{"name": "Tom", "age": 3}<|im_end|>',
    },
    {
        "messages": [{"role": "user", "content": "What's the weather in Boston?"}],
        "tools": [WEATHER_TOOL],
        "completion": '<tool_call>{"name": "get_weather", "arguments": {"location": "Boston"}}</tool_call><|im_end|>',
    },
    {
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "enable_thinking": True,
        "completion": "<think>\nLight scatters.\n</think>\n\nBecause of Rayleigh scattering.<|im_end|>",
    },
    {
        "messages": [{"role": "user", "content": "Say hello in Japanese."}],
        "completion": "こんにちは、世界！<|im_end|>",
    },
    # The thinking question with thinking switched off: the template pre-fills an empty think block.
    {
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "enable_thinking": False,
        "completion": "Because of Rayleigh scattering.<|im_end|>",
    },
]


def render_prompt(tokenizer: Any, chat: dict[str, Any]) -> str:
    """The prompt text of a scripted chat: its messages rendered with the generation prompt appended."""
    kwargs: dict[str, Any] = {}
    if chat.get("enable_thinking") is not None:
        kwargs["enable_thinking"] = chat["enable_thinking"]
    return tokenizer.apply_chat_template(chat["messages"], tools=chat.get("tools"), add_generation_prompt=True,
                                         tokenize=False, **kwargs)


def prompt_ids(tokenizer: Any, chat: dict[str, Any]) -> list[int]:
    """The prompt token ids of a scripted chat, tokenized the way `apply_chat_template(tokenize=True)` does."""
    return tokenizer(render_prompt(tokenizer, chat), add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Build caching


def models_root() -> Path:
    """Where tests cache built models: $POLLUX_TEST_MODELS, else ~/.cache/pollux-test-models."""
    env = os.environ.get("POLLUX_TEST_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "pollux-test-models"


def _is_built(path: Path, recipe: str) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("recipe") == recipe and marker.get("version") == RECIPE_VERSION


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Build with one intra-op thread. These models are too small to gain from more, and on a shared 2-core box
    OpenMP threads waiting on each other made tiny ops ~400x slower (a 150 ms training step took 2 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cached_build(root: Path | str, name: str, build: Callable[[Path], None]) -> Path:
    """Return root/name, building it with `build(tmp_dir)` first unless a complete build is already there."""
    root = Path(root)
    target = root / name
    if _is_built(target, name):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished build should be as readable as any directory
    try:
        with _one_torch_thread():
            build(tmp)
        # The marker goes last and atomically: its presence means the directory is complete.
        marker_tmp = tmp / (MARKER + ".tmp")
        marker_tmp.write_text(json.dumps({"recipe": name, "version": RECIPE_VERSION}))
        os.replace(marker_tmp, tmp / MARKER)
        for _ in range(3):
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                # Someone else finished first, or a stale / older-recipe build is in the way.
                if _is_built(target, name):
                    return target
                shutil.rmtree(target, ignore_errors=True)
        raise RuntimeError(f"could not move the build of {name} into {target}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# Tokenizers


def _synthetic_json(n: int) -> list[str]:
    """JSON snippets, so that braces, quotes, colons, digits and the usual keys become cheap tokens."""
    rng = random.Random(SEED)
    keys = ["name", "age", "location", "arguments", "type", "properties", "required", "description", "city",
            "temperature", "unit", "items", "id", "value", "result", "status", "enum", "title", "text", "count",
            "ok", "error", "message", "content", "role", "parameters", "function", "zip", "conditions", "format"]
    words = ["Tom", "Boston", "Paris", "London", "cat", "dog", "celsius", "fahrenheit", "sunny", "rain", "string",
             "integer", "object", "array", "boolean", "number", "get_weather", "user", "model", "tool", "null"]

    def value(depth: int) -> Any:
        kind = rng.randrange(7 if depth < 2 else 4)
        if kind == 0:
            return rng.randrange(-100, 10000)
        if kind == 1:
            return round(rng.uniform(-50, 100), rng.randrange(1, 3))
        if kind == 2:
            return rng.choice(words)
        if kind == 3:
            return rng.choice([True, False, None])
        if kind in (4, 5):
            return {k: value(depth + 1) for k in rng.sample(keys, rng.randrange(1, 5))}
        return [value(depth + 1) for _ in range(rng.randrange(1, 4))]

    out = []
    for _ in range(n):
        obj = {k: value(0) for k in rng.sample(keys, rng.randrange(1, 6))}
        out.append(json.dumps(obj, indent=rng.choice([None, None, 2]), ensure_ascii=False))
    return out


def _training_text() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))]
    return texts + _synthetic_json(20000)


def _build_bpe(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_training_text(), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))


def build_bpe(root: Path | str) -> Path:
    """The bare trained BPE (no special tokens, no chat template) in root/bpe/tokenizer.json, shared by both chat
    tokenizers so it is trained only once."""
    return _cached_build(root, "bpe", _build_bpe)


def _load_bpe(root: Path | str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(build_bpe(root) / "tokenizer.json"))


def _build_chatml_tokenizer(root: Path | str, out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    raw = _load_bpe(root)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATML_SPECIAL])
    raw.add_tokens([AddedToken(t, special=False, normalized=False) for t in CHATML_MARKUP])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        chat_template=CHATML_TEMPLATE, model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(out)
    _check_chatml_tokenizer(out)


def build_tokenizer(root: Path | str) -> Path:
    """A ChatML (Qwen3-style) fast tokenizer, vocab 4096, in root/tokenizer; see CHATML_TEMPLATE."""
    return _cached_build(root, "tokenizer", lambda out: _build_chatml_tokenizer(root, out))


def chat_template_cases() -> dict[str, dict[str, Any]]:
    """Conversations exercising every branch of the ChatML template, with substrings each rendering must contain.
    Used by the build's self-check and by the tests."""
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Boston"}}}
    call_str = {"type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
    return {
        "plain": {"messages": [{"role": "user", "content": "Hi"}],
                  "expect": ["<|im_start|>user\nHi<|im_end|>\n"], "exact": "<|im_start|>user\nHi<|im_end|>\n"},
        "system": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                   "expect": ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"]},
        "tools": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
                  "tools": [WEATHER_TOOL],
                  "expect": ["<|im_start|>system\nBe brief.\n\n# Tools",
                             "<tools>\n" + json.dumps(WEATHER_TOOL) + "\n</tools>",
                             '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>',
                             "<|im_start|>user\nWeather?<|im_end|>\n"]},
        "tool_calls": {"messages": [{"role": "user", "content": "Weather?"},
                                    {"role": "assistant", "content": "", "tool_calls": [call, call_str]},
                                    {"role": "tool", "name": "get_weather", "content": '{"temp": 20}'},
                                    {"role": "tool", "name": "get_weather", "content": '{"temp": 25}'}],
                       "expect": [('<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": '
                                   '{"location": "Boston"}}</tool_call>\n<tool_call>{"name": "get_weather", '
                                   '"arguments": {"location": "Paris"}}</tool_call><|im_end|>\n'),
                                  ('<|im_start|>user\n<tool_response>\n{"temp": 20}\n</tool_response>\n'
                                   '<tool_response>\n{"temp": 25}\n</tool_response><|im_end|>\n')]},
        "tool_response_dict": {"messages": [{"role": "user", "content": "Weather?"},
                                            {"role": "tool", "name": "get_weather", "content": {"temp": 20}}],
                               "expect": ['<tool_response>\n{"temp": 20}\n</tool_response><|im_end|>\n']},
        "tool_call_only": {"messages": [{"role": "user", "content": "Weather?"},
                                        {"role": "assistant", "content": None, "tool_calls": [call]}],
                           "expect": [('<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": '
                                       '{"location": "Boston"}}</tool_call><|im_end|>\n')]},
        "reasoning": {"messages": [{"role": "user", "content": "Why?"},
                                   {"role": "assistant", "content": "Because.", "reasoning_content": "Hmm."}],
                      "expect": ["<|im_start|>assistant\n<think>\nHmm.\n</think>\n\nBecause.<|im_end|>\n"]},
        "generation_prompt": {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True,
                              "exact": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
        "thinking_off": {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True,
                         "enable_thinking": False,
                         "exact": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
        "content_parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                          "exact": "<|im_start|>user\nHi<|im_end|>\n"},
    }


def render_case(tokenizer: Any, case: dict[str, Any]) -> str:
    kwargs = {k: case[k] for k in ("tools", "add_generation_prompt", "enable_thinking") if k in case}
    return tokenizer.apply_chat_template(case["messages"], tokenize=False, **kwargs)


def _check_chatml_tokenizer(path: Path) -> None:
    """Fail the build if the template or the special tokens do not behave as documented."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    for token in CHATML_SPECIAL + CHATML_MARKUP:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"{token} is not a single token: {ids}")
    for name, case in chat_template_cases().items():
        text = render_case(tokenizer, case)
        if "exact" in case and text != case["exact"]:
            raise RuntimeError(f"chat template case {name}: {text!r} != {case['exact']!r}")
        for piece in case.get("expect", []):
            if piece not in text:
                raise RuntimeError(f"chat template case {name}: {piece!r} not in {text!r}")


def _gemma_tokenizer(root: Path | str) -> Any:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    raw = _load_bpe(root)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIAL])
    # transformers 5 dropped `additional_special_tokens`; named extra tokens are how Gemma3Processor finds
    # image_token / boi_token / eoi_token (and their ids).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token=None,
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>", "sot_token": "<start_of_turn>",
                              "eot_token": "<end_of_turn>"},
        chat_template=GEMMA3_TEMPLATE, model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False,
    )
    return tokenizer


# --------------------------------------------------------------------------------------------------------------------
# Llama (ChatML)


def _save_llama(root: Path | str, out: Path, *, layers: int, hidden: int, heads: int, kv_heads: int,
                intermediate: int, tie_embeddings: bool, positions: int = 4096) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(root))
    eos, pad = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=positions,
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=tie_embeddings,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).eval()
    # Like Qwen3: stop on <|im_end|>, and on <|endoftext|> too.
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_llama(root: Path | str) -> Path:
    """A random tiny LlamaForCausalLM (2 layers, hidden 64, 0.6 M params) with the ChatML tokenizer, in
    root/tiny-llama."""
    return _cached_build(root, "tiny-llama", lambda out: _save_llama(
        root, out, layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, tie_embeddings=False))


def build_small_llama(root: Path | str) -> Path:
    """A random 27.4 M-parameter LlamaForCausalLM (8 layers, hidden 512, tied embeddings) with the ChatML
    tokenizer, for benchmarks, in root/small-llama."""
    return _cached_build(root, "small-llama", lambda out: _save_llama(
        root, out, layers=8, hidden=512, heads=8, kv_heads=8, intermediate=1376, tie_embeddings=True))


def build_small_llama_long(root: Path | str) -> Path:
    """`build_small_llama`'s model (the same weights) with a context of 40,960 tokens, for long-context benchmarks,
    in root/small-llama-long."""
    return _cached_build(root, "small-llama-long", lambda out: _save_llama(
        root, out, layers=8, hidden=512, heads=8, kv_heads=8, intermediate=1376, tie_embeddings=True,
        positions=40960))


# --------------------------------------------------------------------------------------------------------------------
# The other tool-call formats: random tiny Llamas with Mistral's and Llama 3.1's special tokens and (simplified)
# templates. Only grammar-forced calls can be asserted on them; the point is that Pollux finds the format, renders
# declarations, calls and results through the template, forces calls in it, and parses them back.

# Mistral v3: tools before the last [INST], calls as a JSON list after [TOOL_CALLS], results in [TOOL_RESULTS]; call
# ids must be 9 alphanumeric characters, as Mistral's own templates require.
MISTRAL_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{%- if tools and loop.last %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}"
    "[INST] {{ message.content }}[/INST]"
    "{%- elif message.role == 'system' %}[INST] {{ message.content }}[/INST]"
    "{%- elif message.role == 'assistant' and message.tool_calls %}[TOOL_CALLS] ["
    "{%- for tc in message.tool_calls %}"
    "{%- if tc.id is not defined or tc.id | length != 9 %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}"
    '{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}, "id": "{{ tc.id }}"}'
    "{%- if not loop.last %}, {% endif %}{%- endfor %}]</s>"
    "{%- elif message.role == 'assistant' %}{{ message.content }}</s>"
    "{%- elif message.role == 'tool' %}"
    "{%- if message.tool_call_id is not defined or message.tool_call_id | length != 9 %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}"
    '[TOOL_RESULTS] {"content": {{ message.content | tojson }}, "call_id": "{{ message.tool_call_id }}"}'
    "[/TOOL_RESULTS]"
    "{%- endif %}{%- endfor %}"
)
MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                   "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]

# Llama 3.1: tools in the first user message, a call is an answer that is {"name", "parameters"}, results as ipython.
LLAMA3_TEMPLATE = (
    "<|begin_of_text|>"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' and tools and loop.first %}"
    "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a "
    "function call with its proper arguments that best answers the given prompt.\n\nRespond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n'
    "{%- for t in tools %}{{ t | tojson }}\n\n{%- endfor %}{{ message.content }}<|eot_id|>"
    "{%- elif message.role == 'assistant' and message.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{%- for tc in message.tool_calls %}"
    '{"name": "{{ tc.function.name }}", "parameters": {{ tc.function.arguments | tojson }}}'
    "{%- endfor %}<|eot_id|>"
    "{%- elif message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ message.content }}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"
)
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]


def _save_format_variant(root: Path | str, out: Path, special: list[str], eos: str, pad: str,
                         template: str) -> None:
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    raw = _load_bpe(root)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=eos, pad_token=pad, unk_token=None, chat_template=template,
        model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(build_llama(root))
    model.resize_token_embeddings(len(tokenizer))
    eos_id, pad_id = tokenizer.convert_tokens_to_ids([eos, pad])
    model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id = eos_id, pad_id, pad_id
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_mistral_format(root: Path | str) -> Path:
    """The random tiny Llama with Mistral v3's special tokens and tool template, in root/tiny-mistral-format."""
    return _cached_build(root, "tiny-mistral-format", lambda out: _save_format_variant(
        root, out, MISTRAL_SPECIAL, eos="</s>", pad="<unk>", template=MISTRAL_TEMPLATE))


def build_llama3_format(root: Path | str) -> Path:
    """The random tiny Llama with Llama 3.1's special tokens and tool template, in root/tiny-llama3-format."""
    return _cached_build(root, "tiny-llama3-format", lambda out: _save_format_variant(
        root, out, LLAMA3_SPECIAL, eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", template=LLAMA3_TEMPLATE))


# --------------------------------------------------------------------------------------------------------------------
# Qwen3: the architecture and the real chat template of Qwen 2.5/3, whose calls put the tag and the JSON on separate
# lines (`<tool_call>\n{...}\n</tool_call>`), with random weights. Its thinking and its tool-call lines are the
# stock form that Pollux must read from the template, not the one-line form the scripted model is taught.

QWEN3_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
""".strip()

# Qwen3's thinking-only variant (Qwen3-*-Thinking-2507): the generation prompt itself opens the thoughts, so the model
# always thinks first, for as long as it likes.
QWEN3_THINKING_TEMPLATE = QWEN3_TEMPLATE[:QWEN3_TEMPLATE.index("{%- if add_generation_prompt %}")] + r"""
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n<think>\n' }}
{%- endif %}
""".strip("\n")


def _save_qwen3(root: Path | str, out: Path, template: str) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(root))
    tokenizer.chat_template = template
    eos, pad = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, bos_token_id=pad, eos_token_id=eos,
        pad_token_id=pad, tie_word_embeddings=False)
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_qwen3(root: Path | str) -> Path:
    """A random tiny Qwen3ForCausalLM (2 layers, hidden 64) with the ChatML tokenizer and Qwen3's own chat template
    (QWEN3_TEMPLATE: thinking, and tool calls as `<tool_call>\\n{...}\\n</tool_call>`), in root/tiny-qwen3."""
    return _cached_build(root, "tiny-qwen3", lambda out: _save_qwen3(root, out, QWEN3_TEMPLATE))


def build_qwen3_thinking(root: Path | str) -> Path:
    """The same random tiny Qwen3 (same weights) with QWEN3_THINKING_TEMPLATE, whose prompt ends in an open <think>,
    in root/tiny-qwen3-thinking."""
    return _cached_build(root, "tiny-qwen3-thinking", lambda out: _save_qwen3(root, out, QWEN3_THINKING_TEMPLATE))


# --------------------------------------------------------------------------------------------------------------------
# A tiny text-to-image pipeline (the shape of Stable Diffusion, random weights), for the diffusers image engine.


def _build_tiny_sd(root: Path | str, out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(root))
    tokenizer.model_max_length = 32
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=32, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id))
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(out)


def build_tiny_sd(root: Path | str) -> Path:
    """A random tiny StableDiffusionPipeline (64-px images, 2-block UNet), in root/tiny-sd."""
    return _cached_build(root, "tiny-sd", lambda out: _build_tiny_sd(root, out))


# --------------------------------------------------------------------------------------------------------------------
# Scripted model


def _build_scripted(root: Path | str, out: Path) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = build_llama(root)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)

    # One sequence per chat: prompt ids + completion ids, tokenized apart exactly as generation sees them. Each is
    # its own micro-batch: the tool chat's prompt is ~10x longer than the others, so padding would triple the work.
    samples = []
    for chat in SCRIPTED_CHATS:
        p = prompt_ids(tokenizer, chat)
        c = tokenizer(chat["completion"], add_special_tokens=False)["input_ids"]
        # The position before each completion token predicts it; the loss, and so the vocab projection, is taken
        # there only.
        samples.append((torch.tensor([p + c]), torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)))

    torch.manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for step in range(1, 1001):
        optimizer.zero_grad()
        margins = []
        for ids, positions, targets in samples:
            hidden = model.model(input_ids=ids).last_hidden_state[0, positions]
            logits = model.lm_head(hidden)
            (F.cross_entropy(logits, targets) / len(samples)).backward()
            with torch.no_grad():  # how far each right token leads its best rival
                right = logits.gather(1, targets[:, None]).squeeze(1)
                rival = logits.scatter(1, targets[:, None], float("-inf")).max(1).values
                margins.append((right - rival).min().item())
        optimizer.step()
        # Teacher-forced argmax with a clear margin is a cheap proxy for greedy reproduction; generate() confirms.
        if min(margins) > 2.0 and step % 10 == 0:
            model.eval()
            if not _scripted_failures(model, tokenizer):
                break
            model.train()
    model.eval()
    failures = _scripted_failures(model, tokenizer)
    if failures:
        raise RuntimeError(f"scripted model does not reproduce its chats after {step} steps: {failures}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "scripted_training.json").write_text(json.dumps({"steps": step, "min_margin": min(margins)}))


def _greedy(model: Any, tokenizer: Any, chat: dict[str, Any]) -> str:
    import torch

    ids = torch.tensor([prompt_ids(tokenizer, chat)])
    max_new = len(tokenizer(chat["completion"], add_special_tokens=False)["input_ids"]) + 8
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


def _scripted_failures(model: Any, tokenizer: Any) -> list[tuple[str, str]]:
    """(expected, got) for each scripted chat that greedy decoding does not reproduce."""
    failures = []
    for chat in SCRIPTED_CHATS:
        got = _greedy(model, tokenizer, chat)
        if got != chat["completion"]:
            failures.append((chat["completion"], got))
    return failures


def build_scripted(root: Path | str) -> Path:
    """The tiny Llama overfit on SCRIPTED_CHATS: greedy decoding of `render_prompt(tokenizer, chat)` yields exactly
    `chat["completion"]`. In root/scripted-llama."""
    return _cached_build(root, "scripted-llama", lambda out: _build_scripted(root, out))


# --------------------------------------------------------------------------------------------------------------------
# Multimodal Gemma 3

GEMMA3_IMAGE_SIZE = 64
GEMMA3_TOKENS_PER_IMAGE = 16


def _build_gemma3_mm(root: Path | str, out: Path) -> None:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        GenerationConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import (
        Gemma3ImageProcessorPil,
    )

    tokenizer = _gemma_tokenizer(root)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL}
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        sliding_window=512, layer_types=["sliding_attention", "full_attention"],
        bos_token_id=ids["<bos>"], eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]], pad_token_id=ids["<pad>"],
    )
    # 64x64 pixels cut into 8x8-pixel patches make an 8x8 grid, which the projector pools 2x2 into 16 soft tokens.
    vision_config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=GEMMA3_IMAGE_SIZE, patch_size=8, vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=GEMMA3_TOKENS_PER_IMAGE,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        bos_token_id=ids["<bos>"], eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]], pad_token_id=ids["<pad>"],
    )
    torch.manual_seed(SEED)
    model = Gemma3ForConditionalGeneration(config).eval()
    # The projector's weight starts at zero, which would make every image the same zero embeddings to the text model.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.5)
    model.generation_config = GenerationConfig(bos_token_id=ids["<bos>"], pad_token_id=ids["<pad>"],
                                               eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]])
    image_processor = Gemma3ImageProcessorPil(size={"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE,
                                image_seq_length=GEMMA3_TOKENS_PER_IMAGE)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_gemma3_mm(root: Path | str) -> Path:
    """A random multimodal Gemma3ForConditionalGeneration (2-layer SigLIP tower, 64x64 images, 16 soft tokens per
    image, 2-layer Gemma 3 text model) with its Gemma3Processor, in root/tiny-gemma3-mm-2 (the first recipe's images
    all projected to zeros)."""
    return _cached_build(root, "tiny-gemma3-mm-2", lambda out: _build_gemma3_mm(root, out))



QWEN2_VL_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN2_VL_TEMPLATE = r"""
{%- for message in messages -%}
{{- '<|im_start|>' + message.role + '\n' -}}
{%- if message.content is string -%}{{- message.content -}}
{%- else -%}{%- for part in message.content -%}
{%- if part.type == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""


def _qwen2_vl_image_processor() -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # 8-pixel patches merged 2x2: a 64x48 picture is a 6x8 grid of patches, 12 tokens.
    return Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=8, merge_size=2,
                                    temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _build_qwen2_vl(root: Path | str, out: Path, version: str = "2") -> None:
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    raw = _load_bpe(root)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATML_SPECIAL + QWEN2_VL_SPECIAL])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        chat_template=QWEN2_VL_TEMPLATE, model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHATML_SPECIAL + QWEN2_VL_SPECIAL}
    if version == "2":
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2}
    else:  # 2.5: windowed attention in the tower (4-patch windows), full attention in its last block
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                  "window_size": 32, "fullatt_block_indexes": [1]}
    config = config_class(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "eos_token_id": ids[IM_END], "pad_token_id": ids[ENDOFTEXT], "bos_token_id": None},
        vision_config={**vision, "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT], bos_token_id=None)
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    model.generation_config = GenerationConfig(pad_token_id=ids[ENDOFTEXT], eos_token_id=[ids[IM_END]])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_qwen2_vl(root: Path | str) -> Path:
    """A random Qwen2VLForConditionalGeneration (2-layer vision tower, 8-pixel patches merged 2x2, M-RoPE sections
    [2, 3, 3]; 2-layer text model) with its ChatML tokenizer, in root/tiny-qwen2-vl. No processor is saved:
    transformers builds Qwen2VLProcessor only with torchvision, which has no wheel for this CPU torch; tests use
    `Qwen2VLProcessorDouble`."""
    return _cached_build(root, "tiny-qwen2-vl", lambda out: _build_qwen2_vl(root, out))


def build_qwen2_5_vl(root: Path | str) -> Path:
    """The same in Qwen2.5-VL's architecture (windowed attention in the vision tower), in root/tiny-qwen2.5-vl."""
    return _cached_build(root, "tiny-qwen2.5-vl", lambda out: _build_qwen2_vl(root, out, "2.5"))



LLAVA_TEMPLATE = QWEN2_VL_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\\n")


def _build_llava(root: Path | str, out: Path) -> None:
    import torch
    from tokenizers import AddedToken
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    raw = _load_bpe(root)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*CHATML_SPECIAL, "<image>"]])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        extra_special_tokens={"image_token": "<image>"}, chat_template=LLAVA_TEMPLATE, model_max_length=4096,
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [*CHATML_SPECIAL, "<image>"]}
    # 32x32 pixels in 8x8-pixel patches: 16 image tokens (the CLS one dropped, the "default" strategy).
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT], bos_token_id=None),
        image_token_index=ids["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=16, pad_token_id=ids[ENDOFTEXT])
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(pad_token_id=ids[ENDOFTEXT], eos_token_id=[ids[IM_END]])
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_llava(root: Path | str) -> Path:
    """A random LlavaForConditionalGeneration (2-layer CLIP tower on 32x32 pixels in 8x8 patches: 16 tokens an image;
    2-layer Llama) with its LlavaProcessor and ChatML tokenizer, in root/tiny-llava."""
    return _cached_build(root, "tiny-llava", lambda out: _build_llava(root, out))

class Qwen2VLProcessorDouble:
    """What Qwen2VLProcessor does with text and images, built from its parts: the chat template (the tokenizer's),
    the PIL image processor's pixels and patch grid, each `<|image_pad|>` repeated once per merged patch, and
    `mm_token_type_ids` (1 on image tokens), which the model's 3-D positions need."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chat_template = tokenizer.chat_template
        self.image_processor = _qwen2_vl_image_processor()

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], images: list[list[Any]] | None = None, return_tensors: str = "pt") -> Any:
        import torch

        flat = [image for group in images or [] for image in group]
        pixels = self.image_processor(images=flat, return_tensors="pt") if flat else {}
        counts = iter(int(grid.prod()) // 4 for grid in pixels.get("image_grid_thw", []))
        pieces = text[0].split("<|image_pad|>")
        expanded = pieces[0] + "".join("<|image_pad|>" * next(counts) + piece for piece in pieces[1:])
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"]
        pad = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == pad).int()}
        out.update(pixels)
        return out

# --------------------------------------------------------------------------------------------------------------------


def build_all(root: Path | str, small: bool = True) -> dict[str, tuple[Path, float]]:
    """Build (or find cached) every model; returns {name: (path, seconds)}."""
    builders: list[tuple[str, Callable[[Path | str], Path]]] = [
        ("tokenizer", build_tokenizer), ("tiny-llama", build_llama), ("scripted-llama", build_scripted),
        ("tiny-gemma3-mm-2", build_gemma3_mm), ("tiny-qwen3", build_qwen3),
        ("tiny-qwen3-thinking", build_qwen3_thinking), ("tiny-qwen2-vl", build_qwen2_vl),
        ("tiny-qwen2.5-vl", build_qwen2_5_vl), ("tiny-llava", build_llava),
    ]
    if small:
        builders.append(("small-llama", build_small_llama))
    done = {}
    for name, build in builders:
        start = time.perf_counter()
        path = build(root)
        done[name] = (path, time.perf_counter() - start)
    return done


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name, (path, seconds) in build_all(sys.argv[1]).items():
        print(f"{name:16} {seconds:6.1f} s  {path}")
