"""Embedders: text to dense vectors, each matching ``ragkit.core.types.Embedder``.

``LocalEmbedder`` runs all-MiniLM-L6-v2 in process (the default, no server needed);
``OllamaEmbedder`` asks an Ollama server. Heavy libraries (torch) load only when used.
"""

from ragkit.adapters.embedders.local import LocalEmbedder
from ragkit.adapters.embedders.ollama import OllamaEmbedder

__all__ = ["LocalEmbedder", "OllamaEmbedder"]
