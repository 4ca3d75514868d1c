"""Image generation: OpenAI's `images/generations` and Imagen's native `:predict`, on one service."""
