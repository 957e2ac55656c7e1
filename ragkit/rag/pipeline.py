"""Search and answers, with the degradation ladder of DESIGN.md §3.

Every fallback is reported, never silent: the result says `degraded` and lists `reasons`.
* embedding unavailable → sparse (BM25) search instead of dense / hybrid;
* generation unavailable → an extractive answer from the retrieved chunks, with citations;
  (a model the Ollama host does not have degrades the same way, with the fix in the reason,
  but never counts against the breaker: the host answered);
* vector store unavailable → the cached result of the same request if there is one, else the
  error (503 + Retry-After).

Every answer, from any generator, whole or streamed, leaves here with its citations checked: a
`[n]` past the retrieved sources is dropped and counted (`ragkit.rag.citations`).

The store, the embedder and the generators arrive already behind their breakers
(`ragkit.services`), so this module decides what to do on failure, never how to guard a call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragkit.core.context import collection_var
from ragkit.core.errors import DependencyError, InvalidInput, RagkitError, UpstreamRejected
from ragkit.core.metrics import Metrics
from ragkit.core.types import (
    DEFAULT_GENERATION,
    DEFAULT_MODE,
    DEFAULT_TOP_K,
    SEARCH_MODES,
    AnswerResult,
    Cache,
    Embedder,
    GenerationOptions,
    Generator,
    Hit,
    SearchMode,
    SearchResult,
    Store,
    hit_from_dict,
    hit_to_dict,
)
from ragkit.rag.activity import ReadActivity
from ragkit.rag.citations import CitationFilter, drop_unknown_citations
from ragkit.rag.conversation import Condensation, Turn, check_history
from ragkit.rag.ingest import check_embedder
from ragkit.rag.sparse import Bm25Encoder

log = logging.getLogger("ragkit.pipeline")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@dataclass
class _Trace:
    """What one request went through, collected as it runs; the results are frozen from it."""

    mode_used: SearchMode
    reasons: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)


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
        store: Store,
        embedder: Embedder,
        generator: Generator,
        fallback_generator: Generator,
        cache: Cache,
        metrics: Metrics,
        max_query_chars: int,
        max_top_k: int,
        cache_ttl_s: float,
        activity: ReadActivity | None = None,
        condensation: Condensation | None = None,
    ) -> None:
        self.store = store
        self.activity = activity or ReadActivity()  # searches in flight, for the optimizer
        self.condensation = condensation or Condensation(metrics)  # follow-ups made standalone
        self.embedder = embedder
        self.generator = generator
        self.fallback_generator = fallback_generator
        self.cache = cache
        self.metrics = metrics
        self._max_query_chars = max_query_chars
        self._max_top_k = max_top_k
        self._cache_ttl_s = cache_ttl_s
        self._query_vectors = QueryVectorCache()
        self._query_encoder = Bm25Encoder(avg_len=1.0)  # query vectors do not depend on avg_len

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
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= self._max_top_k:
            raise InvalidInput(f"top_k must be an integer from 1 to {self._max_top_k}, got {top_k!r}")
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
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        with self.activity.reading():
            return await self._search(collection, query, top_k=top_k, mode=mode, filters=filters)

    async def _search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        mode: str,
        filters: Mapping[str, Any] | None,
    ) -> SearchResult:
        started = time.perf_counter()
        query = self._check_request(query, top_k, mode, filters)
        trace = _Trace(mode_used=mode)  # type: ignore[arg-type]
        key = self._cache_key(collection, query, top_k, mode, filters)
        try:
            spec = await self.store.get_collection(collection)
        except DependencyError as exc:
            return await self._from_cache(key, query, collection, trace, exc, started)

        dense = None
        if mode != "sparse":
            if spec.embedder != self.embedder.name:
                check_embedder(spec, self.embedder)  # raises before any model is called
            t = time.perf_counter()
            try:
                dense = await self._embed_query(query)
                check_embedder(spec, self.embedder)  # the dimension is surely known once it embedded
            except (DependencyError, UpstreamRejected) as exc:
                trace.mode_used = "sparse"
                self._degrade(
                    trace,
                    "embedding_unavailable",
                    f"embedding unavailable ({exc.message}); fell back to sparse (BM25) search",
                )
            trace.timings_ms["embed"] = _ms(t)
            self.metrics.stage_latency.labels("embed").observe(trace.timings_ms["embed"] / 1000)
        sparse = self._query_encoder.embed_query(query) if trace.mode_used != "dense" else None

        t = time.perf_counter()
        try:
            hits = await self.store.search(
                collection,
                mode=trace.mode_used,
                dense=dense,
                sparse=sparse,
                top_k=top_k,
                filters=dict(filters) if filters else None,
            )
        except DependencyError as exc:
            return await self._from_cache(key, query, collection, trace, exc, started)
        trace.timings_ms["search"] = _ms(t)
        self.metrics.stage_latency.labels("retrieve").observe(trace.timings_ms["search"] / 1000)
        if not trace.degraded and self._cache_ttl_s > 0:
            await self.cache.set(key, json.dumps([hit_to_dict(h) for h in hits]).encode(), self._cache_ttl_s)
        trace.timings_ms["total"] = _ms(started)
        self.metrics.stage_latency.labels("search_total").observe(trace.timings_ms["total"] / 1000)
        return self._search_result(query, collection, hits, trace)

    @staticmethod
    def _search_result(query: str, collection: str, hits: list[Hit], trace: _Trace) -> SearchResult:
        return SearchResult(
            query=query,
            collection=collection,
            hits=tuple(hits),
            mode_used=trace.mode_used,
            degraded=trace.degraded,
            reasons=tuple(trace.reasons),
            timings_ms=dict(trace.timings_ms),
        )

    async def _from_cache(
        self, key: str, query: str, collection: str, trace: _Trace, exc: DependencyError, started: float
    ) -> SearchResult:
        cached = await self.cache.get(key)
        self.metrics.cache_lookups.labels("search_fallback", "hit" if cached else "miss").inc()
        if cached is None:
            raise exc
        hits = [hit_from_dict(h) for h in json.loads(cached)]
        self._degrade(trace, "store_unavailable", f"vector store unavailable ({exc.message}); served a cached result")
        trace.timings_ms["total"] = _ms(started)
        self.metrics.stage_latency.labels("search_total").observe(trace.timings_ms["total"] / 1000)
        return self._search_result(query, collection, hits, trace)

    def _degrade(self, trace: _Trace, reason: str, message: str) -> None:
        trace.reasons.append(message)
        self.metrics.degraded.labels(reason).inc()
        log.warning(json.dumps({"event": "degraded", "reason": reason, "detail": message}))

    # -- answers ----------------------------------------------------------------------------
    async def answer(
        self,
        collection: str,
        question: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
        history: Sequence[Turn] = (),
        options: GenerationOptions = DEFAULT_GENERATION,
    ) -> AnswerResult:
        question, focus, condensing = await self.condensation.standalone(question, check_history(history))
        found = await self.search(collection, question, top_k=top_k, mode=mode, filters=filters)
        collection_var.set(collection)  # what the answer is written from (see core.context)
        trace = self._trace_of(found, condensing)
        t = time.perf_counter()
        generator = self.generator if found.hits else self.fallback_generator
        try:
            text = await generator.generate(focus, found.hits, options)
        except (DependencyError, UpstreamRejected) as exc:
            self._degrade_generation(trace, exc)
            generator = self.fallback_generator
            text = await generator.generate(focus, found.hits, options)
        text, dropped = drop_unknown_citations(text, len(found.hits))
        self._count_dropped_citations(dropped, generator.name)
        self._finish_generation(trace, t)
        return self._answer_result(text, found, generator.name, trace)

    @staticmethod
    def _trace_of(found: SearchResult, earlier: Sequence[str] = ()) -> _Trace:
        return _Trace(
            mode_used=found.mode_used,
            reasons=[*earlier, *found.reasons],
            timings_ms={"retrieval": found.timings_ms.get("total", 0.0)},
        )

    @staticmethod
    def _answer_result(text: str, found: SearchResult, generator: str, trace: _Trace) -> AnswerResult:
        return AnswerResult(
            answer=text,
            sources=found.hits,
            generator=generator,
            mode_used=trace.mode_used,
            degraded=trace.degraded,
            reasons=tuple(trace.reasons),
            timings_ms=dict(trace.timings_ms),
            standalone_query=found.query,
        )

    def _degrade_generation(self, trace: _Trace, exc: RagkitError) -> None:
        self._degrade(
            trace,
            "generation_unavailable",
            f"generation unavailable ({exc.message}); answered extractively from the retrieved passages",
        )

    def _count_dropped_citations(self, dropped: int, generator: str) -> None:
        if dropped:
            self.metrics.dropped_citations.inc(dropped)
            log.info(json.dumps({"event": "dropped_citations", "count": dropped, "generator": generator}))

    def _finish_generation(self, trace: _Trace, started: float) -> None:
        trace.timings_ms["generation"] = _ms(started)
        trace.timings_ms["total"] = round(trace.timings_ms["retrieval"] + trace.timings_ms["generation"], 3)
        self.metrics.stage_latency.labels("generate").observe(trace.timings_ms["generation"] / 1000)
        self.metrics.stage_latency.labels("answer_total").observe(trace.timings_ms["total"] / 1000)

    async def answer_stream(
        self,
        collection: str,
        question: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
        history: Sequence[Turn] = (),
        options: GenerationOptions = DEFAULT_GENERATION,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yields (event, data): one "sources", then "token"s, then "done" (or "error")."""
        started = time.perf_counter()  # the first_token stage: what a reader waits before any text
        question, focus, condensing = await self.condensation.standalone(question, check_history(history))
        found = await self.search(collection, question, top_k=top_k, mode=mode, filters=filters)
        collection_var.set(collection)  # what the answer is written from (see core.context)
        trace = self._trace_of(found, condensing)
        yield (
            "sources",
            {
                "sources": [hit_to_dict(h) for h in found.hits],
                "standalone_query": found.query,
                "mode_used": found.mode_used,
                "degraded": trace.degraded,
                "reasons": list(trace.reasons),
            },
        )
        t = time.perf_counter()
        pieces: list[str] = []  # as the generator produced them
        shown: list[str] = []  # as the reader got them: citations checked
        # A marker may arrive split ("[1" then "2]"): the filter holds such a tail back until it
        # knows, so the reader never sees a citation it would then have to take back.
        citations = CitationFilter(len(found.hits))
        generator = self.generator if found.hits else self.fallback_generator
        try:
            async for piece in generator.stream(focus, found.hits, options):
                if not pieces:
                    self.metrics.stage_latency.labels("first_token").observe(time.perf_counter() - started)
                pieces.append(piece)
                if text := citations.feed(piece):
                    shown.append(text)
                    yield "token", {"text": text}
        except (DependencyError, UpstreamRejected) as exc:
            if pieces:
                # Half an answer is already on the user's screen: say it broke off, do not
                # append a second, different answer to it.
                if rest := citations.flush():
                    yield "token", {"text": rest}
                self._count_dropped_citations(citations.dropped, generator.name)
                self._degrade(trace, "generation_interrupted", f"generation broke off ({exc.message})")
                yield "error", {"error": exc.to_dict(), "reasons": trace.reasons}
                return
            self._degrade_generation(trace, exc)
            yield "degraded", {"reasons": trace.reasons}
            generator = self.fallback_generator
            async for piece in generator.stream(focus, found.hits, options):
                if not pieces:
                    self.metrics.stage_latency.labels("first_token").observe(time.perf_counter() - started)
                pieces.append(piece)
                if text := citations.feed(piece):
                    shown.append(text)
                    yield "token", {"text": text}
        if rest := citations.flush():
            shown.append(rest)
            yield "token", {"text": rest}
        self._count_dropped_citations(citations.dropped, generator.name)
        self._finish_generation(trace, t)
        result = self._answer_result("".join(shown), found, generator.name, trace)
        yield (
            "done",
            {
                "answer": result.answer,
                "generator": result.generator,
                "degraded": result.degraded,
                "reasons": list(result.reasons),
                "timings_ms": dict(result.timings_ms),
            },
        )

