"""The pictures Gemini's image models answer generateContent with: their pixel sizes and what they bill.

`imageConfig.aspectRatio` picks a row of the model family's table, `imageConfig.imageSize` a column (Gemini 3 only).
The tables are the image-generation docs': Gemini 2.5 Flash Image renders about a megapixel and bills 1290 output
tokens per picture; Gemini 3 Pro Image renders 1K, 2K or 4K and bills 1120 tokens at 1K and 2K, 2000 at 4K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ModelSpec
from ..errors import ApiError

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")

# Gemini 2.5 Flash Image: one size per aspect ratio, 1290 tokens each.
FLASH_SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
               "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
FLASH_TOKENS = 1290

# Gemini 3 Pro Image: the 1K sizes; 2K and 4K are these doubled and quadrupled.
PRO_SIZES = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
             "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672)}
PRO_TOKENS = {"1K": 1120, "2K": 1120, "4K": 2000}
_SCALE = {"1K": 1, "2K": 2, "4K": 4}


@dataclass(frozen=True)
class OutputImage:
    width: int
    height: int
    tokens: int  # output tokens Gemini bills for one picture of this size


def sizes_offered(model: ModelSpec) -> tuple[str, ...]:
    """The imageSize values a model takes. Gemini 3 image models (they think by level, as all of Gemini 3 does) render
    1K, 2K and 4K; Gemini 2.5 Flash Image renders 1K only."""
    return IMAGE_SIZES if model.thinking_control == "level" else ("1K",)


def output_image(model: ModelSpec, aspect_ratio: str | None, image_size: str | None,
                 source: tuple[int, int] | None = None) -> OutputImage:
    """The picture for the request's imageConfig; without an aspect ratio, the one nearest the input picture
    (`source`, an edit), else square, as Gemini does. Values Gemini does not take are a 400."""
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        raise ApiError.invalid(f"Unsupported aspect ratio \"{aspect_ratio}\" in generation_config.image_config: use "
                               f"one of {', '.join(ASPECT_RATIOS)}.")
    offered = sizes_offered(model)
    if image_size is not None and image_size not in offered:
        # Gemini takes an upper-case K only: "1k" is refused as well.
        raise ApiError.invalid(f"Unsupported image size \"{image_size}\" in generation_config.image_config for "
                               f"{model.name}: use {' or '.join(offered)}.")
    ratio = aspect_ratio or (nearest_ratio(*source) if source else "1:1")
    if offered == ("1K",):
        width, height = FLASH_SIZES[ratio]
        return OutputImage(width, height, FLASH_TOKENS)
    size = image_size or "1K"
    width, height = PRO_SIZES[ratio]
    return OutputImage(width * _SCALE[size], height * _SCALE[size], PRO_TOKENS[size])


def nearest_ratio(width: int, height: int) -> str:
    """The aspect ratio of the table closest to width:height (compared on a log scale, so 2:1 and 1:2 are as far
    from 1:1)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(n) for n in ratio.split(":"))
        return abs(math.log(w / h) - target)

    return min(ASPECT_RATIOS, key=distance)
