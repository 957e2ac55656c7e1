"""How busy the read path is: searches in flight and when the last one ended.

The optimizer asks it for a quiet moment before it builds an index, because Qdrant Edge's
``optimize()`` holds the GIL for its whole run (seconds once a collection has grown past the
indexing threshold): every search that arrived meanwhile would wait for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


class ReadActivity:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._in_flight = 0
        self._last_end = -math.inf
        self._waiters: set[asyncio.Event] = set()  # one per until_quiet() call, woken when a search ends

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Held around one search (an answer's retrieval included)."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._last_end = self._clock()
            for waiter in self._waiters:
                waiter.set()

    async def until_quiet(self, quiet_s: float, max_wait_s: float) -> bool:
        """Wait until no search is in flight and none has ended for ``quiet_s`` seconds; True then,
        False if ``max_wait_s`` passed first (a service that is never quiet still gets its indexes)."""
        deadline = self._clock() + max_wait_s
        while True:
            now = self._clock()
            idle_for = now - self._last_end
            if self._in_flight == 0 and idle_for >= quiet_s:
                return True
            if now >= deadline:
                return False
            # A search ending wakes us; otherwise the quiet period (or the deadline) ends by itself.
            wait_s = deadline - now if self._in_flight else min(quiet_s - idle_for, deadline - now)
            ended = asyncio.Event()
            self._waiters.add(ended)
            try:
                with suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), timeout=wait_s)
            finally:
                self._waiters.discard(ended)
