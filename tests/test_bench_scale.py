"""The benchmark's scale part (loadtests/scale.py) on real stores at small sizes: it measures what
it says (recall against exact search, both quantizations, memory from a child process), and the
benchmark's command line refuses sizes it cannot use. The figures themselves are `make bench`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtests import bench
from loadtests.scale import DIM, bench_scale, exact_top10, synthetic_vectors


def test_synthetic_vectors_are_unit_length_and_clustered() -> None:
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(4, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    vectors = synthetic_vectors(250, rng, centroids)
    assert vectors.shape == (250, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Each vector is far nearer its own topic than a random direction would be.
    assert float(np.max(vectors @ centroids.T, axis=1).min()) > 0.5


def test_exact_top10_is_the_ten_best_by_dot_product() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    queries = rng.normal(size=(3, DIM)).astype(np.float32)
    for query, top in zip(queries, exact_top10(queries, vectors), strict=True):
        assert top == set(np.argsort(-(vectors @ query))[:10].tolist())


def test_the_scale_part_reports_both_quantizations_with_recall_and_memory(tmp_path: Path) -> None:
    report = bench.Report()
    texts = ["the tide tables of the northern coast", "a guide to pruning apple trees", "on rotating keys"]
    largest = bench_scale(report, tmp_path, [200, 400], texts, "test-embedder", 25, tmp_path / "plot.png")

    scale = report.data["scale"]
    assert set(scale) == {"200", "400"}
    for figures in scale.values():
        for store in ("edge_none", "edge_int8", "qdrant_local"):
            assert figures[store]["p95_ms"] >= figures[store]["p50_ms"] > 0
        assert figures["edge_none"]["recall_at_10"] >= 0.9
        assert figures["edge_int8"]["recall_at_10"] >= 0.9
        assert figures["qdrant_local"]["recall_at_10"] == 1.0  # brute force is exact
        for q in ("none", "int8"):
            memory = figures["build"][q]["memory"]
            assert memory["rss_after_bytes"] >= memory["rss_before_bytes"] > 0
    figures_named = [row.figure for row in report.rows]
    assert any("int8 vs full precision, p95" in f for f in figures_named)
    assert any("memory kept by searching" in f for f in figures_named)
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert (largest / "qdrant-edge").is_dir()


@pytest.mark.parametrize(("sizes", "message"), [("ten", "whole numbers"), ("50", "at least 100"), (",", "at least")])
def test_bench_refuses_sizes_it_cannot_use(sizes: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--parts", "4", "--sizes", sizes])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_int8_model_comparison_refuses_a_corpus_too_small_for_recall_at_100(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loadtests import int8_model

    with pytest.raises(SystemExit) as exit_info:
        int8_model.main(["--limit", "50"])
    assert exit_info.value.code == 2
    assert "at least 200 documents" in capsys.readouterr().err
