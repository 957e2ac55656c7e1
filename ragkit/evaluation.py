"""Retrieval evaluation on BEIR-format datasets: loading, chunk → document runs, metrics.

Metrics come from ranx (nDCG@10, Recall@100, MRR@10, hit@k): the mean and the score of
every query, so a regression can be traced to the queries that moved.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import InvalidInput

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "hit_rate@10")


@dataclass(frozen=True)
class BeirDataset:
    name: str
    root: Path
    queries: dict[str, str]  # only queries that have judgments
    qrels: dict[str, dict[str, int]]

    def corpus(self, only: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Corpus records as ingestible documents: {id, title, text, metadata}."""
        with (self.root / "corpus.jsonl").open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{self.root / 'corpus.jsonl'} line {number} is not JSON") from exc
                doc_id = str(record.get("_id", record.get("id", "")))
                if only is not None and doc_id not in only:
                    continue
                yield {"id": doc_id, "title": record.get("title", "") or "", "text": record.get("text", ""),
                       "metadata": {}}


def load_beir(root: Path | str, split: str = "test") -> BeirDataset:
    root = Path(root)
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / needed).is_file():
            raise InvalidInput(f"{root} is not a BEIR folder: {needed} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open(encoding="utf-8") as rows:
        for row in csv.reader(rows, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qid, doc_id, score = row[0], row[1], int(row[2])
            if score > 0:
                qrels.setdefault(qid, {})[doc_id] = score
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = record["text"]
    return BeirDataset(name=root.name, root=root, queries=queries, qrels=qrels)


def sample_queries(dataset: BeirDataset, max_queries: int | None, seed: int = 13) -> list[str]:
    """A fixed, seeded sample of query ids (all of them when max_queries is None)."""
    ids = sorted(dataset.queries)
    if max_queries is None or max_queries >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, max_queries))


def subset_corpus_ids(dataset: BeirDataset, query_ids: Iterable[str], distractors: int, seed: int = 13) -> set[str]:
    """Judged documents of the chosen queries plus seeded random others, for quick runs."""
    wanted = {doc for q in query_ids for doc in dataset.qrels.get(q, {})}
    others = sorted({d["id"] for d in dataset.corpus()} - wanted)
    return wanted | set(random.Random(seed).sample(others, min(distractors, len(others))))


def document_ranking(hits: Sequence[Mapping[str, Any]], exclude: str | None = None) -> dict[str, float]:
    """Chunk hits → document scores: a document ranks by its best chunk (hits arrive best first).

    Scores are replaced by a rank-based value so every mode's run is on the same scale and the
    ranking, not the raw score, is evaluated. `exclude` drops a query's own document
    (BEIR's ignore_identical_ids, needed for ArguAna where each query is itself a document).
    """
    ranking: dict[str, float] = {}
    for hit in hits:
        doc_id = str(hit["doc_id"])
        if doc_id == exclude or doc_id in ranking:
            continue
        ranking[doc_id] = float(len(hits) - len(ranking))
    return ranking


@dataclass
class EvaluationResult:
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> EvaluationResult:
    from ranx import Qrels, Run, evaluate

    query_ids = [q for q in run if q in qrels]
    if not query_ids:
        raise InvalidInput("no evaluated query has judgments")
    # ranx wants every query to have at least one retrieved document.
    padded = {q: dict(run[q]) or {"__none__": 0.0} for q in query_ids}
    ranx_qrels = Qrels.from_dict({q: dict(qrels[q]) for q in query_ids})
    ranx_run = Run.from_dict(padded)
    scores = evaluate(ranx_qrels, ranx_run, list(metrics), return_mean=False, make_comparable=True)
    if len(metrics) == 1:
        scores = {metrics[0]: scores}
    per_query: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    ordered = list(ranx_qrels.keys())
    means = {}
    for metric in metrics:
        values = np.asarray(scores[metric], dtype=float)
        means[metric] = round(float(values.mean()), 4)
        for qid, value in zip(ordered, values, strict=True):
            per_query[qid][metric] = float(value)
    return EvaluationResult(means=means, per_query=per_query)


def latency_percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    if not samples_ms:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    values = np.asarray(samples_ms, dtype=float)
    return {f"p{p}": round(float(np.percentile(values, p)), 3) for p in (50, 95, 99)}
