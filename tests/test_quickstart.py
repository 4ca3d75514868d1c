"""The docs' quickstart examples, unchanged, with only GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY set."""

from __future__ import annotations


def test_python_quickstart(client):
    from google import genai  # noqa: F401  (the example's own import)

    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="Explain how AI works in a few words"
    )
    assert response.text and "Explain how AI works in a few words" in response.text
    assert response.usage_metadata.prompt_token_count > 0
    assert response.candidates[0].finish_reason.name == "STOP"
