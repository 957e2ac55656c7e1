"""Readiness that means it: `/health/ready` answers 200 only once the configured embedder and
generator have answered (and the store does), and `/health` says when each dependency was last
checked and how that went. A real service over real HTTP, with the Ollama stand-in (a real HTTP
server) stopped and started under it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.conftest import Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.waiting import wait_until

DEADLINE_S = 20.0  # generous: the checks are cached for a few seconds, and CI machines are slow


def ready(stack: Stack) -> httpx.Response:
    return stack.anon.get("/health/ready")


def last_check(stack: Stack, dependency: str) -> dict:
    return stack.anon.get("/health").json()["dependencies"][dependency]["last_check"]


@pytest.fixture
def down_fake() -> Iterator[FakeOllama]:
    """A stand-in that has a port but is not listening on it: connections are refused."""
    fake = FakeOllama(dim=64).start()
    fake.stop()
    try:
        yield fake
    finally:
        fake.stop()


def test_an_ollama_host_unreachable_at_start_is_not_ready_until_it_answers(stack_factory, down_fake) -> None:  # noqa: ANN001
    stack = stack_factory(embedder="ollama", generator="ollama", ollama_host=down_fake.url, ollama_timeout_s=2.0)

    response = ready(stack)
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    failing = response.json()["failing"]
    assert set(failing) == {"embedder", "generator"}
    assert "cannot connect to Ollama" in failing["embedder"]

    health = stack.anon.get("/health").json()
    assert health["status"] != "ok"
    for dependency in ("embedder", "generator"):
        entry = health["dependencies"][dependency]
        assert entry["status"] == "failing" and "cannot connect to Ollama" in entry["error"], entry
        check = entry["last_check"]
        assert check["ok"] is False and "cannot connect to Ollama" in check["error"]
        assert datetime.fromisoformat(check["at"]).tzinfo is not None
    assert health["dependencies"]["store"]["last_check"]["ok"] is True
    failed_at = datetime.fromisoformat(health["dependencies"]["embedder"]["last_check"]["at"])

    down_fake.start()  # the host comes up on the same port; the service is not restarted
    wait_until(
        lambda: ready(stack).status_code == 200, "/health/ready to turn 200 once Ollama answers", timeout_s=DEADLINE_S
    )
    assert ready(stack).json() == {"status": "ready"}
    health = stack.anon.get("/health").json()
    assert health["status"] == "ok", health
    for dependency in ("embedder", "generator"):
        check = health["dependencies"][dependency]["last_check"]
        assert check["ok"] is True and check["error"] is None, check
        assert datetime.fromisoformat(check["at"]) > failed_at
    # The probes are cheap requests, never an answer: no text was generated to find this out.
    assert down_fake.count("/api/show") >= 1 and down_fake.count("/api/chat") == 0
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201

    # Once the models have answered, losing them later degrades answers but keeps the replica in
    # rotation: taking every replica out of a load balancer would turn a degraded service into none.
    down_fake.stop()
    wait_until(
        lambda: stack.anon.get("/health").json()["dependencies"]["generator"]["status"] == "failing",
        "/health to see Ollama gone",
        timeout_s=DEADLINE_S,
    )
    assert ready(stack).status_code == 200


def test_a_host_without_the_model_is_not_ready_and_says_what_to_pull(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64, models=("some-other-model",)) as fake:
        stack = stack_factory(embedder="local", generator="ollama", ollama_host=fake.url, ollama_timeout_s=2.0)
        response = ready(stack)
        assert response.status_code == 503
        assert set(response.json()["failing"]) == {"generator"}
        assert "ollama pull llama3.2" in last_check(stack, "generator")["error"]


def test_a_black_holed_host_is_not_ready_within_the_probe_budget(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(embedder="local", generator="ollama", ollama_host=fake.url, ollama_timeout_s=30.0)
        fake.set_mode("slow", "/api/show", seconds=60)  # accepts the request, never answers
        started = time.perf_counter()
        response = ready(stack)
        elapsed = time.perf_counter() - started
        assert response.status_code == 503
        assert "no answer within" in response.json()["failing"]["generator"]
        # Bounded by the probe's own short timeout, not by the 30 s the generator may take to answer.
        assert elapsed < 10.0, f"/health/ready took {elapsed:.1f} s"
        fake.mode = "ok"


def test_checks_are_cached_so_polling_does_not_hammer_ollama(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(embedder="ollama", generator="ollama", ollama_host=fake.url, ollama_timeout_s=2.0)
        fake.reset_counters()
        for _ in range(15):
            assert ready(stack).status_code == 200
            assert stack.anon.get("/health").json()["status"] == "ok"
            stack.anon.get("/metrics")  # a scrape asks for readiness too
        # 45 polls within a few seconds: at most a couple of probes per dependency, not one per poll.
        assert 1 <= fake.count("/api/show") <= 3, fake.counts
        assert fake.count("/api/embed") <= 3, fake.counts


def test_the_probe_sees_a_recovery_the_open_breaker_hides(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(
            embedder="local",
            generator="ollama",
            ollama_host=fake.url,
            ollama_timeout_s=2.0,
            breaker_fail_max=1,
            breaker_reset_s=300.0,
        )
        assert ready(stack).status_code == 200
        assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
        documents = [{"id": "a", "text": "A breaker opens after consecutive failures."}]
        assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": documents}).is_success

        fake.stop()
        question = {"question": "When does a breaker open?", "collection": "docs"}
        answer = stack.http.post("/api/v1/rag/query", json=question)
        assert answer.json()["degraded"] is True
        assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "open"
        wait_until(
            lambda: last_check(stack, "generator")["ok"] is False,
            "the check to see the host is gone",
            timeout_s=DEADLINE_S,
        )
        assert ready(stack).status_code == 200, "it answered once: degraded answers keep the replica serving"

        fake.start()
        # The breaker stays open for its 300 s reset time; the probe goes around it and sees the host back.
        wait_until(
            lambda: last_check(stack, "generator")["ok"] is True,
            "the check to see the host answer again",
            timeout_s=DEADLINE_S,
        )
        health = stack.anon.get("/health").json()
        assert health["circuit_breakers"]["ollama_generation"] == "open"
        assert health["dependencies"]["generator"]["last_check"]["ok"] is True
        assert health["status"] == "degraded"  # the open breaker is still reported


def test_the_embedded_default_is_ready_at_once_and_reports_its_checks(stack: Stack) -> None:
    assert ready(stack).status_code == 200
    health = stack.anon.get("/health").json()
    assert health["status"] == "ok"
    for dependency in ("store", "embedder", "generator"):
        check = health["dependencies"][dependency]["last_check"]
        assert check["ok"] is True and check["error"] is None and check["duration_ms"] >= 0, (dependency, check)


def test_a_store_that_stops_answering_makes_the_service_unready(stack: Stack) -> None:
    assert ready(stack).status_code == 200
    stack.services.store.close()  # the fault: the store is gone from under the service
    wait_until(lambda: ready(stack).status_code == 503, "/health/ready to see the store is gone", timeout_s=DEADLINE_S)
    health = stack.anon.get("/health").json()
    assert health["status"] == "down"
    assert health["dependencies"]["store"]["last_check"]["ok"] is False
