"""Retrieval evaluation on BEIR-format datasets, run against the service over HTTP.

The notebooks only call into this package: it loads a dataset (``datasets``), makes sure its
corpus is in a collection (``ingestion``), sends every test query through the service's search
route in each mode and turns chunk hits into document rankings (``runner``), scores them with
ranx and measures latency (``metrics``), and writes the report: ``metrics.json``, a per-query
CSV and plots (``report``). The names below are the ones the notebooks and the CLI use, as
``from ragkit.workbench import evaluation as ev``.
"""

from __future__ import annotations

from ragkit.workbench.evaluation.datasets import (
    REPO_ROOT,
    SAMPLE_SEED,
    SHARED_BEIR,
    BeirDataset,
    choose_documents,
    default_collection_name,
    display_path,
    load_beir,
    load_source,
    optional_count,
    read_beir_corpus,
    resolve_dataset,
    resolve_path,
    sample_queries,
    subset_corpus_ids,
)
from ragkit.workbench.evaluation.ingestion import (
    chunk_token_lengths,
    ensure_collection,
    ingest_documents,
    prepare_collection,
)
from ragkit.workbench.evaluation.metrics import (
    DEFAULT_METRICS,
    REPORT_METRICS,
    EvaluationResult,
    ModeResult,
    evaluate_run,
    latency_percentiles,
)
from ragkit.workbench.evaluation.report import (
    METRICS_SCHEMA,
    EvaluationReport,
    default_output_dir,
    figure_png,
    plot_histogram,
    plot_latency,
    plot_metrics,
    write_per_query,
    write_report,
)
from ragkit.workbench.evaluation.runner import (
    MAX_CHUNKS_PER_QUERY,
    QueryOutcome,
    SearchClient,
    chunks_to_request,
    document_ranking,
    parse_modes,
    run_evaluation,
    run_mode,
    search_documents,
)

__all__ = [
    "DEFAULT_METRICS",
    "MAX_CHUNKS_PER_QUERY",
    "METRICS_SCHEMA",
    "REPORT_METRICS",
    "REPO_ROOT",
    "SAMPLE_SEED",
    "SHARED_BEIR",
    "BeirDataset",
    "EvaluationReport",
    "EvaluationResult",
    "ModeResult",
    "QueryOutcome",
    "SearchClient",
    "choose_documents",
    "chunk_token_lengths",
    "chunks_to_request",
    "default_collection_name",
    "default_output_dir",
    "display_path",
    "document_ranking",
    "ensure_collection",
    "evaluate_run",
    "figure_png",
    "ingest_documents",
    "latency_percentiles",
    "load_beir",
    "load_source",
    "optional_count",
    "parse_modes",
    "plot_histogram",
    "plot_latency",
    "plot_metrics",
    "prepare_collection",
    "read_beir_corpus",
    "resolve_dataset",
    "resolve_path",
    "run_evaluation",
    "run_mode",
    "sample_queries",
    "search_documents",
    "subset_corpus_ids",
    "write_per_query",
    "write_report",
]
