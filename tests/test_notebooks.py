"""The ingestion and evaluation notebooks run by papermill against a live service, `ragkit notebook
run`, and the evaluation logic underneath them (ragkit.workbench.evaluation, ragkit.workbench.notebooks)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import nbformat
import pytest
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.workbench import evaluation as ev
from ragkit.workbench.notebooks import NOTEBOOK_DIR, find_notebook, parse_parameters, run_notebook
from tests.conftest import REPO, SCIFACT, SECRET, Stack, start_stack

needs_scifact = pytest.mark.skipif(not SCIFACT.is_dir(), reason="the shared SciFact data is not beside the repository")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, local_embedder) -> Iterator[Stack]:  # noqa: ANN001
    stack, server = start_stack(tmp_path_factory.mktemp("notebook-service"), local_embedder)
    try:
        yield stack
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: Stack) -> Path:
    """What a notebook kernel inherits: the token, where the service is, a data dir for runs."""
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    monkeypatch.setenv("RAGKIT_API_URL", service.url)
    monkeypatch.setenv("RAGKIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


# --------------------------------------------------------------------------- notebooks on disk


@pytest.mark.parametrize("name", ["ingest", "evaluate"])
def test_notebooks_are_committed_thin_and_stripped(name: str) -> None:
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    first = notebook.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks with outputs stripped"
            assert len(cell.source.splitlines()) <= 30, "logic belongs in ragkit, not in a notebook cell"


# --------------------------------------------------------------------------- papermill runs


@needs_scifact
def test_evaluate_notebook_writes_a_report_that_matches_the_schema(client_env: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "notebook",
            "run",
            "evaluate",
            "-p",
            "dataset",
            str(SCIFACT),
            "-p",
            "max_queries",
            "40",
            "-p",
            "max_documents",
            "200",
            "-p",
            "modes",
            "dense,sparse,hybrid",
            "--output-dir",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "hybrid" in result.output and str(output / "metrics.json") in result.output

    metrics = json.loads((output / "metrics.json").read_text())
    jsonschema.validate(metrics, ev.METRICS_SCHEMA)
    assert metrics["dataset"] == "scifact" and metrics["queries"] == 40
    assert metrics["collection"] == "eval-scifact-q40-d200"
    assert metrics["config"]["embedder"] == "local:all-MiniLM-L6-v2" and metrics["config"]["top_k"] == 100
    assert metrics["config"]["documents"] == 200
    modes = metrics["modes"]
    assert set(modes) == {"dense", "sparse", "hybrid"}
    for mode, values in modes.items():
        assert values["queries"] == 40 and values["degraded_queries"] == 0, mode
        # 40 queries over 200 documents that include all their judged ones: an easy subset.
        assert 0.5 < values["ndcg@10"] <= values["hit@10"] and values["recall@100"] > 0.85, (mode, values)
        latency = values["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"], (mode, latency)
    for single in ("dense", "sparse"):
        assert modes["hybrid"]["ndcg@10"] >= modes[single]["ndcg@10"], modes
        assert modes["hybrid"]["recall@100"] >= modes[single]["recall@100"], modes

    with (output / "per_query.csv").open() as rows:
        records = list(csv.DictReader(rows))
    assert len(records) == 40 * 3 and {r["mode"] for r in records} == {"dense", "sparse", "hybrid"}
    for plot in ("metrics_by_mode.png", "latency.png"):
        assert (output / plot).read_bytes().startswith(PNG_MAGIC)

    executed = nbformat.read(output / "evaluate.ipynb", as_version=4)
    last = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    assert last.startswith("scifact · collection eval-scifact-q40-d200 · 40 queries"), last
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))


def test_ingest_notebook_ingests_and_skips_unchanged_documents(client_env: Path, tmp_path: Path) -> None:
    params: dict[str, Any] = {"collection": "nb-ingest", "source": "samples/docs", "limit": 3}
    first = run_notebook("ingest", params, tmp_path / "first")
    summary = json.loads((first.output_dir / "ingest_summary.json").read_text())
    assert summary["documents"] == 3 and summary["ingested"] == 3 and summary["failures"] == 0
    assert summary["chunks"] >= 3
    assert (first.output_dir / "chunk_lengths.png").read_bytes().startswith(PNG_MAGIC)
    assert first.notebook == (tmp_path / "first" / "ingest.ipynb").resolve()

    again = run_notebook("ingest", params)  # default output dir: <data dir>/runs/<timestamp>-ingest/
    assert again.output_dir.parent == (client_env / "runs").resolve() and again.output_dir.name.endswith("-ingest")
    summary = json.loads((again.output_dir / "ingest_summary.json").read_text())
    assert summary["unchanged"] == 3 and summary["ingested"] == 0


# --------------------------------------------------------------------------- ragkit notebook run: errors


def test_unknown_notebook_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["notebook", "run", "nope"])
    assert result.exit_code == 2
    assert "unknown notebook 'nope'" in result.output and "evaluate, ingest" in result.output


def test_unknown_parameter_is_a_usage_error_before_any_kernel_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["notebook", "run", "evaluate", "-p", "max_querys", "5", "--output-dir", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "unknown parameter max_querys" in result.output and "max_queries" in result.output
    assert not (tmp_path / "out").exists()


def test_a_failing_notebook_exits_non_zero_and_keeps_the_executed_copy(client_env: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["notebook", "run", "evaluate", "-p", "dataset", str(tmp_path / "missing"), "--output-dir", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "failed in cell" in result.output and "InvalidInput" in result.output and "does not exist" in result.output
    executed = nbformat.read(tmp_path / "evaluate.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))


def test_notebook_commands_have_help_with_an_example() -> None:
    for args in (["notebook", "--help"], ["notebook", "run", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and "Example:" in result.output


def test_parameters_are_read_as_papermill_reads_them() -> None:
    values = parse_parameters(
        [
            ("a", "True"),
            ("b", "False"),
            ("c", "None"),
            ("d", "3"),
            ("e", "0.5"),
            ("f", "dense,sparse"),
            ("g", "../data"),
            ("h", "-2"),
        ]
    )
    assert values == {"a": True, "b": False, "c": None, "d": 3, "e": 0.5, "f": "dense,sparse", "g": "../data", "h": -2}
    assert isinstance(values["d"], int) and isinstance(values["a"], bool)


def test_find_notebook_accepts_a_name_a_file_name_or_a_path() -> None:
    assert find_notebook("evaluate") == NOTEBOOK_DIR / "evaluate.ipynb"
    assert find_notebook("ingest.ipynb") == NOTEBOOK_DIR / "ingest.ipynb"
    assert find_notebook(str(NOTEBOOK_DIR / "ingest.ipynb")) == NOTEBOOK_DIR / "ingest.ipynb"
    with pytest.raises(InvalidInput, match="available: evaluate, ingest"):
        find_notebook("evaluation")


# --------------------------------------------------------------------------- evaluation logic


class FakeSearch:
    """Answers searches from a fixed chunk ranking; records the top_k of each request."""

    def __init__(self, doc_ids: list[str], max_query_chars: int | None = None) -> None:
        self.doc_ids = doc_ids
        self.max_query_chars = max_query_chars
        self.requests: list[tuple[str, int]] = []

    def search(self, query: str, collection: str, *, top_k: int = 5, mode: str = "hybrid") -> dict[str, Any]:
        if self.max_query_chars is not None and len(query) > self.max_query_chars:
            raise ServiceError(422, "invalid_input", "the query is too long", limit=self.max_query_chars)
        self.requests.append((query, top_k))
        hits = [{"doc_id": d, "score": 1.0} for d in self.doc_ids[:top_k]]
        return {"results": hits, "degraded": False, "timings_ms": {"search": 1.0, "total": 2.0}}

    def collection(self, name: str) -> dict[str, Any]:
        return {"documents": 10, "chunks": 30}


def test_document_ranking_keeps_each_document_at_its_best_chunk() -> None:
    hits = [{"doc_id": d} for d in ["a", "b", "a", "q", "c", "b", "d"]]
    ranking = ev.document_ranking(hits, exclude="q")
    assert list(ranking) == ["a", "b", "c", "d"]
    assert list(ranking.values()) == sorted(ranking.values(), reverse=True)
    assert list(ev.document_ranking(hits, depth=2)) == ["a", "b"]


def test_enough_chunks_are_requested_for_top_k_distinct_documents() -> None:
    # Three chunks per document on average: 100 documents need about 300 chunks.
    assert ev.chunks_to_request(100, documents=1000, chunks=3000) == 303
    assert ev.chunks_to_request(100, documents=1000, chunks=900) == 101
    assert ev.chunks_to_request(900, documents=10, chunks=40) == ev.MAX_CHUNKS_PER_QUERY

    # Each document fills four places of the chunk ranking: the first answer has too few
    # documents, so the evaluation asks again, deeper.
    chunk_ranking = [f"d{i // 4}" for i in range(400)]
    fake = FakeSearch(chunk_ranking)
    outcome = ev.search_documents(fake, "c", "query", "hybrid", top_k=50, first_request=60)
    assert [k for _, k in fake.requests] == [60, 120, 240]
    assert len(outcome.ranking) == 50 and len(outcome.latencies_ms) == 3

    # A collection smaller than top_k: a short answer ends the search.
    fake = FakeSearch(["a", "a", "b"])
    assert list(ev.search_documents(fake, "c", "q", "dense", top_k=10, first_request=20).ranking) == ["a", "b"]
    assert len(fake.requests) == 1


def test_a_query_longer_than_the_service_takes_is_cut_at_a_word_and_reported() -> None:
    fake = FakeSearch(["a", "b"], max_query_chars=20)
    outcome = ev.search_documents(fake, "c", "alpha beta gamma delta epsilon", "sparse", top_k=2, first_request=2)
    assert outcome.truncated and fake.requests[0][0] == "alpha beta gamma"


def test_metrics_mean_and_per_query_scores() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"z": 1}}
    result = ev.evaluate_run(qrels, {"q1": {"a": 2.0, "b": 1.0}, "q2": {}})
    assert result.means["ndcg@10"] == 0.5 and result.means["hit_rate@10"] == 0.5
    assert result.per_query["q1"]["mrr@10"] == 1.0 and result.per_query["q2"]["recall@100"] == 0.0
    assert ev.latency_percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert ev.latency_percentiles([10.0] * 99 + [1000.0])["p50"] == 10.0


def test_parameters_are_validated_with_clear_messages() -> None:
    assert ev.parse_modes("hybrid, dense") == ["hybrid", "dense"]
    assert ev.parse_modes(["sparse", "sparse"]) == ["sparse"]
    with pytest.raises(InvalidInput, match="modes must be some of dense, sparse, hybrid"):
        ev.parse_modes("dense,bm25")
    assert ev.optional_count(None, "max_queries") is None and ev.optional_count(0, "max_queries") is None
    with pytest.raises(InvalidInput, match="max_queries must be a positive integer"):
        ev.optional_count("ten", "max_queries")
    with pytest.raises(InvalidInput, match="top_k must be an integer"):
        ev.run_evaluation(FakeSearch([]), None, "c", [], top_k=0)  # type: ignore[arg-type]


def test_sources_load_from_folders_files_and_beir_corpora(tmp_path: Path) -> None:
    docs = ev.load_source(REPO / "samples" / "docs", limit=2)
    assert len(docs) == 2 and all(d["text"] for d in docs)
    assert ev.load_source("samples/docs") == ev.load_source(REPO / "samples" / "docs")  # from any working dir
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "title": "", "text": "two"}\n'
    )
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "one?"}\n{"_id": "q9", "text": "unjudged"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    expected = [
        {"id": "d1", "title": "T", "text": "one", "metadata": {}},
        {"id": "d2", "title": "", "text": "two", "metadata": {}},
    ]
    assert ev.load_source(beir) == expected and ev.load_source(beir / "corpus.jsonl") == expected
    dataset = ev.load_beir(beir)
    assert dataset.queries == {"q1": "one?"} and dataset.qrels == {"q1": {"d1": 1}}
    assert ev.subset_corpus_ids(dataset, ["q1"], size=1) == {"d1"}
    with pytest.raises(InvalidInput, match="does not exist"):
        ev.load_beir(tmp_path / "nothing")


@needs_scifact
def test_shared_datasets_are_found_by_name() -> None:
    assert ev.resolve_dataset("scifact").resolve() == SCIFACT.resolve()
    dataset = ev.load_beir("scifact")
    assert len(dataset.queries) == 300
    name = ev.default_collection_name(dataset, 50, 300)
    assert name == "eval-scifact-q50-d300"
    assert ev.default_collection_name(dataset, None, None, chunk_size=256) == "eval-scifact-c256"
