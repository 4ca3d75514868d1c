"""The offline tiny models that the engine tests run on: they build, reload offline, and behave as documented."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tokenizer_dir(root: Path) -> Path:
    return tiny_models.build_tokenizer(root)


@pytest.fixture(scope="session")
def llama_dir(root: Path) -> Path:
    return tiny_models.build_llama(root)


@pytest.fixture(scope="session")
def scripted(root: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_models.build_scripted(root)
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="session")
def gemma3_dir(root: Path) -> Path:
    return tiny_models.build_gemma3_mm(root)


def test_tokenizer_reloads_with_single_token_specials(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert type(tok).__name__ == "TokenizersBackend"
    assert len(tok) == 4096
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for token in tiny_models.CHATML_SPECIAL + tiny_models.CHATML_MARKUP:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    # No BOS is prepended: the chat template alone decides the prompt's tokens.
    assert tok.decode(tok.encode("hi")) == "hi"
    # Thinking and tool-call markup survive skip_special_tokens (as in Qwen3); ChatML control tokens do not.
    ids = tok.encode("<think>\nx\n</think>\n\n<tool_call>{}</tool_call><|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>\n\n<tool_call>{}</tool_call>"
    # JSON punctuation and common keys are cheap.
    assert len(tok.encode('{"name": "Tom", "age": 3}', add_special_tokens=False)) <= 12


@pytest.mark.parametrize("name", sorted(tiny_models.chat_template_cases()))
def test_chat_template_renders(tokenizer_dir: Path, name: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    case = tiny_models.chat_template_cases()[name]
    text = tiny_models.render_case(tok, case)
    if "exact" in case:
        assert text == case["exact"]
    for piece in case.get("expect", []):
        assert piece in text


def test_chat_template_tools_block_is_json(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tools=[tiny_models.WEATHER_TOOL],
                                   add_generation_prompt=True, tokenize=False)
    block = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in block.splitlines()] == [tiny_models.WEATHER_TOOL]
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_llama_reloads_offline(llama_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.max_position_embeddings) == (2, 64, 4, 2, 128, 4096)
    assert cfg.vocab_size == len(tok)
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id
    gen = GenerationConfig.from_pretrained(llama_dir)
    assert tok.eos_token_id in gen.eos_token_id and gen.pad_token_id == tok.pad_token_id
    assert gen.bos_token_id == cfg.bos_token_id

    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 4
    assert torch.equal(out[0, : ids["input_ids"].shape[1]], ids["input_ids"][0])


def test_builds_are_cached(root: Path, llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = json.loads((llama_dir / tiny_models.MARKER).read_text())
    assert marker == {"recipe": "tiny-llama", "version": tiny_models.RECIPE_VERSION}

    def build_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached model was built again")

    monkeypatch.setattr(tiny_models, "_save_llama", build_again)
    assert tiny_models.build_llama(root) == llama_dir
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no temporary build directories left behind"


@pytest.mark.parametrize("marker", [None, {"recipe": "thing", "version": -1}, {"recipe": "other", "version": 1}])
def test_stale_or_incomplete_build_is_replaced(tmp_path: Path, marker: dict | None) -> None:
    # A directory without a matching marker (a crash mid-way, an older recipe) is rebuilt, not trusted.
    stale = tmp_path / "thing"
    stale.mkdir()
    (stale / "junk").write_text("x")
    if marker is not None:
        (stale / tiny_models.MARKER).write_text(json.dumps(marker))
    path = tiny_models._cached_build(tmp_path, "thing", lambda out: (out / "weights").write_text("w"))
    assert path == stale
    assert sorted(p.name for p in path.iterdir()) == sorted([tiny_models.MARKER, "weights"])
    assert json.loads((path / tiny_models.MARKER).read_text())["version"] == tiny_models.RECIPE_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def explode(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny_models._cached_build(tmp_path, "thing", explode)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("index", range(len(tiny_models.SCRIPTED_CHATS)))
def test_scripted_model_reproduces_its_answer(scripted, index: int) -> None:
    import torch

    tok, model = scripted
    chat = tiny_models.SCRIPTED_CHATS[index]
    # Through the public chat-template path, as an engine would tokenize it.
    kwargs = {"enable_thinking": chat["enable_thinking"]} if "enable_thinking" in chat else {}
    inputs = tok.apply_chat_template(chat["messages"], tools=chat.get("tools"), add_generation_prompt=True,
                                     return_dict=True, return_tensors="pt", **kwargs)
    assert inputs["input_ids"][0].tolist() == tiny_models.prompt_ids(tok, chat)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert tok.decode(new, skip_special_tokens=False) == chat["completion"]
    assert new[-1].item() == tok.eos_token_id


def test_scripted_answers_cover_the_parsing_paths(scripted) -> None:
    tok, _ = scripted
    completions = [c["completion"] for c in tiny_models.SCRIPTED_CHATS]
    assert "The capital of France is Paris.<|im_end|>" in completions
    assert '{"name": "Tom", "age": 3}<|im_end|>' in completions
    assert any(c.startswith("<tool_call>") for c in completions)
    assert any(c.startswith("<think>\n") for c in completions)
    japanese = next(c for c in completions if "こんにちは" in c)
    # Multi-byte UTF-8 split across tokens: some tokens alone are not valid UTF-8, which streaming must handle.
    pieces = [tok.decode([i]) for i in tok.encode(japanese, add_special_tokens=False)]
    assert any("\ufffd" in p for p in pieces)


def test_gemma3_multimodal_generates_from_an_image(gemma3_dir: Path) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(gemma3_dir)
    model = AutoModelForImageTextToText.from_pretrained(gemma3_dir).eval()
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    tok = processor.tokenizer
    for token in tiny_models.GEMMA_SPECIAL:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    assert tok.image_token == "<image_soft_token>" and tok.image_token_id == model.config.image_token_id
    assert tok.boi_token_id == model.config.boi_token_id and tok.eoi_token_id == model.config.eoi_token_id

    image = Image.new("RGB", (100, 80), (200, 30, 30))
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "What is in this image?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(tok.image_token_id) == tiny_models.GEMMA3_TOKENS_PER_IMAGE
    text = tok.decode(ids)
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\n")
    assert text.endswith("What is in this image?<end_of_turn>\n<start_of_turn>model\n")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    # Text-only chats go through the same processor.
    inputs = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                                           add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert "pixel_values" not in inputs
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=3, do_sample=False)


def test_models_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLLUX_TEST_MODELS", str(tmp_path))
    assert tiny_models.models_root() == tmp_path
    monkeypatch.delenv("POLLUX_TEST_MODELS")
    assert tiny_models.models_root() == Path.home() / ".cache" / "pollux-test-models"


def test_qwen3_has_qwens_own_template(root: Path) -> None:
    """The Qwen3 builds: Qwen3ForCausalLM, the stock template's call layout (tag and JSON on lines of their own), and
    a thinking variant with the same weights whose prompt opens the thoughts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, thinking = tiny_models.build_qwen3(root), tiny_models.build_qwen3_thinking(root)
    tok = AutoTokenizer.from_pretrained(path)
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Boston"}}}
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call, call]}]
    text = tok.apply_chat_template(messages, tools=[tiny_models.WEATHER_TOOL], tokenize=False)
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Boston"}}\n</tool_call>'
    assert f"{one}\n{one}<|im_end|>\n" in text
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in text
    off = tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    opened = AutoTokenizer.from_pretrained(thinking).apply_chat_template(messages[:1], add_generation_prompt=True,
                                                                         tokenize=False)
    assert opened.endswith("<|im_start|>assistant\n<think>\n")
    a, b = (AutoModelForCausalLM.from_pretrained(p) for p in (path, thinking))
    assert type(a).__name__ == "Qwen3ForCausalLM"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
