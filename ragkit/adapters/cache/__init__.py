"""Caches: in-process (default) and Redis, and the fallback between them.

``FallbackCache`` puts Redis behind its breaker and falls back to the in-process cache when
Redis is down, so a Redis outage costs shared state, never requests (DESIGN.md §3). Every
backend counts rate-limit windows by `fixed_window`, so they agree on when a window ends.
"""

from __future__ import annotations

from ragkit.adapters.cache.fallback import FallbackCache
from ragkit.adapters.cache.memory import MemoryCache
from ragkit.adapters.cache.redis_cache import RedisCache
from ragkit.adapters.cache.window import Window, fixed_window

__all__ = ["FallbackCache", "MemoryCache", "RedisCache", "Window", "fixed_window"]
