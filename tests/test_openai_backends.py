"""The OpenAI-compatible backends (vLLM, llama.cpp, LM Studio, TEI, hosted APIs) under the faults
their servers really have, through the OpenAI stand-in (tests/support/fake_openai.py, a real HTTP
server): each fault comes out as the ragkit error the breakers and the HTTP layer expect, repeated
failures open the breaker, a failing model degrades to the extractive answer or to sparse search
with the reasons said, a stream broken half way ends with the `error` event, and the API key is
never in a message, a log or /health. The Ollama equivalents are test_degradation.py and
test_faults.py; what every backend promises alike is in the contract suites.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ragkit import services
from ragkit.adapters.embedders.openai import OpenAIEmbedder
from ragkit.adapters.generators.openai import OpenAIGenerator
from ragkit.core.config import Settings
from ragkit.core.errors import ConfigurationError, DependencyTimeout, DependencyUnavailable, UpstreamRejected
from ragkit.core.types import Hit
from tests.conftest import SECRET, Stack, make_settings
from tests.support.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI
from tests.support.live import free_port
from tests.support.serve import start_serve, wait_for_startup
from tests.support.waiting import wait_until
from tests.test_degradation import DOCS, QUESTION, prepare  # the collection and question the Ollama tests use
from tests.test_faults import sse_events

KEY = "sk-live-" + "k3y" * 12  # what the stand-in demands, and what must never be shown
TIMEOUT_S = 1.0
SLACK_S = 1.5  # HTTP, BM25 and an extractive answer on a loaded two-core machine
MODEL = "fake-chat"
HITS = (Hit(id="p1", score=1.0, text=DOCS[0]["text"], doc_id="breakers", chunk_index=0, title="Circuit breakers"),)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    # "slow" holds a request for a minute: only ragkit's own timeout can end the wait.
    with FakeOpenAI(dim=64, api_key=KEY, slow_seconds=60.0) as server:
        yield server


def openai_settings(fake: FakeOpenAI, **extra: object) -> dict[str, object]:
    return {
        "openai_base_url": fake.base_url,
        "openai_api_key": KEY,
        "openai_model": MODEL,
        "openai_embed_model": "fake-embed",
        "openai_timeout_s": TIMEOUT_S,
        **extra,
    }


def generation_stack(stack_factory, fake: FakeOpenAI, **extra: object) -> Stack:  # noqa: ANN001
    stack = stack_factory(generator="openai", embedder="local", **openai_settings(fake, **extra))
    prepare(stack)
    return stack


def reset_time_over(stack: Stack, breaker: str) -> Callable[[], bool]:
    return lambda: stack.services.breakers[breaker].retry_after() == 0


# -- each fault is the ragkit error it should be ------------------------------------------------------------

FAULTS = {
    # mode: (error class, what its message says, seconds it may take to notice)
    "slow": (DependencyTimeout, "did not answer within 1 s", TIMEOUT_S),
    "error": (DependencyUnavailable, "HTTP 500", 0.0),
    "busy": (DependencyUnavailable, "busy", 0.0),
    "reset": (DependencyUnavailable, "dropped the connection", 0.0),
    "unknown_model": (UpstreamRejected, "set OPENAI_MODEL", 0.0),
}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("mode", list(FAULTS))
async def test_each_fault_is_the_ragkit_error_the_breakers_expect(fake: FakeOpenAI, mode: str) -> None:
    error, says, notice_s = FAULTS[mode]
    generator = OpenAIGenerator(fake.base_url, MODEL, TIMEOUT_S, api_key=KEY)
    embedder = OpenAIEmbedder(fake.base_url, "fake-embed", TIMEOUT_S, api_key=KEY)
    fake.mode = mode
    calls = {
        "answer": lambda: generator.generate("When?", HITS),
        "stream": lambda: _drain(generator.stream("When?", HITS)),
        "embed": lambda: embedder.embed(["a breaker"]),
    }
    try:
        for what, call in calls.items():
            before = fake.count()
            started = time.perf_counter()
            with pytest.raises(error) as caught:
                await call()
            assert time.perf_counter() - started < notice_s + SLACK_S, f"{what}: the wait is bounded"
            message = caught.value.message
            assert says.replace("OPENAI_MODEL", "OPENAI_EMBED_MODEL" if what == "embed" else "OPENAI_MODEL") in message
            assert caught.value.__cause__ is not None, "the original stays attached for the logs"
            # No silent retry: the breaker sees every failure, and a dead host holds a request once.
            assert fake.count() - before == 1, f"{what} was retried"
    finally:
        await generator.aclose()
        await embedder.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_key_is_the_callers_error_and_the_key_is_never_repeated(fake: FakeOpenAI) -> None:
    wrong = "sk-wrong-" + "w" * 30  # the stand-in quotes back whatever key it was given
    generator = OpenAIGenerator(fake.base_url, MODEL, TIMEOUT_S, api_key=wrong)
    embedder = OpenAIEmbedder(fake.base_url, "fake-embed", TIMEOUT_S, api_key=wrong)
    try:
        for call in (generator.generate("q", HITS), embedder.embed(["x"]), generator.probe(), embedder.probe()):
            with pytest.raises(UpstreamRejected) as caught:
                await call
            assert "set OPENAI_API_KEY" in caught.value.message
            assert wrong not in caught.value.message and wrong not in json.dumps(caught.value.to_dict())
            assert caught.value.__cause__ is None, "a traceback of the cause would show the key"
        assert wrong not in repr(generator) + repr(embedder)
    finally:
        await generator.aclose()
        await embedder.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_embeddings_are_batched_under_the_servers_limit_and_kept_in_order(fake: FakeOpenAI) -> None:
    fake.max_inputs = 8  # as TEI's --max-client-batch-size: more inputs in one request get 413
    fake.reverse_embeddings = True  # the API's index, not the list's order, says whose vector it is
    embedder = OpenAIEmbedder(fake.base_url, "fake-embed", TIMEOUT_S, api_key=KEY, batch_size=8)
    too_many = OpenAIEmbedder(fake.base_url, "fake-embed", TIMEOUT_S, api_key=KEY, batch_size=9)
    texts = [f"passage number {i} about {'breakers' if i % 2 else 'tokens'}" for i in range(20)]
    try:
        together = await embedder.embed(texts)
        assert [len(body["input"]) for body in fake.bodies(EMBEDDINGS)] == [8, 8, 4]
        assert all(body["encoding_format"] == "float" for body in fake.bodies(EMBEDDINGS))
        for text, vector in zip(texts, together, strict=True):
            assert (await embedder.embed([text]))[0] == pytest.approx(vector)
        with pytest.raises(UpstreamRejected, match="maximum allowed batch size"):
            await too_many.embed(texts)
    finally:
        await embedder.aclose()
        await too_many.aclose()


def test_a_client_left_by_a_finished_event_loop_does_not_break_the_next(fake: FakeOpenAI) -> None:
    # A notebook or a CLI runs each call in its own asyncio.run: the adapter builds a client per
    # loop, and the one it drops must not try to close its connections inside the next loop.
    generator = OpenAIGenerator(fake.base_url, MODEL, TIMEOUT_S, api_key=KEY)
    asyncio.run(generator.generate("When does a breaker open?", HITS))
    errors: list[dict] = []

    async def next_loop() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        answer = await generator.generate("When does a breaker open?", HITS)  # drops the old client
        gc.collect()
        # Collecting the old client scheduled nothing in this loop (its own client would close
        # itself here, and fail); what it did schedule would also run, and fail, during aclose.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await generator.aclose()
        gc.collect()  # a task that failed is reported when it is collected
        assert pending == []
        return answer

    assert asyncio.run(next_loop()).startswith("According to the context")
    assert errors == []


async def _drain(stream) -> list[str]:  # noqa: ANN001
    return [piece async for piece in stream]


# -- configuration ---------------------------------------------------------------------------------------

MISSING = {
    "generator base URL": ({"generator": "openai", "openai_model": MODEL}, "OPENAI_BASE_URL"),
    "generator model": ({"generator": "openai", "openai_base_url": "http://127.0.0.1:9/v1"}, "OPENAI_MODEL"),
    "embedder base URL": ({"embedder": "openai", "openai_embed_model": "e"}, "OPENAI_BASE_URL"),
    "embedder model": ({"embedder": "openai", "openai_base_url": "http://127.0.0.1:9/v1"}, "OPENAI_EMBED_MODEL"),
    "base URL not http": (
        {"generator": "openai", "openai_base_url": "127.0.0.1:8000/v1", "openai_model": MODEL},
        "OPENAI_BASE_URL",
    ),
}


@pytest.mark.parametrize(("values", "variable"), MISSING.values(), ids=MISSING.keys())
def test_a_missing_setting_is_a_configuration_error_naming_the_variable(
    tmp_path: Path, values: dict, variable: str
) -> None:
    settings = make_settings(tmp_path, **{"embedder": "local", "generator": "extractive", **values})
    build = services.build_embedder if "embedder" in values else services._build_generator
    with pytest.raises(ConfigurationError, match=variable):
        build(settings)


def test_ragkit_serve_refuses_to_start_without_the_base_url(tmp_path: Path) -> None:
    # What a person sees: the service does not come up, and its output says what to set.
    with pytest.raises(RuntimeError, match="refuses to start: RAGKIT_GENERATOR=openai needs OPENAI_BASE_URL: set it"):
        start_serve(tmp_path, free_port(), INTER_SERVICE_SECRET=SECRET, RAGKIT_GENERATOR="openai", OPENAI_MODEL=MODEL)


def test_the_key_is_read_from_the_environment_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("RAGKIT_GENERATOR", "openai")
    settings = Settings(_env_file=None)
    assert settings.openai_key == KEY and settings.generator_kind == "openai"
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


# -- a live service ----------------------------------------------------------------------------------------


def test_answers_come_from_the_server_with_the_request_id_and_the_key(stack_factory, fake: FakeOpenAI) -> None:  # noqa: ANN001
    stack = generation_stack(stack_factory, fake)
    response = stack.http.post("/api/v1/rag/query", json=QUESTION, headers={"X-Request-ID": "trace-me-42"})
    body = response.json()
    assert body["generator"] == f"openai:{MODEL}" and body["degraded"] is False
    assert body["answer"].startswith("According to the context") and "[1]" in body["answer"]
    sent = fake.request_headers(CHAT)[-1]
    assert sent["x-request-id"] == "trace-me-42" and sent["authorization"] == f"Bearer {KEY}"
    assert stack.anon.get("/health/ready").status_code == 200


@pytest.mark.parametrize("mode", ["error", "busy", "reset", "unknown_model"])
def test_generation_failure_degrades_to_an_extractive_answer(stack_factory, fake: FakeOpenAI, mode: str) -> None:  # noqa: ANN001
    stack = generation_stack(stack_factory, fake)
    fake.set_mode(mode, CHAT)
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert body["degraded"] is True and body["generator"] == "extractive"
    assert any("generation unavailable" in reason for reason in body["reasons"]), body["reasons"]
    assert "[1]" in body["answer"] and body["sources"][0]["doc_id"] == "breakers"


def test_a_dead_server_opens_the_breaker_and_a_probe_closes_it(stack_factory, fake: FakeOpenAI) -> None:  # noqa: ANN001
    stack = generation_stack(stack_factory, fake, breaker_fail_max=3, breaker_reset_s=2.0)
    fake.set_mode("slow", CHAT)
    for _ in range(3):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True and "did not answer within" in " ".join(body["reasons"])
    health = stack.anon.get("/health").json()
    assert health["circuit_breakers"]["openai_generation"] == "open" and health["status"] == "degraded"
    assert health["dependencies"]["generator"]["backend"] == f"openai:{MODEL}"
    assert health["dependencies"]["generator"]["status"] == "failing"

    calls = fake.count(CHAT)
    started = time.perf_counter()
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert time.perf_counter() - started < SLACK_S, "an open breaker does not wait for the dead server"
    assert any("circuit breaker is open" in reason for reason in body["reasons"])
    assert fake.count(CHAT) == calls

    fake.set_mode("ok", CHAT)
    wait_until(reset_time_over(stack, "openai_generation"), "the breaker's reset time to pass")
    body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert body["generator"] == f"openai:{MODEL}" and body["degraded"] is False
    assert stack.anon.get("/health").json()["circuit_breakers"]["openai_generation"] == "closed"


def test_a_refused_key_or_unknown_model_is_not_an_outage(stack_factory, fake: FakeOpenAI) -> None:  # noqa: ANN001
    stack = generation_stack(stack_factory, fake, breaker_fail_max=2)
    fake.api_key = "sk-another-key-" + "x" * 20
    for _ in range(3):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True and "set OPENAI_API_KEY" in " ".join(body["reasons"])
    fake.api_key = KEY
    fake.set_mode("unknown_model", CHAT)
    for _ in range(3):
        body = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
        assert body["degraded"] is True and "set OPENAI_MODEL" in " ".join(body["reasons"])
    # The server answered each time: its breaker stays closed and answers come back once fixed.
    assert stack.anon.get("/health").json()["circuit_breakers"]["openai_generation"] == "closed"


MID_STREAM = {"stream_reset": "dependency_unavailable", "stream_stall": "dependency_timeout",
              "stream_error": "dependency_unavailable"}  # fmt: skip


@pytest.mark.parametrize("mode", list(MID_STREAM))
def test_a_stream_broken_half_way_ends_with_the_error_event(stack_factory, fake: FakeOpenAI, mode: str) -> None:  # noqa: ANN001
    stack = generation_stack(stack_factory, fake, breaker_fail_max=2, breaker_reset_s=30.0)
    fake.set_mode(mode, CHAT)
    for _ in range(2):
        with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}) as response:
            assert response.status_code == 200
            events = sse_events(response)
        names = [name for name, _ in events]
        # The first words are already on the reader's screen: the stream says it broke off.
        assert names[0] == "sources" and "token" in names and names[-1] == "error", names
        assert "degraded" not in names
        assert events[-1][1]["error"]["code"] == MID_STREAM[mode]
        assert any("generation broke off" in reason for reason in events[-1][1]["reasons"])
    assert stack.anon.get("/health").json()["circuit_breakers"]["openai_generation"] == "open"
    # Breaker open: straight to the extractive answer, announced, without calling the server.
    calls = fake.count(CHAT)
    with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}) as response:
        events = sse_events(response)
    assert [name for name, _ in events][:2] == ["sources", "degraded"] and events[-1][0] == "done"
    assert events[-1][1]["generator"] == "extractive" and fake.count(CHAT) == calls


def test_an_embedding_outage_falls_back_to_sparse_search(stack_factory, fake: FakeOpenAI) -> None:  # noqa: ANN001
    stack = stack_factory(embedder="openai", generator="extractive", **openai_settings(fake))
    prepare(stack)
    info = stack.http.get("/api/v1/rag/collections/docs").json()
    assert info["embedder"] == "openai:fake-embed" and info["dimension"] == 64
    fake.set_mode("error", EMBEDDINGS)
    body = stack.http.post(
        "/api/v1/rag/search", json={"query": "rotate the token", "collection": "docs", "mode": "hybrid"}
    ).json()
    assert body["mode_used"] == "sparse" and body["degraded"] is True
    assert any("embedding unavailable" in reason for reason in body["reasons"])
    assert body["results"][0]["doc_id"] == "tokens"


def test_the_key_is_in_no_log_no_health_report_and_no_error(
    stack_factory,
    fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    caplog.set_level(logging.DEBUG)  # the openai and httpx2 loggers' debug lines too
    stack = stack_factory(embedder="openai", generator="openai", **openai_settings(fake))
    prepare(stack)
    seen = [stack.http.post("/api/v1/rag/query", json=QUESTION).text]
    for mode in ("error", "reset", "slow"):
        fake.mode = mode
        seen.append(stack.http.post("/api/v1/rag/query", json=QUESTION).text)
        seen.append(stack.anon.get("/health").text)
    fake.mode = "ok"
    fake.api_key = "sk-other"  # the stand-in now refuses, quoting back the key ragkit sends
    refused = stack.http.post("/api/v1/rag/query", json=QUESTION).json()
    assert "set OPENAI_API_KEY" in " ".join(refused["reasons"])
    seen += [json.dumps(refused), stack.anon.get("/health").text, stack.anon.get("/metrics").text]
    for text in [*seen, caplog.text]:
        assert KEY not in text


# -- a real `ragkit serve` -----------------------------------------------------------------------------------


def test_a_served_ragkit_answers_from_the_server_and_degrades_when_it_fails(tmp_path: Path, fake: FakeOpenAI) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAGKIT_DATA_DIR": str(tmp_path / "data"),
        "INTER_SERVICE_SECRET": SECRET,
        "RAGKIT_EMBEDDER": "local",
        "RAGKIT_GENERATOR": "openai",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": KEY,
        "OPENAI_MODEL": MODEL,
        "RAGKIT_OPENAI_TIMEOUT": str(TIMEOUT_S),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ragkit", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    copying = wait_for_startup(process, tmp_path / "stderr.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Service-Token": SECRET}, timeout=60) as http:
            assert http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
            ingested = http.post("/api/v1/rag/collections/docs/documents", json={"documents": DOCS})
            assert ingested.status_code == 200
            body = http.post("/api/v1/rag/query", json=QUESTION).json()
            assert body["generator"] == f"openai:{MODEL}" and body["degraded"] is False
            assert body["answer"].startswith("According to the context") and fake.count(CHAT) == 1

            fake.set_mode("error", CHAT)
            body = http.post("/api/v1/rag/query", json=QUESTION).json()
            assert body["degraded"] is True and body["generator"] == "extractive"
            assert "HTTP 500" in " ".join(body["reasons"]) and "[1]" in body["answer"]
            assert KEY not in http.get("/health").text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        copying.join(timeout=60)  # the process has exited: the copy ends at its last line
    logged = [tmp_path / "stderr.log", *(tmp_path / "data" / "logs").glob("*")]
    text = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in logged if path.is_file())
    assert "HTTP 500" in text, "the degraded answer is logged, with why"
    assert KEY not in text
