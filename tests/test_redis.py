"""Redis as cache and shared rate-limit state, against a real redis-server; and its outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ragkit.adapters.breakers import Breaker
from ragkit.adapters.cache import FallbackCache, RedisCache
from tests.conftest import start_stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.skipif(
    not RedisServer.available(), reason="redis-server is not installed (.ci/run installs it)"
)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_redis_cache_round_trip_and_expiry(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        cache = RedisCache(redis_server.url, timeout_s=1.0)
        await cache.set("k", b"value", ttl_seconds=0.3)
        assert await cache.get("k") == b"value"
        deadline = time.monotonic() + 5
        while await cache.get("k") is not None:  # Redis expires it on its own clock: poll, bounded
            assert time.monotonic() < deadline, "a 0.3 s TTL did not expire within 5 s"
            await asyncio.sleep(0.02)
        assert [(await cache.incr_window("w", 60)).count for _ in range(3)] == [1, 2, 3]
        await cache.close()

    asyncio.run(scenario())


def test_fallback_cache_keeps_working_when_redis_dies(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        breaker = Breaker("redis", fail_max=2, reset_timeout=30)
        cache = FallbackCache(RedisCache(redis_server.url, timeout_s=0.5), breaker)
        await cache.set("a", b"1", 60)
        assert await cache.get("a") == b"1" and not cache.degraded
        redis_server.stop()
        await cache.set("b", b"2", 60)  # lands in the in-process cache
        assert await cache.get("b") == b"2"
        assert cache.degraded and breaker.state == "open"
        assert (await cache.incr_window("limit", 60)).count == 1
        await cache.close()

    asyncio.run(scenario())


def test_two_replicas_share_rate_limits_through_redis(
    tmp_path: Path, redis_server: RedisServer, local_embedder
) -> None:  # noqa: ANN001
    first, server_a = start_stack(
        tmp_path / "a", local_embedder, redis_url=redis_server.url, service_rate_limit="4/day"
    )
    second, server_b = start_stack(
        tmp_path / "b", local_embedder, redis_url=redis_server.url, service_rate_limit="4/day"
    )
    try:
        codes = [stack.http.get("/api/v1/rag/collections").status_code for stack in (first, second) * 3]
        assert codes.count(200) == 4 and codes[-2:] == [429, 429]
        assert first.anon.get("/health").json()["dependencies"]["cache"]["backend"] == "redis"
    finally:
        for stack, server in ((first, server_a), (second, server_b)):
            stack.close()
            server.__exit__()
            stack.services.store.close()


def test_service_keeps_answering_when_redis_goes_down(stack_factory, redis_server: RedisServer) -> None:  # noqa: ANN001
    stack = stack_factory(redis_url=redis_server.url, redis_timeout_s=0.5)
    stack.http.post("/api/v1/rag/collections", json={"name": "docs"})
    stack.http.post(
        "/api/v1/rag/collections/docs/documents",
        json={
            "documents": [
                {"id": "a", "text": "Redis keeps the shared cache and the rate-limit counters of every replica."}
            ]
        },
    )
    redis_server.stop()
    started = time.perf_counter()
    for _ in range(7):
        response = stack.http.post("/api/v1/rag/search", json={"query": "rate limits", "collection": "docs"})
        assert response.status_code == 200 and response.json()["results"][0]["doc_id"] == "a"
    assert time.perf_counter() - started < 30
    health = stack.anon.get("/health").json()
    assert health["circuit_breakers"]["redis"] == "open"
    assert health["status"] == "degraded"
    assert "in-process" in health["dependencies"]["cache"]["status"]
