"""Settings: limits, the models served (the catalogue of `models/catalogue.py` as configured) and the engine behind
each.

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

Model ids beyond the catalogue (`models/catalogue.py`): an unlisted id of Gemini's shape is served as its family's
entry under its own name, with that entry's engine and limits as configured. `lookup_model` is that one rule; resolved
ids are cached, a bounded number of them. `models.list` shows the catalogue only.

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
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import model_not_found
from .models.catalogue import (DEFAULT_CATALOGUE, EMBED_METHODS, GENERATE_METHODS, IMAGE_METHODS, ModelSpec,
                               model_kind, parse_gemini_id)

__all__ = ["DEFAULT_CATALOGUE", "EMBED_METHODS", "GENERATE_METHODS", "IMAGE_METHODS", "ModelSpec", "Limits",
           "Settings", "find_model", "load_config", "lookup_model", "model_kind", "serve_model"]

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
    # Leased jobs (store/jobs.py): a process that stops renewing a job's lease (it died) loses the job after this
    # long, and another process takes it over; housekeeping (expiry, orphan sweeps) runs this often, once per fleet.
    job_lease_seconds: int = 30
    housekeeping_seconds: int = 60
    # With files in object storage: local copies of recently used ones, for decoders that read a path.
    local_copies_mb: int = 10 * 1024
    # Batch Mode (reference/semantics.md §11): inline requests up to 20 MB in all, input files up to the file limit. A
    # batch pending or running this long expires; an ended one (with its inline results) is kept as long again.
    batch_inline_bytes: int = 20 * 1024 * 1024
    batch_ttl_seconds: int = 48 * 3600
    # Requests of batch jobs one process runs at once: online requests are never queued behind more than these.
    batch_concurrency: int = 4
    # Batches pending or running in one project at once (the real API's 100 concurrent batch requests).
    max_live_batches: int = 100
    batches_page_default: int = 10
    batches_page_max: int = 100
    # Context caches (reference/semantics.md §10): an hour unless the cache's ttl or expireTime says otherwise. The
    # live caches of one project, and the bytes they hold (their contents and copies of the files they name).
    cache_ttl_seconds: int = 3600
    max_caches: int = 1000
    max_cache_bytes: int = 20 * 1024**3
    caches_page_default: int = 100
    caches_page_max: int = 1000


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    fixtures: Path | None = None
    # Shared state: the database (None: SQLite in the data dir) and the blob store for file bytes (None: the data
    # dir; or s3://bucket/prefix). Several processes or replicas share both.
    database_url: str | None = None
    blob_url: str | None = None
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
    """`--model ID=SOURCE`: serve ID with the transformers engine from SOURCE (`hf:ORG/NAME` or a local directory),
    or with an OpenAI-compatible server from `openai:URL[#SERVED_NAME]` (without a name, the server's only model;
    several URLs separated by commas make one pool). ID may be a glob (`'gemini-*=hf:ORG/NAME'`), which acts as a
    pattern entry of the config file."""
    model_id, sep, source = spec.partition("=")
    model_id = model_id.strip().removeprefix("models/")
    source = source.strip()
    if not sep or not model_id or not source:
        raise ValueError(f"--model {spec!r}: expected ID=hf:ORG/NAME, ID=/path/to/model or ID=openai:URL[#MODEL]")
    entry: dict[str, Any]
    if source.startswith("openai:"):
        url, _, served = source.removeprefix("openai:").partition("#")
        urls = [u.strip() for u in url.split(",") if u.strip()]
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(f"--model {spec!r}: expected ID=openai:http://HOST:PORT/v1[#MODEL]")
        options: dict[str, Any] = {"base_url": urls[0] if len(urls) == 1 else urls}
        if served:
            options["model"] = served
        entry = {"engine": "openai", "engine_options": options}
    else:
        entry = {"engine": "transformers", "engine_options": {"source": source}}
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
    unknown = set(doc) - {"limits", "models", "emulator", "store"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
    for key, value in doc.get("store", {}).items():
        if key not in ("database_url", "blob_url"):
            raise ValueError(f"{path}: unknown store setting {key!r} (database_url, blob_url)")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{path}: store setting {key!r} must be a non-empty string")
        setattr(settings, key, value)
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
        minimum = entry.get("cache_min_tokens", 0)
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise ValueError(f"{path}: model {model_id!r}: cache_min_tokens must be a whole number, not {minimum!r}")
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
