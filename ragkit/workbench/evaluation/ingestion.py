"""Getting documents into a collection through the service, for both notebooks: the ingestion
notebook's source and the evaluation's BEIR corpus go through the same client calls."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragkit.client import IngestSummary
from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.workbench.evaluation.datasets import BeirDataset


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
    progress: bool = True,
) -> IngestSummary:
    """The documents as ingestion jobs on the service, followed with a progress bar (for the
    notebooks and the evaluation): what they did, with a reason per document that failed."""
    from tqdm.std import tqdm

    started = time.perf_counter()
    with tqdm(total=len(documents), unit="doc", desc=f"ingesting into {collection}", disable=not progress) as bar:

        def update(done: int, chunks: int, status: dict[str, Any]) -> None:
            bar.n = done
            bar.set_postfix_str(f"{chunks} chunks", refresh=False)
            bar.refresh()

        finals = client.follow_jobs(client.submit_jobs(collection, documents), update)
    return IngestSummary.from_jobs(collection, finals, time.perf_counter() - started)


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
