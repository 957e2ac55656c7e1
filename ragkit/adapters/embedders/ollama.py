"""Embeddings from an Ollama server (``POST /api/embed``, batched input)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import anyio

from ragkit.adapters.embedders.local import checked_texts, count_wordpieces
from ragkit.adapters.ollama_client import DEPENDENCY, LoopBoundClient, translating
from ragkit.core.errors import ConfigurationError, DependencyUnavailable

BREAKER = "ollama_embedding"
_PROBE_TEXT = "dimension probe"
_WORDS = re.compile(r"\S+")
# Subword tokenizers split English prose into ~1.3 tokens per whitespace word on average.
_TOKENS_PER_WORD = 1.3


class OllamaEmbedder:
    """Implements ``ragkit.core.types.Embedder`` through the official ``ollama`` async client.

    ``dimension`` is either given or learned from the model by embedding a probe text on first
    use; call ``await ensure_dimension()`` at startup if something reads ``dimension`` before
    the first ``embed``.
    """

    breaker_name = BREAKER

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
        if dimension is not None and dimension < 1:
            raise ConfigurationError(f"dimension must be positive, got {dimension}")
        self.host = host
        self.model = model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.name = f"ollama:{model}"
        self._dimension = dimension
        self._client = LoopBoundClient(host, timeout_s)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise ConfigurationError(
                f"the dimension of Ollama model '{self.model}' is not known yet: await "
                f"ensure_dimension() first, or configure it"
            )
        return self._dimension

    async def ensure_dimension(self) -> int:
        """The model's vector size, embedding one probe text on the first call if not configured."""
        if self._dimension is None:
            # Two concurrent first calls may both probe; harmless, and cheaper than a lock that
            # would have to be bound to one event loop.
            await self._embed_batch([_PROBE_TEXT])
        assert self._dimension is not None
        return self._dimension

    async def probe(self) -> None:
        """Embed one short text: the cheapest request that shows the host answers with this model
        (and learns the dimension, if it is not known yet). Health checks bound it with a short timeout."""
        await self._embed_batch([_PROBE_TEXT])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = checked_texts(texts)
        vectors: list[list[float]] = []
        # Sequential batches: Ollama runs one embedding batch per model at a time anyway, and
        # concurrent requests would only queue there (and count against OLLAMA_MAX_QUEUE).
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        with translating(host=self.host, model=self.model, role="embedding", timeout_s=self.timeout_s):
            # httpx's timeout bounds each phase; this bounds the whole request, so connect + write
            # + a trickling read cannot add up to several times the configured budget.
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().embed(model=self.model, input=batch)
            vectors = [[float(x) for x in vector] for vector in response.embeddings]
        self._check(batch, vectors)
        return vectors

    def _check(self, batch: list[str], vectors: list[list[float]]) -> None:
        if len(vectors) != len(batch):
            raise DependencyUnavailable(
                DEPENDENCY,
                f"Ollama at {self.host} returned {len(vectors)} embeddings for {len(batch)} texts "
                f"(model '{self.model}')",
            )
        sizes = {len(vector) for vector in vectors}
        if len(sizes) != 1 or 0 in sizes:
            raise DependencyUnavailable(
                DEPENDENCY,
                f"Ollama at {self.host} returned embeddings of sizes {sorted(sizes)} (model '{self.model}')",
            )
        size = sizes.pop()
        if self._dimension is None:
            self._dimension = size
        elif size != self._dimension:
            # Not an outage: the configuration names a dimension this model does not produce, or the
            # model behind the name was replaced (`ollama pull` of a new version). Storing such
            # vectors would corrupt the collection, so refuse loudly.
            raise ConfigurationError(
                f"Ollama model '{self.model}' at {self.host} returns {size}-dimensional vectors, "
                f"but {self._dimension} are expected; fix the configured dimension or the model"
            )

    def count_tokens(self, text: str) -> int:
        """An estimate: Ollama's API exposes no tokenizer, and the model's own may differ.

        MiniLM's WordPiece tokenizer ships with ragkit and loads in milliseconds without torch;
        common Ollama embedding models (nomic-embed-text, mxbai-embed-large, bge) use BERT-style
        WordPiece vocabularies too, so its counts are close. Without it, fall back to the usual
        ~1.3 tokens per word.
        """
        try:
            return count_wordpieces(text)
        except ConfigurationError:
            # Only a missing tokenizer falls back; bad text (InvalidInput) is refused as the local
            # embedder refuses it, and as this embedder's embed() would.
            return math.ceil(len(_WORDS.findall(text)) * _TOKENS_PER_WORD)

    async def aclose(self) -> None:
        await self._client.aclose()
