"""Media as Gemini sees it: which types it accepts, whether bytes decode, and what they cost in tokens.

Light to import: decoders (Pillow, pypdfium2, PyAV) load on first use, so engines that only need `image_tokens` pay
nothing for them. `PdfDocument` and `sample_frames` are loaded lazily on attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import MediaError
from .probe import (
    MIME_ALLOWLIST,
    MediaInfo,
    Modality,
    inspect,
    inspect_bytes,
    is_supported,
    modality_of,
    normalize_mime,
)
from .tokens import (
    audio_tokens,
    image_tokens,
    pdf_page_tokens,
    video_frames,
    video_tokens,
)

if TYPE_CHECKING:
    from .documents import PdfDocument
    from .video import sample_frames

__all__ = ["MIME_ALLOWLIST", "MediaError", "MediaInfo", "Modality", "PdfDocument", "audio_tokens", "image_tokens",
           "inspect", "inspect_bytes", "is_supported", "modality_of", "normalize_mime", "pdf_page_tokens",
           "sample_frames", "video_frames", "video_tokens"]


def __getattr__(name: str) -> Any:
    if name == "PdfDocument":
        from .documents import PdfDocument
        return PdfDocument
    if name == "sample_frames":
        from .video import sample_frames
        return sample_frames
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
