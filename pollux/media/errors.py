"""The one error this package raises for bad media: a ValueError whose message can be shown to the client as is."""

from __future__ import annotations


class MediaError(ValueError):
    """Media that Gemini would refuse: undecodable, over a limit, encrypted, or of an unsupported type.

    The message is user-facing (routes turn it into a 400 INVALID_ARGUMENT), so it says what is wrong and, where there
    is one, what the limit is.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
