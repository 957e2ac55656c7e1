"""Embedders: what only one of them does. Ollama through the official client against a real fake
server (request shapes, the dimension probe, event loops), MiniLM for real (its tokenizer, its
threads, its batches).

What both promise is in test_embedder_contract.py; how Ollama failures are translated is in
test_error_translation.py.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ragkit.adapters.embedders.local import LocalEmbedder, count_wordpieces
from ragkit.adapters.embedders.ollama import OllamaEmbedder
from ragkit.core.errors import ConfigurationError, DependencyUnavailable
from tests.support.fake_ollama import FakeOllama

DIM = 64
TIMEOUT_S = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(dim=DIM) as fake:
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

    def make(**kwargs: Any) -> OllamaEmbedder:
        embedder = OllamaEmbedder(fake.url, "nomic-embed-text", TIMEOUT_S, **kwargs)
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
async def test_ollama_sends_one_batched_request_per_batch(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    embedder = make_embedder(batch_size=4)
    texts = [f"text number {i} about topic {i % 3}" for i in range(10)]

    await embedder.embed(texts)

    # /api/embed takes a list: one request per batch, in order, each with its own texts.
    bodies = fake.bodies("/api/embed")
    assert [body["input"] for body in bodies] == [texts[0:4], texts[4:8], texts[8:10]]
    assert {body["model"] for body in bodies} == {"nomic-embed-text"}


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
async def test_ollama_stopped_server_is_unavailable_then_recovers_on_the_same_port(
    fake: FakeOllama, make_embedder: Callable[..., OllamaEmbedder]
) -> None:
    # A pooled connection to a server that went away must not poison later calls.
    embedder = make_embedder()
    await embedder.embed(["warm a pooled connection"])
    url = fake.url
    fake.stop()
    fake.reset_counters()

    with pytest.raises(DependencyUnavailable, match="cannot connect to Ollama"):
        await embedder.embed(["hello"])
    assert fake.count() == 0

    fake.start()
    assert fake.url == url
    assert len(await embedder.embed(["hello"])) == 1


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


def test_local_max_tokens_is_the_models_input_limit(minilm: LocalEmbedder) -> None:
    # Known before the model is loaded (chunking needs it at once), and the loaded model agrees.
    assert LocalEmbedder().max_tokens == 256  # a fresh instance: nothing loaded
    assert minilm.max_tokens == 256
    assert minilm.load().max_seq_length == 256


@pytest.mark.anyio
async def test_local_vectors_carry_meaning_beyond_shared_words(minilm: LocalEmbedder) -> None:
    # A paraphrase sharing few words beats an unrelated sentence by a wide margin: the real model,
    # not word overlap (which is all the Ollama stand-in offers).
    vectors = await minilm.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in a concert.",
            "The central bank raised interest rates to fight inflation.",
        ]
    )
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


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
    # Including past 128 (the tokenizer file's truncation) and 256 (the model's input limit).
    for text in ["", "Hello world", "Unbelievably tokenized: naïve café, 3.14 and e-mail!", long_text]:
        assert minilm.count_tokens(text) == len(tokenizer.tokenize(text))


