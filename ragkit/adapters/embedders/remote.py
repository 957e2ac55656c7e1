"""What every embedder on a server shares (Ollama, OpenAI-compatible): sequential batches, the
dimension learned from the first answer, the checks on what came back, and a token estimate.

A subclass says how to ask its server for one batch (``_request``) and how to name it in errors
(``where``); everything else is here, once.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from ragkit.adapters.embedders.local import checked_texts, count_wordpieces
from ragkit.core.errors import ConfigurationError, DependencyUnavailable

PROBE_TEXT = "dimension probe"
_WORDS = re.compile(r"\S+")
# Subword tokenizers split English prose into ~1.3 tokens per whitespace word on average.
_TOKENS_PER_WORD = 1.3


class RemoteEmbedder(ABC):
    """``dimension`` is either given or learned from the model by embedding a probe text on first
    use; call ``await ensure_dimension()`` at startup if something reads ``dimension`` before the
    first ``embed``."""

    dependency: str  # the name errors carry ("ollama", "openai")

    def __init__(
        self, model: str, timeout_s: float, *, batch_size: int, dimension: int | None, max_tokens: int
    ) -> None:
        if dimension is not None and dimension < 1:
            raise ConfigurationError(f"dimension must be positive, got {dimension}")
        self.model = model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._dimension = dimension

    @property
    @abstractmethod
    def where(self) -> str:
        """The server, as error messages name it ("Ollama at http://…")."""

    @abstractmethod
    async def _request(self, batch: list[str]) -> list[list[float]]:
        """One batch's vectors from the server, its errors translated."""

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise ConfigurationError(
                f"the dimension of model '{self.model}' ({self.where}) is not known yet: await "
                f"ensure_dimension() first, or configure it"
            )
        return self._dimension

    async def ensure_dimension(self) -> int:
        """The model's vector size, embedding one probe text on the first call if not configured."""
        if self._dimension is None:
            # Two concurrent first calls may both probe; harmless, and cheaper than a lock that
            # would have to be bound to one event loop.
            await self._embed_batch([PROBE_TEXT])
        assert self._dimension is not None
        return self._dimension

    async def probe(self) -> None:
        """Embed one short text: the cheapest request that shows the server answers with this model
        (and learns the dimension, if it is not known yet). Health checks bound it with a short timeout."""
        await self._embed_batch([PROBE_TEXT])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = checked_texts(texts)
        vectors: list[list[float]] = []
        # Sequential batches: a server embeds one batch per model at a time anyway, and concurrent
        # requests would only queue there (or count against its queue and rate limits).
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        vectors = await self._request(batch)
        self._check(batch, vectors)
        return vectors

    def _check(self, batch: list[str], vectors: list[list[float]]) -> None:
        if len(vectors) != len(batch):
            raise DependencyUnavailable(
                self.dependency,
                f"{self.where} returned {len(vectors)} embeddings for {len(batch)} texts (model '{self.model}')",
            )
        sizes = {len(vector) for vector in vectors}
        if len(sizes) != 1 or 0 in sizes:
            raise DependencyUnavailable(
                self.dependency,
                f"{self.where} returned embeddings of sizes {sorted(sizes)} (model '{self.model}')",
            )
        size = sizes.pop()
        if self._dimension is None:
            self._dimension = size
        elif size != self._dimension:
            # Not an outage: the configuration names a dimension this model does not produce, or the
            # model behind the name was replaced (a new version pulled, another model served under
            # the name). Storing such vectors would corrupt the collection, so refuse loudly.
            raise ConfigurationError(
                f"model '{self.model}' ({self.where}) returns {size}-dimensional vectors, "
                f"but {self._dimension} are expected; fix the configured dimension or the model"
            )

    def count_tokens(self, text: str) -> int:
        """An estimate: these APIs expose no tokenizer, and the model's own may differ.

        MiniLM's WordPiece tokenizer ships with ragkit and loads in milliseconds without torch; the
        models servers usually embed with (nomic-embed-text, mxbai, bge, e5, gte) use BERT-style
        WordPiece vocabularies too, so its counts are close, and OpenAI's BPE gives fewer tokens
        than WordPiece on prose, so chunks sized by it fit. Without it, ~1.3 tokens per word.
        """
        try:
            return count_wordpieces(text)
        except ConfigurationError:
            # Only a missing tokenizer falls back; bad text (InvalidInput) is refused as the local
            # embedder refuses it, and as embed() would.
            return math.ceil(len(_WORDS.findall(text)) * _TOKENS_PER_WORD)
