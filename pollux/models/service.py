"""models.list and models.get over the configured catalogue."""

from __future__ import annotations

import base64
from typing import Any

from ..config import Settings, find_model
from ..errors import ApiError
from ..wire import page_limit
from .protocol import model_json


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"models:{offset}".encode()).decode().rstrip("=")


def _offset(token: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(":")
        if kind == "models" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ApiError.invalid("Invalid page token.")


class ModelService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list(self, page_size: int | None, page_token: str | None) -> dict[str, Any]:
        limits = self.settings.limits
        size = page_limit(page_size, limits.models_page_default, limits.models_page_max, "ListModelsRequest")
        start = _offset(page_token) if page_token else 0
        models = list(self.settings.models.values())
        page = models[start:start + size]
        out: dict[str, Any] = {"models": [model_json(m) for m in page]}
        # Never a token with an empty page after it: the Python SDK's pager fails on one.
        if start + size < len(models):
            out["nextPageToken"] = _token(start + size)
        return out

    def get(self, name: str, version: str) -> dict[str, Any]:
        return model_json(find_model(self.settings, name, version, "get"))
