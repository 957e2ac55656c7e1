"""Caches: in-process (default) and Redis, and the fallback between them.

``FallbackCache`` puts Redis behind its breaker and falls back to the in-process cache when
Redis is down, so a Redis outage costs shared state, never requests (DESIGN.md §3).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import redis.asyncio as aioredis
import redis.exceptions

from ragkit.adapters.breakers import Breaker
from ragkit.core.errors import DependencyError, DependencyTimeout, DependencyUnavailable


class MemoryCache:
    name = "memory"

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._windows: dict[str, tuple[float, int]] = {}
        self._max_items = max_items

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._items[key] = (time.monotonic() + ttl_seconds, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def incr_window(self, key: str, window_seconds: float) -> int:
        now = time.monotonic()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= window_seconds:
            started, count = now, 0
        self._windows[key] = (started, count + 1)
        if len(self._windows) > self._max_items:  # forget finished windows, not live ones
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < window_seconds}
        return count + 1

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    name = "redis"

    def __init__(self, url: str, timeout_s: float, prefix: str = "ragkit:") -> None:
        self.url = url
        self._prefix = prefix
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )

    async def _run(self, coro):  # noqa: ANN001, ANN202 - any redis coroutine
        try:
            return await coro
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            raise DependencyTimeout("redis", f"Redis at {self.url} did not answer in time") from exc
        except (redis.exceptions.ConnectionError, OSError) as exc:
            raise DependencyUnavailable("redis", f"Redis at {self.url} is unreachable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise DependencyUnavailable("redis", f"Redis at {self.url} failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        return await self._run(self._redis.get(self._prefix + key))

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._run(self._redis.set(self._prefix + key, value, px=max(int(ttl_seconds * 1000), 1)))

    async def incr_window(self, key: str, window_seconds: float) -> int:
        # Fixed window: the key's first increment starts the window and sets its expiry.
        full = f"{self._prefix}rl:{key}:{int(time.time() // window_seconds)}"
        pipe = self._redis.pipeline()
        pipe.incr(full)
        pipe.expire(full, max(int(window_seconds) + 1, 1))
        count, _ = await self._run(pipe.execute())
        return int(count)

    async def ping(self) -> None:
        await self._run(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()


class FallbackCache:
    """Redis through the `redis` breaker; the in-process cache whenever Redis fails."""

    def __init__(self, primary: RedisCache, breaker: Breaker) -> None:
        self.name = "redis"
        self._primary = primary
        self._fallback = MemoryCache()
        self._breaker = breaker
        self.last_error: str | None = None

    async def _either(self, method: str, *args: object):  # noqa: ANN202
        try:
            with self._breaker.guard():
                result = await getattr(self._primary, method)(*args)
            self.last_error = None
            return result
        except DependencyError as exc:
            self.last_error = exc.message
            return await getattr(self._fallback, method)(*args)

    async def get(self, key: str) -> bytes | None:
        return await self._either("get", key)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._either("set", key, value, ttl_seconds)

    async def incr_window(self, key: str, window_seconds: float) -> int:
        return await self._either("incr_window", key, window_seconds)

    @property
    def degraded(self) -> bool:
        return self.last_error is not None

    async def ping(self) -> None:
        with self._breaker.guard():
            await self._primary.ping()

    async def close(self) -> None:
        await self._primary.close()
        await self._fallback.close()
