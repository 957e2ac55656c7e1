"""BM25 sparse vectors, computed in-process with Qdrant Edge's own tokenizer and scorer.

Both stores index these vectors with the IDF modifier, so Qdrant supplies the IDF part of BM25
at query time from its own statistics; this module only produces the term-frequency side
(documents) and the set of query terms (queries). Using the same encoder for the embedded and
the server store is what makes hybrid and sparse search behave the same on both.
"""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge

from ragkit.core.errors import InvalidInput
from ragkit.core.types import SparseVector

# Qdrant's own default; a collection starts with it until its first ingestion measures the real mean.
DEFAULT_AVG_LEN = 256.0

# With b = 0 a document weight is tf * (k + 1) / (tf + k), which can be inverted back to tf. A large k
# keeps the inversion exact (within float32) even for terms repeated thousands of times.
_COUNTING_K = 1000.0


def _tf(counting_weight: float) -> int:
    """The term frequency behind a weight of the counting model (k = _COUNTING_K, b = 0)."""
    return round(_COUNTING_K * counting_weight / (_COUNTING_K + 1.0 - counting_weight))


def _config(k: float, b: float, avg_len: float) -> qdrant_edge.Bm25Config:
    # Spelled out rather than left to defaults, so an upgrade of qdrant-edge that changes its
    # defaults cannot silently change the vocabulary of existing collections.
    return qdrant_edge.Bm25Config(
        k=k,
        b=b,
        avg_len=avg_len,
        tokenizer=qdrant_edge.TokenizerType.Word,
        language="english",
        lowercase=True,
        stopwords=qdrant_edge.Language.English,
        stemmer=qdrant_edge.SnowballParams(qdrant_edge.SnowballLanguage.English),
    )


def _convert(vector: qdrant_edge.SparseVector) -> SparseVector:
    return SparseVector(indices=tuple(vector.indices), values=tuple(vector.values))


class Bm25Encoder:
    """English BM25 (lowercased, English stopwords removed, Snowball-stemmed).

    ``avg_len`` should be close to the collection's real mean document length in BM25 terms
    (see ``count_terms``/``mean_terms``): it controls length normalisation and retrieval quality
    depends on it.
    """

    def __init__(self, avg_len: float, k: float = 1.2, b: float = 0.75) -> None:
        if not avg_len > 0:
            raise InvalidInput(f"BM25 avg_len must be positive, got {avg_len!r}")
        if not k >= 0:
            raise InvalidInput(f"BM25 k must not be negative, got {k!r}")
        if not 0.0 <= b <= 1.0:
            raise InvalidInput(f"BM25 b must be within [0, 1], got {b!r}")
        self.avg_len = float(avg_len)
        self.k = float(k)
        self.b = float(b)
        try:
            self._model = qdrant_edge.Bm25(_config(self.k, self.b, self.avg_len))
            self._counter = qdrant_edge.Bm25(_config(_COUNTING_K, 0.0, DEFAULT_AVG_LEN))
        except ValueError as exc:
            raise InvalidInput(f"invalid BM25 configuration: {exc}") from exc

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [_convert(self._model.embed_document(text)) for text in texts]

    def embed_query(self, text: str) -> SparseVector:
        """Every distinct query term, weighted by how often it occurs in the query; empty when the
        text has only stopwords.

        BM25 as Lucene, Anserini and bm25s score it sums a term once per occurrence in the query.
        Qdrant's own ``embed_query`` gives every distinct term weight 1, which throws that away: on
        long queries (ArguAna's are whole arguments) the repeated terms are the topic, and dropping
        their counts cost 0.06-0.08 nDCG@10.
        """
        vector = self._counter.embed_document(text)
        return SparseVector(indices=tuple(vector.indices), values=tuple(float(_tf(w)) for w in vector.values))

    def count_terms(self, text: str) -> int:
        """The document length BM25 normalises by: terms left after stopwords, with repeats."""
        return sum(_tf(w) for w in self._counter.embed_document(text).values)

    def mean_terms(self, texts: Sequence[str]) -> float:
        """Mean ``count_terms`` over texts (0.0 for none): the value to store as ``avg_len``."""
        if not texts:
            return 0.0
        return sum(self.count_terms(text) for text in texts) / len(texts)
