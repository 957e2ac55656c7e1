"""What the service and `ragkit worker` processes exchange about ingestion batches: a document
chunked and embedded elsewhere, and the port of the queue between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ragkit.core.types import Chunk, CollectionSpec, Document, SparseVector


@dataclass(frozen=True)
class PreparedDocument:
    """A document chunked and embedded by a worker: what the service needs to write it."""

    document: Document
    chunks: list[Chunk]
    dense: list[list[float]]
    sparse: list[SparseVector]
    embedder: str  # the worker's embedder, which must be the collection's


class BatchQueue(Protocol):
    """Batches of ingestion jobs handed to `ragkit worker` processes, and their results."""

    name: str

    async def submit(self, key: str, spec: CollectionSpec, documents: Sequence[Document]) -> str:
        """Queue a batch (``key`` identifies it: the same key is queued once); a ticket."""
        ...

    async def result(self, ticket: str) -> list[PreparedDocument]:
        """Wait for a worker's result; a RagkitError when it failed."""
        ...

    async def close(self) -> None: ...
