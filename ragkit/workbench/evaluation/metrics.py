"""Scores of a run: ranx metrics (the mean and every query's score, so a regression can be traced
to the queries that moved), latency percentiles, and the result of one search mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragkit.core.errors import InvalidInput

# ranx metric name → the name the report uses (the schema says hit@k, ranx says hit_rate@k).
REPORT_METRICS = {"ndcg@10": "ndcg@10", "recall@100": "recall@100", "mrr@10": "mrr@10", "hit_rate@10": "hit@10"}
DEFAULT_METRICS = tuple(REPORT_METRICS)


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


@dataclass
class ModeResult:
    mode: str
    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latencies_ms: list[float]  # one per HTTP request, measured by the client
    query_latency_ms: dict[str, float]  # per query: all its requests together
    retrieved: dict[str, int]
    degraded: int = 0
    truncated: int = 0
    chunks_requested: float = 0.0
    server_ms: dict[str, list[float]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            **{REPORT_METRICS[m]: v for m, v in self.means.items()},
            "latency_ms": latency_percentiles(self.latencies_ms),
            # The service's split of the time. Its query-vector cache means a query embedded for one
            # mode is not embedded again for the next: compare "embed" before comparing modes' latency.
            "server_ms": {stage: latency_percentiles(values) for stage, values in sorted(self.server_ms.items())},
            "queries": len(self.per_query),
            "degraded_queries": self.degraded,
            "truncated_queries": self.truncated,
            "mean_chunks_requested": round(self.chunks_requested, 1),
        }
