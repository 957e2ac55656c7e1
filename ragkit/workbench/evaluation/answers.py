"""An evaluation of answers: every QA question asked through the service's answer route, and the
answer scored against the gold answer and the gold document.

For each answer:

- **token recall**: the share of the gold answer's content words (case and punctuation
  normalised, common English words left out) that the answer contains. It rewards an answer that
  says what the documentation says, whatever else it says; read it with the answer's length,
  since a longer answer finds more words.
- **cited gold**: whether a source the answer cites (``[n]`` is ``sources[n - 1]``) is the gold
  document, i.e. whether the reader is pointed at the page that holds the answer.
- **retrieved gold**: whether the gold document is among the sources at all (retrieval, before the
  generator chose what to cite).
- **length** in characters and words, citation markers left out.

A question's follow-up is asked in the same conversation (the first turn as history), so its
retrieval shows whether the service carried the subject over from the history.

Scores are kept per question and per generator: the answer's ``generator`` field says which
one wrote it (the service's configured generator, or the extractive fallback when an LLM failed).
"""

from __future__ import annotations

import re
import statistics
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K
from ragkit.workbench.evaluation.metrics import latency_percentiles
from ragkit.workbench.evaluation.qa import QAItem

FIRST, FOLLOW_UP = "question", "follow-up"
TURNS = (FIRST, FOLLOW_UP)
# The service's citation markers: [1], [1, 3] (see ragkit.rag.citations).
_CITATION = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")
_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORD_TEXT = """
    a an and are as at be been being but by can could did do does doing for from had has have if in
    into is it its may might must no nor not of on or so such than that the their them then there
    these they this those to too was were when where which while who whom why will with would
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class AnswerClient(Protocol):
    """The part of ``ragkit.client.RagkitClient`` the answer evaluation uses (tests may pass fakes)."""

    def query(
        self,
        question: str,
        collection: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        history: Sequence[Mapping[str, str]] = (),
    ) -> dict[str, Any]: ...

    def collection(self, name: str) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- metrics


def tokens(text: str) -> list[str]:
    """Lower-case words and numbers, punctuation dropped: ``--preserve=all`` → preserve, all."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN.findall(folded)


def content_tokens(text: str) -> set[str]:
    """The words that carry meaning; all words when every one is common ("do it")."""
    words = set(tokens(text))
    return (words - _STOPWORDS) or words


def token_recall(gold: str, answer: str) -> float:
    """The share of the gold answer's content words found in the answer (0 when gold has none)."""
    wanted = content_tokens(gold)
    if not wanted:
        return 0.0
    return len(wanted & set(tokens(answer))) / len(wanted)


def cited_numbers(answer: str) -> list[int]:
    """The source numbers an answer cites, each once, in the order first cited."""
    numbers: list[int] = []
    for marker in _CITATION.finditer(answer):
        for number in marker.group(1).split(","):
            if int(number) not in numbers:
                numbers.append(int(number))
    return numbers


def cited_documents(answer: str, sources: Sequence[Mapping[str, Any]]) -> list[str]:
    """The documents behind an answer's citations (``[n]`` is ``sources[n - 1]``), each once."""
    found: list[str] = []
    for number in cited_numbers(answer):
        if 1 <= number <= len(sources):
            doc_id = str(sources[number - 1]["doc_id"])
            if doc_id not in found:
                found.append(doc_id)
    return found


def answer_text(answer: str) -> str:
    """What a reader reads: the answer without its citation markers, spacing tidied."""
    return " ".join(_CITATION.sub(" ", answer).split())


def answer_length(answer: str) -> tuple[int, int]:
    """(characters, words) of the answer without its citation markers."""
    text = answer_text(answer)
    return len(text), len(text.split())


# --------------------------------------------------------------------------- one answer


@dataclass(frozen=True)
class AnswerScore:
    qa_id: str
    turn: str  # FIRST or FOLLOW_UP
    question: str
    gold_doc: str
    generator: str
    token_recall: float
    cited_gold: bool
    retrieved_gold: bool
    chars: int
    words: int
    latency_ms: float
    degraded: bool
    standalone_query: str
    cited: tuple[str, ...]


def score_answer(
    response: Mapping[str, Any],
    *,
    qa_id: str,
    turn: str,
    question: str,
    gold_answer: str,
    gold_doc: str,
    latency_ms: float,
) -> AnswerScore:
    answer = str(response.get("answer", ""))
    sources = list(response.get("sources") or [])
    chars, words = answer_length(answer)
    cited = cited_documents(answer, sources)
    return AnswerScore(
        qa_id=qa_id,
        turn=turn,
        question=question,
        gold_doc=gold_doc,
        generator=str(response.get("generator") or "unknown"),
        token_recall=round(token_recall(gold_answer, answer), 4),
        cited_gold=gold_doc in cited,
        retrieved_gold=any(str(s.get("doc_id")) == gold_doc for s in sources),
        chars=chars,
        words=words,
        latency_ms=latency_ms,
        degraded=bool(response.get("degraded")),
        standalone_query=str(response.get("standalone_query") or question),
        cited=tuple(cited),
    )


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class AnswerSummary:
    """The scores of one generator on one turn (first questions or follow-ups)."""

    generator: str
    turn: str
    questions: int
    token_recall: float  # mean
    cited_gold: float  # share of answers
    retrieved_gold: float  # share of answers
    median_chars: float
    median_words: float
    degraded: int
    latency_ms: dict[str, float]

    def report(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "token_recall": self.token_recall,
            "cited_gold_rate": self.cited_gold,
            "retrieved_gold_rate": self.retrieved_gold,
            "median_chars": self.median_chars,
            "median_words": self.median_words,
            "degraded_answers": self.degraded,
            "latency_ms": self.latency_ms,
        }


def summarize(scores: Sequence[AnswerScore]) -> list[AnswerSummary]:
    """One summary per (generator, turn), generators in the order they first answered."""
    groups: dict[tuple[str, str], list[AnswerScore]] = {}
    for score in scores:
        groups.setdefault((score.generator, score.turn), []).append(score)
    summaries = []
    for (generator, turn), group in sorted(groups.items(), key=lambda kv: _group_order(kv[0], scores)):
        summaries.append(
            AnswerSummary(
                generator=generator,
                turn=turn,
                questions=len(group),
                token_recall=round(statistics.fmean(s.token_recall for s in group), 4),
                cited_gold=round(sum(s.cited_gold for s in group) / len(group), 4),
                retrieved_gold=round(sum(s.retrieved_gold for s in group) / len(group), 4),
                median_chars=float(statistics.median(s.chars for s in group)),
                median_words=float(statistics.median(s.words for s in group)),
                degraded=sum(s.degraded for s in group),
                latency_ms=latency_percentiles([s.latency_ms for s in group]),
            )
        )
    return summaries


def _group_order(key: tuple[str, str], scores: Sequence[AnswerScore]) -> tuple[int, int]:
    generator, turn = key
    first_seen = next(i for i, s in enumerate(scores) if s.generator == generator)
    return first_seen, TURNS.index(turn)


# --------------------------------------------------------------------------- running


def _ask(
    client: AnswerClient, question: str, collection: str, top_k: int, mode: str, history: Sequence[Mapping[str, str]]
) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = client.query(question, collection, top_k=top_k, mode=mode, history=history)
    return response, (time.perf_counter() - started) * 1000


def ask_item(
    client: AnswerClient, item: QAItem, collection: str, *, top_k: int = DEFAULT_TOP_K, mode: str = DEFAULT_MODE
) -> list[AnswerScore]:
    """The item's question, then its follow-up with the first turn as history: their scores."""
    from ragkit.rag.conversation import recent_turns

    response, latency = _ask(client, item.question, collection, top_k, mode, ())
    scores = [
        score_answer(
            response,
            qa_id=item.id,
            turn=FIRST,
            question=item.question,
            gold_answer=item.answer,
            gold_doc=item.doc_id,
            latency_ms=latency,
        )
    ]
    if item.follow_up is not None:
        history = recent_turns([(item.question, str(response.get("answer", "")))])
        follow, latency = _ask(client, item.follow_up.question, collection, top_k, mode, history)
        scores.append(
            score_answer(
                follow,
                qa_id=item.id,
                turn=FOLLOW_UP,
                question=item.follow_up.question,
                gold_answer=item.follow_up.answer,
                gold_doc=item.doc_id,
                latency_ms=latency,
            )
        )
    return scores


def run_answers(
    client: AnswerClient,
    items: Sequence[QAItem],
    collection: str,
    *,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_MODE,
    progress: bool = True,
) -> list[AnswerScore]:
    """Every item asked in order (its follow-up right after it): one score per answer."""
    from tqdm.std import tqdm

    scores: list[AnswerScore] = []
    for item in tqdm(items, desc="answers", unit="question", disable=not progress):
        scores.extend(ask_item(client, item, collection, top_k=top_k, mode=mode))
    return scores
