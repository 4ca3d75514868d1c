"""Gemini's token accounting for media, shared by every engine so that usage reads the same whichever model answers."""

from __future__ import annotations

import math

IMAGE_TILE_TOKENS = 258   # one 768×768 tile, or a whole image up to 384×384 (Gemini 2.x)
GEMINI_3_IMAGE_TOKENS = 1120  # Gemini 3 at the default media resolution


def image_tokens(width: int, height: int, model: str) -> int:
    """Tokens Gemini charges for one image of this size (reference/semantics.md §7)."""
    if model.startswith("gemini-3"):
        return GEMINI_3_IMAGE_TOKENS
    if width <= 384 and height <= 384:
        return IMAGE_TILE_TOKENS
    unit = max(math.floor(min(width, height) / 1.5), 1)
    return math.ceil(width / unit) * math.ceil(height / unit) * IMAGE_TILE_TOKENS
