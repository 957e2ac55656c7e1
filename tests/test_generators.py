"""Generators: what only one of them does. The prompt, and what Ollama chat is sent and streams
through the official client (which units the extractive answerer quotes: test_extractive.py).

What both promise is in test_generator_contract.py; how Ollama failures are translated is in
test_error_translation.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import ollama
import pytest

from ragkit.adapters.generators import OllamaGenerator, build_messages
from ragkit.adapters.generators.prompt import SYSTEM_PROMPT, format_context
from ragkit.core.errors import DependencyTimeout, DependencyUnavailable
from ragkit.core.types import Hit
from tests.support.fake_ollama import FakeOllama, _default_reply

TIMEOUT_S = 0.5
MODEL = "llama3.2"


def hit(number: int, text: str, title: str = "") -> Hit:
    return Hit(
        id=f"p{number}", score=1.0 / number, text=text, doc_id=f"d{number}", chunk_index=0, title=title
    )


HITS = (
    hit(
        1,
        "Qdrant is a vector database written in Rust. It supports payload filtering. "
        "Collections hold points with vectors and payloads.",
        title="Qdrant",
    ),
    hit(
        2,
        "Ollama runs large language models locally. It exposes an HTTP API on port 11434. "
        "Models are pulled with the ollama pull command.",
        title="Ollama",
    ),
    hit(3, "Bananas are rich in potassium. They grow in tropical climates."),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def collect(pieces) -> list[str]:  # noqa: ANN001
    return [piece async for piece in pieces]


def citations(answer: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", answer)]


# --- prompt --------------------------------------------------------------------------------------


def test_prompt_numbers_passages_and_asks_for_citations() -> None:
    messages = build_messages("What is Qdrant?", HITS)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert "[n]" in messages[1]["content"]
    assert "does not contain" in SYSTEM_PROMPT
    user = messages[1]["content"]
    assert '<passage id="1" title="Qdrant">\nQdrant is a vector database' in user
    assert '<passage id="2" title="Ollama">\nOllama runs' in user
    assert '<passage id="3">\nBananas are rich' in user  # no title: no empty attribute
    assert user.count("</passage>") == 3
    assert user.rstrip().endswith("Answer (cite passages as [n]):")
    assert "Question: What is Qdrant?" in user


def test_prompt_budget_drops_later_passages_but_keeps_numbers() -> None:
    context = format_context(HITS, max_chars=150)
    assert context.startswith('<passage id="1" title="Qdrant">')
    assert 'id="3"' not in context and context.endswith("</passage>")  # cut, but still closed
    assert len(context) <= 150
    long = [hit(1, "word " * 500, title="Long"), HITS[1]]
    context = format_context(long, max_chars=300)
    assert context.startswith('<passage id="1" title="Long">\nword word')
    assert context.endswith(" …\n</passage>")
    assert len(context) <= 300
    unbroken = format_context([hit(1, "x" * 500)], max_chars=200)
    assert len(unbroken) <= 200 and unbroken.endswith(" …\n</passage>")


def test_prompt_without_hits_says_so() -> None:
    assert "(no passages were found)" in build_messages("q", [])[1]["content"]


# --- Ollama --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(slow_seconds=5.0) as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOllama) -> FakeOllama:
    fake_server.start()
    fake_server.mode = "ok"
    fake_server.chat_reply = None
    fake_server.reset_counters()
    return fake_server


@pytest.fixture
async def make_generator(fake: FakeOllama) -> AsyncIterator[Callable[..., OllamaGenerator]]:
    """OllamaGenerators on the fake server, closed after the test (their pooled connections too)."""
    made: list[OllamaGenerator] = []

    def make(**kwargs: Any) -> OllamaGenerator:
        generator = OllamaGenerator(fake.url, MODEL, TIMEOUT_S, **kwargs)
        made.append(generator)
        return generator

    yield make
    for generator in made:
        await generator.aclose()


@pytest.mark.anyio
async def test_ollama_generate_sends_the_prompt_and_returns_a_cited_answer(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator]
) -> None:
    generator = make_generator(options={"temperature": 0})
    answer = await generator.generate("What is Qdrant?", HITS)

    assert answer.startswith("According to the context, Qdrant is a vector database")
    assert citations(answer) == [1]
    (body,) = fake.bodies("/api/chat")
    assert body["model"] == MODEL
    assert body["stream"] is False
    assert body["options"] == {"temperature": 0}
    assert body["messages"] == build_messages("What is Qdrant?", HITS)


@pytest.mark.anyio
async def test_ollama_stream_passes_on_each_delta(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator]
) -> None:
    pieces = await collect(make_generator().stream("What is Qdrant?", HITS))

    # The stand-in sends a word per chunk: each is passed on, not gathered into one piece.
    assert len(pieces) == len(_default_reply(build_messages("What is Qdrant?", HITS)).split())
    assert [b["stream"] for b in fake.bodies("/api/chat")] == [True]


@pytest.mark.anyio
async def test_ollama_stream_pieces_arrive_as_they_are_produced(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator]
) -> None:
    fake.stream_delay = 0.05
    try:
        arrivals = []
        started = time.perf_counter()
        async for _ in make_generator().stream("What is Qdrant?", HITS):
            arrivals.append(time.perf_counter() - started)
    finally:
        fake.stream_delay = 0.0
    # Not buffered until the end: the first piece comes well before the last.
    assert arrivals[-1] - arrivals[0] > 0.05 * (len(arrivals) - 2)


@pytest.mark.anyio
async def test_ollama_stream_failing_mid_answer(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator]
) -> None:
    fake.mode = "stream_error"
    received: list[str] = []
    with pytest.raises(DependencyUnavailable):
        async for piece in make_generator().stream("What is Qdrant?", HITS):
            received.append(piece)
    assert len(received) == 1  # what arrived before the failure was passed on


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [False, True])
async def test_ollama_stopped_server_is_unavailable(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator], streaming: bool
) -> None:
    # A pooled connection to a server that went away must not poison later calls.
    generator = make_generator()
    await generator.generate("warm a pooled connection", HITS)
    fake.stop()
    fake.reset_counters()

    with pytest.raises(DependencyUnavailable, match="cannot connect to Ollama"):
        if streaming:
            await collect(generator.stream("What is Qdrant?", HITS))
        else:
            await generator.generate("What is Qdrant?", HITS)
    assert fake.count() == 0

    fake.start()
    assert citations(await generator.generate("What is Qdrant?", HITS)) == [1]


@pytest.mark.anyio
async def test_ollama_slow_only_on_chat_leaves_other_routes_alone(
    fake: FakeOllama, make_generator: Callable[..., OllamaGenerator]
) -> None:
    # Per-route faults let pipeline tests break generation while embeddings keep working.
    fake.set_mode("slow", "/api/chat", seconds=5)
    with pytest.raises(DependencyTimeout):
        await make_generator().generate("What is Qdrant?", HITS)
    async with ollama.AsyncClient(host=fake.url, timeout=TIMEOUT_S) as client:
        assert len((await client.embed(model="m", input=["x"])).embeddings) == 1


def test_fake_reply_uses_the_first_passage() -> None:
    # The fake is itself test code; pin the contract other tests (pipeline, service) rely on.
    messages: Sequence[dict[str, str]] = build_messages("q", HITS)
    assert _default_reply(list(messages)).endswith("[1].")
    assert "does not contain" in _default_reply([{"role": "user", "content": "no passages"}])
