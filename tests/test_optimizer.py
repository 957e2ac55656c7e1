"""The index build after an ingestion waits for a quiet moment on the read path.

Qdrant Edge's optimize() holds the GIL for its whole run, so a search that arrives meanwhile waits
for it; the optimizer therefore starts only when no search is running (real services, real Edge).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ragkit.core.types import Document
from ragkit.services import Services, build_services
from tests.conftest import make_settings

WAIT_S = 60.0
DOCUMENTS = [Document(id=f"d{i}", text=f"Honey bees store nectar {i} in wax combs near the hive.") for i in range(3)]


class Starts(list):
    """Searches in flight at each start of optimize(), and an event set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first = asyncio.Event()

    async def wait(self) -> None:
        await asyncio.wait_for(self.first.wait(), WAIT_S)


def spied(services: Services, monkeypatch: pytest.MonkeyPatch) -> Starts:
    starts = Starts()
    optimize = services.store.optimize

    async def recording(name: str) -> Any:
        starts.append(services.pipeline.activity.in_flight)
        starts.first.set()
        return await optimize(name)

    monkeypatch.setattr(services.store, "optimize", recording)
    return starts


@pytest.mark.anyio
async def test_the_index_build_waits_until_no_search_is_running(
    tmp_path: Path, local_embedder, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    services = build_services(make_settings(tmp_path, optimize_quiet_s=0.0), embedder=local_embedder)
    starts = spied(services, monkeypatch)
    try:
        await services.collections.create("bees")
        with services.pipeline.activity.reading():  # a search is running
            await services.collections.ingest("bees", DOCUMENTS)
            await asyncio.wait_for(services.optimizer.deferring.wait(), WAIT_S)
            assert starts == [], "the index build started while a search was running"
        # The search ended: the build goes ahead, and the collection is searchable as before.
        await starts.wait()
        assert starts == [0]
        found = await services.pipeline.search("bees", "Where do bees store nectar?")
        assert found.hits and found.hits[0].text.startswith("Honey bees store nectar")
    finally:
        await services.close()


@pytest.mark.anyio
async def test_a_service_that_is_never_quiet_still_gets_its_index(
    tmp_path: Path, local_embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    settings = make_settings(tmp_path, optimize_quiet_s=0.0, optimize_max_defer_s=0.0)
    services = build_services(settings, embedder=local_embedder)
    starts = spied(services, monkeypatch)
    try:
        await services.collections.create("bees")
        with caplog.at_level(logging.WARNING, logger="ragkit.optimizer"), services.pipeline.activity.reading():
            await services.collections.ingest("bees", DOCUMENTS)
            await starts.wait()
        assert starts == [1], "past max_defer_s the build runs even beside a search"
        assert "optimizing bees while searches are running" in caplog.text
    finally:
        await services.close()


@pytest.mark.anyio
async def test_stopping_the_service_does_not_wait_for_a_quiet_moment(
    tmp_path: Path, local_embedder, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    # A quiet period longer than any test: only the shutdown can end the wait.
    settings = make_settings(tmp_path, optimize_quiet_s=3600.0)
    services = build_services(settings, embedder=local_embedder)
    starts = spied(services, monkeypatch)
    await services.collections.create("bees")
    await services.collections.ingest("bees", DOCUMENTS)
    await asyncio.wait_for(services.optimizer.deferring.wait(), WAIT_S)
    await asyncio.wait_for(services.close(), WAIT_S)
    assert starts == [0], "the scheduled build still ran, once, before the store closed"



@pytest.mark.anyio
async def test_two_waiting_builds_both_go_when_the_search_ends() -> None:
    from ragkit.rag.activity import ReadActivity

    activity = ReadActivity()
    both_waiting = asyncio.Event()

    class Waiters(set):  # the activity's waiters, announcing when the second has registered
        def add(self, waiter: asyncio.Event) -> None:
            super().add(waiter)
            if len(self) == 2:
                both_waiting.set()

    activity._waiters = Waiters()
    with activity.reading():
        first = asyncio.ensure_future(activity.until_quiet(0.0, WAIT_S))
        second = asyncio.ensure_future(activity.until_quiet(0.0, WAIT_S))
        await asyncio.wait_for(both_waiting.wait(), WAIT_S)
        assert not first.done() and not second.done()
    # One search ending wakes every waiter, not only the last to wait.
    assert await asyncio.wait_for(asyncio.gather(first, second), WAIT_S) == [True, True]
