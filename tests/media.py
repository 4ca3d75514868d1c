"""Sample media built for the tests, so that they need nothing beside the repository.

Each file stands in for one of the google-genai SDK's sample files (the names are kept, so the tests read as before)
and is built deterministically, with the facts the tests check known from how it was built:

- ``story.pdf``: one US Letter page (612x792 pt) of Helvetica text, written by hand; its Info dictionary (stored
  uncompressed) has the title ``STORY_TITLE``, the page's first line is that title and the rest is ``STORY``.
- ``story.txt``: the same story as UTF-8 text.
- ``google.png``: a 272x92 RGBA logo-like PNG.  ``bridge1.png``: a 768x1408 RGB PNG.
- ``dog.jpg``: a 1408x768 baseline JPEG.  ``man.jpg``: a 1408x768 progressive JPEG.
- ``a-man-and-a-dog.png``: an empty file.
- ``voice_sample.wav``: ``WAV_SECONDS`` of 16-bit mono PCM at ``WAV_RATE`` Hz (a gliding tone in syllables).
- ``pixel.m4a``: ``M4A_SECONDS`` of mono AAC in an MP4 (M4A) container, no video.
- ``animal.mp4``: ``VIDEO_FRAMES`` frames of H.264 (MPEG-4 part 2 where the FFmpeg build lacks libx264) at
  ``VIDEO_SIZE`` and ``VIDEO_FPS``, i.e. ``VIDEO_SECONDS`` seconds, with a stereo AAC tone of the same length. A bar
  moves across the picture, so no two sampled frames are alike. The 'moov' box is written last (FFmpeg's default), so
  a truncated copy cannot be decoded.

``sample(name)`` builds a file on first use into a temporary directory of this process (removed at exit) and returns
its path; the builders themselves return bytes. Builds use Pillow, the stdlib ``wave`` module and PyAV (``av``).
"""

from __future__ import annotations

import atexit
import functools
import io
import math
import shutil
import struct
import tempfile
import textwrap
import wave
from array import array
from collections.abc import Callable
from pathlib import Path

# Facts about the files, for the tests' assertions -----------------------------------------------------------------
STORY_TITLE = "The Whispering Woods"
STORY = (
    "In the heart of Eldergrove, where the oldest trees leaned together like gossiping neighbours, there lived a "
    "girl named Elara who could hear the woods whisper. Most villagers heard only wind in the branches, but Elara "
    "heard words: the birches complained about the cold, the oaks told long stories about kings who had rested in "
    "their shade, and the small pines at the edge of the clearing giggled whenever a fox ran past. One autumn "
    "morning the whispers changed. Every tree, from the tallest beech to the youngest hazel, was saying the same "
    "thing, over and over, in a voice as thin as frost: the spring is failing. Elara packed bread, a candle and her "
    "grandmother's copper compass, and followed the murmur deeper into the forest than anyone from the village had "
    "gone in a hundred years. She crossed a stream that ran uphill, slept beneath a willow that hummed lullabies, and "
    "on the third day found the spring itself, choked with fallen leaves and a single black stone. When she lifted "
    "the stone, the water leapt up bright and cold, and the whole forest sighed with relief. On the walk home the "
    "trees were quiet, but every branch she passed bowed a little, and Elara knew that Eldergrove would remember her "
    "long after the village had forgotten."
)
PAGE_SIZE = (612, 792)  # US Letter, in points

PNG_SIZE = (272, 92)
BRIDGE_SIZE = (768, 1408)
JPEG_SIZE = (1408, 768)

WAV_RATE = 24_000
WAV_FRAMES = 49_500
WAV_SECONDS = WAV_FRAMES / WAV_RATE  # 2.0625 s, exact in binary

M4A_RATE = 44_100
M4A_SECONDS = 4.0

VIDEO_SIZE = (1280, 720)
VIDEO_FPS = 24
VIDEO_FRAMES = 66
VIDEO_SECONDS = VIDEO_FRAMES / VIDEO_FPS  # 2.75 s
VIDEO_AUDIO_RATE = 44_100


# Documents ----------------------------------------------------------------------------------------------------------
def _pdf_string(text: str) -> bytes:
    return b"(" + text.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def text_pdf(title: str, body: str, size: tuple[int, int] = PAGE_SIZE) -> bytes:
    """A one-page PDF, written by hand: `title` in 18 pt Helvetica-Bold, then `body` in 11 pt Helvetica wrapped at
    about 84 characters a line. The title is also the Info dictionary's /Title. Text must be Latin-1."""
    return pages_pdf(title, [(title, body)], size)


def pages_pdf(title: str, pages: list[tuple[str, str]], size: tuple[int, int] = PAGE_SIZE) -> bytes:
    """A PDF of one page per (heading, body), each laid out as `text_pdf`'s page; `title` is the document's /Title."""
    width, height = size
    fonts = (b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
             b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    # Objects: 1 catalog, 2 pages, 3 and 4 the fonts, 5 the info, then a page and its contents for each page.
    first = 6
    kids = b" ".join(b"%d 0 R" % (first + 2 * i) for i in range(len(pages)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(pages), *fonts,
               b"<< /Title " + _pdf_string(title) + b" /Producer (Pollux tests) >>"]
    for i, (heading, body) in enumerate(pages):
        ops = [b"BT", b"/F2 18 Tf", b"72 %d Td" % (height - 72), _pdf_string(heading) + b" Tj",
               b"/F1 11 Tf", b"15 TL", b"0 -30 Td"]
        for line in textwrap.wrap(body, 84):
            ops += [_pdf_string(line) + b" Tj", b"T*"]
        ops.append(b"ET")
        content = b"\n".join(ops)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (width, height, first + 2 * i + 1))
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % off for off in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, xref))
    return out.getvalue()


def story_pdf() -> bytes:
    return text_pdf(STORY_TITLE, STORY)


def story_txt() -> bytes:
    return f"{STORY_TITLE}\n\n{STORY}\n".encode()


# Images -------------------------------------------------------------------------------------------------------------
def _save(image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]):
    """An RGB image shading from `top` to `bottom`."""
    from PIL import Image

    mask = Image.linear_gradient("L").resize(size)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def logo_png() -> bytes:
    """272x92 RGBA: six coloured glyph-like shapes on a transparent background (google.png's size and mode)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", PNG_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    colours = [(66, 133, 244), (234, 67, 53), (251, 188, 5), (66, 133, 244), (52, 168, 83), (234, 67, 53)]
    for i, colour in enumerate(colours):
        x = 8 + i * 44
        if i % 3 == 0:
            draw.ellipse((x, 20, x + 38, 78), outline=colour + (255,), width=9)
        elif i % 3 == 1:
            draw.rounded_rectangle((x + 4, 14, x + 30, 80), radius=10, fill=colour + (255,))
        else:
            draw.polygon([(x, 80), (x + 19, 16), (x + 38, 80)], fill=colour + (230,))
    return _save(image, "PNG")


def scene(size: tuple[int, int], seed: int):
    """An RGB picture: a sky gradient, ground, and a few shapes placed by `seed`."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    width, height = size
    image = _gradient(size, (90, 150, 230), (235, 225, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(70, 120, 60))
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(20, max(21, min(size) // 5))
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour, outline=(20, 20, 20), width=3)
    for x in range(0, width, 64):  # a fence: fine detail for the encoders
        draw.line((x, height * 2 // 3 - 40, x + 8, height), fill=(120, 80, 40), width=5)
    return image


def bridge_png() -> bytes:
    return _save(scene(BRIDGE_SIZE, seed=1), "PNG")


def dog_jpg() -> bytes:
    return _save(scene(JPEG_SIZE, seed=2), "JPEG", quality=90)


def man_jpg() -> bytes:
    return _save(scene(JPEG_SIZE, seed=3), "JPEG", quality=85, progressive=True)


# Audio and video ----------------------------------------------------------------------------------------------------
def voice_wav(frames: int = WAV_FRAMES, rate: int = WAV_RATE) -> bytes:
    """16-bit mono PCM: a tone gliding between 150 and 300 Hz, in four 'syllables' a second."""
    samples, phase = array("h"), 0.0
    for n in range(frames):
        t = n / rate
        phase += 2 * math.pi * (225 + 75 * math.sin(2 * math.pi * 0.7 * t)) / rate
        envelope = abs(math.sin(2 * math.pi * 2 * t))
        samples.append(round(12000 * envelope * math.sin(phase)))
    if samples.itemsize != 2:
        raise RuntimeError("array('h') is not 16-bit here")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return buf.getvalue()


def _encode_tone(out, stream, seconds: float, rate: int, channels: int, hz: float = 440.0) -> None:
    """Encode `seconds` of a sine tone into an AAC `stream` of container `out`, flushing it at the end."""
    import av
    import numpy as np

    layout = "mono" if channels == 1 else "stereo"
    total, pts, size = round(seconds * rate), 0, stream.codec_context.frame_size or 1024
    while pts < total:
        n = min(size, total - pts)
        tone = (0.2 * np.sin(2 * np.pi * hz * np.arange(pts, pts + n) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone] * channels), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, pts
        out.mux(stream.encode(frame))
        pts += n
    out.mux(stream.encode())


def m4a(seconds: float = M4A_SECONDS, rate: int = M4A_RATE) -> bytes:
    """Mono AAC in an MP4 container (.m4a), no video stream."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod" if "ipod" in av.formats_available else "mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        _encode_tone(out, stream, seconds, rate, 1, hz=330.0)
    return buf.getvalue()


def video_codec() -> str:
    """libx264 when the FFmpeg build has it (PyAV's wheels do), else FFmpeg's own MPEG-4 part 2 encoder."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def mp4(frames: int = VIDEO_FRAMES, fps: int = VIDEO_FPS, size: tuple[int, int] = VIDEO_SIZE,
        audio_rate: int | None = VIDEO_AUDIO_RATE) -> bytes:
    """A clip of `frames` frames at `fps`: a shifting colour gradient with a yellow bar moving right, and (unless
    `audio_rate` is None) a stereo AAC tone exactly as long as the video."""
    import av
    import numpy as np

    width, height = size
    base = np.empty((height, width, 3), np.uint8)
    base[..., 0] = (np.arange(width) * 255 // width).astype(np.uint8)[None, :]
    base[..., 1] = (np.arange(height) * 255 // height).astype(np.uint8)[:, None]
    base[..., 2] = 128
    codec = video_codec()
    options = {"preset": "ultrafast", "threads": "1"} if codec == "libx264" else {}  # one thread: same bytes each run
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream(codec, rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if audio_rate is not None:
            audio = out.add_stream("aac", rate=audio_rate)
            audio.layout = "stereo"
        bar = max(8, width // 10)
        for i in range(frames):
            picture = np.roll(base, i * width // 160, axis=1)
            x = (i * (width - bar)) // max(frames - 1, 1)
            picture[height * 2 // 5:height * 3 // 5, x:x + bar] = (250, 250, 40)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            _encode_tone(out, audio, frames / fps, audio_rate, 2)
    return buf.getvalue()


# The files, by their old names ----------------------------------------------------------------------------------------
BUILDERS: dict[str, Callable[[], bytes]] = {
    "story.pdf": story_pdf,
    "story.txt": story_txt,
    "google.png": logo_png,
    "bridge1.png": bridge_png,
    "dog.jpg": dog_jpg,
    "man.jpg": man_jpg,
    "a-man-and-a-dog.png": lambda: b"",
    "voice_sample.wav": voice_wav,
    "pixel.m4a": m4a,
    "animal.mp4": mp4,
}


@functools.cache
def _directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pollux-media-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def sample(name: str) -> Path:
    """The path of the sample file `name` (a key of BUILDERS), built on first use in this process."""
    path = _directory() / name
    path.write_bytes(BUILDERS[name]())
    return path


def write_all(directory: Path) -> Path:
    """Build every sample file into `directory` (e.g. to look at them); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        (directory / name).write_bytes(build())
    return directory


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/media.py OUTDIR")
    for entry in sorted(write_all(Path(sys.argv[1])).iterdir()):
        print(f"{entry.stat().st_size:>9}  {entry}")
