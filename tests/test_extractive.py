"""The extractive answerer: what it quotes, in which order, and what it never quotes.

Run with the real MiniLM embedder where meaning matters (a question sharing no word with its
answer), and without one where the rule is about form (headings, lead-ins, Markdown), since both
are how it runs: with the collection's embedder in the service, by the words alone when that
embedder fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from ragkit.adapters.generators import ExtractiveGenerator
from ragkit.adapters.generators.extractive import MAX_ANSWER_CHARS
from ragkit.adapters.generators.passages import units
from ragkit.core.context import collection_var
from ragkit.core.errors import DependencyUnavailable
from ragkit.core.types import Hit


def hit(number: int, text: str, title: str = "") -> Hit:
    return Hit(id=f"p{number}", score=1.0 / number, text=text, doc_id=f"d{number}", chunk_index=0, title=title)


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
    hit(3, "Bananas are rich in potassium. They grow in tropical climates.", title="Fruit"),
)

ROTATION = hit(
    1,
    "## How do I rotate the service token?\n\n"
    "`INTER_SERVICE_SECRET` accepts a comma-separated list during a rotation. Rotate without downtime like this:\n\n"
    "1. Generate the new token with `ragkit secret`.\n"
    "2. On the service, set `INTER_SERVICE_SECRET=NEW,OLD` and restart it.\n"
    "3. Move the clients to the new token.\n"
    "4. On the service, set `INTER_SERVICE_SECRET=NEW` and restart again.\n\n"
    "## The audit log\n\nEvery refused request is appended to the audit log.",
    title="Security",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def citations(answer: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", answer)]


class FailingEmbedder:
    """An embedder whose model is down: the answer must still come, chosen by the words."""

    name = "local:down"
    dimension = 384
    breaker_name = "local_embedding"
    max_tokens = 256
    calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        raise DependencyUnavailable(self.breaker_name, "the model is not loaded")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@pytest.mark.anyio
async def test_it_quotes_the_sentence_that_answers_and_cites_its_hit() -> None:
    answer = await ExtractiveGenerator().generate("Which port does the Ollama HTTP API use?", HITS)
    assert answer.startswith("It exposes an HTTP API on port 11434 [2].")
    # Every marker points at a hit in the list given, and the cited text is really in that hit.
    for sentence, number in re.findall(r"(.+?) \[(\d+)\][.!?]", answer):
        assert 1 <= int(number) <= len(HITS)
        assert sentence.strip() in HITS[int(number) - 1].text


@pytest.mark.anyio
async def test_numbers_follow_the_order_the_hits_were_given_in() -> None:
    reordered = [HITS[2], HITS[0], HITS[1]]
    answer = await ExtractiveGenerator(max_sentences=1).generate("What is rich in potassium?", reordered)
    assert answer == "Bananas are rich in potassium [1]."


@pytest.mark.anyio
async def test_a_lead_in_brings_its_list_and_the_heading_is_never_quoted() -> None:
    answer = await ExtractiveGenerator().generate("How do I rotate the service token?", [ROTATION])
    assert answer.startswith("Rotate without downtime like this [1]:")
    for step in ("ragkit secret", "INTER_SERVICE_SECRET=NEW,OLD", "Move the clients", "restart again"):
        assert step in answer
    assert "#" not in answer and "How do I rotate" not in answer
    # The steps keep their numbering, one per line, each with its citation.
    assert re.findall(r"^(\d)\. .* \[1\]\.$", answer, flags=re.MULTILINE) == ["1", "2", "3", "4"]


@pytest.mark.anyio
async def test_a_lead_in_whose_list_is_cut_off_is_not_quoted() -> None:
    # The chunk ends at the colon: the list is in the next chunk, so this one answers nothing.
    cut = hit(1, "The token is rotated in steps. Rotate without downtime like this:")
    answer = await ExtractiveGenerator().generate("How do I rotate the token without downtime?", [cut])
    assert answer == "The token is rotated in steps [1]."


@pytest.mark.anyio
async def test_a_lead_in_brings_its_code_block() -> None:
    text = "Start the service with sample data:\n\n```sh\nmake up\n```\n\nIt listens on port 8000."
    answer = await ExtractiveGenerator(max_sentences=1).generate("How do I start the service?", [hit(1, text)])
    assert answer == "Start the service with sample data [1]:\n\n```\nmake up\n```"


@pytest.mark.anyio
async def test_markdown_that_would_not_render_is_stripped_and_inline_code_kept() -> None:
    text = (
        "The **breaker** opens after [five failures](breakers.md) ![diagram](x.png) in a row. "
        "Set `RAGKIT_BREAKER_FAIL_MAX` to change it."
    )
    answer = await ExtractiveGenerator().generate("When does the breaker open?", [hit(1, text)])
    assert answer.startswith("The breaker opens after five failures diagram in a row [1].")
    assert "**" not in answer and "](" not in answer and "![" not in answer


@pytest.mark.anyio
async def test_a_table_row_is_quoted_with_its_column_names() -> None:
    text = "| setting | default | meaning |\n|---|---|---|\n| `RAGKIT_TOP_K` | 5 | hits per search |\n"
    answer = await ExtractiveGenerator().generate("What is the default of RAGKIT_TOP_K?", [hit(1, text)])
    assert answer == "setting: `RAGKIT_TOP_K`; default: 5; meaning: hits per search [1]."


@pytest.mark.anyio
async def test_a_question_in_the_text_is_context_not_an_answer() -> None:
    faq = hit(1, "What happens when Ollama is down? Requests keep working, marked degraded.")
    answer = await ExtractiveGenerator().generate("What happens when Ollama is down?", [faq])
    assert answer == "Requests keep working, marked degraded [1]."


@pytest.mark.anyio
async def test_an_off_topic_question_is_not_found_in_the_collection_with_the_closest_sources() -> None:
    token = collection_var.set("handbook")
    try:
        answer = await ExtractiveGenerator().generate("Who painted the Mona Lisa?", HITS)
    finally:
        collection_var.reset(token)
    assert answer.startswith("Not found in “handbook”")
    assert "[1] Qdrant" in answer and "[2] Ollama" in answer
    # No quoted fragment: none of the passages' sentences is in it.
    assert not any(sentence in answer for sentence in ("Rust", "potassium", "11434"))


@pytest.mark.anyio
async def test_with_the_embedder_a_question_sharing_no_word_with_its_answer_is_answered(local_embedder) -> None:  # noqa: ANN001
    hits = [
        hit(1, "Press Ctrl+C in the terminal to stop the service. Logs are written as JSON lines."),
        hit(2, "Bananas are rich in potassium."),
    ]
    question = "How can I halt the server?"  # no word in common with the answer
    by_words = await ExtractiveGenerator().generate(question, hits)
    by_meaning = await ExtractiveGenerator(embedder=local_embedder).generate(question, hits)
    assert by_words.startswith("Not found")
    assert by_meaning.startswith("Press Ctrl+C in the terminal to stop the service [1].")
    assert "potassium" not in by_meaning


@pytest.mark.anyio
async def test_the_same_question_and_hits_give_the_same_answer(local_embedder) -> None:  # noqa: ANN001
    generator = ExtractiveGenerator(embedder=local_embedder)
    answers = {await generator.generate("How do I rotate the service token?", [ROTATION, *HITS]) for _ in range(3)}
    assert len(answers) == 1


@pytest.mark.anyio
async def test_a_failing_embedder_leaves_the_answer_to_the_words() -> None:
    embedder = FailingEmbedder()
    answer = await ExtractiveGenerator(embedder=embedder).generate("Which port does the Ollama HTTP API use?", HITS)
    assert embedder.calls == 1
    assert answer == await ExtractiveGenerator().generate("Which port does the Ollama HTTP API use?", HITS)


@pytest.mark.anyio
async def test_it_streams_one_cited_unit_per_piece() -> None:
    pieces = [p async for p in ExtractiveGenerator().stream("Qdrant vector database payload", HITS)]
    assert len(pieces) >= 2
    assert all(len(citations(piece)) == 1 for piece in pieces)


@pytest.mark.anyio
async def test_repeats_are_quoted_once_and_the_answer_stays_short() -> None:
    repeated = [HITS[0], hit(2, HITS[0].text)]  # overlapping chunks repeat sentences
    answer = await ExtractiveGenerator(max_sentences=2).generate("Qdrant vector payload collections", repeated)
    assert len(citations(answer)) <= 2 and set(citations(answer)) == {1}
    long_hits = [
        hit(n, " ".join(f"Qdrant stores payload number {n}.{i} with vectors." for i in range(40))) for n in (1, 2)
    ]
    answer = await ExtractiveGenerator(max_sentences=10).generate("Qdrant payload vectors", long_hits)
    assert len(answer) <= MAX_ANSWER_CHARS + 100  # the unit that crosses the budget is the last one


def test_units_of_a_chunk_that_starts_mid_list() -> None:
    # A chunk cut by token count starts anywhere: the items it begins with are sentences of their own.
    chunk = "restart it.\n3. Move the clients to the new token, or\n4. Watch the audit log.\n\nDone."
    assert [u.text for u in units(chunk)] == [
        "restart it.",
        "Move the clients to the new token",
        "Watch the audit log.",
        "Done.",
    ]


@pytest.mark.anyio
async def test_a_command_line_option_in_the_question_finds_its_own_description() -> None:
    # "-v" is no word once split on punctuation: without options as terms, every option's line
    # shares the question's words ("option", "do") alike and the answer is whichever came first.
    page = hit(
        1,
        "## Options\n\n-a, --all\n       show every entry, hidden ones included\n\n"
        "-v, --verbose\n       print each file as it is processed\n\n-q, --quiet\n       print nothing but errors",
        title="tool",
    )
    answer = await ExtractiveGenerator(max_sentences=1).generate("What does the -v option of tool do?", [page])
    assert answer == "-v, --verbose print each file as it is processed [1]."
    answer = await ExtractiveGenerator(max_sentences=1).generate("and what does --quiet do?", [page])
    assert answer == "-q, --quiet print nothing but errors [1]."
