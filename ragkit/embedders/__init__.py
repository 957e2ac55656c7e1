"""Embedders: text to dense vectors, each matching ``ragkit.types.Embedder``.

``LocalEmbedder`` runs all-MiniLM-L6-v2 in process (the default, no server needed);
``OllamaEmbedder`` asks an Ollama server. Heavy libraries (torch) load only when used.
"""

from ragkit.embedders.local import LocalEmbedder
from ragkit.embedders.ollama import OllamaEmbedder

__all__ = ["LocalEmbedder", "OllamaEmbedder"]
