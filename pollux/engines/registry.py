"""Which code serves a model: one table from an engine's name (a model's `engine` in the config) to the factories
that build it, one per kind of model it can serve (text generation, embeddings, pictures).

A factory takes the model (its `engine_options`, its limits) and the settings, and imports its engine's module only
when called, so that an engine whose extra is not installed costs nothing until a model asks for it; its ImportError
becomes one line naming the install command. Adding an engine is one `register` call here (or from a plug-in's own
module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .loading import install_hint

if TYPE_CHECKING:
    from ..config import ModelSpec, Settings

Factory = Callable[["ModelSpec", "Settings"], Any]
KINDS = ("text", "embedding", "image")  # as `models.catalogue.model_kind` names them


@dataclass
class Plugin:
    name: str
    factories: dict[str, Factory] = field(default_factory=dict)  # by kind
    extra: str | None = None  # the optional dependencies it needs, for the install hint


_PLUGINS: dict[str, Plugin] = {}


def register(name: str, *, text: Factory | None = None, embedding: Factory | None = None,
             image: Factory | None = None, extra: str | None = None) -> None:
    factories = {kind: f for kind, f in (("text", text), ("embedding", embedding), ("image", image)) if f}
    _PLUGINS[name] = Plugin(name, factories, extra)


def names(kind: str) -> list[str]:
    return sorted(name for name, plugin in _PLUGINS.items() if kind in plugin.factories)


def build(model: ModelSpec, kind: str, settings: Settings) -> Any:
    """A new engine of `kind` for `model`, from its `engine` and `engine_options`; a ValueError says why not."""
    return create(model.engine, kind, model, settings)


def create(name: str, kind: str, model: ModelSpec | None, settings: Settings) -> Any:
    """A new engine `name` of `kind`; `model` is None only for the engines that need none (the emulator)."""
    plugin = _PLUGINS.get(name)
    where = f"model {model.id!r}: " if model is not None else ""
    if plugin is None or kind not in plugin.factories:
        what = {"text": "engine", "embedding": "embedding engine", "image": "image engine"}[kind]
        raise ValueError(f"{where}unknown {what} {name!r} (available: {', '.join(names(kind))})")
    try:
        return plugin.factories[kind](model, settings)  # type: ignore[arg-type]
    except ImportError as exc:
        hint = f": {install_hint(plugin.extra)}" if plugin.extra else ""
        raise ValueError(f"{where}the {plugin.name} engine is not installed ({exc.name} is missing){hint}") from None


# The engines that ship with Pollux ------------------------------------------------------------------------------
def _emulator(model: ModelSpec, settings: Settings) -> Any:
    from .emulator import EmulatorEngine
    from .fixtures import load_fixtures

    fixtures = load_fixtures(settings.fixtures) if settings.fixtures else []
    return EmulatorEngine(fixtures, stream_delay=settings.stream_delay)


def _emulator_embedder(model: ModelSpec, settings: Settings) -> Any:
    from ..embeddings.builtin import BuiltinEmbedder

    return BuiltinEmbedder.from_options(model.engine_options, model.input_token_limit)


def _emulator_images(model: ModelSpec, settings: Settings) -> Any:
    from ..images.engines import EmulatorImages

    return EmulatorImages()


def _transformers(model: ModelSpec, settings: Settings) -> Any:
    from .hf import HFOptions, TransformersEngine

    return TransformersEngine(HFOptions.from_dict(model.engine_options))


def _transformers_embedder(model: ModelSpec, settings: Settings) -> Any:
    from ..embeddings.hf import EmbedOptions, TransformersEmbedder

    return TransformersEmbedder(EmbedOptions.from_dict(model.engine_options))


def _diffusers(model: ModelSpec, settings: Settings) -> Any:
    from ..images.engines import DiffusersImages, DiffusersOptions

    return DiffusersImages(DiffusersOptions.from_dict(model.engine_options))


def _openai(model: ModelSpec, settings: Settings) -> Any:
    from .upstream import UpstreamEngine, UpstreamOptions

    return UpstreamEngine(UpstreamOptions.from_dict(model.engine_options))


def _openai_embedder(model: ModelSpec, settings: Settings) -> Any:
    from .upstream import UpstreamEmbedder, UpstreamOptions

    return UpstreamEmbedder(UpstreamOptions.from_dict(model.engine_options), model.input_token_limit)


register("emulator", text=_emulator, embedding=_emulator_embedder, image=_emulator_images)
register("transformers", text=_transformers, embedding=_transformers_embedder, extra="transformers")
register("diffusers", image=_diffusers, extra="images")
register("openai", text=_openai, embedding=_openai_embedder)
