"""Wire shape of the Model resource and of models.list pages."""

from __future__ import annotations

from typing import Any

from ..config import ModelSpec


def model_json(m: ModelSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": m.name,
        "version": m.version,
        "displayName": m.display_name,
        "description": m.description,
        "inputTokenLimit": m.input_token_limit,
        "outputTokenLimit": m.output_token_limit,
        "supportedGenerationMethods": list(m.methods),
    }
    # Sampling fields are absent for models that take no sampling (embeddings), as on the real API.
    for key, value in (("temperature", m.temperature), ("topP", m.top_p), ("topK", m.top_k),
                       ("maxTemperature", m.max_temperature)):
        if value is not None:
            out[key] = value
    if m.thinking:
        out["thinking"] = True
    return out
