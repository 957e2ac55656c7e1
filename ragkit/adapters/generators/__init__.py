"""Generators: answers from a question and numbered passages, each matching ``ragkit.core.types.Generator``.

``ExtractiveGenerator`` quotes the best-matching sentences (no model; the offline default and the
fallback); ``OllamaGenerator`` asks an Ollama chat model with the prompt from ``prompt.py``.
"""

from ragkit.adapters.generators.extractive import ExtractiveGenerator
from ragkit.adapters.generators.ollama import OllamaGenerator
from ragkit.adapters.generators.prompt import NOTHING_FOUND, build_messages

__all__ = ["NOTHING_FOUND", "ExtractiveGenerator", "OllamaGenerator", "build_messages"]
