"""The engine contract as the embeddings and images sides use it: engines come from the registry, raise engine errors
(never Gemini's), and the services turn those into Gemini's errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pollux.config import Settings
from pollux.embeddings.builtin import BuiltinEmbedder
from pollux.embeddings.engines import build_embedders
from pollux.embeddings.service import EmbedInput, EmbedService
from pollux.engines.base import Capabilities
from pollux.engines.emulator import EmulatorEngine
from pollux.engines.errors import Failure, Overloaded
from pollux.errors import ApiError
from pollux.images.engines import EmulatorImages, build_image_engines, image_engine_key, is_image_model
from pollux.images.service import ImageService


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_the_emulator_declares_its_capabilities() -> None:
    assert EmulatorEngine().capabilities == Capabilities(context_length=None, native_candidates=False,
                                                         constrained_decoding=True, thinking_budget=True,
                                                         reports_usage=False)


def test_embedders_come_from_the_registry(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    embedders = build_embedders(settings)
    assert isinstance(embedders["emulator"], BuiltinEmbedder)
    model = settings.models["gemini-embedding-001"]
    settings.models[model.id] = replace(model, engine="warp-drive")
    with pytest.raises(ValueError, match="unknown embedding engine 'warp-drive'"):
        build_embedders(settings)


def test_image_engines_come_from_the_registry(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    flash_image = settings.models["gemini-2.5-flash-image"]
    # An image-output model on a text engine: the emulator's painter paints its pictures.
    settings.models[flash_image.id] = replace(flash_image, engine="transformers", engine_options={"source": "x"})
    engines = build_image_engines(settings, predict=True, generate=True)
    assert list(engines) == ["emulator"] and isinstance(engines["emulator"], EmulatorImages)
    assert image_engine_key(settings.models[flash_image.id]) == "emulator"
    assert not is_image_model(settings.models[flash_image.id])
    assert is_image_model(replace(flash_image, engine="diffusers"))
    imagen = next(m for m in settings.models.values() if "predict" in m.methods)
    settings.models[imagen.id] = replace(imagen, engine="transformers")
    with pytest.raises(ValueError, match="unknown image engine 'transformers'"):
        build_image_engines(settings, predict=True)


class _Busy:
    name = "busy"
    dimension = 4
    input_token_limit = 100

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def dimensions(self) -> int:
        return self.dimension

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return [1 for _ in texts]

    async def embed(self, texts: list[str]) -> np.ndarray:
        raise self.error

    async def generate(self, model: str, prompt: str, n: int, width: int, height: int,
                       seed: int | None = None) -> list[bytes]:
        raise self.error

    async def close(self) -> None:
        pass


def test_the_embeddings_service_maps_engine_errors(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    model = settings.models["gemini-embedding-001"]
    service = EmbedService(settings, {model.engine_key: _Busy(Overloaded(retry_after=1))})
    with pytest.raises(ApiError) as caught:
        asyncio.run(service.embed(model, [EmbedInput("hello")], "content"))
    assert caught.value.body() == {"error": {
        "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}
    service = EmbedService(settings, {model.engine_key: _Busy(Failure("The model failed to embed: boom"))})
    with pytest.raises(ApiError) as caught:
        asyncio.run(service.embed(model, [EmbedInput("hello")], "content"))
    assert (caught.value.status, caught.value.message) == ("INTERNAL", "The model failed to embed: boom")


def test_the_images_service_maps_engine_errors(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    model = next(m for m in settings.models.values() if "predict" in m.methods)
    service = ImageService(settings, {image_engine_key(model): _Busy(Overloaded(retry_after=5))})
    with pytest.raises(ApiError) as caught:
        asyncio.run(service.generate(model, "a red fox", 1, (256, 256)))
    assert caught.value.status == "UNAVAILABLE" and caught.value.code == 503
    assert caught.value.details == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"}]
