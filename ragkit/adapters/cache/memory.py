"""The in-process cache: bounded LRU values with a TTL, and rate-limit windows."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ragkit.adapters.cache.window import fixed_window
from ragkit.core.types import WindowCount


class MemoryCache:
    name = "memory"

    def __init__(
        self,
        max_items: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # TTLs are durations, so they run on a monotonic clock that a clock step cannot move;
        # rate-limit windows are aligned to the epoch (as Redis' are), so they need the wall clock.
        self._clock = clock
        self._wall_clock = wall_clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (end of its window, hits in it)
        self._max_items = max_items

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._items[key] = (self._clock() + ttl_seconds, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def incr_window(self, key: str, window_seconds: float) -> WindowCount:
        now = self._wall_clock()
        window = fixed_window(now, window_seconds)
        end, count = self._windows.get(key, (window.end, 0))
        count = count + 1 if end == window.end else 1  # a count from another window is void
        self._windows[key] = (window.end, count)
        if len(self._windows) > self._max_items:  # forget finished windows, not live ones
            self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        return WindowCount(count, window.end - now)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()
