"""`build_services(settings)`: the one place that picks backends from configuration and puts each
behind its circuit breaker (`ragkit.adapters.guarded`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.adapters.breakers import CACHE, BreakerBoard
from ragkit.adapters.cache import FallbackCache, MemoryCache, RedisCache
from ragkit.adapters.guarded import GuardedCondenser, GuardedEmbedder, GuardedGenerator, GuardedStore
from ragkit.adapters.host_pool import PooledCondenser, PooledEmbedder, PooledGenerator
from ragkit.adapters.job_queue import ArqBatchQueue
from ragkit.core.batches import BatchQueue
from ragkit.core.config import Settings
from ragkit.core.errors import ConfigurationError
from ragkit.core.metrics import Metrics
from ragkit.core.types import Cache, Condenser, Embedder, Generator, VectorStore
from ragkit.rag.activity import ReadActivity
from ragkit.rag.collections import Collections
from ragkit.rag.conversation import Condensation
from ragkit.rag.ingest import Ingestor
from ragkit.rag.job_runner import JobRunner
from ragkit.rag.jobs import JobJournal
from ragkit.rag.optimizer import Optimizer
from ragkit.rag.pipeline import Pipeline

log = logging.getLogger("ragkit.services")


@dataclass
class Services:
    """The backends, each behind its breaker, and the logic built on them."""

    settings: Settings
    store: GuardedStore
    embedder: GuardedEmbedder
    generator: GuardedGenerator
    fallback_generator: GuardedGenerator
    cache: Cache
    breakers: BreakerBoard
    metrics: Metrics
    pipeline: Pipeline
    ingestor: Ingestor
    optimizer: Optimizer
    collections: Collections
    jobs: JobRunner
    condenser: GuardedCondenser | None = None  # with an LLM generator only

    def backends(self) -> dict[str, str]:
        return {
            "store": self.store.name,
            "embedder": self.embedder.name,
            "generator": self.generator.name,
            "cache": self.cache.name,
        }

    async def close(self) -> None:
        for adapter in (self.embedder, self.generator, self.condenser):
            aclose = getattr(adapter, "aclose", None)  # remote adapters hold HTTP connections
            if aclose is not None:
                await aclose()
        await self.optimizer.wait()
        await self.cache.close()
        await self.jobs.close()
        self.store.close()


def _build_store(settings: Settings) -> VectorStore:
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from ragkit.adapters.stores.qdrant import QdrantStore

        client = QdrantClient(
            url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=settings.qdrant_timeout_s
        )
        return QdrantStore(
            client,
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency,
        )
    from ragkit.adapters.stores.edge import EdgeStore

    return EdgeStore(edge_folder(settings), min_free_bytes=settings.min_free_mb * 1024 * 1024)


def edge_folder(settings: Settings) -> Path:
    """Where the embedded store lives."""
    return settings.data_dir / "qdrant-edge"


def _openai_setting(value: str | None, variable: str, kind: str) -> str:
    """A setting the OpenAI-compatible backend cannot start without: refused at start, by name."""
    if not value:
        hint = (
            "to the server's API root, e.g. http://127.0.0.1:8000/v1"
            if variable == "OPENAI_BASE_URL"
            else "to a model the server serves (its GET /models lists them)"
        )
        raise ConfigurationError(f"{kind}=openai needs {variable}: set it {hint}")
    return value


def _each_ollama_host(
    settings: Settings,
    build: Callable[[str], Any],
    pooled: Callable[[list[Any], BreakerBoard], Any],
    breakers: BreakerBoard | None,
) -> Any:
    """One adapter for the one Ollama host, or a pool of one per host when OLLAMA_HOST lists several."""
    hosts = settings.ollama_urls
    if len(hosts) == 1:
        return build(hosts[0])
    board = breakers or BreakerBoard(fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_s)
    return pooled([build(host) for host in hosts], board)


def build_embedder(settings: Settings, breakers: BreakerBoard | None = None) -> Embedder:
    """The configured embedder; ``breakers`` holds the per-host breakers of several Ollama hosts
    (a worker, which reports no health, gets a board of its own)."""
    if settings.embedder_kind == "openai":
        from ragkit.adapters.embedders.openai import OpenAIEmbedder

        return OpenAIEmbedder(
            base_url=_openai_setting(settings.openai_base_url, "OPENAI_BASE_URL", "RAGKIT_EMBEDDER"),
            model=_openai_setting(settings.openai_embed_model, "OPENAI_EMBED_MODEL", "RAGKIT_EMBEDDER"),
            timeout_s=settings.openai_timeout_s,
            api_key=settings.openai_key,
            batch_size=settings.openai_embed_batch_size,
        )
    if settings.embedder_kind == "ollama":
        from ragkit.adapters.embedders.ollama import OllamaEmbedder

        return _each_ollama_host(
            settings,
            lambda host: OllamaEmbedder(
                host=host,
                model=settings.ollama_embed_model,
                timeout_s=settings.ollama_timeout_s,
                batch_size=settings.embed_batch_size,
            ),
            PooledEmbedder,
            breakers,
        )
    if settings.local_backend == "torch":
        from ragkit.adapters.embedders.local import LocalEmbedder

        return LocalEmbedder(batch_size=settings.embed_batch_size, threads=settings.torch_threads)
    from ragkit.adapters.embedders.onnx import OnnxEmbedder

    return OnnxEmbedder(
        settings.model_cache_dir, batch_size=settings.embed_batch_size, workers=settings.embed_workers
    )


def _build_generator(settings: Settings, breakers: BreakerBoard | None = None) -> Generator:
    if settings.generator_kind == "openai":
        from ragkit.adapters.generators.openai import OpenAIGenerator

        return OpenAIGenerator(
            base_url=_openai_setting(settings.openai_base_url, "OPENAI_BASE_URL", "RAGKIT_GENERATOR"),
            model=_openai_setting(settings.openai_model, "OPENAI_MODEL", "RAGKIT_GENERATOR"),
            timeout_s=settings.openai_timeout_s,
            api_key=settings.openai_key,
        )
    if settings.generator_kind == "ollama":
        from ragkit.adapters.generators.ollama import OllamaGenerator

        return _each_ollama_host(
            settings,
            lambda host: OllamaGenerator(
                host=host, model=settings.ollama_chat_model, timeout_s=settings.ollama_timeout_s
            ),
            PooledGenerator,
            breakers,
        )
    from ragkit.adapters.generators.extractive import ExtractiveGenerator

    return ExtractiveGenerator()


def _build_condenser(settings: Settings, breakers: BreakerBoard | None = None) -> Condenser | None:
    """The LLM generator's model, asked to condense follow-ups under its own short timeout."""
    if settings.generator_kind == "openai":
        from ragkit.adapters.generators.openai import OpenAICondenser

        return OpenAICondenser(
            base_url=_openai_setting(settings.openai_base_url, "OPENAI_BASE_URL", "RAGKIT_GENERATOR"),
            model=_openai_setting(settings.openai_model, "OPENAI_MODEL", "RAGKIT_GENERATOR"),
            timeout_s=settings.condense_timeout_s,
            api_key=settings.openai_key,
        )
    if settings.generator_kind == "ollama":
        from ragkit.adapters.generators.ollama import OllamaCondenser

        return _each_ollama_host(
            settings,
            lambda host: OllamaCondenser(
                host=host, model=settings.ollama_chat_model, timeout_s=settings.condense_timeout_s
            ),
            PooledCondenser,
            breakers,
        )
    return None  # extractive: follow-ups are rewritten deterministically, as ever


def build_services(settings: Settings, *, embedder: Embedder | None = None) -> Services:
    """`embedder` may be passed in to share one loaded model between several instances."""
    from ragkit.adapters.generators.extractive import ExtractiveGenerator

    metrics = Metrics()
    breakers = BreakerBoard(fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_s, metrics=metrics)
    store = GuardedStore(_build_store(settings), breakers, metrics, timeout_s=settings.qdrant_timeout_s)
    guarded_embedder = GuardedEmbedder(embedder or build_embedder(settings, breakers), breakers)
    backend_generator = _build_generator(settings, breakers)
    # The extractive answerer scores sentences by meaning with the collections' own embedder.
    extractive = GuardedGenerator(ExtractiveGenerator(embedder=guarded_embedder), breakers)
    if isinstance(backend_generator, ExtractiveGenerator):
        generator = fallback = extractive
    else:
        generator, fallback = GuardedGenerator(backend_generator, breakers), extractive
    cache: Cache = MemoryCache()
    if settings.redis_url:
        cache = FallbackCache(RedisCache(settings.redis_url, settings.redis_timeout_s), breakers[CACHE])
    activity = ReadActivity()  # the pipeline's searches, which the optimizer waits out
    backend_condenser = _build_condenser(settings, breakers)
    condenser = GuardedCondenser(backend_condenser, breakers) if backend_condenser is not None else None
    pipeline = Pipeline(
        store=store,
        embedder=guarded_embedder,
        generator=generator,
        fallback_generator=fallback,
        cache=cache,
        metrics=metrics,
        max_query_chars=settings.max_query_chars,
        max_top_k=settings.max_top_k,
        cache_ttl_s=settings.cache_ttl_s,
        activity=activity,
        condensation=Condensation(metrics, condenser, max_question_chars=settings.max_query_chars),
    )
    ingestor = Ingestor(store, guarded_embedder, metrics, batch_chunks=max(settings.embed_batch_size * 2, 64))
    optimizer = Optimizer(
        store,
        metrics,
        enabled=settings.optimize_after_ingest,
        activity=activity,
        quiet_s=settings.optimize_quiet_s,
        max_defer_s=settings.optimize_max_defer_s,
    )
    collections = Collections(
        store,
        guarded_embedder,
        ingestor,
        optimizer,
        default_chunk_size=settings.chunk_size,
        default_chunk_overlap=settings.chunk_overlap,
    )
    return Services(
        settings=settings,
        store=store,
        embedder=guarded_embedder,
        generator=generator,
        fallback_generator=fallback,
        cache=cache,
        breakers=breakers,
        metrics=metrics,
        pipeline=pipeline,
        ingestor=ingestor,
        optimizer=optimizer,
        collections=collections,
        jobs=JobRunner(
            JobJournal(settings.data_dir / "jobs.sqlite3"), collections, metrics, queue=_build_job_queue(settings)
        ),
        condenser=condenser,
    )


def _build_job_queue(settings: Settings) -> BatchQueue | None:
    if settings.job_queue == "local":
        return None
    if not settings.redis_url:
        raise ConfigurationError(
            "RAGKIT_JOB_QUEUE=redis needs REDIS_URL: the Redis that `ragkit worker`s take batches from"
        )
    return ArqBatchQueue(settings.redis_url)


def check_settings(settings: Settings) -> None:
    """The backend settings' mistakes, as ConfigurationError, before anything is loaded: `ragkit
    serve` then says what to set in one line instead of failing in its lifespan with a traceback."""
    if settings.embedder_kind == "openai":
        _openai_setting(settings.openai_base_url, "OPENAI_BASE_URL", "RAGKIT_EMBEDDER")
        _openai_setting(settings.openai_embed_model, "OPENAI_EMBED_MODEL", "RAGKIT_EMBEDDER")
    if settings.generator_kind == "openai":
        _openai_setting(settings.openai_base_url, "OPENAI_BASE_URL", "RAGKIT_GENERATOR")
        _openai_setting(settings.openai_model, "OPENAI_MODEL", "RAGKIT_GENERATOR")
    _build_job_queue(settings)  # RAGKIT_JOB_QUEUE=redis without REDIS_URL
