"""Builds a collection's HNSW index off the request path after ingestion.

Qdrant Edge has no background optimizer: until this runs, new points are searched by brute
force. Requests for the same collection while it runs coalesce into one more run.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ragkit.core.errors import RagkitError
from ragkit.core.metrics import Metrics
from ragkit.core.types import Store

log = logging.getLogger("ragkit.optimizer")


class Optimizer:
    def __init__(self, store: Store, metrics: Metrics, *, enabled: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self._enabled = enabled
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()

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

    async def wait(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
