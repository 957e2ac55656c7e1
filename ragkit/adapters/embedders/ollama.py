"""Embeddings from an Ollama server (``POST /api/embed``, batched input)."""

from __future__ import annotations

import anyio

from ragkit.adapters.embedders.remote import RemoteEmbedder
from ragkit.adapters.ollama_client import DEPENDENCY, LoopBoundClient, translating
from ragkit.core.errors import ConfigurationError

BREAKER = "ollama_embedding"


class OllamaEmbedder(RemoteEmbedder):
    """Implements ``ragkit.core.types.Embedder`` through the official ``ollama`` async client (the
    batching, the dimension and the checks on what comes back: ``RemoteEmbedder``)."""

    breaker_name = BREAKER
    dependency = DEPENDENCY

    def __init__(
        self,
        host: str,
        model: str,
        timeout_s: float,
        batch_size: int = 64,
        dimension: int | None = None,
        max_tokens: int = 512,
    ) -> None:
        if not model:
            raise ConfigurationError("OllamaEmbedder needs a model name (OLLAMA_EMBED_MODEL)")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        super().__init__(model, timeout_s, batch_size=batch_size, dimension=dimension, max_tokens=max_tokens)
        self.host = host
        self.name = f"ollama:{model}"
        self._client = LoopBoundClient(host, timeout_s)

    @property
    def where(self) -> str:
        return f"Ollama at {self.host}"

    async def _request(self, batch: list[str]) -> list[list[float]]:
        with translating(host=self.host, model=self.model, role="embedding", timeout_s=self.timeout_s):
            # httpx's timeout bounds each phase; this bounds the whole request, so connect + write
            # + a trickling read cannot add up to several times the configured budget.
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().embed(model=self.model, input=batch)
            return [[float(x) for x in vector] for vector in response.embeddings]

    async def aclose(self) -> None:
        await self._client.aclose()
