"""The emulator's pictures: real, decodable PNGs, the same for the same model, prompt, size and index.

A deterministic abstract picture (colours and shapes drawn from the prompt's hash, with the prompt written on it), so
that apps can decode, size-check and store what they get back without any image model. A request's seed, when it
sets one, changes the picture as it changes a text answer.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw


def paint(model: str, prompt: str, index: int, width: int, height: int, seed: int | None = None) -> bytes:
    # Without a seed the key is what it always was, so earlier pictures stay the same.
    key = f"{model}|{index}|{prompt}" if seed is None else f"{model}|{index}|{seed}|{prompt}"
    rng = random.Random(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
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
