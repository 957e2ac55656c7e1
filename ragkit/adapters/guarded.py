"""Every dependency behind its circuit breaker: the store, the embedder and the generator as the
logic layer (`ragkit.rag`) sees them.

`build_services` wraps each backend once, here, so no caller names a breaker or reaches a bare
backend:

* `GuardedStore` runs each synchronous store call in a worker thread, under `qdrant_search`
  (reads) or `qdrant_upsert` (writes), with a deadline and a latency metric. It also caches
  collection specs for the search path (one store round trip less per query; see below).
* `GuardedEmbedder` and `GuardedGenerator` put `embed`/`generate`/`stream` under the adapter's own
  breaker and otherwise look exactly like the adapter they wrap.
* `GuardedCondenser` puts an LLM's `condense` under its own breaker (`ollama_condense`,
  `openai_condense`), apart from the answers' one: a slow condensation must not stop answers, nor
  an answer outage stop condensation. It has no `probe()`: readiness never waits on it.

Each also has `probe()`, for health checks: one cheap, bounded request to the backend that goes
around the breaker (an open breaker hides a recovery until its reset time; a probe sees it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from ragkit.adapters.breakers import STORE_READ, STORE_WRITE, BreakerBoard
from ragkit.adapters.stores.common import DEPENDENCY
from ragkit.core.errors import CallerError, DependencyTimeout, RagkitError
from ragkit.core.metrics import Metrics
from ragkit.core.types import (
    DEFAULT_GENERATION,
    Chunk,
    CollectionSpec,
    CollectionStats,
    Condenser,
    DocumentState,
    Embedder,
    GenerationOptions,
    Generator,
    Hit,
    Point,
    SearchMode,
    SparseVector,
    Turn,
    VectorStore,
)

SPEC_TTL_S = 5.0


class GuardedStore:
    """The async store port (`ragkit.core.types.GuardedStore`) over a synchronous `VectorStore`.

    Collection specs are cached for `get_collection(name)` without `fresh=True`, the lookup every
    search makes. This replica's own create / update / drop invalidates at once. Another replica's
    changes are seen within `spec_ttl_s` at the latest, and at once when a call on that collection
    fails as the caller's error (unknown collection, wrong dimension): the spec is dropped and read
    again, so a stale spec never outlives the first request that trips over it. Writes (ingestion)
    read the spec fresh.
    """

    def __init__(
        self,
        store: VectorStore,
        breakers: BreakerBoard,
        metrics: Metrics,
        *,
        timeout_s: float,
        spec_ttl_s: float = SPEC_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = store
        self.name = store.name
        self._breakers = breakers
        for breaker in (STORE_READ, STORE_WRITE):
            breakers[breaker]  # noqa: B018 - created now, so /health lists them from the start
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._spec_ttl_s = spec_ttl_s
        self._clock = clock
        self._specs: dict[str, tuple[float, CollectionSpec]] = {}

    async def _call(
        self, breaker: str, operation: str, fn: Callable[..., Any], *args: Any, timeout: bool = True, **kwargs: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            with self._breakers[breaker].guard():
                work = asyncio.to_thread(fn, *args, **kwargs)
                if not timeout:
                    return await work
                try:
                    return await asyncio.wait_for(work, self._timeout_s)
                except TimeoutError as exc:
                    raise DependencyTimeout(
                        DEPENDENCY, f"the vector store did not answer {operation} within {self._timeout_s:g} s"
                    ) from exc
        except CallerError:
            if args and isinstance(args[0], str):
                self.forget(args[0])  # the caller's error may come from a spec this replica has stale
            raise
        finally:
            self._metrics.store_latency.labels(operation).observe(time.perf_counter() - started)

    def forget(self, name: str) -> None:
        self._specs.pop(name, None)

    # -- collections ------------------------------------------------------------------------
    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionSpec:
        cached = self._specs.get(name)
        if cached is not None and not fresh and cached[0] > self._clock():
            return cached[1]
        spec = await self._call(STORE_READ, "get_collection", self.backend.get_collection, name)
        self._specs[name] = (self._clock() + self._spec_ttl_s, spec)
        return spec

    async def create_collection(self, spec: CollectionSpec) -> None:
        self.forget(spec.name)
        await self._call(STORE_WRITE, "create_collection", self.backend.create_collection, spec)

    async def update_collection(self, spec: CollectionSpec) -> None:
        self.forget(spec.name)
        await self._call(STORE_WRITE, "update_collection", self.backend.update_collection, spec)

    async def delete_collection(self, name: str) -> None:
        self.forget(name)
        try:
            await self._call(STORE_WRITE, "delete_collection", self.backend.delete_collection, name)
        finally:
            self.forget(name)  # a search racing the drop may have cached it again

    async def list_collections(self) -> list[CollectionSpec]:
        return await self._call(STORE_READ, "list_collections", self.backend.list_collections)

    async def stats(self, name: str) -> CollectionStats:
        return await self._call(STORE_READ, "stats", self.backend.stats, name)

    async def optimize(self, name: str) -> None:
        # Index building takes as long as it takes (seconds per 10k points); no deadline.
        await self._call(STORE_WRITE, "optimize", self.backend.optimize, name, timeout=False)

    # -- documents and points ---------------------------------------------------------------
    async def upsert(self, name: str, points: Sequence[Point]) -> None:
        await self._call(STORE_WRITE, "upsert", self.backend.upsert, name, points)

    async def scroll_points(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]:
        return await self._call(STORE_READ, "scroll_points", self.backend.scroll_points, name, offset, limit)

    async def document_state(self, name: str, doc_id: str) -> DocumentState | None:
        return await self._call(STORE_READ, "document_state", self.backend.document_state, name, doc_id)

    async def document_chunks(self, name: str, doc_id: str) -> tuple[DocumentState, list[Chunk]] | None:
        return await self._call(STORE_READ, "document_chunks", self.backend.document_chunks, name, doc_id)

    async def delete_stale(self, name: str, doc_id: str, keep_hash: str, keep_count: int) -> int:
        return await self._call(
            STORE_WRITE, "delete_stale", self.backend.delete_stale, name, doc_id, keep_hash, keep_count
        )

    async def delete_document(self, name: str, doc_id: str) -> int:
        return await self._call(STORE_WRITE, "delete_document", self.backend.delete_document, name, doc_id)

    async def list_documents(self, name: str, limit: int = 100, offset: int = 0) -> list[DocumentState]:
        return await self._call(
            STORE_READ, "list_documents", self.backend.list_documents, name, limit=limit, offset=offset
        )

    async def search(
        self,
        name: str,
        *,
        mode: SearchMode,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        return await self._call(
            STORE_READ,
            "search",
            self.backend.search,
            name,
            mode=mode,
            dense=dense,
            sparse=sparse,
            top_k=top_k,
            filters=filters,
        )

    async def ping(self) -> None:
        await self._call(STORE_READ, "ping", self.backend.ping)

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the backend answers a ping within ``timeout_s``, else what went wrong. Health
        checks use this: it bypasses the breaker, so it sees a recovery an open breaker would hide."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.backend.ping), timeout=timeout_s)
        except RagkitError as exc:
            return exc.message
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        return None

    def close(self) -> None:
        self.backend.close()


async def _probe_backend(backend: object, timeout_s: float) -> str | None:
    """None when the backend answers its own ``probe()`` within ``timeout_s``, else what went wrong.

    A backend without ``probe()`` runs in this process (the local embedder, the extractive
    generator): there is nothing to ask, it is ready once loaded, and the app loads it before it
    serves. A remote one asks its host something cheap, never for a real answer.
    """
    probe = getattr(backend, "probe", None)
    if probe is None:
        return None
    try:
        await asyncio.wait_for(probe(), timeout=timeout_s)
    except RagkitError as exc:
        return exc.message
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    return None


class GuardedEmbedder:
    """An embedder whose model calls go through its breaker; everything else is the adapter's."""

    def __init__(self, embedder: Embedder, breakers: BreakerBoard) -> None:
        self.backend = embedder
        self._breaker = breakers[embedder.breaker_name]

    def __getattr__(self, attribute: str) -> Any:
        # name, dimension, max_tokens, breaker_name, count_tokens, load, aclose: the adapter's own.
        return getattr(self.backend, attribute)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._breaker.guard():
            return await self.backend.embed(texts)

    async def ensure_dimension(self) -> None:
        """A remote model tells its vector size only when asked (one probe, then remembered)."""
        ensure = getattr(self.backend, "ensure_dimension", None)
        if ensure is not None:
            with self._breaker.guard():
                await ensure()

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the model answers within ``timeout_s``, else what went wrong; bypasses the breaker."""
        return await _probe_backend(self.backend, timeout_s)


class GuardedGenerator:
    """A generator whose calls, streamed ones included, go through its breaker."""

    def __init__(self, generator: Generator, breakers: BreakerBoard) -> None:
        self.backend = generator
        self._breaker = breakers[generator.breaker_name]

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.backend, attribute)

    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str:
        with self._breaker.guard():
            return await self.backend.generate(question, hits, options)

    async def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]:
        # The breaker spans the whole stream: a host that fails mid-answer counts as failing.
        with self._breaker.guard():
            async for piece in self.backend.stream(question, hits, options):
                yield piece

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the model's host answers within ``timeout_s``, else what went wrong; bypasses
        the breaker."""
        return await _probe_backend(self.backend, timeout_s)


class GuardedCondenser:
    """A condenser whose calls go through its own breaker; everything else is the adapter's."""

    def __init__(self, condenser: Condenser, breakers: BreakerBoard) -> None:
        self.backend = condenser
        self._breaker = breakers[condenser.breaker_name]

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.backend, attribute)

    async def condense(self, history: Sequence[Turn], question: str) -> str:
        with self._breaker.guard():
            return await self.backend.condense(history, question)
