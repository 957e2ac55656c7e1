"""The degradation ladder and the breakers end to end: a real service, real HTTP, and an
Ollama-compatible stand-in server whose faults we switch on and off."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.waiting import wait_until

DOCS = [
    {
        "id": "breakers",
        "title": "Circuit breakers",
        "text": "A breaker opens after five consecutive failures. "
        "While open, calls fail fast. After thirty seconds one probe is let through.",
    },
    {
        "id": "tokens",
        "title": "Tokens",
        "text": "Rotate the service token by listing the new and the old secret "
        "separated by a comma, then restart the service.",
    },
]
QUESTION = {"question": "When does a breaker open?", "collection": "docs", "top_k": 2}


def prepare(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": DOCS}).status_code == 200


def reset_time_over(stack: Stack, breaker: str) -> Callable[[], bool]:
    """True once the live service's breaker would let a probe through (its reset time has passed)."""
    return lambda: stack.services.breakers[breaker].retry_after() == 0


@pytest.fixture
def fake():
    with FakeOllama(dim=64, slow_seconds=5.0) as server:
        yield server


def ollama_generation_stack(stack_factory, fake: FakeOllama, **extra: object) -> Stack:  # noqa: ANN001
    stack = stack_factory(generator="ollama", embedder="local", ollama_host=fake.url, ollama_timeout_s=1.0, **extra)
    prepare(stack)
    return stack


def test_answers_come_from_ollama_when_it_is_up(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert body["generator"] == "ollama:llama3.2" and body["degraded"] is False
    assert "[1]" in body["answer"]
    assert fake.count("/api/chat") == 1


@pytest.mark.parametrize("mode", ["error", "busy", "reset"])
def test_generation_failure_degrades_to_an_extractive_answer(stack_factory, fake: FakeOllama, mode: str) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    fake.set_mode(mode, "/api/chat")
    response = stack.http.post("/api/v1/rag/query", json=QUESTION)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] is True and body["generator"] == "extractive"
    assert any("generation unavailable" in r for r in body["reasons"])
    assert "[1]" in body["answer"] and body["sources"][0]["doc_id"] == "breakers"


def test_dead_host_opens_the_breaker_and_answers_come_back_fast(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake, breaker_reset_s=2.0)
    fake.set_mode("slow", "/api/chat", seconds=5)  # hangs longer than the 1 s timeout
    for _ in range(5):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True and body["generator"] == "extractive"
    assert "ollama" in " ".join(body["reasons"]).lower()
    health = stack.anon.get("/health").json()
    assert health["circuit_breakers"]["ollama_generation"] == "open"
    assert health["status"] == "degraded"
    assert health["dependencies"]["generator"]["status"] == "failing"

    calls_before = fake.count("/api/chat")
    started = time.perf_counter()
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    elapsed = time.perf_counter() - started
    assert body["degraded"] is True and body["generator"] == "extractive"
    assert any("circuit breaker is open" in r for r in body["reasons"])
    assert fake.count("/api/chat") == calls_before, "an open breaker must not call the dead host"
    assert elapsed < 1.0, f"with the breaker open the answer took {elapsed:.2f} s, as long as the timeout"

    # The host recovers; after the reset time one probe goes through and closes the breaker.
    fake.mode = "ok"
    wait_until(reset_time_over(stack, "ollama_generation"), "the breaker's reset time to pass")
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert body["generator"] == "ollama:llama3.2" and body["degraded"] is False
    assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "closed"
    metrics = stack.anon.get("/metrics").text
    assert (
        'ragkit_breaker_transitions_total{breaker="ollama_generation",from_state="closed",to_state="open"} 1.0'
        in metrics
    )


def test_refused_connections_open_the_breaker(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    fake.stop()
    for _ in range(5):
        assert stack.http.post("/api/v1/rag/query", json=QUESTION).json()["degraded"] is True
    assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "open"


def test_unknown_model_is_not_an_outage(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    fake.set_mode("unknown_model", "/api/chat")
    for _ in range(8):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True
    assert "ollama pull" in " ".join(body["reasons"])
    assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "closed"


def test_streamed_answer_falls_back_when_generation_is_down(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    fake.set_mode("error", "/api/chat")
    events = []
    with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
    names = [name for name, _ in events]
    assert names[0] == "sources" and "degraded" in names and names[-1] == "done"
    done = events[-1][1]
    assert done["degraded"] is True and done["generator"] == "extractive" and "[1]" in done["answer"]


def test_stream_broken_mid_answer_is_reported(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = ollama_generation_stack(stack_factory, fake)
    fake.set_mode("stream_error", "/api/chat")
    with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("event:")]
    assert "event: token" in lines and lines[-1] == "event: error"


def test_embedding_outage_falls_back_to_sparse_search(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = stack_factory(embedder="ollama", generator="extractive", ollama_host=fake.url, ollama_timeout_s=1.0)
    prepare(stack)
    info = stack.http.get("/api/v1/rag/collections/docs").json()
    assert info["embedder"] == "ollama:nomic-embed-text" and info["dimension"] == 64
    fake.stop()
    body = stack.http.post(
        "/api/v1/rag/search", json={"query": "rotate the token", "collection": "docs", "mode": "hybrid"}
    ).json()
    assert body["mode_used"] == "sparse" and body["degraded"] is True
    assert any("embedding unavailable" in r for r in body["reasons"])
    assert body["results"][0]["doc_id"] == "tokens"
    answer = stack.http.post("/api/v1/rag/query", json={**QUESTION, "mode": "dense"}).json()
    assert answer["degraded"] is True and answer["sources"]


def test_store_outage_serves_cached_results_else_503(stack: Stack) -> None:
    prepare(stack)
    query = {"query": "rotate the token", "collection": "docs"}
    fresh = stack.http.post("/api/v1/rag/search", json=query).json()
    assert fresh["degraded"] is False
    stack.services.store.close()  # inject the fault: the store is gone from under the service

    cached = stack.http.post("/api/v1/rag/search", json=query)
    assert cached.status_code == 200
    body = cached.json()
    assert body["degraded"] is True and any("cached result" in r for r in body["reasons"])
    assert [h["id"] for h in body["results"]] == [h["id"] for h in fresh["results"]]

    uncached = stack.http.post("/api/v1/rag/search", json={**query, "query": "something never asked"})
    assert uncached.status_code == 503
    assert int(uncached.headers["Retry-After"]) >= 1
    assert uncached.json()["error"]["code"] in ("dependency_unavailable", "breaker_open")
    assert stack.anon.get("/health").json()["status"] == "down"
    assert stack.anon.get("/health/ready").status_code == 503


def test_half_open_breaker_lets_exactly_one_probe_reach_the_host(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    stack = stack_factory(
        generator="ollama", embedder="local", ollama_host=fake.url, ollama_timeout_s=10.0, breaker_reset_s=1.0
    )
    prepare(stack)
    fake.stop()
    for _ in range(5):
        stack.http.post("/api/v1/rag/query", json=QUESTION)
    assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "open"
    fake.start()
    # The recovering host holds each chat request until the test lets it answer, so the probe is
    # certainly still out while the others arrive, however slow this machine is.
    fake.set_mode("slow", "/api/chat", seconds=60)
    wait_until(reset_time_over(stack, "ollama_generation"), "the breaker's reset time to pass")
    before = fake.count("/api/chat")

    def ask() -> dict:
        return stack.http.post("/api/v1/rag/query", json=QUESTION).json()

    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(ask)
        wait_until(lambda: fake.count("/api/chat") > before or probe.done(), "the probe to reach the host")
        assert not probe.done(), f"the first call after the reset time must be the probe: {probe.result()}"
        assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "half_open"
        waiting = [ask(), ask()]  # while the probe is out
        assert fake.count("/api/chat") - before == 1, "only the probe may reach the recovering host"
        fake.set_mode("ok", "/api/chat")  # the host answers the probe it holds
        answer = probe.result(timeout=30)
    assert answer["generator"] == "ollama:llama3.2" and answer["degraded"] is False
    for other in waiting:
        assert other["generator"] == "extractive" and other["degraded"] is True
    assert any("circuit breaker is open" in r for r in waiting[0]["reasons"])
    assert fake.count("/api/chat") - before == 1
    assert stack.anon.get("/health").json()["circuit_breakers"]["ollama_generation"] == "closed"
