"""Embeddings from an OpenAI-compatible server (``POST /embeddings``, batched input): Text
Embeddings Inference, vLLM, llama.cpp's server, LM Studio or a hosted API."""

from __future__ import annotations

import math

import anyio

from ragkit.adapters.embedders.remote import RemoteEmbedder
from ragkit.adapters.openai_client import DEPENDENCY, LoopBoundClient, request_headers, translating
from ragkit.core.errors import ConfigurationError, DependencyUnavailable

BREAKER = "openai_embedding"
# OpenAI's API takes at most 2048 inputs per request; servers have their own, often lower, limits
# (Text Embeddings Inference: 32 by default, --max-client-batch-size), which batch_size is for.
MAX_INPUTS_PER_CALL = 2048


class OpenAIEmbedder(RemoteEmbedder):
    """Implements ``ragkit.core.types.Embedder`` through the official ``openai`` async client (the
    batching, the dimension and the checks on what comes back: ``RemoteEmbedder``). Vectors come
    back L2-normalised whatever the server does (OpenAI and TEI
    normalise, some vLLM and llama.cpp pooling set-ups do not), so scores mean the same on every
    backend.
    """

    breaker_name = BREAKER
    dependency = DEPENDENCY

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
        super().__init__(model, timeout_s, batch_size=batch_size, dimension=dimension, max_tokens=max_tokens)
        self.name = f"openai:{model}"
        self._client = LoopBoundClient(base_url, api_key, timeout_s)
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def where(self) -> str:
        return f"the server at {self.base_url}"

    async def _request(self, batch: list[str]) -> list[list[float]]:
        with translating(client=self._client, model=self.model, role="embedding"):
            # httpx's timeout bounds each phase; this bounds the whole request, so connect + write
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
            return [_normalised([float(x) for x in item.embedding]) for item in ordered]

    async def aclose(self) -> None:
        await self._client.aclose()


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if not math.isfinite(norm):
        # A NaN would poison every score it takes part in: a broken answer, not a vector.
        raise DependencyUnavailable(DEPENDENCY, "the server returned an embedding with NaN or infinite values")
    # A zero vector cannot be scaled; it is kept as it is (an empty one is refused by _check).
    return [x / norm for x in vector] if norm else vector
