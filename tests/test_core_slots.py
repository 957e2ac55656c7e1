"""CoreSlots: queries take the next free core before any further ingestion batch does."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

from ragkit.adapters.embedders.slots import CoreSlots
from ragkit.core.errors import ConfigurationError

WAIT_S = 30.0


def run_in_thread(slots: CoreSlots, kind: str, order: list[str], label: str) -> threading.Thread:
    def work() -> None:
        with getattr(slots, kind)():
            order.append(label)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_waiting_query_gets_the_next_free_slot_before_a_waiting_batch() -> None:
    slots = CoreSlots(1)
    order: list[str] = []
    with ExitStack() as held:
        held.enter_context(slots.background())
        # The batch asks first, the query second; both wait for the one slot.
        batch = run_in_thread(slots, "background", order, "batch")
        query = run_in_thread(slots, "urgent", order, "query")
        assert slots.wait_until(lambda s: s.urgent_waiting == 1, WAIT_S)
    # The slot is free now; the batch may not take it while the query waits for it.
    query.join(WAIT_S)
    batch.join(WAIT_S)
    assert order == ["query", "batch"]
    assert slots.busy == 0


def test_calls_never_exceed_the_slots() -> None:
    slots = CoreSlots(2)
    inside = 0
    most = 0
    lock = threading.Lock()
    go = threading.Event()

    def work(kind: str) -> None:
        nonlocal inside, most
        go.wait(WAIT_S)
        for _ in range(50):
            with getattr(slots, kind)():
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work, args=(k,)) for k in ("urgent", "background") * 3]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a caller was starved"
    assert 1 <= most <= 2
    assert slots.busy == 0 and slots.urgent_waiting == 0


def test_a_failed_call_gives_its_slot_back() -> None:
    slots = CoreSlots(1)
    with pytest.raises(RuntimeError), slots.urgent():
        raise RuntimeError("the model failed")
    with slots.background():
        assert slots.busy == 1
    assert slots.busy == 0


def test_at_least_one_slot() -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        CoreSlots(0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_while_queries_come_ingestion_leaves_the_last_core_to_them() -> None:
    clock = Clock()
    slots = CoreSlots(2, reserve_s=0.2, clock=clock)
    order: list[str] = []
    with slots.urgent():
        pass  # a query just ran
    with slots.background():
        # One slot is taken by ingestion; a second ingestion batch must not take the last one.
        second = run_in_thread(slots, "background", order, "second batch")
        assert slots.wait_until(lambda s: s.background_waiting == 1, WAIT_S)
        with slots.urgent():  # the reserved core serves a query at once
            order.append("query")
        clock.now += 0.2  # no query for reserve_s: the waiting batch may have the last core
        second.join(WAIT_S)
        assert not second.is_alive()
        assert slots.busy == 1  # it ran beside the first batch
    assert order == ["query", "second batch"]


def test_with_no_queries_ingestion_takes_every_core() -> None:
    slots = CoreSlots(2, reserve_s=60.0, clock=Clock())
    with slots.background(), slots.background():
        assert slots.busy == 2


def test_one_slot_is_never_reserved() -> None:
    slots = CoreSlots(1, reserve_s=60.0, clock=Clock())
    with slots.urgent():
        pass
    with slots.background():
        assert slots.busy == 1
