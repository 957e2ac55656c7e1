"""The Generator contract, written once and run against every generator: the extractive answerer,
OllamaGenerator through the official client against the Ollama stand-in, and OpenAIGenerator
through the openai client against the OpenAI-compatible stand-in (both real HTTP servers).

The pipeline swaps one for the other when the LLM is down, so whatever one promises here, the
other must keep too. What only one of them does (which sentences the extractive one quotes, the
request Ollama is sent) stays in test_generators.py; how every Ollama failure is translated is in
test_error_translation.py.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytest

from ragkit.adapters.generators import NOTHING_FOUND, ExtractiveGenerator, OllamaGenerator
from ragkit.adapters.generators.openai import OpenAIGenerator
from ragkit.core.errors import InvalidInput
from ragkit.core.types import Hit
from tests.support.fake_ollama import FakeOllama
from tests.support.fake_openai import CHAT, FakeOpenAI

# The case fixture is async (it closes the Ollama client's connections on its own loop).
pytestmark = pytest.mark.anyio

IMPLEMENTATIONS = ("extractive", "ollama", "openai")
TIMEOUT_S = 2.0
MODEL = "llama3.2"


def hit(number: int, text: str, title: str = "") -> Hit:
    return Hit(id=f"p{number}", score=1.0 / number, text=text, doc_id=f"d{number}", chunk_index=0, title=title)


HITS = (
    hit(1, "Qdrant is a vector database written in Rust. It supports payload filtering.", title="Qdrant"),
    hit(2, "Ollama runs large language models locally. It exposes an HTTP API on port 11434.", title="Ollama"),
    hit(3, "Bananas are rich in potassium. They grow in tropical climates."),
)
QUESTIONS = ["What is Qdrant written in?", "Which port does the Ollama API use?", "What grows in the tropics?"]


@dataclass
class Case:
    generator: Any  # ExtractiveGenerator | OllamaGenerator | OpenAIGenerator
    name: str
    breaker_name: str
    backend_calls: Callable[[], int]  # model requests so far (the extractive one has no backend)
    # Makes the answer arrive piece by piece over time, so a consumer can stop mid-stream.
    paced: Callable[[], AbstractContextManager[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def paced_by(fake: FakeOllama) -> Callable[[], AbstractContextManager[None]]:
    @contextmanager
    def paced() -> Iterator[None]:
        fake.pieces_held = threading.Event()  # the answer stops after its first piece meanwhile
        try:
            yield
        finally:
            fake.pieces_held.set()
            fake.pieces_held = None

    return paced


@pytest.fixture(params=IMPLEMENTATIONS)
async def case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    if request.param == "openai":
        fake = request.getfixturevalue("fake_openai_server")
        fake.mode = "ok"
        fake.reset_counters()
        generator = OpenAIGenerator(fake.base_url, MODEL, TIMEOUT_S, api_key="sk-test", options={"temperature": 0})
        try:
            yield Case(
                generator=generator,
                name=f"openai:{MODEL}",
                breaker_name="openai_generation",
                backend_calls=lambda: fake.count(CHAT),
                paced=paced_by(fake),
            )
        finally:
            await generator.aclose()
        return
    if request.param == "extractive":
        yield Case(
            generator=ExtractiveGenerator(),
            name="extractive",
            breaker_name="local_generation",
            backend_calls=lambda: 0,
            paced=nullcontext,
        )
        return
    fake_server = request.getfixturevalue("fake_server")
    fake_server.start()
    fake_server.mode = "ok"
    fake_server.chat_reply = None
    fake_server.reset_counters()
    generator = OllamaGenerator(fake_server.url, MODEL, TIMEOUT_S, options={"temperature": 0})
    try:
        yield Case(
            generator=generator,
            name=f"ollama:{MODEL}",
            breaker_name="ollama_generation",
            backend_calls=lambda: fake_server.count("/api/chat"),
            paced=paced_by(fake_server),
        )
    finally:
        await generator.aclose()


async def collect(pieces: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in pieces]


def citations(answer: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", answer)]


# --------------------------------------------------------------------------- identity


async def test_identity(case: Case) -> None:
    # AnswerResult.generator reports the name; the breaker board is keyed by breaker_name.
    assert case.generator.name == case.name
    assert case.generator.breaker_name == case.breaker_name


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("question", QUESTIONS)
async def test_stream_yields_pieces_that_join_to_the_generated_answer(case: Case, question: str) -> None:
    pieces = await collect(case.generator.stream(question, HITS))  # returns: the stream ended

    assert pieces and all(isinstance(p, str) and p for p in pieces)
    # Both generators here are deterministic (the stand-in replies from the prompt alone), so the
    # streamed and the whole answer must be the same text, and asking twice must not change it.
    answer = await case.generator.generate(question, HITS)
    assert "".join(pieces) == answer
    assert await case.generator.generate(question, HITS) == answer


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("question", QUESTIONS)
async def test_citations_refer_only_to_the_passages_given(case: Case, question: str, count: int) -> None:
    # The API maps [n] to sources[n - 1]: a number past the passages given would cite nothing.
    for hits in (HITS[:count], tuple(reversed(HITS[:count]))):
        answer = await case.generator.generate(question, hits)
        streamed = "".join(await collect(case.generator.stream(question, hits)))
        for text in (answer, streamed):
            assert citations(text), "an answer from passages cites at least one of them"
            assert all(1 <= n <= len(hits) for n in citations(text)), text


async def test_without_hits_it_says_nothing_was_found_without_asking_a_model(case: Case) -> None:
    before = case.backend_calls()
    for no_hits in ([], ()):
        assert await case.generator.generate("anything", no_hits) == NOTHING_FOUND
        assert await collect(case.generator.stream("anything", no_hits)) == [NOTHING_FOUND]
    assert case.backend_calls() == before  # nothing to ground an answer in: no answer from memory
    assert "nothing relevant in this collection" in NOTHING_FOUND


ODD_BUT_VALID = {
    "empty question": ("", HITS),
    "punctuation only": ("?!…", HITS),
    "non-English": ("Où est le café naïve? 🙂 什么", HITS),
    "very long question": ("what is a vector database " * 400, HITS),
    "empty passage": ("What is Qdrant?", (hit(1, ""), HITS[0])),
    "whitespace passage": ("What is Qdrant?", (hit(1, " \n\t "),)),
    "no punctuation at all": ("words", (hit(1, "words without any end " * 200),)),
    "title only": ("Qdrant", (hit(1, "", title="Qdrant"),)),
}


@pytest.mark.parametrize(("question", "hits"), ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
async def test_odd_but_valid_input_still_gets_an_answer(case: Case, question: str, hits: tuple[Hit, ...]) -> None:
    # The extractive generator is the fallback when the LLM is down: it must never fail on valid
    # input, and the LLM path must not either.
    answer = await case.generator.generate(question, hits)
    assert isinstance(answer, str) and answer
    assert "".join(await collect(case.generator.stream(question, hits))) == answer


BAD_INPUTS = {
    "question None": (None, HITS),
    "question a number": (42, HITS),
    "question with a lone surrogate": ("what is \ud800?", HITS),
    "hits a string": ("q", "not hits"),
    "hits None": ("q", None),
    "a hit that is a dict": ("q", [{"text": "a passage"}]),
    "a hit text with a lone surrogate": ("q", (hit(1, "broken \udc80 text"),)),
}


@pytest.mark.parametrize(("question", "hits"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
async def test_bad_input_is_invalid_input_before_any_model_call(case: Case, question: Any, hits: Any) -> None:
    # The caller's mistake, alike on both: left to the Ollama client, a lone surrogate fails JSON
    # encoding and would count against the breaker as an outage.
    before = case.backend_calls()
    with pytest.raises(InvalidInput):
        await case.generator.generate(question, hits)
    with pytest.raises(InvalidInput):
        await collect(case.generator.stream(question, hits))
    assert case.backend_calls() == before


# --------------------------------------------------------------------------- streams


async def test_a_consumer_that_stops_early_releases_the_stream(case: Case) -> None:
    # A client that hangs up mid-answer: closing the stream must be clean and leave the generator
    # usable (for Ollama: the connection goes back, generation on the server stops).
    with case.paced():
        stream = case.generator.stream(QUESTIONS[0], HITS)
        first = await anext(stream)
        await stream.aclose()
    assert isinstance(first, str) and first
    assert citations(await case.generator.generate(QUESTIONS[0], HITS))
