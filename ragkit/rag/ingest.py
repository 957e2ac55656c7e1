"""Idempotent ingestion: documents → chunks → dense + BM25 vectors → upserts.

Guarantees (DESIGN.md §3, Ingestion):
* point ids are deterministic (collection, document id, chunk index), so re-running a batch
  overwrites instead of duplicating;
* a document whose content hash is stored with all its chunks is skipped;
* a changed document's new chunks are written first and only then are the stale ones
  deleted, so it never has zero chunks and keeps no stale chunk;
* a document cut off half way (a killed run) has fewer chunks than its `chunk_count` says, or
  still has stale chunks beside its new ones, so the next run writes it again.

The CPU-bound steps (hashing, chunking, BM25) run in worker threads and points are written in
slices of `batch_chunks`, so one large document never holds the event loop, nor the store, for
long: the service keeps answering other requests while it is ingested.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ragkit.core.batches import PreparedDocument
from ragkit.core.errors import EmbedderMismatch, InvalidInput
from ragkit.core.metrics import Metrics
from ragkit.core.names import point_id
from ragkit.core.types import Chunk, CollectionSpec, Document, Embedder, Point, SparseVector, Store
from ragkit.rag.chunking import chunk_document, content_hash
from ragkit.rag.locate import check_page_starts
from ragkit.rag.sparse import Bm25Encoder

MIN_CHUNK_TOKENS = 16


@dataclass
class IngestReport:
    ingested: int = 0
    skipped_unchanged: int = 0
    chunks: int = 0
    seconds: float = 0.0
    document_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "ingested": self.ingested,
            "skipped_unchanged": self.skipped_unchanged,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def check_embedder(spec: CollectionSpec, embedder: Embedder) -> None:
    if spec.embedder != embedder.name or spec.dimension != embedder.dimension:
        raise EmbedderMismatch(spec.name, spec.embedder, spec.dimension, embedder.name, embedder.dimension)


async def learn_dimension(embedder: Embedder) -> None:
    """A remote model tells its vector size only when asked (one probe, then remembered)."""
    ensure_dimension = getattr(embedder, "ensure_dimension", None)
    if ensure_dimension is not None:
        await ensure_dimension()


def embedding_text(chunk: Chunk) -> str:
    """What both vectors see: the title gives every chunk of a document its topic, and the
    heading it sits under (when the chunk does not start with it) says what its part is about."""
    lines = [chunk.title] if chunk.title else []
    if chunk.section and chunk.section != chunk.title and not chunk.text.lstrip("# ").startswith(chunk.section):
        lines.append(chunk.section)
    return "\n".join([*lines, chunk.text])


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    seen: set[str] = set()
    result = []
    for doc in documents:
        if doc.id in seen:
            raise InvalidInput(f"document id '{doc.id}' appears more than once in one request", doc_id=doc.id)
        if not doc.text.strip():
            raise InvalidInput(f"document '{doc.id}' has no text", doc_id=doc.id)
        _check_metadata(doc)
        check_page_starts(doc.page_starts, len(doc.text), f"document '{doc.id}'")
        seen.add(doc.id)
        result.append(doc)
    return result


def _check_metadata(doc: Document) -> None:
    # Metadata is stored as JSON: NaN and Infinity (which Python's JSON reader accepts) have no
    # JSON form, and the store would refuse them only half way through writing the batch.
    try:
        json.dumps(doc.metadata, allow_nan=False, default=_not_json)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"the metadata of document '{doc.id}' is not plain JSON: {exc}", doc_id=doc.id) from exc


def _not_json(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def _prepared(documents: Sequence[Document]) -> list[tuple[Document, str]]:
    """The documents, checked, with their content hashes (a worker-thread step: it reads all text)."""
    prepared = []
    for doc in unique_documents(documents):
        try:
            prepared.append((doc, content_hash(doc)))
        except UnicodeEncodeError as exc:  # a lone surrogate, which Python's JSON reader accepts
            raise InvalidInput(f"document {doc.id!r} is not valid Unicode (a lone surrogate); send UTF-8 text") from exc
    return prepared


def plan_chunks(doc: Document, chunk_size: int, chunk_overlap: int, count_tokens: Callable[[str], int]) -> list[Chunk]:
    """The chunks ingestion writes for ``doc`` (also used to show chunk lengths without the service)."""
    # The title is embedded with every chunk, so it takes part of the token budget.
    title_tokens = count_tokens(doc.title) + 1 if doc.title else 0
    size = max(chunk_size - title_tokens, MIN_CHUNK_TOKENS)
    overlap = min(chunk_overlap, size // 2)
    return chunk_document(doc, chunk_size=size, chunk_overlap=overlap, count_tokens=count_tokens)


class Ingestor:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        metrics: Metrics,
        *,
        batch_chunks: int = 128,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._metrics = metrics
        self._batch_chunks = batch_chunks

    def _chunks_of(self, doc: Document, spec: CollectionSpec) -> list[Chunk]:
        return plan_chunks(doc, spec.chunk_size, spec.chunk_overlap, self._embedder.count_tokens)

    async def ingest(
        self,
        collection: str,
        documents: Sequence[Document],
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport()
        prepared = await asyncio.to_thread(_prepared, documents)
        spec = await self._store.get_collection(collection, fresh=True)
        await learn_dimension(self._embedder)
        check_embedder(spec, self._embedder)

        pending: list[tuple[Document, str, list[Chunk]]] = []
        pending_chunks = 0
        for doc, digest in prepared:
            if await self._unchanged(collection, doc.id, digest):
                report.skipped_unchanged += 1
                self._metrics.ingested_documents.labels(collection, "unchanged").inc()
                if progress:
                    progress(1)
                continue
            chunks = await asyncio.to_thread(self._chunks_of, doc, spec)
            pending.append((doc, digest, chunks))
            pending_chunks += len(chunks)
            if pending_chunks >= self._batch_chunks:
                spec = await self._write(spec, pending, report, progress)
                pending, pending_chunks = [], 0
        if pending:
            await self._write(spec, pending, report, progress)
        report.seconds = time.perf_counter() - started
        self._metrics.stage_latency.labels("ingest").observe(report.seconds)
        return report

    async def _unchanged(self, collection: str, doc_id: str, digest: str) -> bool:
        """Stored whole, at this content hash: nothing to write."""
        state = await self._store.document_state(collection, doc_id)
        complete = state is not None and state.present >= state.chunk_count and state.total == state.present
        return complete and state.content_hash == digest

    async def changed(self, collection: str, documents: Sequence[Document]) -> tuple[list[Document], list[str]]:
        """The documents that need writing, and the ids of those stored unchanged (for work done
        elsewhere, by workers: only what changed is sent to them)."""
        prepared = await asyncio.to_thread(_prepared, documents)
        changed, unchanged = [], []
        for doc, digest in prepared:
            if await self._unchanged(collection, doc.id, digest):
                unchanged.append(doc.id)
                self._metrics.ingested_documents.labels(collection, "unchanged").inc()
            else:
                changed.append(doc)
        return changed, unchanged

    async def write_prepared(self, collection: str, prepared: Sequence[PreparedDocument]) -> IngestReport:
        """Write documents a worker has chunked and embedded. The vectors must come from the
        collection's embedder (the worker says which it used; a mismatch is refused here)."""
        started = time.perf_counter()
        spec = await self._store.get_collection(collection, fresh=True)
        report = IngestReport()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for item in prepared:
            if item.embedder != spec.embedder or any(len(v) != spec.dimension for v in item.dense):
                raise EmbedderMismatch(spec.name, spec.embedder, spec.dimension, item.embedder, len(item.dense[0]))
            digest = content_hash(item.document)
            count = len(item.chunks)
            entries = [(item.document, digest, count, chunk) for chunk in item.chunks]
            await self._store.upsert(spec.name, _points(spec, entries, item.dense, item.sparse, now))
            await self._finish_document(spec, item.document, digest, count, report)
        report.seconds = time.perf_counter() - started
        return report

    async def _write(
        self,
        spec: CollectionSpec,
        batch: list[tuple[Document, str, list[Chunk]]],
        report: IngestReport,
        progress: Callable[[int], None] | None,
    ) -> CollectionSpec:
        if spec.bm25_avg_len <= 0:
            # BM25's length normalisation wants the collection's real mean length; the first
            # batch is the best estimate there is, and it is kept for the collection's life.
            texts = [embedding_text(c) for _, _, chunks in batch for c in chunks]
            mean = await asyncio.to_thread(Bm25Encoder(avg_len=1.0).mean_terms, texts)
            spec = replace(spec, bm25_avg_len=max(mean, 1.0))
            await self._store.update_collection(spec)
        encoder = Bm25Encoder(avg_len=spec.bm25_avg_len)

        # In document order, so each document's chunk 0 (which carries its version) is written first.
        now = datetime.now(UTC).isoformat(timespec="seconds")
        entries = [(doc, digest, len(chunks), chunk) for doc, digest, chunks in batch for chunk in chunks]
        for start in range(0, len(entries), self._batch_chunks):
            await self._write_slice(spec, entries[start : start + self._batch_chunks], encoder, now)
        for doc, digest, chunks in batch:
            await self._finish_document(spec, doc, digest, len(chunks), report)
        if progress:
            progress(len(batch))
        return spec

    async def _finish_document(
        self, spec: CollectionSpec, doc: Document, digest: str, count: int, report: IngestReport
    ) -> None:
        """After a document's new chunks are written: its stale ones go, and it is counted."""
        await self._store.delete_stale(spec.name, doc.id, digest, count)
        report.ingested += 1
        report.chunks += count
        report.document_ids.append(doc.id)
        self._metrics.ingested_documents.labels(spec.name, "ingested").inc()
        self._metrics.ingested_chunks.labels(spec.name).inc(count)

    async def _write_slice(
        self,
        spec: CollectionSpec,
        entries: list[tuple[Document, str, int, Chunk]],
        encoder: Bm25Encoder,
        now: str,
    ) -> None:
        texts = [embedding_text(chunk) for _, _, _, chunk in entries]
        embed_started = time.perf_counter()
        dense = await self._embedder.embed(texts)
        self._metrics.stage_latency.labels("ingest_embed").observe(time.perf_counter() - embed_started)
        sparse = await asyncio.to_thread(encoder.embed_documents, texts)
        await self._store.upsert(spec.name, _points(spec, entries, dense, sparse, now))


async def prepare_documents(
    documents: Sequence[Document], spec: CollectionSpec, embedder: Embedder
) -> list[PreparedDocument]:
    """What a worker does for the service: chunk, embed (in one batch) and BM25-encode the
    documents for ``spec``'s collection. EmbedderMismatch when its embedder is not the collection's."""
    check_embedder(spec, embedder)
    encoder = Bm25Encoder(avg_len=max(spec.bm25_avg_len, 1.0))
    chunked = [
        (doc, await asyncio.to_thread(plan_chunks, doc, spec.chunk_size, spec.chunk_overlap, embedder.count_tokens))
        for doc in unique_documents(documents)
    ]
    texts = [embedding_text(chunk) for _, chunks in chunked for chunk in chunks]
    dense = await embedder.embed(texts)
    sparse = await asyncio.to_thread(encoder.embed_documents, texts)
    prepared, start = [], 0
    for doc, chunks in chunked:
        end = start + len(chunks)
        prepared.append(PreparedDocument(doc, chunks, dense[start:end], sparse[start:end], embedder.name))
        start = end
    return prepared


def _points(
    spec: CollectionSpec,
    entries: Sequence[tuple[Document, str, int, Chunk]],
    dense: Sequence[Sequence[float]],
    sparse: Sequence[SparseVector],
    now: str,
) -> list[Point]:
    return [
        Point(
            point_id(spec.name, doc.id, chunk.chunk_index),
            list(vector),
            sparse_vector,
            {
                "doc_id": doc.id,
                "chunk_index": chunk.chunk_index,
                "chunk_count": count,
                "content_hash": digest,
                "text": chunk.text,
                "title": doc.title,
                "metadata": dict(doc.metadata),
                "page": chunk.page,
                "page_end": chunk.page_end,
                "section": chunk.section,
                "ingested_at": now,
            },
        )
        for (doc, digest, count, chunk), vector, sparse_vector in zip(entries, dense, sparse, strict=True)
    ]
