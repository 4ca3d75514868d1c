"""Image engines: the emulator's painter, and diffusers pipelines (any text-to-image pipeline on the hub or on disk).

An image model (its methods include `predict`) chooses its engine in the config:

    [models."imagen-3.0-generate-002"]
    engine = "diffusers"
    engine_options = { source = "hf:ORG/NAME", steps = 30 }

A Gemini model that answers with pictures (`output_modalities` holds IMAGE, e.g. `gemini-2.5-flash-image`) paints
with its engine the same way; the text beside its pictures is the built-in emulator's (or, with `engine =
"transformers"`, that model's, and the pictures the emulator's painter):

    [models."gemini-2.5-flash-image"]
    engine = "diffusers"
    engine_options = { source = "hf:ORG/NAME", steps = 30 }

Models with the same engine and options share one loaded pipeline.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..config import ModelSpec, Settings
from ..engines import registry
from ..engines.errors import Overloaded
from ..engines.loading import device_and_dtype, load_failed, model_name, options_from
from .painter import paint

log = logging.getLogger("pollux.images")


class ImageEngine(Protocol):
    async def generate(self, model: str, prompt: str, n: int, width: int, height: int,
                       seed: int | None = None) -> list[bytes]:
        """`n` PNG images of `width`×`height` for the prompt; the same again for the same seed, when one is given."""
        ...

    async def close(self) -> None: ...


def is_predict_model(model: ModelSpec) -> bool:
    """An Imagen model: pictures through `predict` and OpenAI's images.generate."""
    return "predict" in model.methods


def paints_answers(model: ModelSpec) -> bool:
    """A generateContent model that may answer with pictures (responseModalities IMAGE)."""
    return not is_predict_model(model) and "IMAGE" in model.output_modalities


def is_image_model(model: ModelSpec) -> bool:
    """A model whose engine only paints, so that no text engine is started for it: Imagen's, and an image-output
    model on an engine that paints and writes no text, such as a diffusers pipeline (the built-in emulator writes
    the text beside its pictures)."""
    return is_predict_model(model) or (paints_answers(model) and model.engine in registry.names("image")
                                       and model.engine not in registry.names("text"))


def _paints_itself(model: ModelSpec) -> bool:
    """Whether the model's own engine paints its pictures: always for Imagen (an engine that cannot is an error at
    start); for an image-output model when its engine is an image engine, else the emulator's painter paints."""
    return is_predict_model(model) or model.engine in registry.names("image")


def image_engine_of(model: ModelSpec) -> tuple[str, dict[str, Any]]:
    """The engine and options that paint a model's pictures."""
    return (model.engine, model.engine_options) if _paints_itself(model) else ("emulator", {})


def _painter_of(model: ModelSpec) -> ModelSpec:
    """The model as the registry is to build its painter: itself when its engine paints, else on the emulator."""
    return model if _paints_itself(model) else replace(model, engine="emulator", engine_options={})


def image_engine_key(model: ModelSpec) -> str:
    """Which running image engine paints for this model: its `engine_key` when its engine paints."""
    return model.engine_key if _paints_itself(model) else "emulator"


class EmulatorImages:
    """Deterministic abstract pictures (see `painter.py`)."""

    async def generate(self, model: str, prompt: str, n: int, width: int, height: int,
                       seed: int | None = None) -> list[bytes]:
        return await asyncio.to_thread(lambda: [paint(model, prompt, i, width, height, seed) for i in range(n)])

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
    # Render no larger than this many pixels a side (keeping the aspect), then scale to the size asked for: most
    # pipelines draw best near their training size (512 for SD 1.5), and Gemini's sizes go up to 4K. None: as asked.
    max_side: int | None = None

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

    async def generate(self, model: str, prompt: str, n: int, width: int, height: int,
                       seed: int | None = None) -> list[bytes]:
        if self._waiting >= self.options.max_queue:
            raise Overloaded(retry_after=5)
        self._waiting += 1
        try:
            return await asyncio.to_thread(self._generate, prompt, n, width, height, seed)
        finally:
            self._waiting -= 1

    def _generate(self, prompt: str, n: int, width: int, height: int, seed: int | None) -> list[bytes]:
        import torch

        # Pipelines work in multiples of 8 pixels; the result is resized to the exact size asked for.
        scale = min(1.0, self.options.max_side / max(width, height)) if self.options.max_side else 1.0
        w, h = max(64, int(width * scale) // 8 * 8), max(64, int(height * scale) // 8 * 8)
        kwargs: dict[str, Any] = {"num_inference_steps": self.options.steps, "num_images_per_prompt": n,
                                  "width": w, "height": h}
        if self.options.guidance_scale is not None:
            kwargs["guidance_scale"] = self.options.guidance_scale
        if seed is not None:  # the same noise for the same seed: the same picture again
            kwargs["generator"] = torch.Generator(device=self.pipeline.device).manual_seed(seed)
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


def build_image_engines(settings: Settings, predict: bool = True, generate: bool = False) -> dict[str, ImageEngine]:
    """One engine per distinct (engine, options) of the models that paint, keyed by `image_engine_key`: the image
    models (`predict`) and the Gemini models with IMAGE output (`generate`)."""
    engines: dict[str, ImageEngine] = {}
    for model in settings.models.values():
        if not ((predict and is_predict_model(model)) or (generate and paints_answers(model))):
            continue
        key = image_engine_key(model)
        if key in engines:
            continue
        engines[key] = registry.build(_painter_of(model), "image", settings)
    return engines
