"""Embedders: text to dense vectors, each matching ``ragkit.core.types.Embedder``.

``OnnxEmbedder`` runs all-MiniLM-L6-v2 in process on ONNX Runtime (the default, no server needed;
``onnx_export`` makes its model file once from the shipped weights); ``LocalEmbedder`` runs the same
weights on torch through sentence-transformers, with the same vectors; ``OllamaEmbedder`` asks an
Ollama server. Heavy libraries (onnxruntime, torch) load only when used.
"""

from ragkit.adapters.embedders.local import LocalEmbedder
from ragkit.adapters.embedders.ollama import OllamaEmbedder
from ragkit.adapters.embedders.onnx import OnnxEmbedder

__all__ = ["LocalEmbedder", "OllamaEmbedder", "OnnxEmbedder"]
