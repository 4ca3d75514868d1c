"""The model catalogue: the Gemini ids Pollux knows with their published limits (reference/semantics.md §9), and how
an unlisted id of Gemini's shape finds its family.

Gemini's catalogue changes every few months, so an id that is not listed but follows Gemini's naming,
`gemini-<version>-<variant>[-latest|-preview|-exp|-001|-MM-YYYY|-MM-DD|-<word> ...]` or
`gemini-embedding-<version>[-...]`, is served as the catalogue entry of its family (`parse_gemini_id`), under its own
name: the variant (pro, flash, flash-lite, flash-image, pro-image, embedding) and the newest listed version not above
the id's (`_FAMILIES`). So `gemini-3.8-flash` is served like `gemini-3.5-flash` (thinkingLevel), and
`gemini-2.5-flash-preview-09-2025` like `gemini-2.5-flash` (thinkingBudget). Versions older than any listed
(`gemini-1.5-pro`, retired), speech and Live API models, and ids of another shape (`gemini-foo`, `gpt-4`) get the real
API's 404. `config.lookup_model` applies this with the configured engines and patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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
    # The fewest tokens a context cache for this model may hold (implicit caching starts there too).
    cache_min_tokens: int = 1024
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
_PRO = dict(thinking_budget_range=(128, 32768), thinking_can_disable=False, cache_min_tokens=4096)
_LITE = dict(thinking_budget_range=(512, 24576), thinks_by_default=False)
_G3 = dict(thinking_control="level", thinking_can_disable=False, thinking_budget_range=(128, 32768))
_G3_PRO = dict(_G3, thinking_levels=("LOW", "HIGH"), cache_min_tokens=4096)
_G31_PRO = dict(_G3, thinking_levels=("LOW", "MEDIUM", "HIGH"), cache_min_tokens=4096)
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
