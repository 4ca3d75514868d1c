"""Gemini's token accounting for media (reference/semantics.md §7), shared by every engine so that usage reads the same
whichever model answers. Pure functions: no decoding happens here."""

from __future__ import annotations

import math

# Wire names of `GenerationConfig.mediaResolution` / `Part.mediaResolution`.
UNSPECIFIED = "MEDIA_RESOLUTION_UNSPECIFIED"
LOW = "MEDIA_RESOLUTION_LOW"
MEDIUM = "MEDIA_RESOLUTION_MEDIUM"
HIGH = "MEDIA_RESOLUTION_HIGH"
ULTRA_HIGH = "MEDIA_RESOLUTION_ULTRA_HIGH"  # Gemini 3, per-part only; documented for images
RESOLUTIONS = frozenset({UNSPECIFIED, LOW, MEDIUM, HIGH, ULTRA_HIGH})

IMAGE_TILE_TOKENS = 258       # one 768×768 tile, or a whole image up to 384×384 (Gemini 2.x)
AUDIO_TOKENS_PER_SECOND = 32  # audio alone, and the soundtrack of a video

# Gemini 3 per-item costs by media resolution; None and UNSPECIFIED mean the default.
_G3_IMAGE = {None: 1120, UNSPECIFIED: 1120, LOW: 280, MEDIUM: 560, HIGH: 1120, ULTRA_HIGH: 2240}
_G3_PDF_PAGE = {None: 560, UNSPECIFIED: 560, LOW: 280, MEDIUM: 560, HIGH: 1120, ULTRA_HIGH: 1120}
_G3_VIDEO_FRAME = {None: 70, UNSPECIFIED: 70, LOW: 70, MEDIUM: 70, HIGH: 280, ULTRA_HIGH: 280}
_G2_VIDEO_FRAME_LOW = 66

# Products like 0.1 s × 32 come out as 3.2000000000000002; without this slack an exact 2.0 s could cost 65, not 64.
_EPSILON = 1e-9


def is_gemini_3(model: str) -> bool:
    return model.removeprefix("models/").startswith("gemini-3")


def _check(resolution: str | None) -> str | None:
    # The schema layer validates the enum; this catches callers passing something else (e.g. "LOW").
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"Unknown media resolution {resolution!r}; expected one of {sorted(RESOLUTIONS)}.")
    return resolution


def _ceil(x: float) -> int:
    return math.ceil(x - _EPSILON)


def image_tokens(width: int, height: int, model: str, resolution: str | None = None) -> int:
    """Tokens Gemini charges for one image of this size.

    Gemini 2.x ignores the resolution: 258 if both sides are ≤384 px, else the image is cut into 768×768 tiles of 258
    tokens each, with crop unit = floor(min(w, h) / 1.5) and tiles = ceil(w / unit) · ceil(h / unit) (960×540 → 6
    tiles → 1548). Gemini 3 charges a flat amount per image by media resolution: default/HIGH 1120, MEDIUM 560,
    LOW 280 (ULTRA_HIGH 2240).
    """
    resolution = _check(resolution)
    if is_gemini_3(model):
        return _G3_IMAGE[resolution]
    if width <= 384 and height <= 384:
        return IMAGE_TILE_TOKENS
    unit = max(math.floor(min(width, height) / 1.5), 1)
    return math.ceil(width / unit) * math.ceil(height / unit) * IMAGE_TILE_TOKENS


def pdf_page_tokens(model: str, resolution: str | None = None) -> int:
    """Tokens for one PDF page: 258 on Gemini 2.x; on Gemini 3 default/MEDIUM 560, LOW 280, HIGH 1120.

    The page's native text is not charged on top (Gemini 3 reports these tokens under IMAGE, not DOCUMENT).
    """
    resolution = _check(resolution)
    if is_gemini_3(model):
        return _G3_PDF_PAGE[resolution]
    return IMAGE_TILE_TOKENS


def audio_tokens(seconds: float) -> int:
    """32 tokens per second of audio, rounded up (one minute = 1,920)."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    return _ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def video_frames(seconds: float, fps: float = 1.0) -> int:
    """Frames Gemini samples: max(1, ceil(seconds · fps)); a clip shorter than one sampling step still shows a frame."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    if fps <= 0:
        raise ValueError("fps must be > 0")
    return max(1, _ceil(seconds * fps))


def video_tokens(seconds: float, model: str, fps: float = 1.0, resolution: str | None = None) -> int:
    """Tokens for a video of this length (its soundtrack included).

        frames = max(1, ceil(seconds · fps))            # fps from videoMetadata.fps, default 1
        tokens = frames · per_frame + ceil(32 · seconds)

    per_frame is 258 on Gemini 2.x (66 at MEDIA_RESOLUTION_LOW) and 70 on Gemini 3 (280 at MEDIA_RESOLUTION_HIGH).
    At the defaults that is ≈290 tokens per second on 2.x (the docs round it to ~300), ≈102 on Gemini 3.
    """
    resolution = _check(resolution)
    frames = video_frames(seconds, fps)
    if is_gemini_3(model):
        per_frame = _G3_VIDEO_FRAME[resolution]
    else:
        per_frame = _G2_VIDEO_FRAME_LOW if resolution == LOW else IMAGE_TILE_TOKENS
    return frames * per_frame + audio_tokens(seconds)
