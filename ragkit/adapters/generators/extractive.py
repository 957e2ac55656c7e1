"""An answerer without a language model: it quotes what in the retrieved passages best answers the
question, each sentence followed by the citation ``[n]`` of the hit it came from.

The passages are first cut into answer units (``passages.py``: sentences, and lead-ins with the
list or code block they introduce; never a bare heading). Each unit is scored by how well it
answers the question, from three signals: its meaning against the question's (cosine of the
embedder's vectors, when an embedder is given), the question's rarer words it contains (term
overlap weighted by rarity among the units), and whether the heading it sits under is about the
question; the retrieval rank breaks near-ties. The best unit is the gist and comes first; a few
more follow if they score close to it and say something the chosen ones have not (redundancy is
measured by shared terms and vector similarity). When nothing scores as an answer at all, the
reply says so plainly, naming the collection, and points at the closest sources instead of
quoting a fragment.

It is the offline default and the fallback when the LLM is down, so it must never fail and must
be deterministic: the same question and hits always give the same answer. The embedder is an
aid: if it fails, the answer is chosen from the words alone.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ragkit.adapters.generators.passages import Unit, units
from ragkit.adapters.generators.prompt import NOTHING_FOUND, check_request
from ragkit.core.context import current_collection
from ragkit.core.errors import ConfigurationError, RagkitError
from ragkit.core.types import DEFAULT_GENERATION, Embedder, GenerationOptions, Hit

BREAKER = "local_generation"
log = logging.getLogger(__name__)

# Units worth embedding, picked by the cheap signals first: an answer needs a handful, and each
# embedded unit costs the request time.
MAX_EMBEDDED_UNITS = 6
EMBEDDED_CHARS = 160
# Supporting units must score at least this share of the gist's.
MIN_RELATIVE_SCORE = 0.6
# A unit sharing this much of its terms, or this vector similarity, with a chosen one repeats it.
MAX_SHARED_TERMS = 0.5
MAX_SIMILARITY = 0.9
# Below both, no unit answers the question: the share of the question's word weight found in the
# best unit (or its heading), and the best unit's cosine to the question (MiniLM: unrelated text
# sits around 0.0-0.2, a sentence on the question's subject above 0.35).
MIN_COVERAGE = 0.3
MIN_SIMILARITY = 0.35
# Answers stay short: further units stop once this many characters are quoted (the gist always goes).
MAX_ANSWER_CHARS = 700

_WORD = re.compile(r"[^\W_]+")
_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z0-9][\w-]*")
_TERMINAL = ".!?:"
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


def _stem(word: str) -> str:
    # Crude, but enough that "models" meets "model" and "rotated" meets "rotate"-ish forms;
    # lexical overlap is one of the signals here, so plural/verb forms matter.
    for suffix in ("ing", "edly", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> frozenset[str]:
    """Content words, stemmed, and command-line options as written ("-v", "--force"): an option
    is the most specific thing a question can name, and "-v" has no word left once split."""
    words = (w.lower() for w in _WORD.findall(text))
    options = (o.lower() for o in _OPTION.findall(text))
    return frozenset(
        [_stem(w) for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())] + list(options)
    )


def cite(sentence: str, number: int) -> str:
    """Put the marker before the final punctuation: "Paris is the capital [1]."."""
    if sentence[-1] in _TERMINAL:
        return f"{sentence[:-1].rstrip()} [{number}]{sentence[-1]}"
    if sentence.endswith("…"):
        return f"{sentence} [{number}]"
    return f"{sentence} [{number}]."


@dataclass(frozen=True)
class _Candidate:
    unit: Unit
    hit_number: int  # 1-based position of its hit: the citation
    terms: frozenset[str]
    section_terms: frozenset[str]

    @property
    def gist(self) -> str:
        """What is embedded: the sentence and a lead-in's first item (the time grows with length)."""
        return " ".join((self.unit.text, *self.unit.block[:1]))[:EMBEDDED_CHARS]


@dataclass(frozen=True)
class _Scored:
    candidate: _Candidate
    score: float
    coverage: float  # share of the question's word weight in the unit or its heading
    similarity: float | None  # cosine to the question; None without vectors
    vector: tuple[float, ...] | None


def render(candidate: _Candidate) -> str:
    """A unit as quoted: the sentence cited, and a lead-in's list or code block under it."""
    unit, number = candidate.unit, candidate.hit_number
    head = cite(unit.text, number)
    if unit.kind == "code":
        return head + "\n\n```\n" + "\n".join(unit.block) + "\n```"
    if unit.kind in ("ordered", "bullets"):
        marks = (f"{i}." if unit.kind == "ordered" else "-" for i in range(1, len(unit.block) + 1))
        items = (item if item == "…" else cite(item, number) for item in unit.block)
        return head + "\n\n" + "\n".join(f"{mark} {item}" for mark, item in zip(marks, items, strict=True))
    return head


def not_found(hits: Sequence[Hit]) -> str:
    collection = current_collection()
    where = f"“{collection}”" if collection else "this collection"
    closest = ", ".join(f"[{n}] {hit.title or hit.doc_id}" for n, hit in enumerate(hits[:3], start=1))
    return f"Not found in {where}: no retrieved passage answers this question. The closest sources are {closest}."


class ExtractiveGenerator:
    """Implements ``ragkit.core.types.Generator`` by choosing what to quote (no language model).

    ``embedder`` (optional) scores units by meaning as well as by words; ``max_sentences`` caps
    the units quoted (a lead-in with its list counts as one).
    """

    name = "extractive"
    breaker_name = BREAKER

    def __init__(self, max_sentences: int = 3, embedder: Embedder | None = None) -> None:
        if max_sentences < 1:
            raise ConfigurationError(f"max_sentences must be at least 1, got {max_sentences}")
        self.max_sentences = max_sentences
        self.embedder = embedder

    # The options are an LLM's (instructions, temperature, a token cap): quotes have no use for them.
    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str:
        return "".join(await self.pieces(question, hits))

    async def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]:
        for piece in await self.pieces(question, hits):
            yield piece

    async def pieces(self, question: str, hits: Sequence[Hit]) -> list[str]:
        """The answer in the pieces ``stream`` yields: one cited unit each."""
        check_request(question, hits)
        candidates = _candidates(hits)
        if not candidates:
            return [NOTHING_FOUND]
        question_terms = terms(question)
        scored = await self._score(question, question_terms, candidates)
        best = scored[0]
        if best.coverage < MIN_COVERAGE and (best.similarity is None or best.similarity < MIN_SIMILARITY):
            return [not_found(hits)]
        chosen = self._select(scored)
        pieces = [render(chosen[0])]
        for previous, current in zip(chosen, chosen[1:], strict=False):
            plain = previous.unit.kind == current.unit.kind == "sentence"
            pieces.append((" " if plain else "\n\n") + render(current))
        return pieces

    async def _score(
        self, question: str, question_terms: frozenset[str], candidates: list[_Candidate]
    ) -> list[_Scored]:
        total = len(candidates)
        # Rare question words say more about relevance than ones every unit shares.
        idf = {}
        for term in question_terms:
            df = sum(1 for c in candidates if term in c.terms or term in c.section_terms)
            idf[term] = math.log(1 + total / df) if df else 0.0
        weight = sum(idf.values()) or 1.0

        def lexical(c: _Candidate) -> tuple[float, float]:
            in_text = sum(idf[t] for t in question_terms & c.terms) / weight
            in_section = sum(idf[t] for t in question_terms & c.section_terms) / weight
            # Mild length normalisation so a long unit does not win by listing everything.
            return in_text / math.sqrt(1 + len(c.terms) / 40), max(in_text, in_section)

        cheap = []
        for c in candidates:
            words, coverage = lexical(c)
            section = sum(idf[t] for t in question_terms & c.section_terms) / weight
            cheap.append((0.6 * words + 0.25 * section + 0.15 / c.hit_number, coverage, c))
        cheap.sort(key=lambda s: (-round(s[0], 9), s[2].hit_number, s[2].unit.position))
        shortlist = cheap[:MAX_EMBEDDED_UNITS]
        vectors = await self._vectors(question, [c.gist for _, _, c in shortlist])
        scored = []
        for index, (score, coverage, c) in enumerate(shortlist):
            similarity = vector = None
            if vectors is not None:
                vector = vectors[index + 1]
                similarity = _cosine(vectors[0], vector)
                score = 0.5 * max(similarity, 0.0) + 0.5 * score
            scored.append(_Scored(c, score, coverage, similarity, vector))
        # Ties go to the better-ranked hit, then to the earlier unit: fully deterministic.
        scored.sort(key=lambda s: (-round(s.score, 9), s.candidate.hit_number, s.candidate.unit.position))
        return scored

    async def _vectors(self, question: str, texts: list[str]) -> list[tuple[float, ...]] | None:
        if self.embedder is None:
            return None
        try:
            vectors = await self.embedder.embed([question, *texts])
        except RagkitError as exc:
            log.info("extractive answer chosen by words alone: the embedder failed (%s)", exc.message)
            return None
        return [tuple(v) for v in vectors]

    def _select(self, scored: list[_Scored]) -> list[_Candidate]:
        gist = scored[0]
        chosen = [gist]
        length = len(render(gist.candidate))
        for s in scored[1:]:
            if len(chosen) == self.max_sentences or length >= MAX_ANSWER_CHARS:
                break
            if s.score < gist.score * MIN_RELATIVE_SCORE or s.coverage == 0 and not s.similarity:
                continue
            if any(_repeats(s, c) for c in chosen):
                continue
            chosen.append(s)
            length += len(render(s.candidate))
        return [s.candidate for s in chosen]


def _repeats(a: _Scored, b: _Scored) -> bool:
    # Jaccard, not overlap with the shorter: sentences on one subject share its words without
    # repeating each other ("a snapshot is an archive" / "restore a snapshot by uploading it").
    shared = len(a.candidate.terms & b.candidate.terms) / max(1, len(a.candidate.terms | b.candidate.terms))
    if shared >= MAX_SHARED_TERMS:
        return True
    return a.vector is not None and b.vector is not None and _cosine(a.vector, b.vector) >= MAX_SIMILARITY


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _candidates(hits: Sequence[Hit]) -> list[_Candidate]:
    seen: set[str] = set()
    candidates = []
    for number, hit in enumerate(hits, start=1):
        for unit in units(hit.text):
            # Overlapping chunks repeat sentences; quote each once, citing its first hit.
            key = unit.text.casefold()
            if key in seen:
                continue
            seen.add(key)
            candidates.append(_Candidate(unit, number, terms(" ".join((unit.text, *unit.block))), terms(unit.section)))
    return candidates
