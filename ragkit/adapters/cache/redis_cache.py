"""Redis as the shared cache and rate-limit state of every replica.

Every exception the `redis` client raises leaves this module as a ragkit `DependencyError`, so
the breaker counts it and `FallbackCache` can fall back on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions

from ragkit.adapters.cache.window import fixed_window
from ragkit.core.errors import ConfigurationError, DependencyTimeout, DependencyUnavailable
from ragkit.core.types import WindowCount


def _redacted(url: str) -> str:
    """The URL without its password: error messages are logged and may be shown to callers."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


class RedisCache:
    name = "redis"

    def __init__(
        self, url: str, timeout_s: float, prefix: str = "ragkit:", *, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = _redacted(url)
        self._prefix = prefix
        self._clock = clock  # places rate-limit windows; Redis' own clock runs the TTLs
        try:
            self._redis = aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
            )
        except ValueError as exc:  # raised here, at startup, only for a malformed URL
            raise ConfigurationError(f"REDIS_URL='{self.url}' is not a Redis URL: {exc}") from exc

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

    async def incr_window(self, key: str, window_seconds: float) -> WindowCount:
        # One counter per window, named by the window's index: replicas whose clocks agree share
        # it, and a new window is a new key that starts from 1. The expiry only reclaims memory.
        now = self._clock()
        window = fixed_window(now, window_seconds)
        full = f"{self._prefix}rl:{key}:{window.index}"
        pipe = self._redis.pipeline()
        pipe.incr(full)
        pipe.expire(full, max(int(window_seconds) + 1, 1))
        count, _ = await self._run(pipe.execute())
        return WindowCount(int(count), window.end - now)

    async def ping(self) -> None:
        await self._run(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
