"""Breaker semantics (DESIGN.md §3): what opens it, how it fails fast, how it recovers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ragkit.adapters.breakers import Breaker, BreakerBoard
from ragkit.core.errors import BreakerOpen, DependencyTimeout, DependencyUnavailable, InvalidInput, UpstreamRejected
from ragkit.core.metrics import Metrics


class ManualClock:
    """A clock that only moves when the test says so: reset timeouts pass at once, and exactly."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fail(breaker: Breaker, exc: Exception) -> None:
    with pytest.raises(type(exc)), breaker.guard():
        raise exc


def refused(breaker: Breaker) -> BreakerOpen:
    """The breaker refuses a call without running it; returns the refusal."""
    ran = []
    with pytest.raises(BreakerOpen) as refusal, breaker.guard():
        ran.append(True)
    assert not ran, "a refused call must not run"
    return refusal.value


def test_opens_after_fail_max_consecutive_failures_and_then_fails_fast() -> None:
    breaker = Breaker("ollama_generation", fail_max=5, reset_timeout=30)
    for _ in range(4):
        fail(breaker, DependencyUnavailable("ollama", "connection refused"))
        assert breaker.state == "closed"
    fail(breaker, DependencyTimeout("ollama", "timed out"))  # the 5th failure is still reported as itself
    assert breaker.state == "open"
    touched = []
    with pytest.raises(BreakerOpen) as refused, breaker.guard():
        touched.append(True)
    assert not touched, "an open breaker must not run the call"
    assert 0 < refused.value.retry_after <= 30
    assert refused.value.status == 503


def test_callers_mistakes_do_not_count_and_reset_the_streak() -> None:
    breaker = Breaker("ollama_embedding", fail_max=3, reset_timeout=30)
    for _ in range(10):
        fail(breaker, UpstreamRejected("model 'x' not found"))
        fail(breaker, InvalidInput("bad"))
    assert breaker.state == "closed"
    fail(breaker, DependencyUnavailable("ollama", "down"))
    fail(breaker, DependencyUnavailable("ollama", "down"))
    fail(breaker, UpstreamRejected("404"))  # the dependency answered: streak broken
    fail(breaker, DependencyUnavailable("ollama", "down"))
    assert breaker.state == "closed"


def test_cancellation_is_neither_failure_nor_success() -> None:
    breaker = Breaker("ollama_generation", fail_max=2, reset_timeout=30)
    fail(breaker, DependencyUnavailable("ollama", "down"))

    async def scenario() -> None:
        inside = asyncio.Event()

        async def cancelled_call() -> None:
            with breaker.guard():
                inside.set()
                await asyncio.Event().wait()  # never answers: only the cancellation ends it

        task = asyncio.create_task(cancelled_call())
        # Cancel only once the call is inside the guard, or the guard would never see it.
        await asyncio.wait_for(inside.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for _ in range(3):
        asyncio.run(scenario())
    assert breaker.fail_counter == 1, "cancellations must not reset or add to the failure streak"
    fail(breaker, DependencyUnavailable("ollama", "down"))
    assert breaker.state == "open"


def test_only_one_half_open_probe_at_a_time_then_recovers() -> None:
    clock = ManualClock()
    breaker = Breaker("qdrant_search", fail_max=1, reset_timeout=30, clock=clock)
    fail(breaker, DependencyUnavailable("qdrant", "down"))
    assert refused(breaker).retry_after == pytest.approx(30)
    clock.advance(29.5)
    assert refused(breaker).retry_after == pytest.approx(0.5)  # not a moment before the reset timeout
    clock.advance(0.5)
    probe_running = threading.Event()
    release = threading.Event()

    def probe() -> None:
        with breaker.guard():
            probe_running.set()
            release.wait(5)

    thread = threading.Thread(target=probe)
    thread.start()
    assert probe_running.wait(5), "once the reset timeout has passed, one call must be let through"
    assert breaker.state == "half_open"
    refused(breaker)  # a second caller while the probe is out fails fast
    release.set()
    thread.join()
    assert breaker.state == "closed"
    with breaker.guard():
        pass


def test_failed_probe_reopens_for_a_whole_reset_timeout() -> None:
    clock = ManualClock()
    breaker = Breaker("ollama_generation", fail_max=1, reset_timeout=10, clock=clock)
    fail(breaker, DependencyUnavailable("ollama", "down"))
    clock.advance(10)
    fail(breaker, DependencyUnavailable("ollama", "still down"))  # the probe ran, and failed
    assert breaker.state == "open"
    # The timeout starts again from the failed probe, not from the first opening.
    assert refused(breaker).retry_after == pytest.approx(10)
    clock.advance(9)
    refused(breaker)
    clock.advance(1)
    with breaker.guard():
        pass
    assert breaker.state == "closed"


def test_the_boards_breakers_run_on_its_clock() -> None:
    clock = ManualClock()
    board = BreakerBoard(fail_max=1, reset_timeout=5, clock=clock)
    fail(board["redis"], DependencyUnavailable("redis", "down"))
    assert board.states() == {"redis": "open"}
    clock.advance(5)
    with board["redis"].guard():
        pass
    assert board.states() == {"redis": "closed"}


def test_closed_breaker_does_not_serialise_concurrent_calls() -> None:
    breaker = Breaker("ollama_generation", fail_max=5, reset_timeout=30)
    inside = 0

    async def many() -> None:
        all_inside = asyncio.Event()

        async def call() -> None:
            nonlocal inside
            with breaker.guard():
                inside += 1
                if inside == 20:
                    all_inside.set()
                # Each call stays inside until all 20 are: a breaker that let one in at a time
                # would leave the first waiting here until the timeout.
                await asyncio.wait_for(all_inside.wait(), 5)

        await asyncio.gather(*(call() for _ in range(20)))

    asyncio.run(many())
    assert inside == 20


def test_state_changes_are_exported_as_metrics() -> None:
    metrics = Metrics()
    breaker = Breaker("redis", fail_max=1, reset_timeout=30, metrics=metrics)
    fail(breaker, DependencyUnavailable("redis", "down"))
    text = metrics.render().decode()
    assert 'ragkit_breaker_state{breaker="redis"} 2.0' in text
    assert 'ragkit_breaker_transitions_total{breaker="redis",from_state="closed",to_state="open"} 1.0' in text


def test_a_full_disk_refusal_does_not_open_the_breaker() -> None:
    # The store's own free-space check refused before writing: the message says what to free, and
    # an open breaker would replace it with "failing" while the store itself is fine.
    from ragkit.core.errors import InsufficientStorage

    breaker = Breaker("qdrant_upsert", fail_max=2, reset_timeout=30)
    for _ in range(5):
        with pytest.raises(InsufficientStorage), breaker.guard():
            raise InsufficientStorage("qdrant", "only 3 MiB free; free some disk")
    assert breaker.state == "closed"
