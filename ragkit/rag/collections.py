"""The collections service: every operation on a collection and its documents, as one call each.

The HTTP handlers, the MCP tools and the jobs all go through here, so creating a collection
always binds it to the current embedder, ingestion always schedules the index build, and an
upload always reports per file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ragkit.core.batches import PreparedDocument
from ragkit.core.errors import InvalidInput, NotFound, RagkitError
from ragkit.core.names import validate_collection_name, validate_indexed_fields
from ragkit.core.types import (
    Chunk,
    CollectionSpec,
    CollectionStats,
    Document,
    DocumentState,
    Embedder,
    Store,
)
from ragkit.rag.chunking import validate_chunking
from ragkit.rag.ingest import Ingestor, IngestReport, check_embedder, learn_dimension
from ragkit.rag.loaders import load_bytes
from ragkit.rag.optimizer import Optimizer
from ragkit.rag.transfer import Importer, ImportReport, export_lines


@dataclass(frozen=True)
class FileOutcome:
    filename: str
    documents: int = 0
    report: IngestReport | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None


@dataclass
class UploadReport:
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        return all(not f.ok for f in self.files)

    def totals(self) -> dict[str, float]:
        totals = {"ingested": 0, "skipped_unchanged": 0, "chunks": 0, "seconds": 0.0}
        for outcome in self.files:
            if outcome.report is not None:
                for key, value in outcome.report.as_dict().items():
                    totals[key] += value
        return totals


@dataclass(frozen=True)
class StoredDocument:
    """A document read back from the store: its state, its chunks in order and its text (the
    chunks joined, their overlaps once). ``complete`` is False when only the first
    chunks could be read back (a document of thousands of chunks)."""

    state: DocumentState
    chunks: tuple[Chunk, ...]
    text: str
    complete: bool


class Collections:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        ingestor: Ingestor,
        optimizer: Optimizer,
        *,
        default_chunk_size: int,
        default_chunk_overlap: int,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._ingestor = ingestor
        self._optimizer = optimizer
        self._default_chunk_size = default_chunk_size
        self._default_chunk_overlap = default_chunk_overlap

    async def all_stats(self) -> list[CollectionStats]:
        return [await self._store.stats(spec.name) for spec in await self._store.list_collections()]

    async def stats(self, name: str) -> CollectionStats:
        return await self._store.stats(name)

    async def create(
        self,
        name: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        indexed_fields: Mapping[str, str] | None = None,
        quantization: str = "none",
    ) -> CollectionStats:
        """An empty collection bound to the service's current embedder, with a payload index for
        each declared metadata field (the only time indexes are built), its dense vectors also
        kept as int8 when ``quantization`` says so."""
        validate_collection_name(name)
        size = chunk_size if chunk_size is not None else self._default_chunk_size
        overlap = chunk_overlap if chunk_overlap is not None else min(self._default_chunk_overlap, size // 2)
        validate_chunking(size, overlap)
        indexes = validate_indexed_fields(indexed_fields)
        await learn_dimension(self._embedder)
        spec = CollectionSpec(
            name=name,
            embedder=self._embedder.name,
            dimension=self._embedder.dimension,
            chunk_size=size,
            chunk_overlap=overlap,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            indexed_fields=indexes,
            quantization=quantization,
        )
        await self._store.create_collection(spec)
        return CollectionStats(spec=spec, documents=0, chunks=0)

    async def embed(self, name: str, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of ``texts`` by the collection's embedder, so a client can search it with them."""
        check_embedder(await self._store.get_collection(name), self._embedder)
        return await self._embedder.embed(list(texts))

    async def drop(self, name: str) -> None:
        await self._store.delete_collection(name)

    async def documents(self, name: str, *, limit: int = 100, offset: int = 0) -> list[DocumentState]:
        return await self._store.list_documents(name, limit=limit, offset=offset)

    async def document(self, name: str, doc_id: str) -> StoredDocument:
        found = await self._store.document_chunks(name, doc_id)
        if found is None:
            raise NotFound(
                f"no document '{doc_id}' in collection '{name}': its documents are listed at "
                f"GET /api/v1/rag/collections/{name}/documents",
                doc_id=doc_id,
            )
        state, chunks = found
        return StoredDocument(
            state=state,
            chunks=tuple(chunks),
            text=join_chunks([c.text for c in chunks]),
            complete=len(chunks) >= state.present,
        )

    async def export(self, name: str) -> AsyncIterator[bytes]:
        """The collection as the lines of an export file, streamed (`ragkit.rag.transfer`); an unknown
        collection raises here, before the first line."""
        return await export_lines(self._store, name)

    async def import_file(
        self, chunks: AsyncIterator[bytes], *, name: str | None, replace: bool, max_line_bytes: int
    ) -> ImportReport:
        """A collection made from an export file read as a stream, under its own name or ``name``."""
        importer = Importer(self._store, self._embedder)
        report = await importer.run(chunks, name=name, replace=replace, max_line_bytes=max_line_bytes)
        self._optimizer.schedule(report.collection)
        return report

    async def delete_document(self, name: str, doc_id: str) -> int:
        return await self._store.delete_document(name, doc_id)

    async def ingest(self, name: str, documents: Sequence[Document], *, optimize: bool = True) -> IngestReport:
        """``optimize=False`` leaves the index build to the caller: a job asks for it once, at its end."""
        report = await self._ingestor.ingest(name, documents)
        if optimize:
            self.optimize(name)
        return report

    def optimize(self, name: str) -> None:
        self._optimizer.schedule(name)

    async def changed(self, name: str, documents: Sequence[Document]) -> tuple[list[Document], list[str]]:
        """The documents a worker must embed, and the ids of those already stored unchanged."""
        return await self._ingestor.changed(name, documents)

    async def spec(self, name: str) -> CollectionSpec:
        return await self._store.get_collection(name, fresh=True)

    async def write_prepared(self, name: str, prepared: Sequence[PreparedDocument]) -> IngestReport:
        return await self._ingestor.write_prepared(name, prepared)

    async def ingest_files(self, name: str, files: Sequence[tuple[str, bytes]]) -> UploadReport:
        """Each (filename, content) is loaded and ingested on its own: one bad file fails alone."""
        if not files:
            raise InvalidInput("no files in the upload; send them in the multipart field 'files'")
        # The collection must exist before any file is read (404 beats a list of per-file errors).
        await self._store.get_collection(name, fresh=True)
        upload = UploadReport()
        for filename, content in files:
            try:
                documents = await asyncio.to_thread(load_bytes, filename, content)
                if not documents:
                    raise InvalidInput(f"{filename} holds no text")
                report = await self._ingestor.ingest(name, documents)
            except RagkitError as exc:
                if exc.status >= 500:
                    raise  # a dependency outage is not this file's fault: fail the request
                upload.files.append(FileOutcome(filename, error=exc.message))
                continue
            upload.files.append(FileOutcome(filename, documents=len(documents), report=report))
        if not upload.all_failed:
            self._optimizer.schedule(name)
        return upload


def join_chunks(texts: Sequence[str]) -> str:
    """A document's text from its chunks in order: each chunk is a slice of the text and starts
    with the last units of the one before (the overlap), written here once. Chunks that do not
    overlap (``chunk_overlap`` 0) are joined as paragraphs."""
    joined = ""
    previous = ""
    for text in texts:
        overlap = _overlap(previous, text)
        if not joined:
            joined = text
        elif overlap:
            joined += text[overlap:]
        else:
            joined += "\n\n" + text
        previous = text
    return joined


def _overlap(before: str, after: str) -> int:
    """Length of the longest end of ``before`` that ``after`` starts with (0 for none)."""
    if not before or not after:
        return 0
    probe = after[: min(len(after), 32)]
    start = before.find(probe)
    while start != -1:
        if after.startswith(before[start:]):
            return len(before) - start
        start = before.find(probe, start + 1)
    return 0
