"""Fault injection against a live service: dependencies failing the ways they fail in production,
each request timed against a deadline, the status checked, the breakers seen to open and to
recover through a probe, and nothing stored lost.

The Ollama stand-in (tests/support/fake_ollama.py) is a real HTTP server: slow, 5xx, a connection
reset by a real TCP RST, refused, and answers that break off mid-stream (reset, or stalled).
Redis is a real redis-server, killed (SIGKILL) or frozen (SIGSTOP) in the middle of a run of
requests. tests/test_degradation.py holds the degradation ladder itself (which fallback answers
which outage, the half-open probe); this suite adds the faults it lacks and bounds how long each
request may take while they last. The service killed mid-ingestion and restarted is
tests/test_ingest_recovery.py, in this suite through its `faults` marker.

Latency bounds: a call to a failing dependency may take that dependency's timeout (1 s for
Ollama here, 0.5 s for Redis) and nothing more; everything else a request does (HTTP, BM25
search, an extractive answer) gets SLACK_S, which is generous for a loaded two-core machine. With
a breaker open, no dependency is waited for at all: OPEN_S.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

OLLAMA_TIMEOUT_S = 1.0
REDIS_TIMEOUT_S = 0.5
SLACK_S = 1.5
OPEN_S = 1.0
FAIL_MAX = 3
# Longer than the rest of an outage's requests take once the first breaker opens (with a slow host,
# two generation timeouts), so no probe goes out before the test means it to.
RESET_S = 5.0

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
LATE_DOC = {"id": "late", "title": "Backups", "text": "Snapshots of the vector store are taken nightly at two."}
QUESTION = {"question": "When does a breaker open?", "collection": "docs", "top_k": 2}


@dataclass
class Clock:
    """Every timed request of a test, so the slowest can be bounded and reported."""

    seen: list[tuple[str, float]] = field(default_factory=list)

    def timed(self, what: str, call: Callable[[], Any], bound_s: float) -> Any:
        started = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - started
        self.seen.append((what, elapsed))
        assert elapsed <= bound_s, f"{what} took {elapsed:.2f} s, over its {bound_s:.2f} s deadline"
        return result

    def report(self, case: str) -> None:
        # Shown with `pytest -rP`: what the bounds were measured against on this machine.
        timings = ", ".join(f"{what} {elapsed:.3f}" for what, elapsed in self.seen)
        print(f"\n[faults] {case} (s): {timings}")


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[Clock]:
    measured = Clock()
    yield measured
    if measured.seen:
        measured.report(request.node.name)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    # A "slow" host holds each request for a minute: far past any timeout, so only the
    # service's own deadline can end the wait.
    with FakeOllama(dim=64, slow_seconds=60.0) as server:
        yield server


def prepare(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": DOCS}).status_code == 200


def breaker_state(stack: Stack, name: str) -> str:
    return stack.anon.get("/health").json()["circuit_breakers"][name]


def reset_time_over(stack: Stack, *names: str) -> Callable[[], bool]:
    return lambda: all(stack.services.breakers[name].retry_after() == 0 for name in names)


def chunks(stack: Stack) -> int:
    return stack.http.get("/api/v1/rag/collections/docs").json()["chunks"]


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
    return events


# -- the stand-in's faults are the real thing ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["reset", "stream_reset"])
def test_the_stand_in_resets_connections_with_a_real_rst(fake: FakeOllama, mode: str) -> None:
    """A reset must reach the client as ECONNRESET, not as an orderly close (FIN), or the suite
    would test a gentler fault than a crashed host."""
    fake.set_mode(mode, "/api/chat")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        with pytest.raises(ConnectionResetError):
            for _ in range(1000):  # bounded: the server sends a few chunks at most, then resets
                data = conn.recv(65536)
                if not data:
                    raise AssertionError(f"an orderly close (FIN) after {received!r}, not a reset")
                received += data
    if mode == "stream_reset":
        assert b"200 OK" in received and b'"content"' in received, "the answer must have begun"
    else:
        assert received == b""


# -- Ollama: slow, 5xx, RST, refused --------------------------------------------------------------------
OUTAGES = {
    # mode: (how to inject it, seconds one call to the host may take, ingestion's status)
    "slow": (lambda fake: fake.set_mode("slow"), OLLAMA_TIMEOUT_S, 504),
    "http_500": (lambda fake: fake.set_mode("error"), 0.0, 503),
    "rst": (lambda fake: fake.set_mode("reset"), 0.0, 503),
    "refused": (lambda fake: fake.stop(), 0.0, 503),
}


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_an_ollama_outage_is_answered_in_bounded_time_and_recovered_from(
    stack_factory, fake: FakeOllama, clock: Clock, outage: str  # noqa: ANN001
) -> None:
    stack = stack_factory(
        embedder="ollama",
        generator="ollama",
        ollama_host=fake.url,
        ollama_timeout_s=OLLAMA_TIMEOUT_S,
        breaker_fail_max=FAIL_MAX,
        breaker_reset_s=RESET_S,
    )
    prepare(stack)
    stored = chunks(stack)
    inject, call_s, ingest_status = OUTAGES[outage]
    inject(fake)

    # Ingestion cannot degrade (no vectors, no write): the right error, within one call's time,
    # and nothing written.
    refused = clock.timed(
        "ingest during the outage",
        lambda: stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": [LATE_DOC]}),
        call_s + SLACK_S,
    )
    assert refused.status_code == ingest_status, refused.text
    assert refused.json()["error"]["code"] in ("dependency_unavailable", "dependency_timeout")

    # Answers degrade (sparse search, extractive answer), each within an embedding call and a
    # generation call, until both breakers have seen FAIL_MAX failures.
    for attempt in range(FAIL_MAX):
        answer = clock.timed(
            f"answer {attempt} during the outage",
            lambda: stack.http.post("/api/v1/rag/query", json=QUESTION, timeout=30),
            2 * call_s + SLACK_S,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["degraded"] and body["generator"] == "extractive" and body["mode_used"] == "sparse"
        assert body["sources"][0]["doc_id"] == "breakers"
    assert breaker_state(stack, "ollama_embedding") == "open"
    assert breaker_state(stack, "ollama_generation") == "open"

    # Open breakers: no call to the host at all, so no wait.
    calls = fake.count()
    answer = clock.timed("answer, breakers open", lambda: stack.http.post("/api/v1/rag/query", json=QUESTION), OPEN_S)
    assert answer.status_code == 200 and answer.json()["generator"] == "extractive"
    assert sum("circuit breaker is open" in reason for reason in answer.json()["reasons"]) == 2
    search = clock.timed(
        "search, breakers open",
        lambda: stack.http.post("/api/v1/rag/search", json={"query": "rotate the token", "collection": "docs"}),
        OPEN_S,
    )
    assert search.json()["mode_used"] == "sparse" and search.json()["results"][0]["doc_id"] == "tokens"
    refused = clock.timed(
        "ingest, breakers open",
        lambda: stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": [LATE_DOC]}),
        OPEN_S,
    )
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "breaker_open"
    assert 1 <= int(refused.headers["Retry-After"]) <= RESET_S + 1
    if outage != "refused":
        assert fake.count() == calls, "an open breaker must not call the failing host"

    # The host comes back; once the reset time is over, the next request probes and closes both.
    if outage == "refused":
        fake.start()
    fake.mode = "ok"
    wait_until(reset_time_over(stack, "ollama_embedding", "ollama_generation"), "the breakers' reset time to pass")
    answer = clock.timed("answer, probing", lambda: stack.http.post("/api/v1/rag/query", json=QUESTION), SLACK_S)
    body = answer.json()
    assert body["degraded"] is False and body["generator"] == "ollama:llama3.2" and body["mode_used"] == "hybrid"
    assert breaker_state(stack, "ollama_embedding") == breaker_state(stack, "ollama_generation") == "closed"

    # Nothing lost, nothing half-written: the old chunks are all there, and the refused document
    # goes in now.
    assert chunks(stack) == stored
    late = stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": [LATE_DOC]}).json()
    assert late["ingested"] == 1 and chunks(stack) == stored + late["chunks"]
    found = stack.http.post("/api/v1/rag/search", json={"query": "nightly snapshots", "collection": "docs"}).json()
    assert found["results"][0]["doc_id"] == "late"


# -- Ollama: an answer that breaks off mid-stream --------------------------------------------------------
MID_STREAM = {
    # mode: (seconds the break takes to notice, the error the stream ends with)
    "stream_reset": (0.0, "dependency_unavailable"),
    "stream_stall": (OLLAMA_TIMEOUT_S, "dependency_timeout"),
}


@pytest.mark.parametrize("mode", list(MID_STREAM))
def test_an_answer_broken_off_mid_stream_ends_in_bounded_time_and_trips_the_breaker(
    stack_factory, fake: FakeOllama, clock: Clock, mode: str  # noqa: ANN001
) -> None:
    stack = stack_factory(
        embedder="local",
        generator="ollama",
        ollama_host=fake.url,
        ollama_timeout_s=OLLAMA_TIMEOUT_S,
        breaker_fail_max=FAIL_MAX,
        breaker_reset_s=RESET_S,
    )
    prepare(stack)
    notice_s, code = MID_STREAM[mode]
    fake.set_mode(mode, "/api/chat")

    def ask_streamed() -> list[tuple[str, dict]]:
        with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}, timeout=30) as r:
            assert r.status_code == 200
            return sse_events(r)

    # Not streamed: the whole answer is needed, so a broken one degrades to the extractive answer.
    answer = clock.timed(
        "whole answer broken off",
        lambda: stack.http.post("/api/v1/rag/query", json=QUESTION, timeout=30),
        notice_s + SLACK_S,
    )
    assert answer.status_code == 200 and answer.json()["generator"] == "extractive"
    # Streamed: the first words are already out, so the stream says it broke off and ends.
    for attempt in range(FAIL_MAX - 1):
        events = clock.timed(f"stream {attempt} broken off", ask_streamed, notice_s + SLACK_S)
        names = [name for name, _ in events]
        assert names == ["sources", "token", "error"], names
        assert events[-1][1]["error"]["code"] == code
    assert breaker_state(stack, "ollama_generation") == "open"

    # Breaker open: the stream goes straight to the extractive answer, without calling the host.
    calls = fake.count("/api/chat")
    events = clock.timed("stream, breaker open", ask_streamed, OPEN_S)
    names = [name for name, _ in events]
    assert names[:2] == ["sources", "degraded"] and names[-1] == "done"
    assert events[-1][1]["generator"] == "extractive" and "[1]" in events[-1][1]["answer"]
    assert fake.count("/api/chat") == calls

    fake.set_mode("ok", "/api/chat")
    wait_until(reset_time_over(stack, "ollama_generation"), "the breaker's reset time to pass")
    events = clock.timed("stream, probing", ask_streamed, SLACK_S)
    assert [name for name, _ in events][-1] == "done"
    assert events[-1][1]["generator"] == "ollama:llama3.2" and events[-1][1]["degraded"] is False
    assert breaker_state(stack, "ollama_generation") == "closed"


# -- Redis: killed, or frozen, in the middle of a run -------------------------------------------------------
needs_redis = pytest.mark.skipif(
    not RedisServer.available(), reason="redis-server is not installed (.ci/run installs it)"
)
# Redis calls a search makes: the rate-limit count, then the result written to the cache.
REDIS_CALLS_PER_SEARCH = 2
QUERIES = [("rotate the token", "tokens"), ("when does a breaker open", "breakers")] * 6
FAULT_AT = 3  # requests before the fault: Redis is known to be in use when it fails


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def shared_counts(server: RedisServer) -> int:
    """The sum of every rate-limit counter in Redis: it grows only when counts are shared."""
    with redis.Redis.from_url(server.url, socket_timeout=5) as client:
        return sum(int(client.get(key) or 0) for key in client.scan_iter("ragkit:rl:*"))


@needs_redis
@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_redis_failing_mid_run_costs_bounded_latency_and_is_recovered_from(
    stack_factory, redis_server: RedisServer, clock: Clock, fault: str  # noqa: ANN001
) -> None:
    stack = stack_factory(
        redis_url=redis_server.url,
        redis_timeout_s=REDIS_TIMEOUT_S,
        service_rate_limit="100000/minute",  # counted in Redis on every request, never reached
        breaker_fail_max=FAIL_MAX,
        breaker_reset_s=RESET_S,
    )
    prepare(stack)
    assert shared_counts(redis_server) > 0, "the rate limits must be counted in Redis before the fault"

    for index, (query, expected) in enumerate(QUERIES):
        if index == FAULT_AT:
            (redis_server.kill if fault == "killed" else redis_server.freeze)()
        # Before the breaker opens, each Redis call may wait out its timeout (a frozen server
        # accepts connections and never answers); after, none is made.
        search = clock.timed(
            f"search {index}",
            lambda query=query: stack.http.post(
                "/api/v1/rag/search", json={"query": query, "collection": "docs"}, timeout=30
            ),
            REDIS_CALLS_PER_SEARCH * REDIS_TIMEOUT_S + SLACK_S,
        )
        assert search.status_code == 200, search.text
        assert search.json()["results"][0]["doc_id"] == expected
        assert "RateLimit-Limit" in search.headers, "limits still apply, counted in-process"
    health = stack.anon.get("/health").json()
    assert health["circuit_breakers"]["redis"] == "open" and health["status"] == "degraded"
    assert "in-process" in health["dependencies"]["cache"]["status"]
    tail = [elapsed for what, elapsed in clock.seen[-(len(QUERIES) - FAULT_AT - FAIL_MAX) :]]
    assert max(tail) <= OPEN_S, f"with the breaker open Redis must cost nothing: {tail}"

    if fault == "killed":
        redis_server.start()  # a new, empty server on the same port
    else:
        redis_server.thaw()
    wait_until(reset_time_over(stack, "redis"), "the breaker's reset time to pass")
    probe = clock.timed(
        "search, probing",
        lambda: stack.http.post("/api/v1/rag/search", json={"query": "rotate the token", "collection": "docs"}),
        SLACK_S,
    )
    assert probe.status_code == 200
    wait_until(lambda: breaker_state(stack, "redis") == "closed", "the probe to close the breaker")
    assert stack.anon.get("/health").json()["dependencies"]["cache"]["status"] == "ok"
    # Counted in Redis again, shared by every replica: one more request, one more count there.
    before = shared_counts(redis_server)
    assert stack.http.get("/api/v1/rag/collections").status_code == 200
    assert shared_counts(redis_server) == before + 1
