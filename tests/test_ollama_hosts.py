"""Several Ollama hosts (OLLAMA_HOST lists them): requests spread across the healthy ones, a dead
host is ejected by its own breaker, and the role's breaker opens only when every host is out.

End to end: the real service over HTTP, the official ``ollama`` client, and three stand-in Ollama
servers on 127.0.0.1, one of them killed while requests are in flight on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragkit.adapters.generators.ollama import OllamaGenerator
from ragkit.adapters.host_pool import PooledGenerator, host_label
from ragkit.core.types import Hit
from tests.conftest import Stack, make_settings
from tests.support.fake_ollama import FakeOllama
from tests.support.waiting import wait_until

DOCS = [
    {"id": "breakers", "text": "A circuit breaker opens after five failures in a row and fails fast."},
    {"id": "tokens", "text": "Rotate the service token by listing the old and the new secret together."},
    {"id": "snapshots", "text": "Qdrant snapshots back up a collection; restore them on a new node."},
]
QUESTION = {"question": "When does a breaker open?", "collection": "docs", "top_k": 2}
RESET_S = 1.0
REQUESTS = 48


@pytest.fixture
def hosts() -> Iterator[list[FakeOllama]]:
    servers = [FakeOllama(dim=64, slow_seconds=30.0).start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def several(stack_factory, hosts: list[FakeOllama], embedder: str = "ollama") -> Stack:  # noqa: ANN001
    stack = stack_factory(
        embedder=embedder,
        generator="ollama",
        ollama_host=", ".join(host.url for host in hosts),
        ollama_timeout_s=10.0,
        breaker_fail_max=2,
        breaker_reset_s=RESET_S,
    )
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": DOCS}).status_code == 200
    return stack


def breakers(stack: Stack) -> dict[str, str]:
    return stack.anon.get("/health").json()["circuit_breakers"]


def label(host: FakeOllama) -> str:
    return f"127.0.0.1:{host.port}"


def ask(stack: Stack, index: int) -> dict:
    """One of three kinds of request, each needing the hosts (a new question every time, so none
    is answered from the cache): an answer, a streamed answer, a search."""
    kind = index % 3
    question = {**QUESTION, "question": f"When does a breaker open, case {index}?"}
    if kind == 0:
        response = stack.http.post("/api/v1/rag/query", json=question, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()
    if kind == 1:
        with stack.http.stream("POST", "/api/v1/rag/query", json={**question, "stream": True}, timeout=30) as r:
            assert r.status_code == 200
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        return events[-1]
    search = {"query": f"rotate the token, case {index}", "collection": "docs"}
    response = stack.http.post("/api/v1/rag/search", json=search)
    assert response.status_code == 200, response.text
    return response.json()


def test_one_host_killed_mid_run_fails_no_request_and_is_ejected_until_it_is_back(
    stack_factory,  # noqa: ANN001
    hosts: list[FakeOllama],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="ragkit.adapters.host_pool")
    stack = several(stack_factory, hosts)
    doomed = hosts[1]
    # Requests on the doomed host are held until it is killed, so some are certainly in flight on it.
    doomed.set_mode("hold", seconds=30.0)
    calls_before = [host.count() for host in hosts]

    def kill_once_a_request_hangs_there() -> None:
        wait_until(lambda: doomed.count() > calls_before[1], "a request to reach the doomed host")
        doomed.set_mode("reset")  # killed: the requests in flight there are reset, ...
        doomed.stop()  # ... and its port refused from now on

    with ThreadPoolExecutor(max_workers=5) as pool:
        killer = pool.submit(kill_once_a_request_hangs_there)
        results = list(pool.map(lambda index: ask(stack, index), range(REQUESTS)))
        killer.result()

    # No failed request and nothing degraded: every answer came from a model, every search was hybrid.
    for result in results:
        assert result.get("degraded") is False, result
        if "generator" in result:
            assert result["generator"] == "ollama:llama3.2"
        else:
            assert result["mode_used"] == "hybrid"
    # Requests cut off mid-flight and requests refused at the door both moved to another host.
    moved = [record.getMessage() for record in caplog.records]
    assert any("dropped the connection" in message for message in moved), moved
    assert any("cannot connect" in message for message in moved), moved
    # The load was spread, and the survivors took the rest.
    assert all(host.count() > calls_before[i] for i, host in enumerate(hosts))
    # The dead host is ejected for each role it served; the roles themselves never opened.
    states = breakers(stack)
    assert states[f"ollama_embedding@{label(doomed)}"] == "open"
    assert states["ollama_embedding"] == states["ollama_generation"] == "closed"
    for survivor in (hosts[0], hosts[2]):
        assert states[f"ollama_embedding@{label(survivor)}"] == "closed"
        assert states[f"ollama_generation@{label(survivor)}"] == "closed"

    # /health shows each host, and /metrics each host's breaker.
    wait_until(
        lambda: stack.anon.get("/health").json()["dependencies"]["generator"]["hosts"][label(doomed)]["error"],
        "the health check to find the dead host",
    )
    generator = stack.anon.get("/health").json()["dependencies"]["generator"]
    assert generator["status"] == "ok" and set(generator["hosts"]) == {label(h) for h in hosts}
    assert generator["hosts"][label(hosts[0])]["error"] is None
    metrics = stack.anon.get("/metrics").text
    assert f'ragkit_breaker_state{{breaker="ollama_embedding@{label(doomed)}"}} 2.0' in metrics

    # Back on the same port: once its reset time is over it gets a probe, then its share again.
    doomed.mode = "ok"
    doomed.start()
    wait_until(
        lambda: stack.services.breakers[f"ollama_embedding@{label(doomed)}"].retry_after() == 0,
        "the dead host's reset time to pass",
    )
    back = doomed.count()
    for index in range(REQUESTS, REQUESTS + 6):
        assert ask(stack, index)["degraded"] is False
    assert doomed.count() > back
    assert breakers(stack)[f"ollama_embedding@{label(doomed)}"] == "closed"


def test_the_role_breaker_opens_only_when_every_host_is_out(stack_factory, hosts: list[FakeOllama]) -> None:  # noqa: ANN001
    stack = several(stack_factory, hosts, embedder="local")
    hosts[0].stop()
    hosts[1].set_mode("error")
    # Two of three out: answers still come from the model on the third.
    for _ in range(4):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is False and body["generator"] == "ollama:llama3.2"
    assert breakers(stack)["ollama_generation"] == "closed"

    hosts[2].set_mode("busy")
    for _ in range(2):  # fail_max requests with every host out (or ejected)
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True and body["generator"] == "extractive"
        assert any("every host failed" in reason or "circuit breaker" in reason for reason in body["reasons"])
    assert breakers(stack)["ollama_generation"] == "open"
    health = stack.anon.get("/health").json()
    assert health["status"] == "degraded" and health["dependencies"]["generator"]["status"] == "failing"

    # One host back is enough, once the breakers let a probe through.
    hosts[2].mode = "ok"
    wait_until(lambda: stack.services.breakers["ollama_generation"].retry_after() == 0, "the role's reset time")
    wait_until(
        lambda: stack.http.post("/api/v1/rag/query", json=QUESTION).json()["generator"] == "ollama:llama3.2",
        "answers from the model again",
    )
    assert breakers(stack)["ollama_generation"] == "closed"


@pytest.mark.anyio
async def test_a_stream_moves_to_another_host_only_before_its_first_piece(
    hosts: list[FakeOllama], anyio_backend: str
) -> None:
    from ragkit.adapters.breakers import BreakerBoard

    board = BreakerBoard(fail_max=5, reset_timeout=30.0)
    pooled = PooledGenerator([OllamaGenerator(host.url, "llama3.2", timeout_s=5.0) for host in hosts], board)
    hits = [Hit(id="breakers#0", score=1.0, text=DOCS[0]["text"], doc_id="breakers", chunk_index=0)]
    for host in hosts:
        host.set_mode("error", "/api/chat")
    hosts[2].set_mode("ok", "/api/chat")
    # Refused before anything was said: the next host answers, whichever host is first in turn.
    for _ in range(3):
        pieces = [piece async for piece in pooled.stream("When does a breaker open?", hits)]
        assert "".join(pieces).strip()

    # Broken off after the first piece: no other host starts the answer again.
    for host in hosts:
        host.set_mode("stream_reset", "/api/chat")
    before = sum(host.count("/api/chat") for host in hosts)
    received: list[str] = []
    with pytest.raises(Exception) as broken:
        async for piece in pooled.stream("When does a breaker open?", hits):
            received.append(piece)
    assert type(broken.value).__name__ == "DependencyUnavailable"
    assert len(received) == 1 and sum(host.count("/api/chat") for host in hosts) == before + 1
    await pooled.aclose()


def test_ollama_host_lists_are_split_and_a_single_host_keeps_its_plain_breakers(tmp_path) -> None:  # noqa: ANN001
    settings = make_settings(tmp_path, ollama_host=" http://a:11434/, http://b:11434 http://a:11434 ")
    assert settings.ollama_urls == ["http://a:11434", "http://b:11434"]
    assert make_settings(tmp_path).ollama_urls == ["http://127.0.0.1:11434"]
    assert host_label("http://gpu-2.internal:11434/") == "gpu-2.internal:11434"

    from ragkit.services import build_services

    single = build_services(make_settings(tmp_path / "one", ollama_host="http://a:11434", embedder="local"))
    try:
        assert isinstance(single.generator.backend, OllamaGenerator)
        assert "ollama_generation" in single.breakers.states()
        assert not any("@" in name for name in single.breakers.states())
    finally:
        single.store.close()
