"""GET /v1beta/openai/models and /models/{id}, in OpenAI's shape (ids keep Gemini's `models/` prefix)."""

from __future__ import annotations

from ..config import Settings, find_model


def model_json(model_id: str) -> dict:
    return {"id": f"models/{model_id}", "object": "model", "created": 0, "owned_by": "google"}


def list_models(settings: Settings) -> dict:
    return {"object": "list", "data": [model_json(m) for m in settings.models]}


def get_model(settings: Settings, name: str, version: str) -> dict:
    """`gemini-2.0-flash`, `models/gemini-2.0-flash` or its percent-encoded form (already decoded in the path)."""
    return model_json(find_model(settings, name, version, "get").id)
