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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ragkit.core.errors import ConfigurationError


class CoreSlots:
    """``slots`` concurrent model calls; ``urgent()`` callers (queries) are served before
    ``background()`` callers (ingestion). A background caller waiting for a slot is not starved:
    queries hold a slot only for one short call each."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ConfigurationError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._free = slots
        self._urgent_waiting = 0
        self._changed = threading.Condition(threading.RLock())  # wait_until's condition reads the properties below

    @contextmanager
    def urgent(self) -> Iterator[None]:
        with self._changed:
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
            self._changed.wait_for(lambda: self._free > 0 and self._urgent_waiting == 0)
            self._free -= 1
            self._changed.notify_all()
        try:
            yield
        finally:
            self._release()

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
