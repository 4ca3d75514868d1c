"""Image generation semantics shared by the OpenAI and Imagen routes: limits, sizes, and the model's engine."""

from __future__ import annotations

from ..config import ModelSpec, Settings, find_model
from ..engines.emulator import count_text
from ..engines.errors import EngineError
from ..errors import ApiError, from_engine
from .engines import ImageEngine, image_engine_key

MAX_SIDE = 2048
MAX_IMAGES = 4  # Imagen's sampleCount range is 1-4
# Imagen's aspect ratios and the sizes it renders them at.
ASPECT_SIZES = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408),
                "16:9": (1408, 768)}


class ImageService:
    def __init__(self, settings: Settings, engines: dict[str, ImageEngine]) -> None:
        self.settings = settings
        self.engines = engines

    def resolve(self, name: str, version: str) -> ModelSpec:
        """The image model a request names, or the real API's 404."""
        return find_model(self.settings, name, version, "predict")

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()

    async def generate(self, model: ModelSpec, prompt: str, n: int, size: tuple[int, int]) -> list[bytes]:
        if not prompt or not prompt.strip():
            raise ApiError.invalid("The prompt is empty: describe the image to generate.")
        tokens = count_text(prompt, most=model.input_token_limit)
        if tokens > model.input_token_limit:
            raise ApiError.invalid(f"The prompt is too long: {model.name} takes at most {model.input_token_limit} "
                                   "tokens.")
        if not 1 <= n <= MAX_IMAGES:
            raise ApiError.invalid(f"The number of images must be between 1 and {MAX_IMAGES}; got {n}.")
        width, height = size
        if not (64 <= width <= MAX_SIDE and 64 <= height <= MAX_SIDE):
            raise ApiError.invalid(f"Image size {width}x{height} is out of range: each side 64 to {MAX_SIDE} pixels.")
        engine = self.engines.get(image_engine_key(model))
        if engine is None:
            raise ApiError("UNAVAILABLE", f"The engine {model.engine!r} for {model.name} is not running.")
        try:
            return await engine.generate(model.id, prompt, n, width, height)
        except EngineError as exc:  # the engine's words, in Gemini's error
            raise from_engine(exc) from None
