"""Running an evaluation against the service over HTTP: every query through the search route in
each mode, chunk hits turned into document rankings, each mode scored and timed."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K, MAX_TOP_K, SEARCH_MODES
from ragkit.workbench.evaluation.datasets import BeirDataset, display_path
from ragkit.workbench.evaluation.metrics import ModeResult, evaluate_run
from ragkit.workbench.evaluation.report import EvaluationReport

# The service refuses larger top_k by default (RAGKIT_MAX_TOP_K); deeper runs would need it raised.
MAX_CHUNKS_PER_QUERY = MAX_TOP_K


class SearchClient(Protocol):
    """The part of ``ragkit.client.RagkitClient`` an evaluation uses (tests pass fakes)."""

    def search(
        self, query: str, collection: str, *, top_k: int = DEFAULT_TOP_K, mode: str = DEFAULT_MODE
    ) -> dict[str, Any]: ...

    def collection(self, name: str) -> dict[str, Any]: ...


def parse_modes(modes: str | Sequence[str]) -> list[str]:
    """``"dense,sparse"`` (a papermill -p value) or a list → validated modes in the given order."""
    items = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else [str(m).strip() for m in modes]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in SEARCH_MODES]
    if unknown or not items:
        raise InvalidInput(f"modes must be some of {', '.join(SEARCH_MODES)}; got {modes!r}")
    return list(dict.fromkeys(items))


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
        "dataset_path": display_path(dataset.root),
        **dict(extra_config or {}),
    }
    return EvaluationReport(
        dataset=dataset, collection=collection, query_ids=list(query_ids), config=config, modes=results
    )
