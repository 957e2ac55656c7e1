"""The answer metrics on hand-made answers: each case is built so that a wrong metric gives a
different number (a recall that counted common words, a citation read from 0, lengths that
counted the markers)."""

from __future__ import annotations

from typing import Any

import pytest

from ragkit.workbench import evaluation as ev
from ragkit.workbench.evaluation import answers
from ragkit.workbench.evaluation.qa import FollowUp, QAItem

GOLD = "same as -dR --preserve=all"
SOURCES = [{"doc_id": "mv"}, {"doc_id": "cp"}, {"doc_id": "cp"}, {"doc_id": "rsync"}]


def test_token_recall_is_the_share_of_the_gold_answers_content_words_in_the_answer() -> None:
    # Content words of the gold answer: same, dr, preserve, all ("as" is a common word).
    assert answers.content_tokens(GOLD) == {"same", "dr", "preserve", "all"}
    assert ev.token_recall(GOLD, "It is the SAME as -dR, --preserve=ALL [2].") == 1.0
    assert ev.token_recall(GOLD, "The same as -dR.") == 0.5
    assert ev.token_recall(GOLD, "Copies as if it were a directory.") == 0.0  # "as" alone is not a match
    # Words, not substrings: "preserved" and "allow" do not contain the answer's words.
    assert ev.token_recall(GOLD, "Attributes are preserved; allow overwriting.") == 0.0
    # Each gold word counts once however often either side repeats it.
    assert ev.token_recall("ignore ignore case", "ignore") == 0.5


def test_a_gold_answer_of_common_words_only_is_scored_on_all_its_words() -> None:
    assert ev.token_recall("do it", "you do it") == 1.0
    assert ev.token_recall("do it", "do") == 0.5
    assert ev.token_recall("", "anything") == 0.0


def test_citations_are_read_as_sources_counted_from_one() -> None:
    assert answers.cited_numbers("First [2]. Then [1, 3] and [2] again; [x] and [1.5] are text.") == [2, 1, 3]
    assert ev.cited_documents("It copies [2].", SOURCES) == ["cp"]
    assert ev.cited_documents("It moves [1].", SOURCES) == ["mv"]  # sources[0], not sources[1]
    assert ev.cited_documents("See [2, 3] and [4].", SOURCES) == ["cp", "rsync"]  # each document once
    assert ev.cited_documents("Made up [0] and [9].", SOURCES) == []  # no such sources
    assert ev.cited_documents("No citation at all.", SOURCES) == []


def test_answer_length_leaves_citation_markers_out() -> None:
    assert ev.answer_length("Copy files [1, 2].") == (len("Copy files ."), 3)
    assert ev.answer_length("Copy   files\nand folders [3]") == (len("Copy files and folders"), 4)
    assert ev.answer_length("") == (0, 0)


def response(answer: str, sources: list[dict[str, Any]], generator: str = "extractive") -> dict[str, Any]:
    return {"answer": answer, "sources": sources, "generator": generator, "degraded": False}


def test_one_answer_is_scored_on_recall_citation_retrieval_and_length() -> None:
    score = answers.score_answer(
        response("Same as -dR [1].", SOURCES),
        qa_id="q",
        turn=answers.FIRST,
        question="What does --archive do?",
        gold_answer=GOLD,
        gold_doc="cp",
        latency_ms=5.0,
    )
    # cp is retrieved (sources 2 and 3) but the answer cites mv: retrieved, not cited.
    assert score.retrieved_gold and not score.cited_gold and score.cited == ("mv",)
    assert score.token_recall == 0.5 and (score.chars, score.words) == (len("Same as -dR ."), 4)
    assert score.generator == "extractive" and score.standalone_query == "What does --archive do?"


class ScriptedClient:
    """Answers from a script, keyed by question; records the history each question came with."""

    def __init__(self, script: dict[str, dict[str, Any]]) -> None:
        self.script = script
        self.asked: list[tuple[str, list[dict[str, str]]]] = []

    def query(self, question: str, collection: str, *, top_k: int = 5, mode: str = "hybrid", history=()):  # noqa: ANN001, ANN201
        self.asked.append((question, [dict(t) for t in history]))
        return self.script[question]

    def collection(self, name: str) -> dict[str, Any]:
        return {"documents": 4, "chunks": 12, "embedder": "local:all-MiniLM-L6-v2", "chunk_size": 256}


def test_a_follow_up_is_asked_with_the_first_turn_and_reported_apart_by_generator() -> None:
    items = [
        QAItem(
            "a", "cp", "--archive", "What does --archive of cp do?", GOLD, FollowUp("--force", "And --force?", "x y")
        ),
        QAItem("b", "mv", "--update", "What does --update of mv do?", "move only when newer"),
    ]
    client = ScriptedClient(
        {
            items[0].question: response("Same as -dR --preserve=all [2].", SOURCES),
            "And --force?": response("Nothing here [4].", SOURCES),
            items[1].question: response("Moves only when the source is newer [1].", SOURCES, generator="ollama"),
        }
    )
    report = ev.run_answer_evaluation(client, items, "c", top_k=4, progress=False)
    assert [q for q, _ in client.asked] == [items[0].question, "And --force?", items[1].question]
    assert client.asked[1][1] == [
        {"role": "user", "content": items[0].question},
        {"role": "assistant", "content": "Same as -dR --preserve=all [2]."},
    ]
    metrics = report.metrics()
    assert metrics["questions"] == 2 and metrics["follow_ups"] == 1
    extractive, ollama = metrics["generators"]["extractive"], metrics["generators"]["ollama"]
    assert extractive["question"]["cited_gold_rate"] == 1.0 and extractive["question"]["token_recall"] == 1.0
    assert extractive["follow-up"]["cited_gold_rate"] == 0.0 and extractive["follow-up"]["retrieved_gold_rate"] == 1.0
    assert ollama["question"]["cited_gold_rate"] == 1.0
    assert ollama["question"]["token_recall"] == pytest.approx(2 / 3, abs=1e-4)  # "only" and "newer" of 3
    assert "follow-up" not in ollama
    assert list(report.table().index) == [
        ("extractive", "question"),
        ("extractive", "follow-up"),
        ("ollama", "question"),
    ]
