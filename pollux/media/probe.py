"""Validate media bytes the way Gemini would before accepting them, and measure what token accounting needs.

`inspect` (a stored file) and `inspect_bytes` (inline data) decode enough of the data to know it is what it claims to
be, enforce Gemini's limits, and return a MediaInfo. Decoders are imported lazily: `from pollux.media import
image_tokens` must stay cheap for engines that never see media.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from ..admission import BUDGET
from .errors import MediaError

Modality = Literal["IMAGE", "AUDIO", "VIDEO", "DOCUMENT", "TEXT"]

# Gemini's limits (reference/semantics.md §8). The pixel bound is ours: Gemini downsamples big images anyway, and a
# bound well under Pillow's own (~89 MP warning, ~179 MP error) stops decompression bombs before they are decoded.
MAX_PDF_PAGES = 1000
MAX_PDF_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac",
                         "audio/ogg", "audio/flac", "audio/mp4"})
VIDEO_TYPES = frozenset({"video/mp4", "video/mpeg", "video/mov", "video/quicktime", "video/avi", "video/x-msvideo",
                         "video/x-flv", "video/mpg", "video/mpegps", "video/webm", "video/wmv", "video/x-ms-wmv",
                         "video/3gpp"})
DOCUMENT_TYPES = frozenset({"application/pdf"})
# Gemini's document-processing list plus the usual names for Markdown, JSON and XML; any other text/* is accepted too.
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/md", "text/html", "text/css", "text/csv", "text/xml",
                        "text/rtf", "text/javascript", "text/x-python", "text/x-typescript", "application/json",
                        "application/xml", "application/x-javascript", "application/javascript",
                        "application/x-python",
                        # Batch Mode's input files: the docs upload them as `jsonl`.
                        "jsonl", "application/jsonl", "application/x-jsonl", "application/jsonlines",
                        "application/x-ndjson", "application/ndjson"})
MIME_ALLOWLIST = IMAGE_TYPES | AUDIO_TYPES | VIDEO_TYPES | DOCUMENT_TYPES | TEXT_TYPES

_WAV_TYPES = frozenset({"audio/wav", "audio/x-wav"})
# Pillow formats we let Pillow pick from. Restricting them keeps Pillow off decoders that shell out (EPS runs
# Ghostscript) or that Gemini would not take. JPEG includes MPO (many phone-camera JPEGs); HEIF needs pillow-heif.
_PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "HEIF")
# FFmpeg demuxers allowed to open audio/video: those for Gemini's types. Left out: image demuxers (FFmpeg would pass a
# JPEG off as a one-frame video) and playlist-like ones (hls, concat, dash) that open files or URLs named in the upload.
_FFMPEG_FORMATS = "mov,matroska,avi,flv,mpeg,mpegts,mpegvideo,asf,wav,mp3,ogg,flac,aiff,aac"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What a file is and how big, in the units Gemini charges by. Fields that do not apply are None."""

    mime_type: str          # normalised: lower case, parameters dropped
    modality: Modality
    size_bytes: int
    width: int | None = None      # images, video
    height: int | None = None
    pages: int | None = None      # PDF
    duration: float | None = None  # seconds: audio, video


def normalize_mime(mime_type: str) -> str:
    """'Text/Plain; charset=utf-8' → 'text/plain'."""
    return mime_type.split(";", 1)[0].strip().lower()


def modality_of(mime_type: str) -> Modality | None:
    """The modality Gemini files this MIME type under, or None when Gemini does not accept it."""
    mime = normalize_mime(mime_type)
    if mime in IMAGE_TYPES:
        return "IMAGE"
    if mime in AUDIO_TYPES:
        return "AUDIO"
    if mime in VIDEO_TYPES:
        return "VIDEO"
    if mime in DOCUMENT_TYPES:
        return "DOCUMENT"
    if mime in TEXT_TYPES or mime.startswith("text/"):
        return "TEXT"
    return None


def is_supported(mime_type: str) -> bool:
    """Whether Gemini accepts this MIME type (case-insensitive, parameters ignored, any text/* accepted)."""
    return modality_of(mime_type) is not None


def inspect(path: Path, mime_type: str) -> MediaInfo:
    """Validate and measure a stored file. Raises MediaError for anything Gemini would refuse."""
    path = Path(path)
    return _inspect(path, path.stat().st_size, mime_type)


def inspect_bytes(data: bytes, mime_type: str) -> MediaInfo:
    """`inspect` for inline data (`inlineData.data`, already base64-decoded)."""
    return _inspect(bytes(data), len(data), mime_type)


# Internals --------------------------------------------------------------------------------------------------------
_Source = Path | bytes


def _open(source: _Source) -> IO[bytes]:
    return source.open("rb") if isinstance(source, Path) else io.BytesIO(source)


def _inspect(source: _Source, size: int, mime_type: str) -> MediaInfo:
    mime = normalize_mime(mime_type)
    modality = modality_of(mime)
    if modality is None:
        raise MediaError(f"Unsupported MIME type: {mime_type!r}. Gemini accepts images (PNG, JPEG, WebP, HEIC, HEIF), "
                         "audio, video, PDF and text files.")
    if size == 0:
        raise MediaError("The file is empty.")
    if modality == "IMAGE":
        width, height = _image(source, mime)
        return MediaInfo(mime, modality, size, width=width, height=height)
    if modality == "DOCUMENT":
        return MediaInfo(mime, modality, size, pages=_pdf(source, size))
    if modality == "TEXT":
        return MediaInfo(mime, modality, size)  # read as UTF-8 with replacement: any bytes will do
    if modality == "AUDIO" and mime in _WAV_TYPES:
        duration = _wav(source)
        if duration is not None:
            return MediaInfo(mime, modality, size, duration=duration)
    duration, width, height = _av(source, mime, want_video=modality == "VIDEO")
    return MediaInfo(mime, modality, size, width=width, height=height, duration=duration)


_heif_registered = False


def register_heif() -> None:
    """Teach Pillow HEIC/HEIF (Gemini accepts them), once."""
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_registered = True


def _image(source: _Source, mime: str) -> tuple[int, int]:
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401  (registers the formats)

    register_heif()
    formats = tuple(f for f in _PILLOW_FORMATS if f in Image.OPEN)
    bad = f"The image could not be decoded as {mime}: the data is damaged, truncated or not an image."
    try:
        with _open(source) as f, Image.open(f, formats=formats) as img:
            width, height = img.size
            # Check the header's size before decoding anything: a few KB of PNG can claim gigapixels.
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaError(f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
                                 f"the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels (a guard against "
                                 "decompression bombs). Downscale it and try again.")
            img.verify()  # checksums and structure, without decoding pixels
        # verify() leaves the image unusable; a fresh open decodes every pixel, which catches truncated data. Pillow
        # holds up to 4 bytes a pixel: a 7000x7000 PNG of 190 KB takes 196 MB, claimed from the memory budget first.
        with BUDGET.held(width * height * 4), _open(source) as f, Image.open(f, formats=formats) as img:
            img.load()
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError(f"The image is too large to decode safely; the limit is "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels (a guard against decompression bombs).") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):  # Pillow's decoders raise all of these
        raise MediaError(bad) from None
    return width, height


def _pdf(source: _Source, size: int) -> int:
    from .documents import PdfDocument

    if size > MAX_PDF_BYTES:
        raise MediaError(f"The document is {size / 2**20:.1f} MB; the limit is {MAX_PDF_BYTES // 2**20} MB.")
    with PdfDocument(source) as doc:
        pages = doc.page_count
        if pages == 0:
            raise MediaError("The document has no pages.")
        if pages > MAX_PDF_PAGES:
            raise MediaError(f"The document has {pages} pages; the limit is {MAX_PDF_PAGES}.")
        doc.load_page(0)  # PDFium repairs broken files on open; parsing a page shows whether anything is left
    return pages


def _wav(source: _Source) -> float | None:
    """Duration of PCM WAV via the stdlib; None when `wave` cannot parse it (float, µ-law, ADPCM: FFmpeg decides)."""
    try:
        with _open(source) as f, wave.open(f, "rb") as w:
            rate, frame_size = w.getframerate(), w.getsampwidth() * w.getnchannels()
            # Count the frames really present: a truncated upload keeps its header's promise of more.
            frames = 0
            while block := w.readframes(_CHUNK // max(frame_size, 1)):
                frames += len(block) // frame_size
    except (wave.Error, EOFError, RuntimeError, struct.error, ValueError):  # `wave` raises all of these on junk
        return None
    if rate <= 0 or frame_size <= 0:
        raise MediaError("The WAV file's header is invalid.")
    if frames == 0:
        raise MediaError("The audio contains no samples.")
    return frames / rate


def _av(source: _Source, mime: str, *, want_video: bool) -> tuple[float, int | None, int | None]:
    """Open with FFmpeg (PyAV), decode the first frame of the main stream, and read the duration."""
    import av

    kind = "video" if want_video else "audio"
    bad = f"The {kind} could not be decoded as {mime}: the data is damaged, truncated or not {kind}."
    try:
        with _open(source) as f, av.open(f, container_options={"format_whitelist": _FFMPEG_FORMATS},
                                         metadata_errors="ignore") as container:
            streams = container.streams.video if want_video else container.streams.audio
            if not streams:
                raise MediaError(f"The file has no {kind} stream.")
            stream = streams[0]
            # One decoded frame (RGB at most, 4 bytes a pixel with its planes' padding): claimed before decoding.
            frame_bytes = (stream.codec_context.width or 0) * (stream.codec_context.height or 0) * 4 if want_video else 0
            with BUDGET.held(frame_bytes):
                if next(container.decode(stream), None) is None:
                    raise MediaError(bad)
            width = stream.codec_context.width if want_video else None
            height = stream.codec_context.height if want_video else None
            duration = _duration(container, stream)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError):
        raise MediaError(bad) from None
    if duration <= 0:
        raise MediaError(f"The {kind} has no length.")
    return duration, width, height


# Containers whose header has no duration, where FFmpeg guesses it from the bit rate (off by 25% on a short MPEG-PS
# clip, more for variable bit rates): their packets are read instead.
_SCAN_FORMATS = frozenset({"mpeg", "mpegvideo", "aac"})


def _duration(container: Any, stream: Any) -> float:
    import av

    if container.format.name not in _SCAN_FORMATS:
        if container.duration is not None and container.duration > 0:
            return float(container.duration / av.time_base)
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            return float(stream.duration * stream.time_base)
    # Read packet timestamps to the end (demuxing only, no decoding): first timestamp to last timestamp + its length.
    container.seek(0)
    first = end = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            continue
        t = float(packet.pts * packet.time_base)
        t_end = t + float((packet.duration or 0) * packet.time_base)
        first = t if first is None else min(first, t)
        end = t_end if end is None else max(end, t_end)
    if first is None or end is None or not math.isfinite(end - first):
        return 0.0
    return end - first
