"""The OpenAI-compatible surface under /v1beta/openai/: the same services as the native routes, OpenAI's wire."""
