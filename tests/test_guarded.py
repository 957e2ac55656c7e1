"""The guarded store port: breakers, deadlines, metrics, and the collection-spec cache that spares
every search a store round trip — correct for this replica at once, and for other replicas
(several services over one store) on the first request that trips over a stale spec."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from ragkit.adapters.breakers import STORE_READ, BreakerBoard
from ragkit.adapters.guarded import GuardedStore
from ragkit.adapters.stores.edge import EdgeStore
from ragkit.adapters.stores.qdrant import QdrantStore
from ragkit.core.errors import BreakerOpen, CollectionNotFound, DependencyTimeout
from ragkit.core.metrics import Metrics
from ragkit.core.types import CollectionSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, chunk_size: int = 100) -> CollectionSpec:
    return CollectionSpec(name=name, embedder="test", dimension=4, chunk_size=chunk_size, chunk_overlap=10)


def store_reads(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "ragkit_store_operation_duration_seconds_count", {"operation": operation}
    )
    return value or 0.0


@pytest.fixture
def backend(tmp_path: Path):  # noqa: ANN201
    store = EdgeStore(tmp_path / "edge")
    yield store
    store.close()


def replica(backend: EdgeStore, clock: Clock, **kwargs: object) -> tuple[GuardedStore, Metrics]:
    metrics = Metrics()
    breakers = BreakerBoard(fail_max=2, reset_timeout=30, metrics=metrics)
    return GuardedStore(backend, breakers, metrics, timeout_s=5, clock=clock, **kwargs), metrics


def test_specs_are_cached_for_searches_and_read_fresh_for_writes(backend: EdgeStore) -> None:
    clock = Clock()
    store, metrics = replica(backend, clock)

    async def scenario() -> None:
        await store.create_collection(spec("docs"))
        for _ in range(5):
            assert (await store.get_collection("docs")).chunk_size == 100
        assert store_reads(metrics, "get_collection") == 1, "a search's spec lookup must not reach the store each time"
        await store.get_collection("docs", fresh=True)
        assert store_reads(metrics, "get_collection") == 2

    asyncio.run(scenario())


def test_this_replicas_own_changes_are_seen_at_once(backend: EdgeStore) -> None:
    store, _ = replica(backend, Clock())

    async def scenario() -> None:
        await store.create_collection(spec("docs", chunk_size=100))
        assert (await store.get_collection("docs")).chunk_size == 100
        await store.delete_collection("docs")
        with pytest.raises(CollectionNotFound):
            await store.get_collection("docs")
        await store.create_collection(spec("docs", chunk_size=50))
        assert (await store.get_collection("docs")).chunk_size == 50

    asyncio.run(scenario())


def test_another_replicas_drop_is_seen_on_the_first_request_that_trips_over_it(backend: EdgeStore) -> None:
    clock = Clock()
    a, _ = replica(backend, clock)
    b, _ = replica(backend, clock)

    async def scenario() -> None:
        await a.create_collection(spec("docs"))
        await b.get_collection("docs")  # b caches it
        await a.delete_collection("docs")
        # b's next search reaches the store, which says the collection is gone: that answer is
        # passed on, and b forgets its stale spec instead of serving it until it expires.
        with pytest.raises(CollectionNotFound):
            await b.search("docs", mode="dense", dense=[1.0, 0, 0, 0], sparse=None, top_k=3)
        with pytest.raises(CollectionNotFound):
            await b.get_collection("docs")

    asyncio.run(scenario())


def test_another_replicas_recreate_is_seen_within_the_ttl(backend: EdgeStore) -> None:
    clock = Clock()
    a, _ = replica(backend, clock, spec_ttl_s=5.0)
    b, _ = replica(backend, clock, spec_ttl_s=5.0)

    async def scenario() -> None:
        await a.create_collection(spec("docs", chunk_size=100))
        assert (await b.get_collection("docs")).chunk_size == 100
        await a.delete_collection("docs")
        await a.create_collection(spec("docs", chunk_size=50))
        clock.now += 5.01
        assert (await b.get_collection("docs")).chunk_size == 50

    asyncio.run(scenario())


def test_a_store_that_hangs_hits_the_deadline_and_counts_against_the_breaker() -> None:
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        # The client would wait 2 s; the guard gives up at 0.3 s (its threads end with the client timeout).
        backend = QdrantStore(QdrantClient(url=f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False))
        metrics = Metrics()
        breakers = BreakerBoard(fail_max=2, reset_timeout=30, metrics=metrics)
        store = GuardedStore(backend, breakers, metrics, timeout_s=0.3)

        async def scenario() -> None:
            for _ in range(2):
                with pytest.raises(DependencyTimeout) as timed_out:
                    await store.list_collections()
                assert "0.3 s" in timed_out.value.message
            assert breakers[STORE_READ].state == "open"
            with pytest.raises(BreakerOpen):
                await store.list_collections()

        asyncio.run(scenario())
        assert store_reads(metrics, "list_collections") == 3
