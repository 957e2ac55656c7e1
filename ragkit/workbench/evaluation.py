"""Retrieval evaluation on BEIR-format datasets, run against the service over HTTP.

The notebooks only call into this module: it loads a dataset, makes sure its corpus is in a
collection, sends every test query through the service's search route in each mode, turns
chunk hits into document rankings, scores them with ranx (nDCG@10, Recall@100, MRR@10, hit@10:
the mean and the score of every query, so a regression can be traced to the queries that
moved), measures latency, and writes the report: ``metrics.json``, a per-query CSV and plots.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragkit.client import IngestSummary
from ragkit.core.errors import InvalidInput, ServiceError

SEARCH_MODES = ("dense", "sparse", "hybrid")
# ranx metric name → the name the report uses (the schema says hit@k, ranx says hit_rate@k).
REPORT_METRICS = {"ndcg@10": "ndcg@10", "recall@100": "recall@100", "mrr@10": "mrr@10", "hit_rate@10": "hit@10"}
DEFAULT_METRICS = tuple(REPORT_METRICS)
# The service refuses larger top_k by default (RAGKIT_MAX_TOP_K); deeper runs would need it raised.
MAX_CHUNKS_PER_QUERY = 1000
SAMPLE_SEED = 13
REPO_ROOT = Path(__file__).resolve().parents[2]
# Where DESIGN.md §5 keeps the shared datasets, relative to a source checkout.
SHARED_BEIR = REPO_ROOT.parent / "shared" / "data" / "beir"


class SearchClient(Protocol):
    """The part of ``ragkit.client.RagkitClient`` an evaluation uses (tests pass fakes)."""

    def search(self, query: str, collection: str, *, top_k: int = 5, mode: str = "hybrid") -> dict[str, Any]: ...

    def collection(self, name: str) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class BeirDataset:
    name: str
    root: Path
    queries: dict[str, str]  # only queries that have judgments
    qrels: dict[str, dict[str, int]]

    def corpus(self, only: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Corpus records as ingestible documents: {id, title, text, metadata}."""
        yield from read_beir_corpus(self.root / "corpus.jsonl", only)


def read_beir_corpus(path: Path, only: set[str] | None = None) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path} line {number} is not JSON") from exc
            doc_id = str(record.get("_id", record.get("id", "")))
            if only is not None and doc_id not in only:
                continue
            yield {"id": doc_id, "title": record.get("title", "") or "", "text": record.get("text", ""), "metadata": {}}


def resolve_path(value: str | os.PathLike[str], *, kind: str) -> Path:
    """A path as given (relative to the working directory), else relative to the repository.

    Notebooks run with the notebook folder (nbval) or the caller's folder (papermill) as working
    directory; defaults such as ``samples/docs`` must mean the same thing in both.
    """
    path = Path(value).expanduser()
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    raise InvalidInput(f"{kind} '{value}' does not exist (looked in {Path.cwd()} and {REPO_ROOT})")


def resolve_dataset(value: str | os.PathLike[str]) -> Path:
    """A BEIR folder: a path, or the bare name of a shared dataset (``scifact``, ``arguana``)."""
    text = str(value)
    if os.sep not in text and "/" not in text and not Path(text).exists() and (SHARED_BEIR / text).is_dir():
        return SHARED_BEIR / text
    path = resolve_path(value, kind="dataset")
    return path.parent if path.name == "corpus.jsonl" else path


def load_beir(root: Path | str, split: str = "test") -> BeirDataset:
    root = resolve_dataset(root)
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
    if not queries:
        raise InvalidInput(f"{root}: no query in queries.jsonl has a judgment in qrels/{split}.tsv")
    return BeirDataset(name=root.name, root=root, queries=queries, qrels=qrels)


def sample_queries(dataset: BeirDataset, max_queries: int | None, seed: int = SAMPLE_SEED) -> list[str]:
    """A fixed, seeded sample of query ids (all of them when max_queries is None)."""
    ids = sorted(dataset.queries)
    if max_queries is None or max_queries >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, max_queries))


def subset_corpus_ids(dataset: BeirDataset, query_ids: Iterable[str], size: int, seed: int = SAMPLE_SEED) -> set[str]:
    """About ``size`` documents for a quick run: the judged documents of the chosen queries
    (those that exist) topped up with seeded random others, so the queries have distractors."""
    corpus_ids = sorted(d["id"] for d in dataset.corpus())
    known = set(corpus_ids)
    wanted = {doc for q in query_ids for doc in dataset.qrels.get(q, {}) if doc in known}
    others = [d for d in corpus_ids if d not in wanted]
    extra = max(size - len(wanted), 0)
    return wanted | set(random.Random(seed).sample(others, min(extra, len(others))))


def choose_documents(dataset: BeirDataset, query_ids: Sequence[str], max_documents: int | None) -> set[str] | None:
    """The corpus subset to evaluate on: None (the whole corpus) or ``subset_corpus_ids``."""
    return None if max_documents is None else subset_corpus_ids(dataset, query_ids, max_documents)


def default_collection_name(
    dataset: BeirDataset, max_queries: int | None, max_documents: int | None, chunk_size: int | None = None
) -> str:
    """One collection per corpus selection and chunking, so a rerun finds its corpus already ingested."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset.name).strip("-_") or "dataset"
    name = f"eval-{stem}"
    if max_documents is not None:
        name += f"-q{max_queries if max_queries is not None else 'all'}-d{max_documents}"
    if chunk_size is not None:
        name += f"-c{chunk_size}"
    return name[:63]


# --------------------------------------------------------------------------- parameters


def parse_modes(modes: str | Sequence[str]) -> list[str]:
    """``"dense,sparse"`` (a papermill -p value) or a list → validated modes in the given order."""
    items = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else [str(m).strip() for m in modes]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in SEARCH_MODES]
    if unknown or not items:
        raise InvalidInput(f"modes must be some of {', '.join(SEARCH_MODES)}; got {modes!r}")
    return list(dict.fromkeys(items))


def optional_count(value: object, name: str) -> int | None:
    """None (or 0) means "all"; otherwise a positive integer."""
    if isinstance(value, bool) or not (value is None or isinstance(value, int)) or (value or 0) < 0:
        raise InvalidInput(f"{name} must be a positive integer or None (all), got {value!r}")
    return value or None


def default_output_dir(name: str, data_dir: Path | str | None = None) -> Path:
    """``<data_dir>/runs/<timestamp>-<name>/``: every run keeps its own report."""
    if data_dir is None:
        from ragkit.core.config import Settings

        # Read now rather than from get_settings()'s cache: a notebook kernel or a test may set
        # RAGKIT_DATA_DIR after something else in the process first asked for the settings.
        data_dir = Settings().data_dir
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(data_dir) / "runs" / f"{stamp}-{name}"


# --------------------------------------------------------------------------- ingestion


def load_source(source: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Ingestible documents from a folder, a file or a BEIR corpus (its folder or corpus.jsonl)."""
    from ragkit.rag.loaders import load_path

    path = resolve_path(source, kind="source")
    beir_corpus = path / "corpus.jsonl" if path.is_dir() else path
    if beir_corpus.name == "corpus.jsonl" and beir_corpus.is_file():
        # Through the same reader as the evaluation, so both ingest byte-identical documents and a
        # collection filled by one is found unchanged by the other.
        records: Iterable[dict[str, Any]] = read_beir_corpus(beir_corpus)
    else:
        records = (
            {"id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.metadata)} for d in load_path(path)
        )
    documents = []
    for record in records:
        if limit is not None and len(documents) >= limit:
            break
        documents.append(record)
    return documents


def ensure_collection(
    client: Any,
    name: str,
    *,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    recreate: bool = False,
) -> dict[str, Any]:
    """The collection's stats, creating it (or dropping and re-creating it) first if asked."""
    return client.ensure_collection(name, chunk_size=chunk_size, chunk_overlap=chunk_overlap, recreate=recreate)[0]


def ingest_documents(
    client: Any,
    collection: str,
    documents: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> IngestSummary:
    """`RagkitClient.ingest_documents` with a progress bar (for the notebooks)."""
    from tqdm.std import tqdm

    with tqdm(total=len(documents), unit="doc", desc=f"ingesting into {collection}", disable=not progress) as bar:
        return client.ingest_documents(collection, documents, batch_size=batch_size, progress=bar.update)


def chunk_token_lengths(documents: Iterable[Mapping[str, Any]], chunk_size: int, chunk_overlap: int) -> list[int]:
    """Chunk lengths in MiniLM word pieces, from the service's own chunker run locally.

    The HTTP API reports chunk counts, not chunk texts; re-chunking with the same code and the
    default embedder's tokenizer shows what the model reads (for an Ollama embedder it is an estimate).
    """
    from ragkit.adapters.embedders.local import count_wordpieces
    from ragkit.core.types import Document
    from ragkit.rag.ingest import plan_chunks

    lengths = []
    for record in documents:
        doc = Document(id=str(record["id"]), text=record["text"], title=record.get("title", "") or "")
        for chunk in plan_chunks(doc, chunk_size, chunk_overlap, count_wordpieces):
            lengths.append(count_wordpieces(f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text))
    return lengths


def prepare_collection(
    client: Any,
    dataset: BeirDataset,
    collection: str,
    doc_ids: set[str] | None,
    *,
    ingest: bool = True,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Make sure the collection holds the dataset's corpus (or the chosen subset); its stats.

    Ingests when the collection is missing, and also when it holds fewer documents than asked for,
    which finishes an interrupted ingestion (unchanged documents are skipped by the service).
    """
    try:
        stats = client.collection(collection)
    except ServiceError as exc:
        if exc.status != 404:
            raise
        if not ingest:
            raise InvalidInput(
                f"collection '{collection}' does not exist; run with ingest=True to load {dataset.name} into it"
            ) from exc
        stats = None
    for setting, wanted in (("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap)):
        if stats is not None and wanted is not None and stats.get(setting) != wanted:
            raise InvalidInput(
                f"collection '{collection}' was built with {setting} {stats.get(setting)}, not {wanted}; "
                "name another collection (or leave the collection to its default name)"
            )
    expected = len(doc_ids) if doc_ids is not None else None
    if ingest and (stats is None or expected is None or stats["documents"] < expected):
        documents = list(dataset.corpus(doc_ids))
        if stats is None or stats["documents"] < len(documents):
            ensure_collection(client, collection, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
            summary = ingest_documents(client, collection, documents, progress=progress)
            if summary.failures:
                raise InvalidInput(f"{len(summary.failures)} documents could not be ingested: {summary.failures[:3]}")
        stats = client.collection(collection)
    return stats


# --------------------------------------------------------------------------- runs


def document_ranking(
    hits: Sequence[Mapping[str, Any]], exclude: str | None = None, depth: int | None = None
) -> dict[str, float]:
    """Chunk hits → document scores: a document ranks by its best chunk (hits arrive best first).

    Scores are replaced by a rank-based value so every mode's run is on the same scale and the
    ranking, not the raw score, is evaluated. `exclude` drops a query's own document
    (BEIR's ignore_identical_ids, needed for ArguAna where each query is itself a document).
    `depth` keeps the first documents only, like a system that returns that many.
    """
    ranking: dict[str, float] = {}
    for hit in hits:
        doc_id = str(hit["doc_id"])
        if doc_id == exclude or doc_id in ranking:
            continue
        if depth is not None and len(ranking) >= depth:
            break
        ranking[doc_id] = float(len(hits) - len(ranking))
    return ranking


def chunks_to_request(top_k: int, documents: int, chunks: int, limit: int = MAX_CHUNKS_PER_QUERY) -> int:
    """How many chunks to ask for so that about ``top_k`` distinct documents come back.

    A document split into n chunks can take up to n places of a chunk ranking, so asking for
    top_k chunks returns fewer than top_k documents and Recall@top_k would be understated.
    Asking for top_k times the mean chunks per document (plus one for the query's own document
    when it is dropped) is enough in practice; ``search_documents`` asks again when it is not.
    """
    per_document = chunks / documents if documents else 1.0
    return max(1, min(limit, math.ceil((top_k + 1) * max(per_document, 1.0))))


@dataclass
class QueryOutcome:
    ranking: dict[str, float]
    latencies_ms: list[float]
    chunks_requested: int
    degraded: bool
    truncated: bool
    server_ms: dict[str, float]  # the service's own timings of the last request (embed, search, total)


def search_documents(
    client: SearchClient,
    collection: str,
    query: str,
    mode: str,
    *,
    top_k: int,
    first_request: int,
    exclude: str | None = None,
    limit: int = MAX_CHUNKS_PER_QUERY,
) -> QueryOutcome:
    """One query's top ``top_k`` documents, asking for deeper chunk lists until there are enough."""
    request, latencies, truncated = first_request, [], False
    while True:
        started = time.perf_counter()
        try:
            response = client.search(query, collection, top_k=request, mode=mode)
        except ServiceError as exc:
            max_chars = exc.details.get("limit")
            if exc.status != 422 or not isinstance(max_chars, int) or len(query) <= max_chars:
                raise
            # Longer than the service accepts (RAGKIT_MAX_QUERY_CHARS): search with the part it
            # takes, as a user would have to, and say so in the report.
            query, truncated = query[:max_chars].rsplit(None, 1)[0] or query[:max_chars], True
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        hits = response["results"]
        ranking = document_ranking(hits, exclude=exclude, depth=top_k)
        if len(ranking) >= top_k or len(hits) < request or request >= limit:
            timings = {k: float(v) for k, v in (response.get("timings_ms") or {}).items()}
            return QueryOutcome(ranking, latencies, request, bool(response.get("degraded")), truncated, timings)
        request = min(limit, request * 2)


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


def run_mode(
    client: SearchClient,
    dataset: BeirDataset,
    collection: str,
    query_ids: Sequence[str],
    mode: str,
    *,
    top_k: int,
    first_request: int,
    ignore_identical_ids: bool,
    progress: bool = True,
) -> ModeResult:
    from tqdm.std import tqdm

    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    per_query_latency: dict[str, float] = {}
    requested: list[int] = []
    degraded = truncated = 0
    server_ms: dict[str, list[float]] = {}
    for qid in tqdm(query_ids, desc=f"{mode:>6}", unit="query", disable=not progress):
        outcome = search_documents(
            client,
            collection,
            dataset.queries[qid],
            mode,
            top_k=top_k,
            first_request=first_request,
            exclude=qid if ignore_identical_ids else None,
        )
        run[qid] = outcome.ranking
        latencies.extend(outcome.latencies_ms)
        per_query_latency[qid] = sum(outcome.latencies_ms)
        for stage, value in outcome.server_ms.items():
            server_ms.setdefault(stage, []).append(value)
        requested.append(outcome.chunks_requested)
        degraded += outcome.degraded
        truncated += outcome.truncated
    scores = evaluate_run(dataset.qrels, run)
    return ModeResult(
        mode=mode,
        means=scores.means,
        per_query=scores.per_query,
        latencies_ms=latencies,
        query_latency_ms=per_query_latency,
        retrieved={q: len(r) for q, r in run.items()},
        degraded=degraded,
        truncated=truncated,
        chunks_requested=float(np.mean(requested)) if requested else 0.0,
        server_ms=server_ms,
    )


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- the whole evaluation


@dataclass
class EvaluationReport:
    dataset: BeirDataset
    collection: str
    query_ids: list[str]
    config: dict[str, Any]
    modes: dict[str, ModeResult]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` document (schema: ``METRICS_SCHEMA``)."""
        from ragkit import __version__

        return {
            "dataset": self.dataset.name,
            "collection": self.collection,
            "queries": len(self.query_ids),
            "config": self.config,
            "modes": {mode: result.report() for mode, result in self.modes.items()},
            "created_at": self.created_at,
            "ragkit_version": __version__,
        }

    def table(self) -> Any:
        """Means by mode as a pandas DataFrame (rows: modes), rounded for display."""
        import pandas as pd

        rows = {}
        for mode, result in self.modes.items():
            report = result.report()
            rows[mode] = {name: report[name] for name in REPORT_METRICS.values()} | {
                f"latency {p} (ms)": round(v, 1) for p, v in report["latency_ms"].items()
            }
        return pd.DataFrame.from_dict(rows, orient="index")

    def summary(self) -> str:
        """A plain-text summary that depends only on the data and the system, not on timing."""
        names = list(REPORT_METRICS.values())
        lines = [
            f"{self.dataset.name} · collection {self.collection} · {len(self.query_ids)} queries · "
            f"{self.config['documents']} documents in {self.config['chunks']} chunks · top_k {self.config['top_k']}",
            f"{'mode':<8}" + "".join(f"{n:>12}" for n in names),
        ]
        for mode, result in self.modes.items():
            report = result.report()
            lines.append(f"{mode:<8}" + "".join(f"{report[n]:>12.4f}" for n in names))
            if result.degraded:
                lines.append(f"  ! {result.degraded} {mode} queries were answered degraded (see the service's reasons)")
        return "\n".join(lines)


def run_evaluation(
    client: SearchClient,
    dataset: BeirDataset,
    collection: str,
    query_ids: Sequence[str],
    *,
    modes: Sequence[str] = SEARCH_MODES,
    top_k: int = 100,
    ignore_identical_ids: bool = False,
    progress: bool = True,
    extra_config: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_CHUNKS_PER_QUERY:
        raise InvalidInput(f"top_k must be an integer from 1 to {MAX_CHUNKS_PER_QUERY}, got {top_k!r}")
    modes = parse_modes(modes)
    stats = client.collection(collection)
    if not stats.get("documents"):
        raise InvalidInput(f"collection '{collection}' is empty; ingest {dataset.name}'s corpus first")
    first_request = chunks_to_request(top_k, stats["documents"], stats["chunks"])
    results = {
        mode: run_mode(
            client,
            dataset,
            collection,
            query_ids,
            mode,
            top_k=top_k,
            first_request=first_request,
            ignore_identical_ids=ignore_identical_ids,
            progress=progress,
        )
        for mode in modes
    }
    config = {
        "embedder": stats.get("embedder"),
        "chunk_size": stats.get("chunk_size"),
        "chunk_overlap": stats.get("chunk_overlap"),
        "top_k": top_k,
        "chunks_per_query": first_request,
        "documents": stats.get("documents"),
        "chunks": stats.get("chunks"),
        "ignore_identical_ids": ignore_identical_ids,
        "document_score": "best chunk",
        "dataset_path": _display_path(dataset.root),
        **dict(extra_config or {}),
    }
    return EvaluationReport(
        dataset=dataset, collection=collection, query_ids=list(query_ids), config=config, modes=results
    )


def _display_path(path: Path) -> str:
    """Relative to the repository when inside or beside it: no machine paths in shared reports."""
    try:
        return os.path.relpath(path.resolve(), REPO_ROOT)
    except ValueError:  # another drive on Windows
        return str(path)


# --------------------------------------------------------------------------- report files


METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "collection", "queries", "config", "modes", "created_at", "ragkit_version"],
    "properties": {
        "dataset": {"type": "string"},
        "collection": {"type": "string"},
        "queries": {"type": "integer", "minimum": 1},
        "config": {
            "type": "object",
            "required": ["embedder", "chunk_size", "chunk_overlap", "top_k"],
            "properties": {
                "embedder": {"type": "string"},
                "chunk_size": {"type": "integer"},
                "chunk_overlap": {"type": "integer"},
                "top_k": {"type": "integer"},
            },
        },
        "modes": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"enum": list(SEARCH_MODES)},
            "additionalProperties": {
                "type": "object",
                "required": ["ndcg@10", "recall@100", "mrr@10", "latency_ms"],
                "properties": {
                    **{name: {"type": "number", "minimum": 0, "maximum": 1} for name in REPORT_METRICS.values()},
                    "latency_ms": {
                        "type": "object",
                        "required": ["p50", "p95", "p99"],
                        "additionalProperties": {"type": "number", "minimum": 0},
                    },
                },
            },
        },
        "created_at": {"type": "string"},
        "ragkit_version": {"type": "string"},
    },
}


def write_report(report: EvaluationReport, output_dir: Path | str) -> dict[str, Path]:
    """metrics.json, per_query.csv, metrics_by_mode.png and latency.png under ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": output / "metrics.json",
        "per_query": output / "per_query.csv",
        "metrics_plot": output / "metrics_by_mode.png",
        "latency_plot": output / "latency.png",
    }
    paths["metrics"].write_text(json.dumps(report.metrics(), indent=2) + "\n", encoding="utf-8")
    write_per_query(report, paths["per_query"])
    plot_metrics(report).savefig(paths["metrics_plot"], dpi=110, bbox_inches="tight")
    plot_latency(report).savefig(paths["latency_plot"], dpi=110, bbox_inches="tight")
    return paths


def write_per_query(report: EvaluationReport, path: Path) -> None:
    names = list(REPORT_METRICS)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["query_id", "mode", *REPORT_METRICS.values(), "latency_ms", "retrieved", "query"])
        for mode, result in report.modes.items():
            for qid in report.query_ids:
                scores = result.per_query.get(qid, {})
                writer.writerow(
                    [
                        qid,
                        mode,
                        *(round(scores.get(n, 0.0), 4) for n in names),
                        round(result.query_latency_ms.get(qid, 0.0), 2),
                        result.retrieved.get(qid, 0),
                        report.dataset.queries[qid],
                    ]
                )


def plot_metrics(report: EvaluationReport) -> Any:
    from matplotlib.figure import Figure

    names = list(REPORT_METRICS.values())
    figure = Figure(figsize=(7, 3.6))
    axes = figure.subplots()
    width = 0.8 / max(len(report.modes), 1)
    positions = np.arange(len(names))
    for i, (mode, result) in enumerate(report.modes.items()):
        values = [result.report()[n] for n in names]
        bars = axes.bar(positions + i * width, values, width, label=mode)
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(positions + width * (len(report.modes) - 1) / 2, names)
    axes.set_ylim(0, 1.15)  # headroom for the legend above the bars
    axes.set_title(f"{report.dataset.name}: retrieval quality by mode ({len(report.query_ids)} queries)")
    axes.legend(loc="upper center", ncols=len(report.modes), frameon=False)
    return figure


def plot_latency(report: EvaluationReport) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.6))
    axes = figure.subplots()
    modes = list(report.modes)
    axes.boxplot([report.modes[m].latencies_ms for m in modes], tick_labels=modes, showfliers=True, vert=False)
    axes.set_xscale("log")
    axes.set_xlabel("search request latency, ms (client side, log scale)")
    axes.set_title(f"{report.dataset.name}: latency by mode")
    return figure


def plot_histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int = 30) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.2))
    axes = figure.subplots()
    axes.hist(values, bins=bins)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    return figure


def figure_png(figure: Any) -> bytes:
    """A figure as PNG bytes, for display without pyplot's global state."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
