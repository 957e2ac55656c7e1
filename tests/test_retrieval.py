"""Retrieval quality on BEIR SciFact (a seeded subset), measured by the evaluation the notebooks run
(ragkit.workbench.evaluation) against a live service: hybrid must be at least as good as each of its
halves, each mode must be in the range the full benchmark leads one to expect, and the report must
hold together the way a reader of metrics.json and per_query.csv takes it."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from ragkit.client import RagkitClient
from ragkit.core.types import SEARCH_MODES
from ragkit.workbench import evaluation as ev
from tests.conftest import SCIFACT, SECRET, start_stack

pytestmark = [
    pytest.mark.skipif(not SCIFACT.is_dir(), reason="the shared SciFact data is not beside the repository"),
    pytest.mark.slow,
]

QUERIES = 100
DOCUMENTS = 360
TOP_K = 100


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, local_embedder) -> Iterator[ev.EvaluationReport]:  # noqa: ANN001
    # One ingestion and one run for the whole module: every test reads the same report.
    stack, server = start_stack(tmp_path_factory.mktemp("retrieval"), local_embedder)
    try:
        dataset = ev.load_beir(SCIFACT)
        query_ids = ev.sample_queries(dataset, QUERIES)
        doc_ids = ev.choose_documents(dataset, query_ids, DOCUMENTS)
        with RagkitClient(stack.url, SECRET) as client:
            stats = ev.prepare_collection(client, dataset, "scifact", doc_ids, progress=False)
            assert stats["documents"] == len(doc_ids), stats
            yield ev.run_evaluation(client, dataset, "scifact", query_ids, top_k=TOP_K, progress=False)
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


def test_hybrid_is_at_least_as_good_as_dense_and_sparse(report: ev.EvaluationReport) -> None:
    ndcg = {mode: result.means["ndcg@10"] for mode, result in report.modes.items()}
    assert list(ndcg) == list(SEARCH_MODES)
    assert ndcg["sparse"] > 0.6 and ndcg["dense"] > 0.6, ndcg
    assert ndcg["hybrid"] >= ndcg["dense"] and ndcg["hybrid"] >= ndcg["sparse"], ndcg


def test_every_query_has_a_score_in_every_mode_and_the_means_are_their_means(report: ev.EvaluationReport) -> None:
    assert len(report.query_ids) == QUERIES
    for mode, result in report.modes.items():
        assert result.degraded == 0 and result.truncated == 0, mode
        assert set(result.per_query) == set(report.query_ids), mode
        for qid, scores in result.per_query.items():
            assert set(scores) == set(ev.DEFAULT_METRICS), (mode, qid)
            assert all(0.0 <= value <= 1.0 for value in scores.values()), (mode, qid, scores)
            # A query with no relevant document in its first ten can score neither nDCG@10 nor MRR@10.
            assert scores["ndcg@10"] <= scores["hit_rate@10"] and scores["mrr@10"] <= scores["hit_rate@10"], scores
            assert 0 < result.retrieved[qid] <= TOP_K, (mode, qid)
            assert result.query_latency_ms[qid] > 0, (mode, qid)
        for metric, mean in result.means.items():
            values = [scores[metric] for scores in result.per_query.values()]
            assert mean == pytest.approx(sum(values) / len(values), abs=5e-5), (mode, metric)


def test_the_written_report_says_what_the_run_measured(report: ev.EvaluationReport, tmp_path: Path) -> None:
    paths = ev.write_report(report, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    jsonschema.validate(metrics, ev.METRICS_SCHEMA)
    assert metrics["queries"] == QUERIES and metrics["config"]["documents"] == DOCUMENTS
    with paths["per_query"].open() as rows:
        records = list(csv.DictReader(rows))
    assert len(records) == QUERIES * len(SEARCH_MODES)
    for mode, result in report.modes.items():
        assert metrics["modes"][mode]["ndcg@10"] == result.means["ndcg@10"]
        written = [float(r["ndcg@10"]) for r in records if r["mode"] == mode]
        assert sum(written) / len(written) == pytest.approx(result.means["ndcg@10"], abs=1e-3), mode
