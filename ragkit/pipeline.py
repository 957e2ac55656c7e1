"""Search and answers, with the degradation ladder of DESIGN.md §3.

Every fallback is reported, never silent: the result says `degraded` and lists `reasons`.
* embedding unavailable → sparse (BM25) search instead of dense / hybrid;
* generation unavailable → an extractive answer from the retrieved chunks, with citations;
  (a model the Ollama host does not have degrades the same way, with the fix in the reason,
  but never counts against the breaker: the host answered);
* vector store unavailable → the cached result of the same request if there is one, else the
  error (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ragkit.breakers import BreakerBoard
from ragkit.errors import DependencyError, InvalidInput, RagkitError, UpstreamRejected
from ragkit.ingest import check_embedder
from ragkit.metrics import Metrics
from ragkit.sparse import Bm25Encoder
from ragkit.types import SEARCH_MODES, Cache, CollectionSpec, Embedder, Generator, Hit, VectorStore

log = logging.getLogger("ragkit.pipeline")


@dataclass
class SearchResult:
    query: str
    collection: str
    hits: list[Hit]
    mode_used: str
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class AnswerResult:
    answer: str
    sources: list[Hit]
    generator: str
    mode_used: str
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def hit_to_dict(hit: Hit) -> dict[str, Any]:
    return asdict(hit) | {"metadata": dict(hit.metadata)}


def hit_from_dict(data: Mapping[str, Any]) -> Hit:
    return Hit(**data)


class QueryVectorCache:
    """Repeated questions skip the model: an LRU of query text → dense vector."""

    def __init__(self, max_items: int = 4096) -> None:
        self._items: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._max_items = max_items

    def get(self, embedder: str, text: str) -> list[float] | None:
        vector = self._items.get((embedder, text))
        if vector is not None:
            self._items.move_to_end((embedder, text))
        return vector

    def put(self, embedder: str, text: str, vector: list[float]) -> None:
        self._items[(embedder, text)] = vector
        if len(self._items) > self._max_items:
            self._items.popitem(last=False)


class Pipeline:
    def __init__(
        self,
        *,
        store: VectorStore,
        embedder: Embedder,
        generator: Generator,
        fallback_generator: Generator,
        cache: Cache,
        breakers: BreakerBoard,
        metrics: Metrics,
        max_query_chars: int,
        max_top_k: int,
        cache_ttl_s: float,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.generator = generator
        self.fallback_generator = fallback_generator
        self.cache = cache
        self.breakers = breakers
        self.metrics = metrics
        self._max_query_chars = max_query_chars
        self._max_top_k = max_top_k
        self._cache_ttl_s = cache_ttl_s
        self._query_vectors = QueryVectorCache()
        self._query_encoder = Bm25Encoder(avg_len=1.0)  # query vectors do not depend on avg_len

    async def store_call(self, breaker: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        with self.breakers[breaker].guard():
            return await asyncio.to_thread(fn, *args, **kwargs)

    # -- validation -------------------------------------------------------------------------
    def _check_request(self, query: str, top_k: int, mode: str, filters: Mapping[str, Any] | None) -> str:
        query = (query or "").strip()
        if not query:
            raise InvalidInput("the query is empty; send some text to search for")
        if len(query) > self._max_query_chars:
            raise InvalidInput(
                f"the query is {len(query)} characters; the limit is {self._max_query_chars}",
                limit=self._max_query_chars,
            )
        if not 1 <= top_k <= self._max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self._max_top_k}, got {top_k}")
        if mode not in SEARCH_MODES:
            raise InvalidInput(f"mode must be one of {', '.join(SEARCH_MODES)}, got '{mode}'")
        if filters is not None and not isinstance(filters, Mapping):
            raise InvalidInput("filters must be an object of field → value")
        return query

    # -- search -----------------------------------------------------------------------------
    async def _embed_query(self, query: str) -> list[float]:
        cached = self._query_vectors.get(self.embedder.name, query)
        if cached is not None:
            return cached
        with self.breakers[self.embedder.breaker_name].guard():
            vector = (await self.embedder.embed([query]))[0]
        self._query_vectors.put(self.embedder.name, query, vector)
        return vector

    def _cache_key(self, collection: str, query: str, top_k: int, mode: str, filters: Any) -> str:
        raw = json.dumps([collection, query, top_k, mode, filters], sort_keys=True, default=str)
        return "search:" + hashlib.sha256(raw.encode()).hexdigest()

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 5,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        query = self._check_request(query, top_k, mode, filters)
        result = SearchResult(query=query, collection=collection, hits=[], mode_used=mode)
        key = self._cache_key(collection, query, top_k, mode, filters)
        try:
            spec: CollectionSpec = await self.store_call("qdrant_search", self.store.get_collection, collection)
        except DependencyError as exc:
            return await self._from_cache(key, result, exc, started)

        dense = None
        if mode != "sparse":
            if spec.embedder != self.embedder.name:
                check_embedder(spec, self.embedder)  # raises before any model is called
            t = time.perf_counter()
            try:
                dense = await self._embed_query(query)
                check_embedder(spec, self.embedder)  # the dimension is surely known once it embedded
            except (DependencyError, UpstreamRejected) as exc:
                result.mode_used = "sparse"
                self._degrade(
                    result,
                    "embedding_unavailable",
                    f"embedding unavailable ({exc.message}); fell back to sparse (BM25) search",
                )
            result.timings_ms["embed"] = _ms(t)
            self.metrics.stage_latency.labels("embed").observe(result.timings_ms["embed"] / 1000)
        sparse = self._query_encoder.embed_query(query) if result.mode_used != "dense" else None

        t = time.perf_counter()
        try:
            result.hits = await self.store_call(
                "qdrant_search",
                self.store.search,
                collection,
                mode=result.mode_used,
                dense=dense,
                sparse=sparse,
                top_k=top_k,
                filters=dict(filters) if filters else None,
            )
        except DependencyError as exc:
            return await self._from_cache(key, result, exc, started)
        result.timings_ms["search"] = _ms(t)
        self.metrics.stage_latency.labels("search").observe(result.timings_ms["search"] / 1000)
        if not result.degraded and self._cache_ttl_s > 0:
            await self.cache.set(key, json.dumps([hit_to_dict(h) for h in result.hits]).encode(), self._cache_ttl_s)
        result.timings_ms["total"] = _ms(started)
        return result

    async def _from_cache(self, key: str, result: SearchResult, exc: DependencyError, started: float) -> SearchResult:
        cached = await self.cache.get(key)
        self.metrics.cache_lookups.labels("search_fallback", "hit" if cached else "miss").inc()
        if cached is None:
            raise exc
        result.hits = [hit_from_dict(h) for h in json.loads(cached)]
        self._degrade(result, "store_unavailable", f"vector store unavailable ({exc.message}); served a cached result")
        result.timings_ms["total"] = _ms(started)
        return result

    def _degrade(self, result: SearchResult | AnswerResult, reason: str, message: str) -> None:
        result.degraded = True
        result.reasons.append(message)
        self.metrics.degraded.labels(reason).inc()
        log.warning(json.dumps({"event": "degraded", "reason": reason, "detail": message}))

    # -- answers ----------------------------------------------------------------------------
    async def answer(
        self,
        collection: str,
        question: str,
        *,
        top_k: int = 5,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
    ) -> AnswerResult:
        found = await self.search(collection, question, top_k=top_k, mode=mode, filters=filters)
        result = self._answer_from(found)
        t = time.perf_counter()
        if not found.hits:
            result.answer = await self.fallback_generator.generate(found.query, [])
            result.generator = self.fallback_generator.name
        else:
            try:
                with self.breakers[self.generator.breaker_name].guard():
                    result.answer = await self.generator.generate(found.query, found.hits)
            except (DependencyError, UpstreamRejected) as exc:
                self._degrade_generation(result, exc)
                result.answer = await self.fallback_generator.generate(found.query, found.hits)
        self._finish_generation(result, t)
        return result

    def _answer_from(self, found: SearchResult) -> AnswerResult:
        return AnswerResult(
            answer="",
            sources=found.hits,
            generator=self.generator.name,
            mode_used=found.mode_used,
            degraded=found.degraded,
            reasons=list(found.reasons),
            timings_ms={"retrieval": found.timings_ms.get("total", 0.0)},
        )

    def _degrade_generation(self, result: AnswerResult, exc: RagkitError) -> None:
        result.generator = self.fallback_generator.name
        self._degrade(
            result,
            "generation_unavailable",
            f"generation unavailable ({exc.message}); answered extractively from the retrieved passages",
        )

    def _finish_generation(self, result: AnswerResult, started: float) -> None:
        result.timings_ms["generation"] = _ms(started)
        result.timings_ms["total"] = round(result.timings_ms["retrieval"] + result.timings_ms["generation"], 3)
        self.metrics.stage_latency.labels("generate").observe(result.timings_ms["generation"] / 1000)

    async def answer_stream(
        self,
        collection: str,
        question: str,
        *,
        top_k: int = 5,
        mode: str = "hybrid",
        filters: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yields (event, data): one "sources", then "token"s, then "done" (or "error")."""
        found = await self.search(collection, question, top_k=top_k, mode=mode, filters=filters)
        result = self._answer_from(found)
        yield (
            "sources",
            {
                "sources": [hit_to_dict(h) for h in found.hits],
                "mode_used": found.mode_used,
                "degraded": found.degraded,
                "reasons": list(found.reasons),
            },
        )
        t = time.perf_counter()
        pieces: list[str] = []
        generator = self.generator if found.hits else self.fallback_generator
        try:
            with self.breakers[generator.breaker_name].guard():
                async for piece in generator.stream(found.query, found.hits):
                    pieces.append(piece)
                    yield "token", {"text": piece}
        except (DependencyError, UpstreamRejected) as exc:
            if pieces:
                # Half an answer is already on the user's screen: say it broke off, do not
                # append a second, different answer to it.
                self._degrade(result, "generation_interrupted", f"generation broke off ({exc.message})")
                yield "error", {"error": exc.to_dict(), "reasons": result.reasons}
                return
            self._degrade_generation(result, exc)
            yield "degraded", {"reasons": result.reasons}
            async for piece in self.fallback_generator.stream(found.query, found.hits):
                pieces.append(piece)
                yield "token", {"text": piece}
        else:
            result.generator = generator.name
        result.answer = "".join(pieces)
        self._finish_generation(result, t)
        yield (
            "done",
            {
                "answer": result.answer,
                "generator": result.generator,
                "degraded": result.degraded,
                "reasons": result.reasons,
                "timings_ms": result.timings_ms,
            },
        )
