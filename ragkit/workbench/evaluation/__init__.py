"""Retrieval evaluation on BEIR-format datasets, run against the service over HTTP.

The notebooks only call into this package: it loads a dataset (``datasets``), makes sure its
corpus is in a collection (``ingestion``), sends every test query through the service's search
route in each mode and turns chunk hits into document rankings (``runner``), scores them with
ranx and measures latency (``metrics``), and writes the report: ``metrics.json``, a per-query
CSV and plots (``report``). The answer evaluation asks the questions of a QA set built from the
manual pages' option descriptions (``qa``) through the answer route, scores each answer against
its gold answer and gold document (``answers``) and writes ``answers.json``, a per-answer CSV and a
plot by generator (``answers_report``). The names below are the ones the notebooks and the CLI use, as
``from ragkit.workbench import evaluation as ev``.
"""

from __future__ import annotations

from ragkit.workbench.evaluation.answers import (
    AnswerScore,
    AnswerSummary,
    answer_length,
    cited_documents,
    run_answers,
    summarize,
    token_recall,
)
from ragkit.workbench.evaluation.answers_report import (
    ANSWERS_SCHEMA,
    AnswersReport,
    plot_answers,
    run_answer_evaluation,
    write_answers_report,
)
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
from ragkit.workbench.evaluation.qa import QAItem, answer_corpus_ids, load_manpages_qa, sample_items
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
    "ANSWERS_SCHEMA",
    "DEFAULT_METRICS",
    "MAX_CHUNKS_PER_QUERY",
    "METRICS_SCHEMA",
    "REPORT_METRICS",
    "REPO_ROOT",
    "SAMPLE_SEED",
    "SHARED_BEIR",
    "AnswerScore",
    "AnswerSummary",
    "AnswersReport",
    "BeirDataset",
    "EvaluationReport",
    "EvaluationResult",
    "ModeResult",
    "QAItem",
    "QueryOutcome",
    "SearchClient",
    "answer_corpus_ids",
    "answer_length",
    "choose_documents",
    "chunk_token_lengths",
    "chunks_to_request",
    "cited_documents",
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
    "load_manpages_qa",
    "load_source",
    "optional_count",
    "parse_modes",
    "plot_answers",
    "plot_histogram",
    "plot_latency",
    "plot_metrics",
    "prepare_collection",
    "read_beir_corpus",
    "resolve_dataset",
    "resolve_path",
    "run_answer_evaluation",
    "run_answers",
    "run_evaluation",
    "run_mode",
    "sample_items",
    "sample_queries",
    "search_documents",
    "subset_corpus_ids",
    "summarize",
    "token_recall",
    "write_answers_report",
    "write_per_query",
    "write_report",
]
