"""Media prompt tokens as Gemini counts them (reference/semantics.md §7): the service adds them to what an engine
counts of the text, so that usage reads the same whichever in-process engine answers. Upstream servers count what
they read themselves (`Capabilities.counts_media`)."""

from __future__ import annotations

from ..engines.base import GenerateRequest, Media, TokenCount
from ..media.tokens import audio_tokens, image_tokens, is_gemini_3, pdf_page_tokens, video_tokens


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
        return "AUDIO", audio_tokens(media.clip_seconds())
    return "VIDEO", video_tokens(media.clip_seconds(), model, media.fps or 1.0, media.resolution)


def with_media(text: TokenCount, request: GenerateRequest) -> TokenCount:
    """An engine's count of the prompt's text, with the media of the prompt added by modality."""
    counts = dict(text.by_modality)
    for turn in request.turns:
        for seg in turn.segments:
            if isinstance(seg, Media):
                modality, n = media_tokens(seg, request.model)
                counts[modality] = counts.get(modality, 0) + n
    for seg in request.system:
        if isinstance(seg, Media):
            modality, n = media_tokens(seg, request.model)
            counts[modality] = counts.get(modality, 0) + n
    return TokenCount({k: v for k, v in counts.items() if v} or {"TEXT": 0})
