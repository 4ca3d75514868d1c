"""Settings and the model catalogue: which model ids exist, their published limits, and the engine behind each.

A config file (TOML, `--config FILE`) may change any of it:

    [limits]
    max_request_bytes = 104857600

    [models."gemini-2.5-flash"]        # override fields of a catalogue entry
    engine = "emulator"

    [models."my-model"]                # or add a new id, starting from an existing entry
    base = "gemini-2.5-flash"
    display_name = "My model"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import model_not_found

GENERATE_METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
EMBED_METHODS = ("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent")
IMAGE_METHODS = ("predict",)


@dataclass(frozen=True)
class ModelSpec:
    """A model as `models.get` describes it, plus how Pollux serves it."""

    id: str
    display_name: str
    description: str
    version: str
    input_token_limit: int
    output_token_limit: int
    methods: tuple[str, ...] = GENERATE_METHODS
    temperature: float | None = 1.0
    max_temperature: float | None = 2.0
    top_p: float | None = 0.95
    top_k: int | None = 64
    thinking: bool = False
    # Thinking controls: "budget" (2.5 family) or "level" (Gemini 3); the range of thinkingBudget; whether 0 is allowed.
    thinking_control: str | None = None
    thinking_budget_range: tuple[int, int] = (0, 24576)
    thinking_can_disable: bool = True
    thinks_by_default: bool = True
    thinking_levels: tuple[str, ...] = ("LOW", "HIGH")
    # What generateContent may answer with (`responseModalities`): ("TEXT", "IMAGE") on the image models.
    output_modalities: tuple[str, ...] = ("TEXT",)
    engine: str = "emulator"
    engine_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"models/{self.id}"

    @property
    def engine_key(self) -> str:
        """Which running engine serves this id: ids with the same engine and options share one loaded model."""
        if not self.engine_options:
            return self.engine
        return self.engine + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.engine_options.items()))


def _gemini(id: str, display: str, description: str, version: str, **kw: Any) -> ModelSpec:
    defaults: dict[str, Any] = dict(input_token_limit=1_048_576, output_token_limit=65_536, thinking=True,
                                    thinking_control="budget")
    defaults.update(kw)
    return ModelSpec(id=id, display_name=display, description=description, version=version, **defaults)


_FLASH = dict(thinking_budget_range=(0, 24576))
_PRO = dict(thinking_budget_range=(128, 32768), thinking_can_disable=False)
_LITE = dict(thinking_budget_range=(512, 24576), thinks_by_default=False)
_G3 = dict(thinking_control="level", thinking_can_disable=False, thinking_budget_range=(128, 32768))
_G20 = dict(output_token_limit=8192, top_k=40, thinking=False, thinking_control=None)

# The current Gemini ids with their published limits (reference/semantics.md §9).
DEFAULT_CATALOGUE: tuple[ModelSpec, ...] = (
    _gemini("gemini-2.5-flash", "Gemini 2.5 Flash",
            "Stable version of Gemini 2.5 Flash, our mid-size multimodal model that supports up to 1 million tokens, "
            "released in June of 2025.", "001", **_FLASH),
    _gemini("gemini-2.5-pro", "Gemini 2.5 Pro", "Stable release (June 17th, 2025) of Gemini 2.5 Pro", "2.5", **_PRO),
    _gemini("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "Stable version of Gemini 2.5 Flash-Lite, released in July of 2025",
            "001", **_LITE),
    _gemini("gemini-2.0-flash", "Gemini 2.0 Flash", "Gemini 2.0 Flash", "2.0", **_G20),
    _gemini("gemini-2.0-flash-001", "Gemini 2.0 Flash 001",
            "Stable version of Gemini 2.0 Flash, our fast and versatile multimodal model for scaling across diverse tasks, "
            "released in January of 2025.", "2.0", **_G20),
    _gemini("gemini-2.0-flash-lite", "Gemini 2.0 Flash-Lite", "Gemini 2.0 Flash-Lite", "2.0", **_G20),
    _gemini("gemini-3-pro-preview", "Gemini 3 Pro Preview", "Gemini 3 Pro Preview", "3-pro-preview-11-2025", **_G3),
    _gemini("gemini-flash-latest", "Gemini Flash Latest", "Latest release of Gemini Flash", "Gemini Flash Latest", **_FLASH),
    _gemini("gemini-flash-lite-latest", "Gemini Flash-Lite Latest", "Latest release of Gemini Flash-Lite",
            "Gemini Flash-Lite Latest", **_LITE),
    _gemini("gemini-pro-latest", "Gemini Pro Latest", "Latest release of Gemini Pro", "Gemini Pro Latest", **_PRO),
    *(ModelSpec(id=f"imagen-{version}", display_name=display, description=display, version=version.rsplit("-", 1)[-1],
                input_token_limit=480, output_token_limit=8192, methods=IMAGE_METHODS, temperature=None,
                max_temperature=None, top_p=None, top_k=None)
      for version, display in (("3.0-generate-002", "Imagen 3.0"), ("4.0-generate-001", "Imagen 4"),
                               ("4.0-ultra-generate-001", "Imagen 4 Ultra"),
                               ("4.0-fast-generate-001", "Imagen 4 Fast"))),
    ModelSpec(id="gemini-embedding-001", display_name="Gemini Embedding 001",
              description="Obtain a distributed representation of a text.", version="001",
              input_token_limit=2048, output_token_limit=1, methods=EMBED_METHODS,
              temperature=None, max_temperature=None, top_p=None, top_k=None),
)


@dataclass
class Limits:
    # Gemini's inline request limit (100 MB since 2026, so that a 50 MB PDF fits inline once base64-encoded).
    max_request_bytes: int = 100 * 1024 * 1024
    models_page_default: int = 50
    models_page_max: int = 1000
    # Files API (reference/semantics.md §8): 2 GB per file, 20 GB per project, kept 48 hours.
    max_file_bytes: int = 2 * 1024**3
    max_project_bytes: int = 20 * 1024**3
    file_ttl_seconds: int = 48 * 3600
    upload_ttl_seconds: int = 24 * 3600  # an upload left unfinished this long is deleted with its bytes
    files_page_default: int = 10
    files_page_max: int = 100
    # A client that sends no byte of its request body for this long is dropped (it would hold a connection, and an
    # upload's lock, for ever).
    body_idle_seconds: int = 60
    # Connections: a client has this long to send its request headers, and a request body must arrive whole within
    # body_timeout_seconds of its headers (a 100 MB body at 1 MB/s fits; one byte every few seconds does not).
    header_timeout_seconds: int = 20
    body_timeout_seconds: int = 300
    # Open connections at once. Past it the connection that has waited longest for its headers is dropped; with none
    # waiting, the newcomer gets a 503. The server also raises its descriptor limit to fit this.
    max_connections: int = 4096
    # Memory admission: decoded media and large request bodies draw on this budget. A request that would pass it
    # waits up to admission_wait_seconds for others to finish, then gets a 503 with RetryInfo.
    memory_budget_mb: int = 4096
    admission_wait_seconds: int = 5
    # JSON values (objects, arrays, strings, numbers) in one request body: parsing holds the interpreter's lock, so
    # a body of millions of tiny values would stall every other request while it is parsed.
    max_request_values: int = 200_000


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    fixtures: Path | None = None
    limits: Limits = field(default_factory=Limits)
    models: dict[str, ModelSpec] = field(default_factory=lambda: {m.id: m for m in DEFAULT_CATALOGUE})
    # Emulator pacing for streams (seconds between chunks); 0 streams as fast as it can.
    stream_delay: float = 0.0


def find_model(settings: Settings, name: str, version: str, method: str) -> ModelSpec:
    """The model a path names (`gemini-x` or `models/gemini-x`) if it supports `method`; else the real API's 404."""
    model_id = name.removeprefix("models/")
    model = settings.models.get(model_id)
    if model is None or method not in model.methods and method != "get":
        raise model_not_found(model_id, version, method)
    return model


def serve_model(settings: Settings, spec: str) -> None:
    """`--model ID=SOURCE`: serve ID with the transformers engine from SOURCE (`hf:ORG/NAME` or a local directory)."""
    model_id, sep, source = spec.partition("=")
    model_id = model_id.strip().removeprefix("models/")
    if not sep or not model_id or not source:
        raise ValueError(f"--model {spec!r}: expected ID=hf:ORG/NAME or ID=/path/to/model")
    base = settings.models.get(model_id) or settings.models["gemini-2.5-flash"]
    display = base.display_name if model_id in settings.models else model_id
    settings.models[model_id] = replace(base, id=model_id, display_name=display, engine="transformers",
                                        engine_options={"source": source.strip()})


def default_data_dir() -> Path:
    return Path(os.environ.get("POLLUX_DATA_DIR") or Path.home() / ".pollux")


_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


def load_config(path: Path | None, settings: Settings) -> Settings:
    """Apply a TOML config file to `settings`; unknown keys are an error, not silently ignored."""
    if path is None:
        return settings
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    unknown = set(doc) - {"limits", "models", "emulator"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
    for key, value in doc.get("limits", {}).items():
        if not hasattr(settings.limits, key):
            raise ValueError(f"{path}: unknown limit {key!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{path}: limit {key!r} must be a positive whole number")
        setattr(settings.limits, key, value)
    if "stream_delay" in doc.get("emulator", {}):
        settings.stream_delay = float(doc["emulator"]["stream_delay"])
    for model_id, entry in doc.get("models", {}).items():
        entry = dict(entry)
        base_id = entry.pop("base", model_id)
        base = settings.models.get(base_id)
        if base is None:
            raise ValueError(f"{path}: model {model_id!r} has no catalogue entry to start from; set base = \"<id>\"")
        bad = set(entry) - _SPEC_FIELDS
        if bad:
            raise ValueError(f"{path}: model {model_id!r}: unknown field(s) {sorted(bad)}")
        for key in ("methods", "thinking_budget_range", "thinking_levels", "output_modalities"):
            if key in entry:
                entry[key] = tuple(entry[key])
        settings.models[model_id] = replace(base, id=model_id, **entry)
    return settings
