"""The ingestion driver every client uses (CLI, notebooks, evaluation, `ragkit up`): a mixin of
`RagkitClient`, sending through its routes (`collection`, `create_collection`, `ingest`, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragkit.core.errors import ServiceError

DEFAULT_BATCH_DOCUMENTS = 32  # documents per ingestion request: small enough to show progress often


@dataclass
class IngestSummary:
    """What `RagkitClient.ingest_documents` did, with a reason per document that failed."""

    collection: str
    documents: int = 0
    ingested: int = 0
    unchanged: int = 0
    chunks: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_jobs(cls, collection: str, finals: Sequence[Mapping[str, Any]], seconds: float) -> IngestSummary:
        """What ingestion jobs did, from their final statuses (as `follow_jobs` returns them)."""
        summary = cls(collection=collection, seconds=seconds)
        for final in finals:
            docs = final["documents"]
            summary.documents += docs["total"]
            summary.ingested += docs["ingested"]
            summary.unchanged += docs["skipped"]
            summary.chunks += final["chunks"]
            summary.failures += [{"id": e["doc_id"], "error": e["reason"]} for e in final["errors"]]
            if final["state"] != "done":
                summary.failures.append({"id": f"job {final['id']}", "error": final.get("error") or final["state"]})
        return summary

    @property
    def throughput(self) -> float:
        """Documents handled per second (ingested or found unchanged)."""
        return round((self.ingested + self.unchanged) / self.seconds, 2) if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "documents": self.documents,
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "chunks": self.chunks,
            "failures": len(self.failures),
            "seconds": round(self.seconds, 2),
            "documents_per_second": self.throughput,
            "chunks_per_second": round(self.chunks / self.seconds, 2) if self.seconds > 0 else 0.0,
        }


def _stops_ingestion(exc: ServiceError) -> bool:
    """An outage or a refusal of the caller: every further batch would fail the same way."""
    return exc.status >= 500 or exc.status in (401, 403, 404, 429)


class IngestionDriver:
    collection: Callable[..., dict[str, Any]]
    create_collection: Callable[..., dict[str, Any]]
    delete_collection: Callable[..., dict[str, Any]]
    ingest: Callable[..., dict[str, Any]]

    def ensure_collection(
        self,
        name: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        recreate: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """The collection's stats and whether it was created now (it is, when missing or when
        ``recreate`` drops it first)."""
        try:
            stats = self.collection(name)
        except ServiceError as exc:
            if exc.status != 404:
                raise
            stats = None
        if stats is not None and recreate:
            self.delete_collection(name)
            stats = None
        if stats is not None:
            return stats, False
        return self.create_collection(name, chunk_size=chunk_size, chunk_overlap=chunk_overlap), True

    def ingest_documents(
        self,
        collection: str,
        documents: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = DEFAULT_BATCH_DOCUMENTS,
        progress: Callable[[int], None] | None = None,
    ) -> IngestSummary:
        """Send documents in batches; ``progress(n)`` after each batch of n documents.

        A batch the service refuses as invalid is retried one document at a time, so one bad
        document is reported as a failure instead of sinking its neighbours. An outage (5xx,
        unreachable) or a refusal of the caller (401, 403, 404, 429) stops the run: every
        further batch would fail the same way.
        """
        summary = IngestSummary(collection=collection, documents=len(documents))
        started = time.perf_counter()
        for start in range(0, len(documents), batch_size):
            batch = list(documents[start : start + batch_size])
            for part, error in self._ingest_batch(collection, batch):
                if error is not None:
                    summary.failures.append({"id": str(part.get("id", "")), "error": error})
                    continue
                summary.ingested += part["ingested"]
                summary.unchanged += part["skipped_unchanged"]
                summary.chunks += part["chunks"]
            if progress is not None:
                progress(len(batch))
        summary.seconds = time.perf_counter() - started
        return summary

    def _ingest_batch(
        self, collection: str, batch: list[Mapping[str, Any]]
    ) -> Iterator[tuple[Mapping[str, Any], str | None]]:
        try:
            yield self.ingest(collection, batch), None
            return
        except ServiceError as exc:
            if _stops_ingestion(exc):
                raise
        for document in batch:
            try:
                yield self.ingest(collection, [document]), None
            except ServiceError as exc:
                if _stops_ingestion(exc):
                    raise
                yield document, exc.message
