"""Redis behind its breaker, with the in-process cache whenever Redis fails."""

from __future__ import annotations

from ragkit.adapters.breakers import Breaker
from ragkit.adapters.cache.memory import MemoryCache
from ragkit.adapters.cache.redis_cache import RedisCache
from ragkit.core.errors import DependencyError
from ragkit.core.types import WindowCount


class FallbackCache:
    """Redis through the `redis` breaker; the in-process cache whenever Redis fails."""

    def __init__(self, primary: RedisCache, breaker: Breaker, fallback: MemoryCache | None = None) -> None:
        self.name = "redis"
        self._primary = primary
        self._fallback = fallback if fallback is not None else MemoryCache()
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

    async def incr_window(self, key: str, window_seconds: float) -> WindowCount:
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
