"""A media segment's prompt tokens: the same for every engine, so usage reads the same whichever model answers."""

from __future__ import annotations

from ..media.tokens import audio_tokens, image_tokens, is_gemini_3, pdf_page_tokens, video_tokens
from .base import Media


def clip_seconds(media: Media) -> float:
    """The length of audio or video that is read: the whole, or the videoMetadata clip."""
    duration = (media.info.duration if media.info else None) or 0.0
    if media.clip is None:
        return duration
    start, end = media.clip
    end = duration if end is None else min(end, duration)
    return max(end - start, 0.0)


def media_tokens(media: Media, model: str) -> tuple[str, int]:
    """(usage modality, tokens) for a segment. Gemini 3 reports PDF pages under IMAGE."""
    info = media.info
    assert info is not None, "media reaches the engines measured"
    if media.modality == "IMAGE":
        return "IMAGE", image_tokens(info.width or 0, info.height or 0, model, media.resolution)
    if media.modality == "DOCUMENT":
        pages = (info.pages or 0) * pdf_page_tokens(model, media.resolution)
        return ("IMAGE" if is_gemini_3(model) else "DOCUMENT"), pages
    if media.modality == "AUDIO":
        return "AUDIO", audio_tokens(clip_seconds(media))
    return "VIDEO", video_tokens(clip_seconds(media), model, media.fps or 1.0, media.resolution)
