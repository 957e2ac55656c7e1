"""`build_services(settings)`: the one place that picks backends from configuration."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ragkit.breakers import BREAKER_NAMES, BreakerBoard
from ragkit.cache import FallbackCache, MemoryCache, RedisCache
from ragkit.config import Settings
from ragkit.ingest import Ingestor
from ragkit.metrics import Metrics
from ragkit.pipeline import Pipeline
from ragkit.types import Cache, Embedder, Generator, VectorStore

log = logging.getLogger("ragkit.services")


@dataclass
class Services:
    settings: Settings
    store: VectorStore
    embedder: Embedder
    generator: Generator
    fallback_generator: Generator
    cache: Cache
    breakers: BreakerBoard
    metrics: Metrics
    pipeline: Pipeline
    ingestor: Ingestor

    def backends(self) -> dict[str, str]:
        return {
            "store": self.store.name,
            "embedder": self.embedder.name,
            "generator": self.generator.name,
            "cache": self.cache.name,
        }

    async def close(self) -> None:
        for adapter in (self.embedder, self.generator):
            aclose = getattr(adapter, "aclose", None)  # remote adapters hold HTTP connections
            if aclose is not None:
                await aclose()
        await self.cache.close()
        self.store.close()


def _build_store(settings: Settings) -> VectorStore:
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from ragkit.stores.qdrant import QdrantStore

        client = QdrantClient(
            url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=settings.qdrant_timeout_s
        )
        return QdrantStore(
            client,
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency,
        )
    from ragkit.stores.edge import EdgeStore

    return EdgeStore(settings.data_dir / "qdrant-edge")


def _build_embedder(settings: Settings) -> Embedder:
    if settings.embedder_kind == "ollama":
        from ragkit.embedders.ollama import OllamaEmbedder

        return OllamaEmbedder(
            host=settings.ollama_url,
            model=settings.ollama_embed_model,
            timeout_s=settings.ollama_timeout_s,
            batch_size=settings.embed_batch_size,
        )
    from ragkit.embedders.local import LocalEmbedder

    return LocalEmbedder(batch_size=settings.embed_batch_size, threads=settings.torch_threads)


def _build_generator(settings: Settings) -> Generator:
    if settings.generator_kind == "ollama":
        from ragkit.generators.ollama import OllamaGenerator

        return OllamaGenerator(
            host=settings.ollama_url,
            model=settings.ollama_chat_model,
            timeout_s=settings.ollama_timeout_s,
        )
    from ragkit.generators.extractive import ExtractiveGenerator

    return ExtractiveGenerator()


def build_services(settings: Settings, *, embedder: Embedder | None = None) -> Services:
    """`embedder` may be passed in to share one loaded model between several instances."""
    from ragkit.generators.extractive import ExtractiveGenerator

    metrics = Metrics()
    breakers = BreakerBoard(
        BREAKER_NAMES,
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_s,
        metrics=metrics,
    )
    store = _build_store(settings)
    embedder = embedder or _build_embedder(settings)
    generator = _build_generator(settings)
    fallback = generator if generator.name == "extractive" else ExtractiveGenerator()
    cache: Cache = MemoryCache()
    if settings.redis_url:
        cache = FallbackCache(RedisCache(settings.redis_url, settings.redis_timeout_s), breakers["redis"])
    pipeline = Pipeline(
        store=store,
        embedder=embedder,
        generator=generator,
        fallback_generator=fallback,
        cache=cache,
        breakers=breakers,
        metrics=metrics,
        max_query_chars=settings.max_query_chars,
        max_top_k=settings.max_top_k,
        cache_ttl_s=settings.cache_ttl_s,
    )
    ingestor = Ingestor(store, embedder, breakers, metrics, batch_chunks=max(settings.embed_batch_size * 2, 64))
    return Services(
        settings=settings,
        store=store,
        embedder=embedder,
        generator=generator,
        fallback_generator=fallback,
        cache=cache,
        breakers=breakers,
        metrics=metrics,
        pipeline=pipeline,
        ingestor=ingestor,
    )
