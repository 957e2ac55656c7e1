"""An answerer without a language model: it quotes the retrieved sentences that best match the
question, each followed by the citation ``[n]`` of the hit it came from.

It is the offline default and the fallback when the LLM is down, so it must never fail and must
be deterministic: the same question and hits always give the same answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ragkit.adapters.generators.prompt import NOTHING_FOUND, check_request
from ragkit.core.errors import ConfigurationError
from ragkit.core.types import Hit

BREAKER = "local_generation"
# A chunk without punctuation would otherwise come back as one enormous "sentence".
MAX_SENTENCE_CHARS = 400
# Sentences scoring below this share of the best one are filler, not support.
MIN_RELATIVE_SCORE = 0.3

# After . ! ? (possibly closed by a quote or bracket) before a capital or digit, but not after the
# abbreviations that usually precede a capital (Dr. Smith, Fig. 2, et al. 2020); blank lines; bullets.
_ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "vs", "Fig", "No", "al", "Eq", "Ref")
_SENTENCE_END = re.compile(
    "".join(rf"(?<!\b{a}\.)" for a in _ABBREVIATIONS)
    + r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*•]\s)"
)
_WORD = re.compile(r"[^\W_]+")
_TERMINAL = ".!?"
_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves tell explain describe please
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class _Sentence:
    text: str
    hit_number: int  # 1-based position of its hit: the citation
    position: int  # order within the hit
    terms: frozenset[str]


def _stem(word: str) -> str:
    # Crude, but enough that "models" meets "model" and "running" meets "run"-ish forms;
    # lexical overlap is the whole signal here, so plural/verb forms matter.
    for suffix in ("ing", "edly", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> frozenset[str]:
    words = (w.lower() for w in _WORD.findall(text))
    return frozenset(_stem(w) for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit()))


def split_sentences(text: str) -> list[str]:
    sentences = []
    for part in _SENTENCE_END.split(text):
        sentence = " ".join(part.split())
        if len(sentence) > MAX_SENTENCE_CHARS:
            sentence = sentence[:MAX_SENTENCE_CHARS].rsplit(" ", 1)[0] + " …"
        if sentence:
            sentences.append(sentence)
    return sentences


def cite(sentence: str, number: int) -> str:
    """Put the marker before the final punctuation: "Paris is the capital [1]."."""
    if sentence[-1] in _TERMINAL:
        return f"{sentence[:-1].rstrip()} [{number}]{sentence[-1]}"
    return f"{sentence} [{number}]."


class ExtractiveGenerator:
    """Implements ``ragkit.core.types.Generator`` by sentence selection (no model, no network)."""

    name = "extractive"
    breaker_name = BREAKER

    def __init__(self, max_sentences: int = 3) -> None:
        if max_sentences < 1:
            raise ConfigurationError(f"max_sentences must be at least 1, got {max_sentences}")
        self.max_sentences = max_sentences

    async def generate(self, question: str, hits: Sequence[Hit]) -> str:
        return "".join(self.pieces(question, hits))

    async def stream(self, question: str, hits: Sequence[Hit]) -> AsyncIterator[str]:
        for piece in self.pieces(question, hits):
            yield piece

    def answer(self, question: str, hits: Sequence[Hit]) -> str:
        """The same as ``generate``, without an event loop."""
        return "".join(self.pieces(question, hits))

    def pieces(self, question: str, hits: Sequence[Hit]) -> list[str]:
        """The answer in the pieces ``stream`` yields: one cited sentence each."""
        check_request(question, hits)
        if not hits:
            return [NOTHING_FOUND]
        candidates = self._candidates(hits)
        if not candidates:
            return [NOTHING_FOUND]
        chosen = self._select(terms(question), candidates)
        if chosen:
            cited = [cite(s.text, s.hit_number) for s in chosen]
        else:
            # Retrieval found these passages, but none shares a word with the question (a dense
            # match on synonyms, or a vague question): offer the best-ranked one, and say so.
            first = candidates[0]
            cited = [
                "The retrieved passages do not answer this directly; the closest one says:",
                cite(first.text, 1),
            ]
        return [cited[0], *(f" {c}" for c in cited[1:])]

    @staticmethod
    def _candidates(hits: Sequence[Hit]) -> list[_Sentence]:
        seen: set[str] = set()
        candidates = []
        for number, hit in enumerate(hits, start=1):
            for position, sentence in enumerate(split_sentences(hit.text)):
                # Overlapping chunks repeat sentences; quote each once, citing its first hit.
                key = sentence.casefold()
                if key in seen:
                    continue
                seen.add(key)
                candidates.append(_Sentence(sentence, number, position, terms(sentence)))
        return candidates

    def _select(self, question_terms: frozenset[str], candidates: list[_Sentence]) -> list[_Sentence]:
        if not question_terms:
            return []
        total = len(candidates)
        document_frequency = {t: sum(1 for c in candidates if t in c.terms) for t in question_terms}
        # Rare question words say more about relevance than ones every sentence shares.
        idf = {t: math.log(1 + total / df) for t, df in document_frequency.items() if df}
        scored = []
        for candidate in candidates:
            matched = question_terms & candidate.terms
            if not matched:
                continue
            # Mild length normalisation so a long sentence does not win by listing everything.
            score = sum(idf[t] for t in matched) / math.sqrt(1 + len(candidate.terms) / 20)
            scored.append((score, candidate))
        if not scored:
            return []
        # Ties go to the better-ranked hit, then to the earlier sentence: fully deterministic.
        scored.sort(key=lambda sc: (-round(sc[0], 9), sc[1].hit_number, sc[1].position))
        best = scored[0][0]
        return [c for s, c in scored[: self.max_sentences] if s >= best * MIN_RELATIVE_SCORE]
