"""Model calls take turns on the cores, and a waiting query always goes first.

ONNX Runtime releases the GIL, so the embedder runs one single-threaded model call per core. Left
to the operating system, an ingestion that keeps every core busy would make each query share a
core with it, and a query that arrives while both cores hold ingestion batches would wait behind
them at the scheduler's whim. ``CoreSlots`` makes the order explicit: there are as many slots as
calls that may run at once; a query call takes a free slot at once or the next one released; an
ingestion batch takes a slot only when one is free *and no query is waiting for one*. A query
therefore waits at most for the ingestion batch that holds the core to finish, which is why
ingestion batches are kept small (``OnnxEmbedder.batch_tokens``): between batches, ingestion
yields to every waiting query.

Waiting even for one batch was the tail of search latency under ingestion (50 users searching, one
ingesting: P95 110-150 ms against 43-47 ms reads-only). So while queries keep coming (one in the
last ``reserve_s``), ingestion leaves the last free slot to them: on two cores it runs on one and
queries have the other to themselves. On a service nobody is querying it has every core.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ragkit.core.errors import ConfigurationError


class CoreSlots:
    """``slots`` concurrent model calls; ``urgent()`` callers (queries) are served before
    ``background()`` callers (ingestion), and while a query came in the last ``reserve_s``
    (``clock`` seconds), background calls leave the last free slot to queries. A background caller
    is not starved: queries hold a slot only for one short call each, and with more than one slot
    at least one is always open to it."""

    def __init__(self, slots: int, *, reserve_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ConfigurationError(f"slots must be at least 1, got {slots}")
        if reserve_s < 0:
            raise ConfigurationError(f"reserve_s must not be negative, got {reserve_s}")
        self.slots = slots
        self.reserve_s = reserve_s
        self._clock = clock
        self._free = slots
        self._urgent_waiting = 0
        self._background_waiting = 0
        self._last_urgent = -math.inf
        self._changed = threading.Condition(threading.RLock())  # wait_until's condition reads the properties below

    @contextmanager
    def urgent(self) -> Iterator[None]:
        with self._changed:
            self._last_urgent = self._clock()
            self._urgent_waiting += 1
            self._changed.notify_all()  # for wait_until's observers
            try:
                self._changed.wait_for(lambda: self._free > 0)
            finally:
                self._urgent_waiting -= 1
                self._changed.notify_all()  # background callers may go if no other query waits
            self._free -= 1
            self._changed.notify_all()
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def background(self) -> Iterator[None]:
        with self._changed:
            self._background_waiting += 1
            self._changed.notify_all()
            try:
                while (delay := self._background_delay()) != 0:
                    # None: wait for a change; else the reserve ends by itself in `delay` seconds.
                    self._changed.wait(delay)
            finally:
                self._background_waiting -= 1
            self._free -= 1
            self._changed.notify_all()
        try:
            yield
        finally:
            self._release()

    def _background_delay(self) -> float | None:
        """0 if a background call may start now; else how long until it may (None: until a change)."""
        if self._free == 0 or self._urgent_waiting:
            return None
        if self._free > 1 or self.slots == 1:
            return 0
        reserved_for = self.reserve_s - (self._clock() - self._last_urgent)
        return 0 if reserved_for <= 0 else reserved_for

    def _release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()

    def wait_until(self, condition: Callable[[CoreSlots], bool], timeout: float) -> bool:
        """Block until ``condition(self)`` holds, re-checked at every change; False on timeout.
        For observers (tests, a profiler), not for callers of the model."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout)

    @property
    def busy(self) -> int:
        """Slots in use now (for tests and metrics)."""
        with self._changed:
            return self.slots - self._free

    @property
    def urgent_waiting(self) -> int:
        with self._changed:
            return self._urgent_waiting

    @property
    def background_waiting(self) -> int:
        with self._changed:
            return self._background_waiting
