"""Embedders: Ollama through the official client against a real fake server, and MiniLM for real."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ragkit.adapters.embedders.local import LocalEmbedder, count_wordpieces
from ragkit.adapters.embedders.ollama import OllamaEmbedder
from ragkit.core.errors import (
    CallerError,
    ConfigurationError,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidInput,
    UpstreamRejected,
)
from tests.support.fake_ollama import FakeOllama

DIM = 64
TIMEOUT_S = 0.5
# Well under the fake's 5 s "slow", with slack for a busy CI machine.
BOUND_S = TIMEOUT_S + 1.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(dim=DIM, slow_seconds=5.0) as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOllama) -> FakeOllama:
    """The module's server, healed and with fresh counters for each test."""
    fake_server.start()
    fake_server.mode = "ok"
    fake_server.reset_counters()
    return fake_server


@pytest.fixture
async def make_embedder(fake: FakeOllama) -> AsyncIterator[Callable[..., OllamaEmbedder]]:
    """OllamaEmbedders on the fake server, closed after the test (their pooled connections too)."""
    made: list[OllamaEmbedder] = []

    def make(host: str | None = None, **kwargs: Any) -> OllamaEmbedder:
        embedder = OllamaEmbedder(host or fake.url, "nomic-embed-text", TIMEOUT_S, **kwargs)
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        await embedder.aclose()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


# --- Ollama embedder ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ollama_embed_batches_and_keeps_order(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder(batch_size=4)
    texts = [f"text number {i} about topic {i % 3}" for i in range(10)]

    vectors = await embedder.embed(texts)

    assert len(vectors) == 10
    assert all(len(v) == DIM for v in vectors)
    assert [len(body["input"]) for body in fake.bodies("/api/embed")] == [4, 4, 2]
    assert fake.count("/api/embed") == 3
    # Order survives batching: each vector is the one for its own text.
    single = await embedder.embed([texts[7]])
    assert cosine(vectors[7], single[0]) == pytest.approx(1.0)
    assert embedder.name == "ollama:nomic-embed-text"
    assert embedder.breaker_name == "ollama_embedding"
    await embedder.aclose()


@pytest.mark.anyio
async def test_ollama_dimension_is_discovered_once(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    with pytest.raises(ConfigurationError, match="ensure_dimension"):
        _ = embedder.dimension

    assert await embedder.ensure_dimension() == DIM
    assert await embedder.ensure_dimension() == DIM
    assert embedder.dimension == DIM
    assert fake.count("/api/embed") == 1


@pytest.mark.anyio
async def test_ollama_dimension_learned_from_first_embed(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    await embedder.embed(["hello"])
    assert await embedder.ensure_dimension() == DIM
    assert fake.count("/api/embed") == 1


@pytest.mark.anyio
async def test_ollama_configured_dimension_that_the_model_does_not_produce(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder(dimension=768)
    assert embedder.dimension == 768  # trusted without a probe
    with pytest.raises(ConfigurationError, match="768"):
        await embedder.embed(["hello"])


@pytest.mark.anyio
async def test_ollama_similar_texts_get_similar_vectors(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    cat, cats, stock = await embedder.embed(
        ["the cat sat on the mat", "a cat sat on a mat", "stock markets fell sharply today"]
    )
    assert cosine(cat, cats) > cosine(cat, stock)


@pytest.mark.anyio
async def test_ollama_empty_input_makes_no_request(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    assert await embedder.embed([]) == []
    assert fake.count() == 0


@pytest.mark.anyio
async def test_ollama_bare_string_is_rejected(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    with pytest.raises(InvalidInput):
        await embedder.embed("not a list")  # type: ignore[arg-type]
    assert fake.count() == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "error", "in_message"),
    [
        ("slow", DependencyTimeout, "did not answer within 0.5 s"),
        ("error", DependencyUnavailable, "HTTP 500"),
        ("busy", DependencyUnavailable, "busy"),
        ("reset", DependencyUnavailable, "dropped the connection"),
        ("unknown_model", UpstreamRejected, "ollama pull nomic-embed-text"),
    ],
)
async def test_ollama_faults_become_ragkit_errors_within_the_timeout(
    fake: FakeOllama,
    make_embedder: Callable[..., OllamaEmbedder],
    mode: str,
    error: type[Exception],
    in_message: str,
) -> None:
    embedder = make_embedder()
    fake.mode = mode
    started = time.perf_counter()

    with pytest.raises(error) as caught:
        await embedder.embed(["hello"])

    assert time.perf_counter() - started < BOUND_S
    assert in_message in caught.value.message
    assert fake.url in caught.value.message  # a person must know which host to look at
    assert caught.value.__cause__ is not None  # the original stays attached for the logs
    assert fake.count("/api/embed") == 1
    # The breaker counts outages, not the caller's mistakes (an unknown model is one).
    assert isinstance(caught.value, CallerError if error is UpstreamRejected else DependencyError)


@pytest.mark.anyio
async def test_ollama_busy_suggests_a_short_retry(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    fake.mode = "busy"
    with pytest.raises(DependencyUnavailable) as caught:
        await make_embedder().embed(["hello"])
    assert caught.value.retry_after == 2.0


@pytest.mark.anyio
async def test_ollama_stopped_server_is_unavailable_then_recovers_on_the_same_port(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder()
    await embedder.embed(["warm a pooled connection"])
    url = fake.url
    fake.stop()
    fake.reset_counters()

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable, match="cannot connect to Ollama") as caught:
        await embedder.embed(["hello"])
    assert time.perf_counter() - started < BOUND_S
    assert url in caught.value.message
    assert fake.count() == 0

    fake.start()
    assert fake.url == url
    assert len(await embedder.embed(["hello"])) == 1


@pytest.mark.anyio
async def test_ollama_host_that_is_not_ollama(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    # A path prefix makes every request miss the fake's routes: a 404 that names no model.
    embedder = make_embedder(f"{fake.url}/elsewhere")
    with pytest.raises(UpstreamRejected, match="pointing at an Ollama server"):
        await embedder.embed(["hello"])


def test_ollama_embedder_survives_a_new_event_loop(fake: FakeOllama) -> None:
    # httpx connections belong to the loop that opened them; services outlive test loops and
    # notebooks run asyncio.run() per cell.
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text", TIMEOUT_S)

    async def embed_then_close() -> list[list[float]]:
        try:
            return await embedder.embed(["hello"])
        finally:
            await embedder.aclose()

    first = asyncio.run(embedder.embed(["hello"]))  # leaves its connection pooled in a dead loop
    second = asyncio.run(embed_then_close())
    assert first == second


def test_ollama_count_tokens_approximates_with_wordpieces() -> None:
    embedder = OllamaEmbedder("http://127.0.0.1:1", "nomic-embed-text", TIMEOUT_S)
    text = "Tokenization of unbelievably long words splits them into pieces."
    assert embedder.count_tokens(text) == count_wordpieces(text)
    assert embedder.count_tokens(text) > len(text.split())
    assert embedder.max_tokens == 512


def test_ollama_embedder_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        OllamaEmbedder("http://127.0.0.1:1", "", TIMEOUT_S)
    with pytest.raises(ConfigurationError):
        OllamaEmbedder("http://127.0.0.1:1", "m", 0)


# --- local MiniLM ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def minilm(request: pytest.FixtureRequest) -> LocalEmbedder:
    """One loaded model for the whole session: the lead's conftest fixture if it is there."""
    try:
        embedder = request.getfixturevalue("local_embedder")
    except pytest.FixtureLookupError:
        embedder = LocalEmbedder(threads=2)
    if embedder._model is None:
        # Loading must never reach for the network (HF hub); any attempt fails the session here.
        def refuse(self: socket.socket, address: object) -> None:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError(f"MiniLM load tried to connect to {address}")
            return original(self, address)

        original = socket.socket.connect
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(socket.socket, "connect", refuse)
            embedder.load()
    return embedder


def test_local_identity(minilm: LocalEmbedder) -> None:
    assert minilm.name == "local:all-MiniLM-L6-v2"
    assert minilm.dimension == 384
    assert minilm.breaker_name == "local_embedding"
    assert minilm.max_tokens == 256
    assert minilm.load().max_seq_length == 256


@pytest.mark.anyio
async def test_local_embeds_normalized_vectors_with_meaning(minilm: LocalEmbedder) -> None:
    vectors = await minilm.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in a concert.",
            "The central bank raised interest rates to fight inflation.",
        ]
    )
    assert len(vectors) == 3
    assert all(len(v) == 384 for v in vectors)
    assert all(math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-4) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert await minilm.ensure_dimension() == 384


@pytest.mark.anyio
async def test_local_embed_runs_off_the_event_loop(minilm: LocalEmbedder, monkeypatch) -> None:  # noqa: ANN001
    model = minilm.load()
    threads: list[int] = []
    encode = model.encode

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        threads.append(threading.get_ident())
        return encode(*args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    await minilm.embed(["hello"])
    assert threads and threads[0] != threading.get_ident()


def test_local_batching_gives_the_same_vectors(minilm: LocalEmbedder, monkeypatch) -> None:  # noqa: ANN001
    texts = [f"sentence {i} about {'cats' if i % 2 else 'finance'}" for i in range(5)]
    whole = minilm.embed_sync(texts)
    model = minilm.load()
    calls: list[int] = []
    encode = model.encode

    def spy(batch, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(len(batch))
        return encode(batch, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    monkeypatch.setattr(minilm, "batch_size", 2)
    batched = minilm.embed_sync(texts)

    assert calls == [2, 2, 1]
    for a, b in zip(whole, batched, strict=True):
        assert cosine(a, b) == pytest.approx(1.0, abs=1e-5)
    assert minilm.embed_sync([]) == []


def test_local_count_tokens_matches_the_model_tokenizer(minilm: LocalEmbedder) -> None:
    tokenizer = minilm.load().tokenizer
    long_text = " ".join(["retrieval-augmented generation pipelines"] * 120)
    for text in ["", "Hello world", "Unbelievably tokenized: naïve café, 3.14 and e-mail!", long_text]:
        assert minilm.count_tokens(text) == len(tokenizer.tokenize(text))
    # No truncation at 128 (the tokenizer file's default) or 256 (the model's): chunkers need the truth.
    assert minilm.count_tokens(long_text) > 256


@pytest.mark.anyio
async def test_local_runtime_errors_become_dependency_errors(minilm: LocalEmbedder, monkeypatch) -> None:  # noqa: ANN001
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(minilm.load(), "encode", broken)
    with pytest.raises(DependencyUnavailable, match="not enough memory") as caught:
        await minilm.embed(["hello"])
    assert caught.value.dependency == "local_embedding"


@pytest.mark.anyio
async def test_local_rejects_non_text(minilm: LocalEmbedder) -> None:
    with pytest.raises(InvalidInput):
        await minilm.embed(["fine", None])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        await minilm.embed("a string, not a list")  # type: ignore[arg-type]
