"""What every in-process engine (generation, embeddings, images) does the same way: reading its options, finding
its model (the hub through its cache, or a local directory), choosing device and dtype, and saying "overloaded"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from ..errors import ApiError

T = TypeVar("T")


class EngineLoadError(ValueError):
    """A model that cannot be loaded: the server stops with this message rather than serve without it."""


def options_from(cls: type[T], options: dict[str, Any], engine: str) -> T:
    """A frozen options dataclass from a model's `engine_options`; unknown keys are an error, `source` is required."""
    unknown = set(options) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown {engine} engine option(s) {sorted(unknown)}")
    if "source" not in options:
        raise ValueError(f"the {engine} engine needs a source: hf:ORG/NAME or a local directory")
    return cls(**options)


def model_name(source: str) -> str:
    """What `from_pretrained` takes: the hub id of `hf:ORG/NAME`, or an existing local directory."""
    if source.startswith("hf:"):
        return source[3:]
    path = Path(source).expanduser()
    if not path.is_dir():
        raise EngineLoadError(f"model directory {source!r} does not exist (use hf:ORG/NAME for a hub model)")
    return str(path)


def device_and_dtype(device: str, dtype: str, gpu_dtype: str) -> tuple[str, str]:
    """`auto` means CUDA when present, and `gpu_dtype` there (float32 on the CPU)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = gpu_dtype if device.startswith("cuda") else "float32"
    return device, dtype


def load_failed(name: str, exc: Exception) -> EngineLoadError:
    return EngineLoadError(
        f"cannot load model {name!r}: {exc}\nIf this machine is offline, download the model where the hub is "
        f"reachable (`hf download {name}`) and copy the Hugging Face cache (~/.cache/huggingface) here, or give a "
        "local directory instead.")


def overloaded(retry_delay: str) -> ApiError:
    """A full queue: 503 with Gemini's RetryInfo, so clients back off instead of piling on."""
    return ApiError("UNAVAILABLE", "The model is overloaded. Please try again later.", details=[
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}])
