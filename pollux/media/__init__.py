"""Media as Gemini sees it: which types it accepts, whether bytes decode, and what they cost in tokens.

Light to import: the decoders (Pillow, pypdfium2, PyAV) load on first use.
"""

from __future__ import annotations

from .documents import PdfDocument
from .errors import MediaError
from .probe import (MIME_ALLOWLIST, MediaInfo, Modality, inspect, inspect_bytes, is_supported, modality_of,
                    normalize_mime)
from .tokens import audio_tokens, image_tokens, pdf_page_tokens, video_frames, video_tokens
from .video import sample_frames

__all__ = ["MIME_ALLOWLIST", "MediaError", "MediaInfo", "Modality", "PdfDocument", "audio_tokens", "image_tokens",
           "inspect", "inspect_bytes", "is_supported", "modality_of", "normalize_mime", "pdf_page_tokens",
           "sample_frames", "video_frames", "video_tokens"]
