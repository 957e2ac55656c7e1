"""Builds a collection's HNSW index off the request path after ingestion, in a quiet moment.

Qdrant Edge has no background optimizer: until this runs, new points are searched by brute force.
Its ``optimize()`` holds the GIL for its whole run — milliseconds while a collection's unindexed
part is small, seconds once it passes the indexing threshold — so it waits until no search is in
flight and none has ended for ``quiet_s``, for at most ``max_defer_s`` (a service that is never quiet
still gets its index, and says so in its log). Requests for the same collection while it waits or
runs coalesce into one more run.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ragkit.core.errors import RagkitError
from ragkit.core.metrics import Metrics
from ragkit.core.types import Store
from ragkit.rag.activity import ReadActivity

log = logging.getLogger("ragkit.optimizer")

DEFAULT_QUIET_S = 1.0
DEFAULT_MAX_DEFER_S = 300.0


class Optimizer:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        enabled: bool = True,
        activity: ReadActivity | None = None,
        quiet_s: float = DEFAULT_QUIET_S,
        max_defer_s: float = DEFAULT_MAX_DEFER_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._enabled = enabled
        self._activity = activity or ReadActivity()
        self._quiet_s = quiet_s
        self._max_defer_s = max_defer_s
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self.deferring = asyncio.Event()  # set while a run waits for a quiet moment (for observers)
        self._hurry = asyncio.Event()

    def schedule(self, collection: str) -> None:
        if not self._enabled:
            return
        if collection in self._running:
            self._again.add(collection)
            return
        self._running[collection] = asyncio.create_task(self._run(collection))

    async def _run(self, collection: str) -> None:
        try:
            while True:
                self._again.discard(collection)
                quiet = await self._quiet_moment()
                if not quiet:
                    log.warning(
                        "optimizing %s while searches are running: no quiet moment in %.0f s",
                        collection,
                        self._max_defer_s,
                    )
                started = time.perf_counter()
                try:
                    await self._store.optimize(collection)
                except RagkitError as exc:
                    log.warning("optimizing %s failed: %s", collection, exc.message)
                    return
                self._metrics.stage_latency.labels("optimize").observe(time.perf_counter() - started)
                if collection not in self._again:
                    return
        finally:
            self._running.pop(collection, None)

    async def _quiet_moment(self) -> bool:
        """True once the read path is quiet (or the service is stopping), False if it never was."""
        if self._hurry.is_set():
            return True
        self.deferring.set()
        quiet = asyncio.ensure_future(self._activity.until_quiet(self._quiet_s, self._max_defer_s))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({quiet, hurry}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.deferring.clear()
            for task in (quiet, hurry):
                task.cancel()
        return quiet.result() if quiet.done() and not quiet.cancelled() else True

    async def wait(self) -> None:
        """Run what is scheduled now, without waiting for a quiet moment (the service is stopping)."""
        self._hurry.set()
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
