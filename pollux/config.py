"""Settings and the model catalogue: which model ids exist, their published limits, and the engine behind each.

A config file (TOML, `--config FILE`) may change any of it:

    [limits]
    max_request_bytes = 104857600

    [models."gemini-2.5-flash"]        # override fields of a catalogue entry
    engine = "emulator"

    [models."my-model"]                # or add a new id, starting from an existing entry
    base = "gemini-2.5-flash"
    display_name = "My model"

    [models."gemini-*"]                # or route every id a glob matches (`*`, `?`) to one engine
    engine = "transformers"
    engine_options = { source = "hf:Qwen/Qwen3-0.6B" }

Model ids beyond the catalogue. Gemini's catalogue changes every few months, so an id that is not listed but follows
Gemini's naming, `gemini-<version>-<variant>[-latest|-preview|-exp|-001|-MM-YYYY|-MM-DD ...]` or
`gemini-embedding-<version>[-...]`, is served as the catalogue entry of its family, under its own name: the variant
(pro, flash, flash-lite, flash-image, pro-image, embedding) and the newest listed version not above the id's
(`_FAMILIES`). So `gemini-3.8-flash` is served like `gemini-3.5-flash` (thinkingLevel), and
`gemini-2.5-flash-preview-09-2025` like `gemini-2.5-flash` (thinkingBudget), with that entry's engine and limits as
configured. Versions older than any listed (`gemini-1.5-pro`, retired) and ids of another shape (`gemini-foo`, `gpt-4`)
get the real API's 404. `models.list` shows the catalogue only. `lookup_model` is that one rule; resolved ids are
cached, a bounded number of them.

Patterns. A `[models."<glob>"]` entry (or `--model 'GLOB=SOURCE'`) sets its fields on every id the glob matches,
catalogue entries at start and resolved ids when first asked for; an id keeps its own limits except those the entry
sets. Where several entries match, the most specific wins field by field: the id's own entry, then the glob with
more literal characters (on a tie, the one given last; `--model` comes after the config file). A pattern applies
only to ids of its own kind, so that one local chat model does not capture the other models: a pattern that says
`embedding` routes embedding models, one that says `image` routes image models (Imagen's `predict` and the image
output models, `gemini-2.5-flash-image`), any other routes text models. So `gemini-*` never turns
`gemini-embedding-001` into a chat model; `gemini-embedding-*` routes the embedding models. Engines are started for
the catalogue's entries, so a pattern that routes to an engine must match at least one of them (else it is an error
at start).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import tomllib
from collections.abc import Mapping
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
    # Whether usage always lists the output per modality (candidatesTokensDetails): Gemini 2.0 does; later models
    # only when the answer holds a picture.
    output_details: bool = False
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
_G3_PRO = dict(_G3, thinking_levels=("LOW", "HIGH"))
_G31_PRO = dict(_G3, thinking_levels=("LOW", "MEDIUM", "HIGH"))
_G3_FLASH = dict(_G3, thinking_levels=("MINIMAL", "LOW", "MEDIUM", "HIGH"))
# Nano Banana (Pro): text and images out, at most temperature 1; no caching (`createCachedContent`).
_IMAGE_OUT = dict(methods=("generateContent", "countTokens", "batchGenerateContent"), max_temperature=1.0,
                  output_modalities=("TEXT", "IMAGE"))
_G20 = dict(output_token_limit=8192, top_k=40, thinking=False, thinking_control=None, output_details=True)

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
    _gemini("gemini-3-pro-preview", "Gemini 3 Pro Preview", "Gemini 3 Pro Preview", "3-pro-preview-11-2025",
            **_G3_PRO),
    _gemini("gemini-3-flash-preview", "Gemini 3 Flash Preview", "Gemini 3 Flash Preview", "3-flash-preview-12-2025",
            **_G3_FLASH),
    _gemini("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", "Gemini 3.1 Pro Preview", "3.1-pro-preview-02-2026",
            **_G31_PRO),
    _gemini("gemini-3.5-flash", "Gemini 3.5 Flash", "Stable version of Gemini 3.5 Flash", "001", **_G3_FLASH),
    _gemini("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", "Stable version of Gemini 3.5 Flash-Lite", "001",
            **_G3_FLASH),
    _gemini("gemini-2.5-flash-image", "Nano Banana", "Gemini 2.5 Flash Image", "2.0", input_token_limit=32_768,
            output_token_limit=32_768, thinking=False, thinking_control=None, **_IMAGE_OUT),
    _gemini("gemini-3-pro-image-preview", "Nano Banana Pro", "Gemini 3 Pro Image Preview", "3.0",
            input_token_limit=131_072, output_token_limit=32_768, **_G3_PRO, **_IMAGE_OUT),
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
    # Gemini Embedding 2: the same kind of model (3072 dimensions, MRL) reading up to 8,192 tokens.
    ModelSpec(id="gemini-embedding-2", display_name="Gemini Embedding 2",
              description="Obtain a distributed representation of a text.", version="2",
              input_token_limit=8192, output_token_limit=1, methods=EMBED_METHODS,
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
    # Pattern entries, least specific first, and the fields each catalogue id's own entry sets (no pattern changes
    # those); see the module's docstring.
    routes: list[Route] = field(default_factory=list)
    pinned: dict[str, frozenset[str]] = field(default_factory=dict)
    # Ids resolved beyond the catalogue: `_resolve`, cached per id (see `lookup_model`).
    resolved: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.resolved = functools.lru_cache(maxsize=RESOLVED_CACHE_SIZE)(functools.partial(_resolve, self))


# At most this many resolved ids are kept (a spec is about 1 KB): a client that asks for endless different ids costs a
# regular expression each, not memory.
RESOLVED_CACHE_SIZE = 1024
MAX_ID_CHARS = 64  # longer ids are not Gemini's, and are not parsed

# Gemini's model ids: `gemini-<version>-<variant>` (the version may be left out of `-latest` aliases) or
# `gemini-embedding-<version>`, then up to four words: -latest, -preview, -exp, -001 (a version), -MM-YYYY, -MM-DD,
# or a variant's name (`gemini-3.1-pro-preview-customtools`, which the Gemini CLI asks for).
_SUFFIX = r"\d{2}-\d{2}(?:\d{2})?|\d{3,4}|[a-z][a-z0-9]{0,19}"
# Words that name another kind of model (speech, the Live API's audio), which no engine here serves: those stay 404.
_UNSERVED_WORDS = frozenset({"tts", "audio", "live", "native", "speech"})
_GEMINI_ID = re.compile(
    r"gemini-(?:(?:(?P<version>\d{1,2}(?:\.\d{1,2})?)-)?(?P<variant>flash-lite|flash-image|pro-image|flash|pro)"
    r"|embedding-(?P<embedding>\d{1,3}|exp))"
    rf"(?P<tail>(?:-(?:{_SUFFIX})){{0,4}})")
_TAIL_WORD = re.compile(rf"-({_SUFFIX})")

# Which catalogue entry an unlisted id is served as: by variant, the entry of the newest version not above the id's
# ((major, minor), id). Ids older than the first (retired generations, such as 1.5) are unknown. Where a variant had no
# model of a generation (2.0 Pro was only ever experimental), the generation's limits come from its sibling.
_FAMILIES: dict[str, tuple[tuple[tuple[int, int], str], ...]] = {
    "pro": (((2, 0), "gemini-2.0-flash"), ((2, 5), "gemini-2.5-pro"), ((3, 0), "gemini-3-pro-preview"),
            ((3, 1), "gemini-3.1-pro-preview")),
    "flash": (((2, 0), "gemini-2.0-flash"), ((2, 5), "gemini-2.5-flash"), ((3, 0), "gemini-3-flash-preview"),
              ((3, 5), "gemini-3.5-flash")),
    "flash-lite": (((2, 0), "gemini-2.0-flash-lite"), ((2, 5), "gemini-2.5-flash-lite"),
                   ((3, 0), "gemini-3.5-flash-lite")),
    "flash-image": (((2, 0), "gemini-2.5-flash-image"), ((3, 0), "gemini-3-pro-image-preview")),
    "pro-image": (((2, 0), "gemini-2.5-flash-image"), ((3, 0), "gemini-3-pro-image-preview")),
    "embedding": (((0, 0), "gemini-embedding-001"), ((2, 0), "gemini-embedding-2")),
}
_WORDS = {"pro": "Pro", "flash": "Flash", "flash-lite": "Flash-Lite", "flash-image": "Flash Image",
          "pro-image": "Pro Image", "embedding": "Embedding", "latest": "Latest", "preview": "Preview",
          "exp": "Experimental"}


@dataclass(frozen=True)
class GeminiId:
    """What a Gemini-shaped id says: the catalogue entry of its family, and its own name and version."""

    template: str
    display_name: str
    version: str


def parse_gemini_id(model_id: str) -> GeminiId | None:
    """The family of an id that follows Gemini's naming (see `_GEMINI_ID`); None for any other id."""
    match = _GEMINI_ID.fullmatch(model_id) if len(model_id) <= MAX_ID_CHARS else None
    if match is None:
        return None
    words = _TAIL_WORD.findall(match["tail"])
    if _UNSERVED_WORDS.intersection(words):
        return None
    if "image" in words and match["variant"] in ("flash", "pro"):  # gemini-2.0-flash-preview-image-generation
        match_variant = match["variant"] + "-image"
    else:
        match_variant = match["variant"]
    if match["embedding"]:
        variant, number = "embedding", match["embedding"]
        version = (int(number), 0) if number.isdigit() else (0, 0)
    else:
        variant, number = match_variant, match["version"]
        if number is None and words != ["latest"]:
            return None  # only `-latest` aliases leave the version out (gemini-flash-latest)
        major, _, minor = (number or "").partition(".")
        version = (int(major), int(minor or 0)) if number else (99, 99)  # an alias: the newest
    template = None
    for since, entry in _FAMILIES[variant]:
        if since <= version:
            template = entry
    if template is None:
        return None
    display = " ".join(["Gemini", *([number] if number and variant != "embedding" else []), _WORDS[variant],
                        *([_WORDS.get(number, number)] if variant == "embedding" else []),
                        *(_WORDS.get(w, w) for w in words if w != "image")])
    # The live API's version field: the `-001` of a stable id, else the id past `gemini-` ("3-pro-preview-11-2025").
    own_version = next((w for w in reversed(words) if len(w) == 3 and w.isdigit()), model_id.removeprefix("gemini-"))
    return GeminiId(template, display, own_version)


def model_kind(model: ModelSpec) -> str:
    """text, embedding or image: which pattern entries apply to the model (see the module's docstring)."""
    if "embedContent" in model.methods:
        return "embedding"
    if "predict" in model.methods or "IMAGE" in model.output_modalities:
        return "image"
    return "text"


def is_pattern(model_id: str) -> bool:
    return any(c in model_id for c in "*?[")


@dataclass(frozen=True)
class Route:
    """A pattern entry: the fields it sets on every model of its kind whose id the glob matches."""

    pattern: str
    fields: Mapping[str, Any] = field(hash=False, compare=False)
    order: int = 0  # breaks ties of specificity: the entry given last wins

    @property
    def kind(self) -> str:
        return "embedding" if "embedding" in self.pattern else "image" if "image" in self.pattern else "text"

    @property
    def specificity(self) -> tuple[int, int]:
        return sum(c not in "*?" for c in self.pattern), self.order

    def matches(self, model: ModelSpec) -> bool:
        return model_kind(model) == self.kind and fnmatch.fnmatchcase(model.id, self.pattern)


def _routed(settings: Settings, model: ModelSpec, pinned: frozenset[str] = frozenset()) -> ModelSpec:
    """`model` with the fields of the pattern entries that match it, the most specific last, except `pinned` ones."""
    for route in settings.routes:
        if route.matches(model):
            changes = {key: value for key, value in route.fields.items() if key not in pinned}
            if changes:
                model = replace(model, **changes)
    return model


def _served_by(settings: Settings, model: ModelSpec) -> ModelSpec | None:
    """A catalogue entry on the same engine as `model` when that engine is a loaded model (not the emulator). Such an
    engine serves at most its own context, which is written into the catalogue entries it serves when it starts
    (app.py, embeddings/engines.py); an id resolved later takes the same limits from them."""
    kind = model_kind(model)
    if model.engine == "emulator" or kind == "image":
        return None
    return next((m for m in settings.models.values()
                 if m.engine_key == model.engine_key and m.engine != "emulator" and model_kind(m) == kind), None)


def _resolve(settings: Settings, model_id: str) -> tuple[ModelSpec, tuple[ModelSpec, ...]] | None:
    """An id beyond the catalogue as its family's entry renamed, routed and limited; with the catalogue entries the
    result was made from (it is stale once they are replaced)."""
    parsed = parse_gemini_id(model_id)
    template = settings.models.get(parsed.template) if parsed else None
    if parsed is None or template is None:
        return None
    model = replace(template, id=model_id, display_name=parsed.display_name, version=parsed.version,
                    description=f"{parsed.display_name}, served as {template.display_name} ({template.id}).")
    model = _routed(settings, model)
    served = _served_by(settings, model)
    if served is None:
        return model, (template,)
    model = replace(model, input_token_limit=served.input_token_limit,
                    output_token_limit=min(model.output_token_limit, served.input_token_limit))
    return model, (template, served)


def lookup_model(settings: Settings, model_id: str) -> ModelSpec | None:
    """The model an id names (without `models/`): its catalogue entry, else the entry of its Gemini family under its
    own name (see the module's docstring); None where the real API would not know it either. Every lookup of a model
    id goes through here."""
    model = settings.models.get(model_id)
    if model is not None:
        return model
    if not model_id.startswith("gemini-"):
        return None
    hit = settings.resolved(model_id)
    if hit is not None and any(settings.models.get(m.id) is not m for m in hit[1]):
        # The catalogue changed since (engines write their limits into it as they start): resolve afresh.
        settings.resolved.cache_clear()
        hit = settings.resolved(model_id)
    return hit[0] if hit else None


def find_model(settings: Settings, name: str, version: str, method: str) -> ModelSpec:
    """The model a path names (`gemini-x` or `models/gemini-x`) if it supports `method`; else the real API's 404."""
    model_id = name.removeprefix("models/")
    model = lookup_model(settings, model_id)
    if model is None or method not in model.methods and method != "get":
        raise model_not_found(model_id, version, method)
    return model


def _pin(settings: Settings, model_id: str, entry: Mapping[str, Any]) -> None:
    settings.pinned[model_id] = settings.pinned.get(model_id, frozenset()) | set(entry)


def add_routes(settings: Settings, entries: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Add pattern entries and apply them all to the catalogue. A pattern that routes to an engine must carry it onto
    at least one catalogue entry: engines are started for the catalogue's entries only."""
    for pattern, entry in entries.items():
        if "base" in entry:
            raise ValueError(f"{where}: model pattern {pattern!r} cannot have a base: its fields apply to each model "
                             "it matches")
        settings.routes.append(Route(pattern, dict(entry), order=len(settings.routes)))
    settings.routes.sort(key=lambda r: r.specificity)
    for model_id, model in list(settings.models.items()):
        settings.models[model_id] = _routed(settings, model, settings.pinned.get(model_id, frozenset()))
    settings.resolved.cache_clear()
    for route in settings.routes:
        engine = {key: value for key, value in route.fields.items() if key in ("engine", "engine_options")}
        if engine and not any(route.matches(m) and all(getattr(m, k) == v for k, v in engine.items())
                              for m in settings.models.values()):
            raise ValueError(f"{where}: model pattern {route.pattern!r} routes no model of the catalogue to its "
                             f"engine (it applies to {route.kind} models), so that engine would never start; add an "
                             "entry for one id it should serve")


def serve_model(settings: Settings, spec: str) -> None:
    """`--model ID=SOURCE`: serve ID with the transformers engine from SOURCE (`hf:ORG/NAME` or a local directory).
    ID may be a glob (`'gemini-*=hf:ORG/NAME'`), which acts as a pattern entry of the config file."""
    model_id, sep, source = spec.partition("=")
    model_id = model_id.strip().removeprefix("models/")
    if not sep or not model_id or not source:
        raise ValueError(f"--model {spec!r}: expected ID=hf:ORG/NAME or ID=/path/to/model")
    entry = {"engine": "transformers", "engine_options": {"source": source.strip()}}
    if is_pattern(model_id):
        add_routes(settings, {model_id: entry}, f"--model {spec!r}")
        return
    found = lookup_model(settings, model_id)
    base = found or settings.models["gemini-2.5-flash"]
    settings.models[model_id] = replace(base, id=model_id, display_name=found.display_name if found else model_id,
                                        **entry)
    _pin(settings, model_id, entry)


def default_data_dir() -> Path:
    return Path(os.environ.get("POLLUX_DATA_DIR") or Path.home() / ".pollux")


_ENTRY_FIELDS = {f.name for f in fields(ModelSpec)} - {"id"} | {"base"}


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
    patterns: dict[str, dict[str, Any]] = {}
    for model_id, entry in doc.get("models", {}).items():
        entry = dict(entry)
        bad = set(entry) - _ENTRY_FIELDS
        if bad:
            raise ValueError(f"{path}: model {model_id!r}: unknown field(s) {sorted(bad)}")
        for key in ("methods", "thinking_budget_range", "thinking_levels", "output_modalities"):
            if key in entry:
                entry[key] = tuple(entry[key])
        if "engine" in entry:  # another engine starts from its own defaults, not the options of the one it replaces
            entry.setdefault("engine_options", {})
        if is_pattern(model_id):
            patterns[model_id] = entry  # applied once every id's own entry is in (those win)
            continue
        base_id = entry.pop("base", model_id)
        base = lookup_model(settings, base_id)
        if base is None:
            raise ValueError(f"{path}: model {model_id!r} has no catalogue entry to start from; set base = \"<id>\"")
        settings.models[model_id] = replace(base, id=model_id, **entry)
        _pin(settings, model_id, entry)
    add_routes(settings, patterns, str(path))
    return settings
