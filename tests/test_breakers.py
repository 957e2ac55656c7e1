"""Breaker semantics (DESIGN.md §3): what opens it, how it fails fast, how it recovers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ragkit.adapters.breakers import Breaker
from ragkit.core.errors import BreakerOpen, DependencyTimeout, DependencyUnavailable, InvalidInput, UpstreamRejected
from ragkit.core.metrics import Metrics


def fail(breaker: Breaker, exc: Exception) -> None:
    with pytest.raises(type(exc)), breaker.guard():
        raise exc


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

    async def cancelled_call() -> None:
        with breaker.guard():
            await asyncio.sleep(10)

    async def scenario() -> None:
        task = asyncio.create_task(cancelled_call())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for _ in range(3):
        asyncio.run(scenario())
    assert breaker.fail_counter == 1, "cancellations must not reset or add to the failure streak"
    fail(breaker, DependencyUnavailable("ollama", "down"))
    assert breaker.state == "open"


def test_only_one_half_open_probe_at_a_time_then_recovers() -> None:
    breaker = Breaker("qdrant_search", fail_max=1, reset_timeout=0.2)
    fail(breaker, DependencyUnavailable("qdrant", "down"))
    time.sleep(0.25)
    probe_running = threading.Event()
    release = threading.Event()

    def probe() -> None:
        with breaker.guard():
            probe_running.set()
            release.wait(5)

    thread = threading.Thread(target=probe)
    thread.start()
    assert probe_running.wait(5)
    assert breaker.state == "half_open"
    with pytest.raises(BreakerOpen):  # a second caller while the probe is out fails fast
        with breaker.guard():
            pass
    release.set()
    thread.join()
    assert breaker.state == "closed"
    with breaker.guard():
        pass


def test_failed_probe_reopens() -> None:
    breaker = Breaker("ollama_generation", fail_max=1, reset_timeout=0.1)
    fail(breaker, DependencyUnavailable("ollama", "down"))
    time.sleep(0.15)
    fail(breaker, DependencyUnavailable("ollama", "still down"))
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen), breaker.guard():
        pass


def test_closed_breaker_does_not_serialise_concurrent_calls() -> None:
    breaker = Breaker("ollama_generation", fail_max=5, reset_timeout=30)
    inside = 0
    most_inside = 0

    async def call() -> None:
        nonlocal inside, most_inside
        with breaker.guard():
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    async def many() -> None:
        await asyncio.gather(*(call() for _ in range(20)))

    asyncio.run(many())
    assert most_inside == 20


def test_state_changes_are_exported_as_metrics() -> None:
    metrics = Metrics()
    breaker = Breaker("redis", fail_max=1, reset_timeout=30, metrics=metrics)
    fail(breaker, DependencyUnavailable("redis", "down"))
    text = metrics.render().decode()
    assert 'ragkit_breaker_state{breaker="redis"} 2.0' in text
    assert 'ragkit_breaker_transitions_total{breaker="redis",from_state="closed",to_state="open"} 1.0' in text
