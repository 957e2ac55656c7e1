"""The Embedder contract, written once and run against every embedder: MiniLM in process (the real
model), OllamaEmbedder through the official client against the Ollama stand-in (alone, and two of
them pooled over two stand-ins as with several hosts in OLLAMA_HOST), and OpenAIEmbedder
through the openai client against the OpenAI-compatible stand-in (both real HTTP servers).
Whatever one of them promises here, the others must keep too, so switching RAGKIT_EMBEDDER never
changes how the pipeline sees an embedder behave.

What each implementation does that the other cannot (request shapes, the dimension probe, the
model's own tokenizer) stays in test_embedders.py; how every Ollama failure is translated is in
test_error_translation.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from ragkit.adapters.breakers import BreakerBoard
from ragkit.adapters.embedders.local import LocalEmbedder
from ragkit.adapters.embedders.ollama import OllamaEmbedder
from ragkit.adapters.embedders.onnx import OnnxEmbedder
from ragkit.adapters.embedders.openai import OpenAIEmbedder
from ragkit.adapters.host_pool import PooledEmbedder
from ragkit.core.errors import DependencyError, InvalidInput
from tests.support.fake_ollama import FakeOllama
from tests.support.fake_openai import EMBEDDINGS, FakeOpenAI

# The case fixture is async (it closes the Ollama client's connections on its own loop).
pytestmark = pytest.mark.anyio

IMPLEMENTATIONS = ("local", "onnx", "ollama", "ollama-pool", "openai")
FAKE_DIM = 64  # deliberately not 384, so no check passes by assuming MiniLM's size
TIMEOUT_S = 2.0

TOPICS = [
    "Plants turn sunlight, water and carbon dioxide into sugar.",
    "A volcano erupts when magma rises through the crust.",
    "The Moon's gravity raises the tides twice a day.",
    "Espresso is brewed by forcing hot water through ground coffee.",
    "Honey bees store nectar in wax combs.",
]


@dataclass
class Case:
    """One embedder under test, with what the contract needs to know about it."""

    embedder: Any  # LocalEmbedder | OllamaEmbedder | OpenAIEmbedder: the Embedder protocol plus ensure_dimension
    name: str
    breaker_name: str
    dimension: int
    dependency: str  # what its DependencyErrors name
    backend_calls: Callable[[], int]  # model calls or HTTP requests so far
    # Ways its backend really breaks: a context manager that breaks it and heals on exit, and
    # what the error message must then say.
    faults: dict[str, tuple[Callable[[], AbstractContextManager[None]], str]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(dim=FAKE_DIM) as fake:
        yield fake


def _local_case(embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch) -> Case:
    model = embedder.load()
    calls: list[int] = []
    encode = model.encode

    # Observes the third-party model (counts its calls) without changing what it returns.
    def counting_encode(batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(batch))
        return encode(batch, *args, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)

    def model_raises(error: BaseException) -> Callable[[], AbstractContextManager[None]]:
        # What torch and sentence-transformers really raise: RuntimeError for kernel and
        # allocation failures, MemoryError, IndexError ("index out of range in self") for a token
        # id past the embedding table, and any other library bug.
        @contextmanager
        def broken() -> Iterator[None]:
            def failing(*args: Any, **kwargs: Any) -> Any:
                raise error

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(model, "encode", failing)
                yield

        return broken

    return Case(
        embedder=embedder,
        name="local:all-MiniLM-L6-v2",
        breaker_name="local_embedding",
        dimension=384,
        dependency="local_embedding",
        backend_calls=lambda: len(calls),
        faults={
            "runtime-error": (
                model_raises(RuntimeError("DefaultCPUAllocator: not enough memory")),
                "not enough memory",
            ),
            "memory-error": (model_raises(MemoryError()), "failed to encode"),
            "index-error": (model_raises(IndexError("index out of range in self")), "index out of range"),
            "library-bug": (model_raises(KeyError("pooling_mode")), "pooling_mode"),
        },
    )


def _onnx_case(embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> Case:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

    session = embedder.load()
    calls: list[int] = []
    run = session.run

    # Observes the third-party session (counts its calls) without changing what it returns.
    def counting_run(outputs: Any, feed: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(feed["input_ids"]))
        return run(outputs, feed, *args, **kwargs)

    monkeypatch.setattr(session, "run", counting_run)

    def session_raises(error: BaseException) -> Callable[[], AbstractContextManager[None]]:
        # What onnxruntime really raises: its own exception types (derived from Exception alone) for
        # a failed allocation or a kernel error, MemoryError, and any other library bug.
        @contextmanager
        def broken() -> Iterator[None]:
            def failing(*args: Any, **kwargs: Any) -> Any:
                raise error

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(session, "run", failing)
                yield

        return broken

    return Case(
        embedder=embedder,
        name="local:all-MiniLM-L6-v2",
        breaker_name="local_embedding",
        dimension=384,
        dependency="local_embedding",
        backend_calls=lambda: len(calls),
        faults={
            "allocation": (
                session_raises(RuntimeException("Failed to allocate memory for requested buffer of size 25165824")),
                "Failed to allocate memory",
            ),
            "kernel": (
                session_raises(Fail("Non-zero status code returned while running MatMul node")),
                "Non-zero status code",
            ),
            "memory-error": (session_raises(MemoryError()), "failed to encode"),
            "library-bug": (session_raises(KeyError("last_hidden_state")), "last_hidden_state"),
        },
    )


def _ollama_case(fakes: list[FakeOllama], embedder: OllamaEmbedder | PooledEmbedder) -> Case:
    """One host, or several behind one embedder: a fault strikes every host (with one of several
    out, the others answer: tests/test_ollama_hosts.py)."""

    def everywhere(name: str) -> Callable[[], AbstractContextManager[None]]:
        @contextmanager
        def broken() -> Iterator[None]:
            for fake in fakes:
                fake.mode = name
            try:
                yield
            finally:
                for fake in fakes:
                    fake.mode = "ok"

        return broken

    @contextmanager
    def stopped() -> Iterator[None]:
        for fake in fakes:
            fake.stop()
        try:
            yield
        finally:
            for fake in fakes:
                fake.start()

    return Case(
        embedder=embedder,
        name="ollama:nomic-embed-text",
        breaker_name="ollama_embedding",
        dimension=FAKE_DIM,
        dependency="ollama",
        backend_calls=lambda: sum(fake.count("/api/embed") for fake in fakes),
        faults={
            "http-500": (everywhere("error"), "HTTP 500"),
            "busy": (everywhere("busy"), "busy"),
            "reset": (everywhere("reset"), "dropped the connection"),
            # By then the embedder holds a pooled connection: it must still read as "not running".
            "stopped": (stopped, "cannot connect to Ollama"),
        },
    )


@pytest.fixture(scope="module")
def second_fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(dim=FAKE_DIM) as fake:
        yield fake


def _openai_case(fake: FakeOpenAI, embedder: OpenAIEmbedder) -> Case:
    def mode(name: str) -> Callable[[], AbstractContextManager[None]]:
        @contextmanager
        def broken() -> Iterator[None]:
            fake.mode = name
            try:
                yield
            finally:
                fake.mode = "ok"

        return broken

    @contextmanager
    def stopped() -> Iterator[None]:
        fake.stop()
        try:
            yield
        finally:
            fake.start()

    @contextmanager
    def stalled() -> Iterator[None]:
        # Held past the embedder's timeout; healed (and the held request answered) on exit.
        fake.set_mode("slow", seconds=TIMEOUT_S * 5)
        try:
            yield
        finally:
            fake.mode = "ok"

    return Case(
        embedder=embedder,
        name="openai:fake-embed",
        breaker_name="openai_embedding",
        dimension=FAKE_DIM,
        dependency="openai",
        backend_calls=lambda: fake.count(EMBEDDINGS),
        faults={
            "http-500": (mode("error"), "HTTP 500"),
            "busy": (mode("busy"), "busy"),
            "reset": (mode("reset"), "dropped the connection"),
            "stopped": (stopped, "cannot connect to"),
            "slow": (stalled, "did not answer within"),
        },
    )


@pytest.fixture(scope="module")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(dim=FAKE_DIM) as fake:
        yield fake


@pytest.fixture(params=IMPLEMENTATIONS)
async def case(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, fake_server: FakeOllama
) -> AsyncIterator[Case]:
    if request.param == "local":
        # The session's loaded model (conftest): loading MiniLM again per test would cost seconds.
        yield _local_case(request.getfixturevalue("local_embedder"), monkeypatch)
        return
    if request.param == "onnx":
        yield _onnx_case(request.getfixturevalue("onnx_embedder"), monkeypatch)
        return
    if request.param == "openai":
        fake = request.getfixturevalue("fake_openai_server")
        fake.start()
        fake.mode = "ok"
        fake.reset_counters()
        embedder = OpenAIEmbedder(fake.base_url, "fake-embed", TIMEOUT_S, api_key="sk-test")
        try:
            yield _openai_case(fake, embedder)
        finally:
            await embedder.aclose()
        return
    fakes = (
        [fake_server, request.getfixturevalue("second_fake_server")]
        if request.param == "ollama-pool"
        else [fake_server]
    )
    for fake in fakes:
        fake.start()
        fake.mode = "ok"
        fake.reset_counters()
    hosts = [OllamaEmbedder(fake.url, "nomic-embed-text", TIMEOUT_S) for fake in fakes]
    # No ejection here (a breaker that never opens): the contract is about what the embedder says.
    embedder = PooledEmbedder(hosts, BreakerBoard(fail_max=10_000, reset_timeout=30.0)) if len(hosts) > 1 else hosts[0]
    try:
        yield _ollama_case(fakes, embedder)
    finally:
        await embedder.aclose()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def check_vectors(vectors: list[list[float]], count: int, dimension: int) -> None:
    assert isinstance(vectors, list) and len(vectors) == count
    for vector in vectors:
        assert isinstance(vector, list) and len(vector) == dimension
        assert all(type(x) is float and math.isfinite(x) for x in vector)
        # All normalise (MiniLM by request, Ollama's /api/embed always, the OpenAI adapter itself,
        # whatever its server sends): cosine and dot agree.
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------- identity


async def test_identity(case: Case) -> None:
    embedder = case.embedder
    # The name is stored with every collection; a collection refuses an embedder of another name.
    assert embedder.name == case.name
    assert embedder.breaker_name == case.breaker_name
    assert isinstance(embedder.max_tokens, int) and embedder.max_tokens > 0
    assert await embedder.ensure_dimension() == case.dimension
    assert embedder.dimension == case.dimension


# --------------------------------------------------------------------------- vectors


async def test_one_vector_per_text_in_order(case: Case) -> None:
    together = await case.embedder.embed(TOPICS)

    check_vectors(together, len(TOPICS), case.dimension)
    for text, vector in zip(TOPICS, together, strict=True):
        (alone,) = await case.embedder.embed([text])
        assert cosine(vector, alone) == pytest.approx(1.0, abs=1e-5), "vector i belongs to text i"
    assert len({tuple(round(x, 6) for x in v) for v in together}) == len(TOPICS)


async def test_many_texts_keep_their_order_across_batches(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    # More texts than one batch holds (and, for MiniLM, than its query batcher takes), so the
    # answer is assembled from several backend calls; MiniLM also sorts a batch by length.
    monkeypatch.setattr(case.embedder, "batch_size", 3)
    texts = [f"{TOPICS[i % len(TOPICS)]} Variant {i}{'!' * i}" for i in range(20)]
    before = case.backend_calls()

    vectors = await case.embedder.embed(texts)

    assert case.backend_calls() - before == math.ceil(len(texts) / 3)
    check_vectors(vectors, len(texts), case.dimension)
    singles = [(await case.embedder.embed([text]))[0] for text in texts]
    for index, (vector, single) in enumerate(zip(vectors, singles, strict=True)):
        assert cosine(vector, single) == pytest.approx(1.0, abs=1e-5), f"text {index} got another's vector"


async def test_concurrent_calls_each_get_their_own_vectors(case: Case) -> None:
    # Concurrent searches: MiniLM merges them into shared model calls, Ollama gets parallel
    # requests; either way no caller may receive another caller's vector.
    sequential = [(await case.embedder.embed([text]))[0] for text in TOPICS]
    concurrent = await asyncio.gather(*(case.embedder.embed([text]) for text in TOPICS))
    for one, (other,) in zip(sequential, concurrent, strict=True):
        assert cosine(one, other) == pytest.approx(1.0, abs=1e-5)


async def test_the_same_text_always_gets_the_same_vector(case: Case) -> None:
    # The query vector cache and re-ingestion both assume it; batch company must not matter.
    (first,) = await case.embedder.embed([TOPICS[0]])
    (second,) = await case.embedder.embed([TOPICS[0]])
    in_company = (await case.embedder.embed([TOPICS[3], TOPICS[0] + " and more words", TOPICS[0]]))[2]
    assert first == pytest.approx(second, abs=1e-6)
    assert first == pytest.approx(in_company, abs=1e-5)


async def test_texts_that_share_meaning_are_closer(case: Case) -> None:
    cat, cats, stock = await case.embedder.embed(
        ["the cat sat on the mat", "a cat sat on a mat", "stock markets fell sharply today"]
    )
    assert cosine(cat, cats) > cosine(cat, stock)


async def test_no_texts_means_no_vectors_and_no_backend_call(case: Case) -> None:
    before = case.backend_calls()
    assert await case.embedder.embed([]) == []
    assert await case.embedder.embed(()) == []
    assert case.backend_calls() == before


async def test_blank_texts_still_get_a_vector(case: Case) -> None:
    # Both accept them as they are (Ollama itself embeds "" as " "); callers never send them (the
    # pipeline refuses blank queries, ingestion blank documents), so refusing here would only
    # make the two embedders disagree.
    check_vectors(await case.embedder.embed(["", " ", "\n\t"]), 3, case.dimension)


BAD_INPUTS = {
    "a bare string": "a string, not a list",
    "None": None,
    "a number": 42,
    "None in the list": ["fine", None],
    "a number in the list": ["fine", 3],
    "bytes in the list": [b"bytes"],
    # Python's json accepts "\ud800" escapes (a .json upload can carry one); neither the tokenizer
    # nor the JSON encoder on the way to Ollama can take them.
    "a lone surrogate": ["fine", "broken \ud800 text"],
}


@pytest.mark.parametrize("texts", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
async def test_bad_input_is_invalid_input_before_any_backend_call(case: Case, texts: Any) -> None:
    before = case.backend_calls()
    with pytest.raises(InvalidInput):
        await case.embedder.embed(texts)
    assert case.backend_calls() == before, "refused before the model or the network saw it"


# --------------------------------------------------------------------------- tokens


async def test_count_tokens_is_a_positive_count_that_grows_with_the_text(case: Case) -> None:
    count = case.embedder.count_tokens
    assert count("") == 0
    words = ["Retrieval", "augmented", "generation", "grounds", "unbelievably", "fluent", "answers", "in", "passages"]
    counts = [count(" ".join(words[: i + 1])) for i in range(len(words))]
    assert all(isinstance(c, int) and c > 0 for c in counts)
    assert counts == sorted(counts) and counts[-1] > counts[0]
    # Never truncated at the model's input limit: chunking has to see how long a text really is.
    assert count(" ".join(words * 100)) > case.embedder.max_tokens


@pytest.mark.parametrize("text", [None, 3, "broken \udfff text"], ids=["None", "a number", "a lone surrogate"])
async def test_count_tokens_refuses_what_embed_refuses(case: Case, text: Any) -> None:
    with pytest.raises(InvalidInput):
        case.embedder.count_tokens(text)


# --------------------------------------------------------------------------- failures


async def test_a_failing_backend_raises_dependency_errors_and_recovers(case: Case) -> None:
    for fault, (broken, says) in case.faults.items():
        with broken():
            with pytest.raises(DependencyError) as caught:
                await case.embedder.embed([TOPICS[0]])
        # A DependencyError is what the breaker counts and what the API answers 503 for.
        assert caught.value.dependency == case.dependency, fault
        assert says in caught.value.message, f"{fault}: {caught.value.message}"
        assert caught.value.__cause__ is not None, f"{fault}: the original stays attached for the logs"
        check_vectors(await case.embedder.embed([TOPICS[0]]), 1, case.dimension)
