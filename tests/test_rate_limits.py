"""Rate limits over real HTTP: Retry-After and the RateLimit header fields, per principal, shared
across replicas through a real redis-server, and failing open (with one log line) when it dies.

The windows run on a clock the test moves (the caches take it), so a minute passes without
waiting and every second is checked where it matters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from ragkit.adapters.breakers import Breaker
from ragkit.adapters.cache import FallbackCache, MemoryCache, RedisCache
from ragkit.core.types import Cache
from ragkit.http.app import create_app
from ragkit.services import build_services
from tests.conftest import SECRET, make_settings
from tests.support.live import LiveServer
from tests.support.redis_server import RedisServer

# A real epoch time 40 s into its minute: the 60 s window that holds it ends 20 s later.
T0 = 1_700_000_020.0
assert T0 % 60 == 40
COLLECTIONS = "/api/v1/rag/collections"
JWT_KEY = "rate-limit-test-signing-key-" + "r" * 24
NEEDS_REDIS = pytest.mark.skipif(not RedisServer.available(), reason="redis-server is not installed")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Service:
    """A real service over HTTP whose rate-limit counts live in ``cache`` (a real one)."""

    def __init__(self, data_dir: Path, embedder, cache: Cache, **overrides: object) -> None:  # noqa: ANN001
        self.settings = make_settings(data_dir, **overrides)
        self.services = build_services(self.settings, embedder=embedder)
        self.services.cache = cache  # the gate's limiter counts in what the services hold
        self.server = LiveServer(create_app(self.settings, self.services)).__enter__()
        self.http = httpx.Client(base_url=self.server.url, headers={"X-Service-Token": SECRET}, timeout=60)
        self.anon = httpx.Client(base_url=self.server.url, timeout=60)

    def close(self) -> None:
        self.http.close()
        self.anon.close()
        self.server.__exit__()
        self.services.store.close()


@pytest.fixture
def start(tmp_path: Path, local_embedder) -> Iterator[Callable[..., Service]]:  # noqa: ANN001
    started: list[Service] = []

    def factory(cache: Cache, **overrides: object) -> Service:
        service = Service(tmp_path / f"s{len(started)}", local_embedder, cache, **overrides)
        started.append(service)
        return service

    yield factory
    for service in started:
        service.close()


def quota(response: httpx.Response) -> tuple[str | None, ...]:
    h = response.headers
    return (h.get("RateLimit-Limit"), h.get("RateLimit-Remaining"), h.get("RateLimit-Reset"))


def user_token(sub: str = "ada") -> str:
    claims = {"sub": sub, "scope": "read write", "exp": int(time.time()) + 600}
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def test_finding_4_retry_after_is_when_the_refusal_really_ends(start) -> None:  # noqa: ANN001
    # Finding 4: a 429 said retry-after 20, and 21 s later the call was still refused with
    # retry-after 59 (the in-process windows opened at a key's first hit, Retry-After assumed
    # windows aligned to the clock). Here, over HTTP: wait what it says, and be admitted.
    clock = FakeClock(T0)
    service = start(MemoryCache(wall_clock=clock), service_rate_limit="2/minute")
    codes = [service.http.get(COLLECTIONS).status_code for _ in range(2)]
    refused = service.http.get(COLLECTIONS)
    assert codes == [200, 200] and refused.status_code == 429
    assert refused.headers["Retry-After"] == "20"
    clock.advance(19)
    still = service.http.get(COLLECTIONS)
    assert still.status_code == 429 and still.headers["Retry-After"] == "1"
    clock.advance(1)  # exactly Retry-After after the first refusal
    assert service.http.get(COLLECTIONS).status_code == 200
    clock.advance(1)  # 21 s after the refusal, as in the finding
    admitted = service.http.get(COLLECTIONS)
    assert admitted.status_code == 200, admitted.headers
    assert quota(admitted) == ("2", "0", "59")  # its second request in a window that began 1 s ago


def test_ratelimit_headers_count_down_and_match_retry_after(start) -> None:  # noqa: ANN001
    clock = FakeClock(T0 + 0.4)  # 19.6 s left: Reset rounds up, never tells a caller to come back early
    service = start(MemoryCache(wall_clock=clock), service_rate_limit="3/minute")
    responses = [service.http.get(COLLECTIONS) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [quota(r) for r in responses] == [("3", "2", "20"), ("3", "1", "20"), ("3", "0", "20"), ("3", "0", "20")]
    assert responses[-1].headers["Retry-After"] == responses[-1].headers["RateLimit-Reset"]
    assert all(r.headers["RateLimit-Policy"] == "3;w=60" for r in responses)
    assert responses[-1].json()["error"]["code"] == "rate_limited"
    rejected = service.services.metrics.registry.get_sample_value(
        "ragkit_rate_limit_rejections_total", {"kind": "service"}
    )
    assert rejected == 1, "operators see each refusal in /metrics"


def test_every_rate_limited_route_sends_the_headers(start) -> None:  # noqa: ANN001
    # JSON bodies, a JSON response built by the route, a CSV Response, a server-sent event
    # stream and errors raised past the gate (404): the headers ride on all of them.
    clock = FakeClock(T0)
    service = start(MemoryCache(wall_clock=clock), service_rate_limit="100/minute")
    http = service.http
    calls = [
        http.post(COLLECTIONS, json={"name": "docs"}),
        http.post(f"{COLLECTIONS}/docs/documents", json={"documents": [{"id": "a", "text": "Limits are shared."}]}),
        http.get(COLLECTIONS),
        http.get(f"{COLLECTIONS}/docs"),
        http.get(f"{COLLECTIONS}/docs/documents"),
        http.post("/api/v1/rag/search", json={"query": "limits", "collection": "docs"}),
        http.get("/api/v1/rag/search", params={"query": "limits", "collection": "docs"}),
        http.post("/api/v1/rag/query", json={"question": "what is shared?", "collection": "docs", "stream": True}),
        http.post("/api/v1/rag/query", json={"question": "what is shared?", "collection": "docs"}),
        http.get("/api/v1/rag/feedback", params={"format": "csv"}),
        http.get(f"{COLLECTIONS}/missing"),
        http.get("/api/rag/collections"),  # the deprecated alias counts in the same window
    ]
    assert [r.status_code for r in calls] == [201, 200, 200, 200, 200, 200, 200, 200, 200, 200, 404, 200]
    assert calls[7].headers["content-type"].startswith("text/event-stream")
    assert [quota(r) for r in calls] == [("100", str(99 - i), "20") for i in range(len(calls))]
    # Routes no limit applies to say nothing about limits.
    for path in ("/health", "/health/live", "/metrics"):
        assert quota(service.anon.get(path)) == (None, None, None), path


def test_end_users_are_counted_per_subject_and_service_callers_apart(start) -> None:  # noqa: ANN001
    clock = FakeClock(T0)
    service = start(MemoryCache(wall_clock=clock), rate_limit="2/minute", jwt_secret=JWT_KEY)

    def as_user(sub: str) -> httpx.Response:
        return service.anon.get(COLLECTIONS, headers={"Authorization": f"Bearer {user_token(sub)}"})

    ada = [as_user("ada") for _ in range(3)]
    assert [r.status_code for r in ada] == [200, 200, 429]
    assert quota(ada[2]) == ("2", "0", "20")
    assert quota(as_user("grace")) == ("2", "1", "20")
    # No service limit is configured: service callers are not counted, and told nothing.
    assert [quota(service.http.get(COLLECTIONS)) for _ in range(3)] == [(None, None, None)] * 3


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def shared_cache(url: str, clock: FakeClock, breaker_clock: Callable[[], float] = time.monotonic) -> FallbackCache:
    breaker = Breaker("redis", fail_max=1, reset_timeout=30, clock=breaker_clock)
    return FallbackCache(
        RedisCache(url, timeout_s=1.0, clock=clock), breaker, fallback=MemoryCache(clock=clock, wall_clock=clock)
    )


@NEEDS_REDIS
def test_replicas_share_one_count_through_redis(start, redis_server: RedisServer) -> None:  # noqa: ANN001
    clock = FakeClock(T0)
    first = start(shared_cache(redis_server.url, clock), service_rate_limit="5/minute")
    second = start(shared_cache(redis_server.url, clock), service_rate_limit="5/minute")
    responses = [replica.http.get(COLLECTIONS) for replica in (first, second) * 3]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["4", "3", "2", "1", "0", "0"]
    assert responses[-1].headers["Retry-After"] == "20"
    assert not first.services.cache.degraded and not second.services.cache.degraded


@NEEDS_REDIS
def test_redis_down_fails_open_with_one_log_line(
    start, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:  # noqa: ANN001
    clock = FakeClock(T0)
    breaker_clock = FakeClock(1000.0)
    service = start(shared_cache(redis_server.url, clock, breaker_clock), service_rate_limit="3/minute")
    assert service.http.get(COLLECTIONS).headers["RateLimit-Remaining"] == "2"  # counted in Redis
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="ragkit")
    # Redis is gone: requests keep being answered and counted in this process (the count starts
    # again there: the shared one is out of reach), limits still apply.
    outage = [service.http.get(COLLECTIONS) for _ in range(5)]
    assert [r.status_code for r in outage] == [200, 200, 200, 429, 429]
    assert [r.headers["RateLimit-Remaining"] for r in outage] == ["2", "1", "0", "0", "0"]
    lost = [r for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert lost[0].levelno == logging.WARNING and "Redis" in lost[0].getMessage()
    # Nothing is said once per request while the outage lasts.
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == len(set(warned)) < len(outage), warned
    # Redis comes back, the breaker probes it after its reset timeout: shared again, said once.
    redis_server.start()
    breaker_clock.advance(31)
    clock.advance(60)
    back = [service.http.get(COLLECTIONS) for _ in range(2)]
    assert [r.headers["RateLimit-Remaining"] for r in back] == ["2", "1"]
    assert not service.services.cache.degraded
    said = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(said) == 2 and "again" in said[1], said
