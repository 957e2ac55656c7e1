"""Retrieval sanity on BEIR SciFact (a seeded subset): hybrid must be at least as good as each
of its halves, and each mode must be in the range the full benchmark leads one to expect."""

from __future__ import annotations

import pytest

from ragkit.workbench.evaluation import document_ranking, evaluate_run, load_beir, sample_queries, subset_corpus_ids
from tests.conftest import SCIFACT, Stack

pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="the shared SciFact data is not beside the repository")


def test_hybrid_is_at_least_as_good_as_dense_and_sparse(stack: Stack) -> None:
    dataset = load_beir(SCIFACT)
    query_ids = sample_queries(dataset, 100)
    corpus_ids = subset_corpus_ids(dataset, query_ids, size=360)
    docs = list(dataset.corpus(only=corpus_ids))
    assert stack.http.post("/api/v1/rag/collections", json={"name": "scifact"}).status_code == 201
    for start in range(0, len(docs), 50):
        response = stack.http.post(
            "/api/v1/rag/collections/scifact/documents", json={"documents": docs[start : start + 50]}, timeout=300
        )
        assert response.status_code == 200, response.text

    scores = {}
    for mode in ("dense", "sparse", "hybrid"):
        run = {}
        for qid in query_ids:
            body = {"query": dataset.queries[qid], "collection": "scifact", "mode": mode, "top_k": 30}
            hits = stack.http.post("/api/v1/rag/search", json=body).json()["results"]
            run[qid] = document_ranking(hits)
        scores[mode] = evaluate_run(dataset.qrels, run, ["ndcg@10"]).means["ndcg@10"]

    assert scores["sparse"] > 0.6 and scores["dense"] > 0.6, scores
    assert scores["hybrid"] >= scores["dense"] and scores["hybrid"] >= scores["sparse"], scores
