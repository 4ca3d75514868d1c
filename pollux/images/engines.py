"""Image engines: the emulator's painter, and diffusers pipelines (any text-to-image pipeline on the hub or on disk).

An image model (its methods include `predict`) chooses its engine in the config:

    [models."imagen-3.0-generate-002"]
    engine = "diffusers"
    engine_options = { source = "hf:ORG/NAME", steps = 30 }
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import ModelSpec, Settings
from ..engines.loading import device_and_dtype, load_failed, model_name, options_from, overloaded
from .painter import paint

log = logging.getLogger("pollux.images")


class ImageEngine(Protocol):
    async def generate(self, model: str, prompt: str, n: int, width: int, height: int) -> list[bytes]:
        """`n` PNG images of `width`×`height` for the prompt."""
        ...

    async def close(self) -> None: ...


def is_image_model(model: ModelSpec) -> bool:
    return "predict" in model.methods


class EmulatorImages:
    """Deterministic abstract pictures (see `painter.py`)."""

    async def generate(self, model: str, prompt: str, n: int, width: int, height: int) -> list[bytes]:
        return await asyncio.to_thread(lambda: [paint(model, prompt, i, width, height) for i in range(n)])

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class DiffusersOptions:
    source: str                   # hf:ORG/NAME (the hub, through its cache) or a local directory
    device: str = "auto"          # auto: cuda if present, else cpu
    dtype: str = "auto"           # auto: float16 on a GPU, float32 on the CPU
    revision: str | None = None
    steps: int = 30               # denoising steps
    guidance_scale: float | None = None  # None: the pipeline's default
    max_queue: int = 8            # requests waiting for the pipeline, then 503 UNAVAILABLE

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> DiffusersOptions:
        return options_from(cls, options, "diffusers")


class DiffusersImages:
    """One pipeline, one generation at a time (a pipeline is not safe to share between threads), with a bounded
    number of requests waiting for it."""

    def __init__(self, options: DiffusersOptions) -> None:
        import torch
        from diffusers import DiffusionPipeline

        self.options = options
        name = model_name(options.source)
        device, dtype = device_and_dtype(options.device, options.dtype, "float16")
        log.info("loading image pipeline %s on %s (%s)", name, device, dtype)
        try:
            self.pipeline = DiffusionPipeline.from_pretrained(name, torch_dtype=getattr(torch, dtype),
                                                              revision=options.revision)
        except OSError as exc:
            raise load_failed(name, exc) from None
        self.pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self._lock = threading.Lock()
        self._waiting = 0

    async def generate(self, model: str, prompt: str, n: int, width: int, height: int) -> list[bytes]:
        if self._waiting >= self.options.max_queue:
            raise overloaded("5s")
        self._waiting += 1
        try:
            return await asyncio.to_thread(self._generate, prompt, n, width, height)
        finally:
            self._waiting -= 1

    def _generate(self, prompt: str, n: int, width: int, height: int) -> list[bytes]:
        # Pipelines work in multiples of 8 pixels; the result is resized to the exact size asked for.
        w, h = max(64, width // 8 * 8), max(64, height // 8 * 8)
        kwargs: dict[str, Any] = {"num_inference_steps": self.options.steps, "num_images_per_prompt": n,
                                  "width": w, "height": h}
        if self.options.guidance_scale is not None:
            kwargs["guidance_scale"] = self.options.guidance_scale
        with self._lock:
            images = self.pipeline(prompt, **kwargs).images
        out = []
        for image in images:
            if image.size != (width, height):
                image = image.resize((width, height))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "PNG")
            out.append(buffer.getvalue())
        return out

    async def close(self) -> None:
        pass


def build_image_engines(settings: Settings) -> dict[str, ImageEngine]:
    """One engine per distinct (engine, options) of the image models, keyed like `ModelSpec.engine_key`."""
    engines: dict[str, ImageEngine] = {}
    for model in settings.models.values():
        if not is_image_model(model) or model.engine_key in engines:
            continue
        if model.engine == "emulator":
            engines[model.engine_key] = EmulatorImages()
        elif model.engine == "diffusers":
            try:
                engines[model.engine_key] = DiffusersImages(DiffusersOptions.from_dict(model.engine_options))
            except ImportError as exc:
                raise ValueError(f"model {model.id!r} needs the diffusers engine, which is not installed "
                                 f"({exc.name} is missing): pip install 'pollux[images]'") from None
        else:
            raise ValueError(f"model {model.id!r}: unknown image engine {model.engine!r} (available: emulator, "
                             "diffusers)")
    return engines
