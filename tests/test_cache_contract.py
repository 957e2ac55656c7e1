"""The Cache contract, written once and run against every backend: the in-process cache, Redis
(a real redis-server), and `FallbackCache` — Redis behind its breaker — both with Redis up and
with Redis down (its in-process fallback answering).

Time is injected wherever the backend keeps it (TTLs of the in-process cache, every backend's
rate-limit windows), so windows are tested to the second without waiting. Only Redis' own TTLs
run on Redis' clock; those tests use tiny TTLs and poll with a deadline.

Then Redis failing for real — refused, killed, frozen, refusing auth, out of memory, read-only,
wrong type, not Redis at all — and what comes out: ragkit's `DependencyError`s from
`RedisCache`, in-process answers from `FallbackCache`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.exceptions

from ragkit.adapters.breakers import Breaker
from ragkit.adapters.cache import FallbackCache, MemoryCache, RedisCache, fixed_window
from ragkit.core.errors import (
    ConfigurationError,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
    RateLimited,
)
from ragkit.core.types import Cache
from ragkit.http.errors import error_response
from ragkit.http.ratelimit import RateLimit, RateLimiter
from tests.support.live import free_port
from tests.support.redis_server import RedisServer

BACKENDS = ("memory", "redis", "fallback", "fallback-redis-down")
NEEDS_REDIS = pytest.mark.skipif(not RedisServer.available(), reason="redis-server is not installed")

# A real epoch time, 40 s into its minute: a 60 s window that holds it ends 20 s later.
T0 = 1_700_000_020.0
assert T0 % 60 == 40


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    kind: str
    cache: Cache
    clock: FakeClock
    server: RedisServer | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def redis_ttls(self) -> bool:
        """True when values live in Redis, whose own clock runs their TTLs."""
        return self.kind in ("redis", "fallback")

    def raw(self) -> redis.Redis:
        """A plain client on the same server, to look at what the cache left there."""
        assert self.server is not None
        client = redis.Redis.from_url(self.server.url)
        self.closers.append(client.close)
        return client


def _fallback(url: str, clock: FakeClock, *, fail_max: int = 1) -> tuple[FallbackCache, MemoryCache, Breaker]:
    memory = MemoryCache(clock=clock, wall_clock=clock)
    breaker = Breaker("redis", fail_max=fail_max, reset_timeout=3600)
    return FallbackCache(RedisCache(url, timeout_s=2.0, clock=clock), breaker, fallback=memory), memory, breaker


def _closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # the port was free a moment ago: nothing listens


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind in ("redis", "fallback") and not RedisServer.available():
        pytest.skip("redis-server is not installed")
    clock = FakeClock(T0)
    server = RedisServer(tmp_path / "redis").start() if kind in ("redis", "fallback") else None
    if kind == "memory":
        cache: Cache = MemoryCache(clock=clock, wall_clock=clock)
    elif kind == "redis":
        cache = RedisCache(server.url, timeout_s=2.0, clock=clock)
    elif kind == "fallback":
        cache, _, _ = _fallback(server.url, clock)
    else:
        cache, _, _ = _fallback(_closed_port_url(), clock)
    made = Backend(kind, cache, clock, server)
    yield made
    for close in made.closers:
        close()
    if server is not None:
        server.stop()


def run(backend: Backend, scenario: Callable[[Cache], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await scenario(backend.cache)
        finally:
            await backend.cache.close()

    asyncio.run(main())
    # Each FallbackCache case must really have run on the side it claims to, or it tests nothing new.
    if backend.kind == "fallback":
        assert not backend.cache.degraded, backend.cache.last_error
    if backend.kind == "fallback-redis-down":
        assert backend.cache.degraded


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.02)  # the polling interval; the deadline bounds the wait


# -- values and their TTLs ------------------------------------------------------------------


def test_get_returns_what_set_stored(backend: Backend) -> None:
    async def scenario(cache: Cache) -> None:
        assert await cache.get("absent") is None
        await cache.set("k", b"\x00binary\xff", ttl_seconds=60)
        assert await cache.get("k") == b"\x00binary\xff"
        await cache.set("k", b"replaced", ttl_seconds=60)
        assert await cache.get("k") == b"replaced"
        assert await cache.get("K") is None  # keys are case-sensitive

    run(backend, scenario)


def test_values_expire_after_their_ttl(backend: Backend) -> None:
    async def scenario(cache: Cache) -> None:
        await cache.set("long", b"stays", ttl_seconds=3600)
        if backend.redis_ttls:
            # Redis expires keys on its own clock: the TTL it holds is what we asked for, and a
            # tiny one really runs out.
            await cache.set("medium", b"v", ttl_seconds=30)
            assert 29_000 < backend.raw().pttl("ragkit:medium") <= 30_000
            await cache.set("short", b"goes", ttl_seconds=0.2)

            async def short_gone() -> bool:
                return await cache.get("short") is None

            await eventually(short_gone, "expiry of a 0.2 s TTL")
        else:
            await cache.set("short", b"goes", ttl_seconds=30)
            backend.clock.advance(29.9)
            assert await cache.get("short") == b"goes"
            backend.clock.advance(0.2)
            assert await cache.get("short") is None
        assert await cache.get("long") == b"stays"

    run(backend, scenario)


def test_the_in_process_cache_evicts_the_least_recently_used_value() -> None:
    # Only the in-process cache bounds its size itself (Redis' is its maxmemory policy).
    async def scenario() -> None:
        clock = FakeClock(T0)
        cache = MemoryCache(max_items=2, clock=clock, wall_clock=clock)
        await cache.set("a", b"1", 60)
        await cache.set("b", b"2", 60)
        assert await cache.get("a") == b"1"  # a read counts as use: "b" is now the oldest
        await cache.set("c", b"3", 60)
        assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (b"1", None, b"3")
        await cache.set("a", b"1 again", 60)  # so does a write: "c" is now the oldest
        await cache.set("d", b"4", 60)
        assert (await cache.get("a"), await cache.get("c"), await cache.get("d")) == (b"1 again", None, b"4")

    asyncio.run(scenario())


def test_a_flood_of_keys_cannot_reset_a_live_rate_limit_window() -> None:
    # The in-process cache bounds its windows too, but may only forget finished ones: otherwise
    # a caller could clear their own count by hitting the service under many other names.
    async def scenario() -> None:
        clock = FakeClock(T0)
        cache = MemoryCache(max_items=2, clock=clock, wall_clock=clock)
        assert [(await cache.incr_window("victim", 60)).count for _ in range(2)] == [1, 2]
        for other in ("x", "y", "z"):
            await cache.incr_window(other, 60)
        assert (await cache.incr_window("victim", 60)).count == 3
        clock.advance(20)  # the next window: the old counts are finished, and forgotten
        assert (await cache.incr_window("victim", 60)).count == 1

    asyncio.run(scenario())


# -- ping and close -------------------------------------------------------------------------


def test_ping_says_whether_the_backend_answers(backend: Backend) -> None:
    async def scenario(cache: Cache) -> None:
        assert await cache.get("k") is None
        if backend.kind == "fallback-redis-down":
            # Ping asks the primary: the fallback that keeps get() answering must not hide the outage.
            with pytest.raises(DependencyError):
                await cache.ping()
        else:
            assert await cache.ping() is None

    run(backend, scenario)


def test_close_releases_the_backend_and_may_be_repeated(backend: Backend) -> None:
    async def scenario(cache: Cache) -> None:
        await cache.set("k", b"v", 60)
        if backend.redis_ttls:
            raw = backend.raw()
            assert raw.info("clients")["connected_clients"] >= 2  # ours and the raw client

            async def only_raw_left() -> bool:
                return raw.info("clients")["connected_clients"] == 1

            await cache.close()
            await eventually(only_raw_left, "Redis seeing the cache's connections close")
        else:
            await cache.close()
            assert await cache.get("k") is None  # the in-process cache frees its values
        await cache.close()

    run(backend, scenario)


# -- rate-limit windows ---------------------------------------------------------------------


def test_incr_window_counts_hits_per_key(backend: Backend) -> None:
    async def scenario(cache: Cache) -> None:
        hits = [await cache.incr_window("alice", 60) for _ in range(3)]
        assert [h.count for h in hits] == [1, 2, 3]
        assert [h.resets_in for h in hits] == [20.0, 20.0, 20.0]
        assert (await cache.incr_window("bob", 60)).count == 1

    run(backend, scenario)


def test_windows_are_aligned_to_the_clock_not_opened_by_the_first_hit(backend: Backend) -> None:
    # The drift this catches: the in-process cache once opened a window at a key's first hit
    # while Redis (and Retry-After) used clock-aligned ones.
    async def scenario(cache: Cache) -> None:
        first = await cache.incr_window("k", 60)
        assert (first.count, first.resets_in) == (1, 20.0)
        backend.clock.advance(19.5)
        second = await cache.incr_window("k", 60)
        assert (second.count, second.resets_in) == (2, 0.5)
        backend.clock.advance(0.5)  # exactly on the boundary: a new window, 20 s after the first hit
        third = await cache.incr_window("k", 60)
        assert (third.count, third.resets_in) == (1, 60.0)

    run(backend, scenario)


@pytest.mark.parametrize("window_s", [1, 60, 3600, 86400])
def test_every_backend_places_windows_by_the_one_definition(backend: Backend, window_s: int) -> None:
    async def scenario(cache: Cache) -> None:
        for step in (0.0, 0.25, window_s / 3, window_s):
            backend.clock.advance(step)
            hit = await cache.incr_window(f"w{window_s}", window_s)
            expected = fixed_window(backend.clock.now, window_s).end - backend.clock.now
            assert hit.resets_in == pytest.approx(expected, abs=1e-6)
            assert 0 < hit.resets_in <= window_s

    run(backend, scenario)


@pytest.mark.parametrize("into_window_s", [0.0, 0.6, 19.9])
def test_a_refused_caller_is_admitted_exactly_retry_after_seconds_later(backend: Backend, into_window_s: float) -> None:
    # Through the real limiter and the real 429 headers: whatever Retry-After says, waiting that
    # long must be enough, and a second less must not be (it is not padded either). 0.6 s into
    # the window checks the rounding to whole seconds; 19.9 s the last moment of a window.
    async def scenario(cache: Cache) -> None:
        backend.clock.advance(into_window_s)
        limiter = RateLimiter(cache, RateLimit(2, 60), None)

        async def refused() -> int:
            with pytest.raises(RateLimited) as caught:
                await limiter.check("alice", "user")
            return int(error_response(caught.value).headers["Retry-After"])

        await limiter.check("alice", "user")
        await limiter.check("alice", "user")
        wait = await refused()
        assert 1 <= wait <= 20
        backend.clock.advance(wait - 1)
        await refused()
        backend.clock.advance(1)  # now exactly `wait` seconds after the refusal
        await limiter.check("alice", "user")
        await limiter.check("alice", "user")
        assert await refused() == 60  # and the new window is a whole one

    run(backend, scenario)


# -- Redis failing, for real ----------------------------------------------------------------


@dataclass
class Fault:
    url: str
    error: type[DependencyError]
    ops: tuple[str, ...]  # the operations this fault makes fail
    arm: Callable[[], None] | None = None  # breaks a server the cache has already talked to
    password: str | None = None


OPS: dict[str, Callable[[Cache], Awaitable[object]]] = {
    "get": lambda cache: cache.get("k"),
    "set": lambda cache: cache.set("k", b"v", 60),
    "incr_window": lambda cache: cache.incr_window("k", 60),
    "ping": lambda cache: cache.ping(),
}
ALL_OPS = tuple(OPS)
WRITES = ("set", "incr_window")


def _not_redis_peer() -> tuple[str, Callable[[], None]]:
    """A TCP server that answers like a web server: a REDIS_URL pointing at the wrong service."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return f"redis://127.0.0.1:{listener.getsockname()[1]}/0", listener.close


FAULTS = (
    "connection refused",
    "server killed",
    "server frozen",
    "password required",
    "wrong password",
    "out of memory",
    "read-only replica",
    "wrong type",
    "not a redis server",
)


@pytest.fixture(params=FAULTS)
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    name = request.param
    if name == "connection refused":
        yield Fault(_closed_port_url(), DependencyUnavailable, ALL_OPS)
        return
    if name == "not a redis server":
        url, close = _not_redis_peer()
        yield Fault(url, DependencyUnavailable, ALL_OPS)
        close()
        return
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    args = {
        "password required": ("--requirepass", "s3cret-pw"),
        "wrong password": ("--requirepass", "s3cret-pw"),
        "out of memory": ("--maxmemory", "1", "--maxmemory-policy", "noeviction"),
        # A replica whose primary is gone still serves reads, and refuses every write.
        "read-only replica": ("--replicaof", "127.0.0.1", str(free_port())),
    }.get(name, ())
    server = RedisServer(tmp_path / "redis", *args).start()
    try:
        if name == "server killed":
            yield Fault(server.url, DependencyUnavailable, ALL_OPS, arm=server.kill)
        elif name == "server frozen":
            yield Fault(server.url, DependencyTimeout, ALL_OPS, arm=server.freeze)
        elif name == "password required":
            yield Fault(server.url, DependencyUnavailable, ALL_OPS)
        elif name == "wrong password":
            url = server.url.replace("redis://", "redis://:not-the-pw@")
            yield Fault(url, DependencyUnavailable, ALL_OPS, password="not-the-pw")
        elif name in ("out of memory", "read-only replica"):  # reads still work, writes fail
            yield Fault(server.url, DependencyUnavailable, WRITES)
        else:  # wrong type: another program keeps a list where the cache expects bytes
            with redis.Redis.from_url(server.url) as raw:
                raw.lpush("ragkit:k", "not bytes")
            yield Fault(server.url, DependencyUnavailable, ("get",))
    finally:
        server.stop()


async def _warm_then_arm(cache: Cache, fault: Fault) -> None:
    if fault.arm is not None:
        await cache.ping()  # an open, healthy connection first: the fault then cuts it
        fault.arm()


def test_every_redis_failure_comes_out_as_a_ragkit_error(fault: Fault) -> None:
    async def scenario() -> None:
        cache = RedisCache(fault.url, timeout_s=0.3, clock=FakeClock(T0))
        try:
            await _warm_then_arm(cache, fault)
            for op in fault.ops:
                with pytest.raises(fault.error) as caught:
                    await OPS[op](cache)
                assert caught.value.dependency == "redis"
                # Translated at the boundary, with the client's own exception kept as the cause.
                assert isinstance(caught.value.__cause__, (redis.exceptions.RedisError, OSError)), op
                if fault.password:
                    assert fault.password not in caught.value.message
        finally:
            await cache.close()

    asyncio.run(scenario())


def test_fallback_cache_answers_in_process_through_every_redis_failure(fault: Fault) -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        # fail_max: every failing call reaches Redis (none is cut short by the breaker), and the
        # last one opens it — each failure counted as the dependency's.
        cache, memory, breaker = _fallback(fault.url, clock, fail_max=len(fault.ops))
        try:
            await _warm_then_arm(cache, fault)
            for op in fault.ops:
                if op == "get":
                    await memory.set("k", b"in-process", 60)
                    assert await cache.get("k") == b"in-process"
                elif op == "set":
                    await cache.set("k", b"v", 60)
                    assert await memory.get("k") == b"v"
                elif op == "incr_window":
                    assert (await cache.incr_window("limit", 60)).count == 1
                    assert (await memory.incr_window("limit", 60)).count == 2
                else:  # the health probe reports the outage instead of hiding it
                    with pytest.raises(fault.error):
                        await cache.ping()
                assert cache.degraded and "Redis" in cache.last_error
            assert breaker.state == "open"
        finally:
            await cache.close()

    asyncio.run(scenario())


@NEEDS_REDIS
def test_falling_back_mid_window_keeps_the_window_end(tmp_path: Path) -> None:
    # One window definition: when Redis dies, the in-process count restarts, but the window it
    # counts in ends when Redis' would have — so a Retry-After already sent stays true.
    server = RedisServer(tmp_path / "redis").start()

    async def scenario() -> None:
        clock = FakeClock(T0)
        cache, _, _ = _fallback(server.url, clock)
        try:
            assert [(await cache.incr_window("k", 60)).count for _ in range(2)] == [1, 2]
            server.kill()
            clock.advance(5)
            hit = await cache.incr_window("k", 60)
            assert cache.degraded and (hit.count, hit.resets_in) == (1, 15.0)
        finally:
            await cache.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_malformed_redis_url_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as caught:
        RedisCache("http://:hunter2@cache:6379", timeout_s=1.0)
    assert "hunter2" not in caught.value.message
