"""Engine `openai`: OpenAI-compatible model servers (vLLM, SGLang, llama.cpp, Ollama) as upstreams."""

from .embed import UpstreamEmbedder
from .engine import UpstreamEngine
from .pool import UpstreamOptions

__all__ = ["UpstreamEmbedder", "UpstreamEngine", "UpstreamOptions"]
