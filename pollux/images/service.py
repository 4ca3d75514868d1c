"""Images from the built-in model: real, decodable PNGs, the same for the same prompt, size and index.

There is no image model in-process yet; the emulator paints a deterministic abstract picture (colours and shapes
drawn from the prompt's hash, with the prompt written on it) so that apps can decode, size-check and store what they
get back.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw

from ..config import ModelSpec
from ..errors import ApiError

MAX_SIDE = 2048
MAX_IMAGES = 4  # Imagen's sampleCount range is 1-4
# Imagen's aspect ratios and the sizes it renders them at.
ASPECT_SIZES = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408),
                "16:9": (1408, 768)}


class ImageService:
    async def generate(self, model: ModelSpec, prompt: str, n: int, size: tuple[int, int]) -> list[bytes]:
        if not prompt or not prompt.strip():
            raise ApiError.invalid("The prompt is empty: describe the image to generate.")
        if not 1 <= n <= MAX_IMAGES:
            raise ApiError.invalid(f"The number of images must be between 1 and {MAX_IMAGES}; got {n}.")
        width, height = size
        if not (64 <= width <= MAX_SIDE and 64 <= height <= MAX_SIDE):
            raise ApiError.invalid(f"Image size {width}x{height} is out of range: each side 64 to {MAX_SIDE} pixels.")
        # Drawing and PNG encoding are CPU work: off the event loop.
        return await asyncio.to_thread(lambda: [paint(model.id, prompt, i, width, height) for i in range(n)])


def parse_size(size: str | None) -> tuple[int, int]:
    """OpenAI's `size` ("1024x1024"); absent means 1024x1024."""
    if not size or size == "auto":
        return ASPECT_SIZES["1:1"]
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isascii() or not width.isdigit() or not height.isascii() or not height.isdigit():
        raise ApiError.invalid(f"Invalid size \"{size}\": use WIDTHxHEIGHT, e.g. 1024x1024.")
    return int(width), int(height)


def paint(model: str, prompt: str, index: int, width: int, height: int) -> bytes:
    seed = int.from_bytes(hashlib.blake2b(f"{model}|{index}|{prompt}".encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        draw.line([(0, y), (width, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(rng.randint(4, 9)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(width // 10, width // 2), y0 + rng.randint(height // 10, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    draw.multiline_text((16, 16), "\n".join(textwrap.wrap(prompt, width=max(width // 12, 10))[:6]), fill="white")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
