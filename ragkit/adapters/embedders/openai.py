"""Embeddings from an OpenAI-compatible server (``POST /embeddings``, batched input): Text
Embeddings Inference, vLLM, llama.cpp's server, LM Studio or a hosted API."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import anyio

from ragkit.adapters.embedders.local import checked_texts, count_wordpieces
from ragkit.adapters.openai_client import DEPENDENCY, LoopBoundClient, request_headers, translating
from ragkit.core.errors import ConfigurationError, DependencyUnavailable

BREAKER = "openai_embedding"
# OpenAI's API takes at most 2048 inputs per request; servers have their own, often lower, limits
# (Text Embeddings Inference: 32 by default, --max-client-batch-size), which batch_size is for.
MAX_INPUTS_PER_CALL = 2048
_PROBE_TEXT = "dimension probe"
_WORDS = re.compile(r"\S+")
# Subword tokenizers split English prose into ~1.3 tokens per whitespace word on average.
_TOKENS_PER_WORD = 1.3


class OpenAIEmbedder:
    """Implements ``ragkit.core.types.Embedder`` through the official ``openai`` async client.

    ``dimension`` is either given or learned from the model by embedding a probe text on first
    use; call ``await ensure_dimension()`` at startup if something reads ``dimension`` before
    the first ``embed``. Vectors come back L2-normalised whatever the server does (OpenAI and TEI
    normalise, some vLLM and llama.cpp pooling set-ups do not), so scores mean the same on every
    backend.
    """

    breaker_name = BREAKER

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float,
        api_key: str | None = None,
        batch_size: int = 32,
        dimension: int | None = None,
        max_tokens: int = 512,
    ) -> None:
        if not model:
            raise ConfigurationError("OpenAIEmbedder needs a model name: set OPENAI_EMBED_MODEL")
        if not 1 <= batch_size <= MAX_INPUTS_PER_CALL:
            raise ConfigurationError(f"batch_size must be between 1 and {MAX_INPUTS_PER_CALL}, got {batch_size}")
        if dimension is not None and dimension < 1:
            raise ConfigurationError(f"dimension must be positive, got {dimension}")
        self.model = model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.name = f"openai:{model}"
        self._dimension = dimension
        self._client = LoopBoundClient(base_url, api_key, timeout_s)
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise ConfigurationError(
                f"the dimension of model '{self.model}' at {self.base_url} is not known yet: await "
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
        and takes the key (TEI has no model list to ask instead). Health checks bound it."""
        await self._embed_batch([_PROBE_TEXT])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = checked_texts(texts)
        vectors: list[list[float]] = []
        # Sequential batches: a server embeds one batch at a time per model anyway, and a burst of
        # concurrent ones would only queue there or trip its rate limit. Tokens per call stay far
        # under the APIs' per-request caps (300k at OpenAI): chunks are at most 8192 tokens.
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        with translating(client=self._client, model=self.model, role="embedding"):
            # httpx2's timeout bounds each phase; this bounds the whole request, so connect + write
            # + a trickling read cannot add up to several times the configured budget.
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().embeddings.create(
                    model=self.model,
                    input=batch,
                    # The client asks for base64 unless told otherwise; plain floats are what every
                    # compatible server speaks.
                    encoding_format="float",
                    extra_headers=request_headers(),
                )
            # The API gives each vector its input's index; order by it rather than trust the list's.
            ordered = sorted(response.data, key=lambda item: item.index)
            vectors = [_normalised([float(x) for x in item.embedding]) for item in ordered]
        self._check(batch, vectors)
        return vectors

    def _check(self, batch: list[str], vectors: list[list[float]]) -> None:
        if len(vectors) != len(batch):
            raise DependencyUnavailable(
                DEPENDENCY,
                f"the server at {self.base_url} returned {len(vectors)} embeddings for {len(batch)} texts "
                f"(model '{self.model}')",
            )
        sizes = {len(vector) for vector in vectors}
        if len(sizes) != 1 or 0 in sizes:
            raise DependencyUnavailable(
                DEPENDENCY,
                f"the server at {self.base_url} returned embeddings of sizes {sorted(sizes)} (model '{self.model}')",
            )
        size = sizes.pop()
        if self._dimension is None:
            self._dimension = size
        elif size != self._dimension:
            # Not an outage: the configuration names a dimension this model does not produce, or the
            # server now serves another model under the name. Storing such vectors would corrupt
            # the collection, so refuse loudly.
            raise ConfigurationError(
                f"model '{self.model}' at {self.base_url} returns {size}-dimensional vectors, "
                f"but {self._dimension} are expected; fix the configured dimension or the model"
            )

    def count_tokens(self, text: str) -> int:
        """An estimate: the OpenAI API exposes no tokenizer, and the model's own may differ.

        MiniLM's WordPiece tokenizer ships with ragkit; the models these servers usually embed
        with (bge, e5, gte, nomic) use BERT-style WordPiece vocabularies too, so its counts are
        close, and OpenAI's BPE gives fewer tokens than WordPiece on prose, so chunks sized by it
        fit. Without it, fall back to the usual ~1.3 tokens per word.
        """
        try:
            return count_wordpieces(text)
        except ConfigurationError:
            # Only a missing tokenizer falls back; bad text (InvalidInput) is refused as embed() would.
            return math.ceil(len(_WORDS.findall(text)) * _TOKENS_PER_WORD)

    async def aclose(self) -> None:
        await self._client.aclose()


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if not math.isfinite(norm):
        # A NaN would poison every score it takes part in: a broken answer, not a vector.
        raise DependencyUnavailable(DEPENDENCY, "the server returned an embedding with NaN or infinite values")
    # A zero vector cannot be scaled; it is kept as it is (an empty one is refused by _check).
    return [x / norm for x in vector] if norm else vector
