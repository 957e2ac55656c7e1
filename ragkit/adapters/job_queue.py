"""Ingestion batches through arq on Redis, for `ragkit worker` processes on this machine or others.

The service queues a batch of a job's changed documents with its collection's spec; a worker
chunks, embeds and BM25-encodes them and returns the vectors; the service, which owns the
store, writes them. arq gives the rest: a batch is taken by one worker at a time, and a batch
whose worker died is run again by another once its in-progress mark expires (the batch time
limit plus 10 s). Everything crossing Redis is plain data (dicts, lists, floats), never a
ragkit object, so a worker and a service of other versions fail with a message, not a pickle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ragkit.adapters.stores.common import spec_to_dict
from ragkit.core.batches import PreparedDocument
from ragkit.core.errors import DependencyUnavailable, EmbedderMismatch, InvalidInput, RagkitError
from ragkit.core.types import Chunk, CollectionSpec, Document, SparseVector, document_from_dict, document_to_dict

QUEUE_NAME = "ragkit:ingest"
TASK = "ingest_batch"


def prepared_to_dict(item: PreparedDocument) -> dict[str, Any]:
    return {
        "document": document_to_dict(item.document),
        "chunks": [asdict(chunk) | {"metadata": dict(chunk.metadata)} for chunk in item.chunks],
        "dense": [list(map(float, vector)) for vector in item.dense],
        "sparse": [{"indices": list(v.indices), "values": list(v.values)} for v in item.sparse],
        "embedder": item.embedder,
    }


def prepared_from_dict(raw: Mapping[str, Any]) -> PreparedDocument:
    return PreparedDocument(
        document=document_from_dict(raw["document"]),
        chunks=[Chunk(**chunk) for chunk in raw["chunks"]],
        dense=[list(vector) for vector in raw["dense"]],
        sparse=[SparseVector(tuple(v["indices"]), tuple(v["values"])) for v in raw["sparse"]],
        embedder=raw["embedder"],
    )


def mismatch_to_dict(spec: CollectionSpec, embedder: str, dimension: int) -> dict[str, Any]:
    return {"code": EmbedderMismatch.code, "spec": spec_to_dict(spec), "embedder": embedder, "dimension": dimension}


def error_from_dict(raw: Mapping[str, Any]) -> RagkitError:
    """A worker's refusal, as the error the service would have raised itself."""
    if raw.get("code") == EmbedderMismatch.code:
        spec = raw["spec"]
        return EmbedderMismatch(
            spec["name"], spec["embedder"], spec["dimension"], raw["embedder"], raw["dimension"], who="a worker"
        )
    message = str(raw.get("message", "the worker failed"))
    if raw.get("code") == InvalidInput.code:
        return InvalidInput(message)
    return DependencyUnavailable("worker", message)


class ArqBatchQueue:
    name = "redis"

    def __init__(self, url: str, *, queue_name: str = QUEUE_NAME, poll_s: float = 0.2) -> None:
        self._url = url
        self._queue_name = queue_name
        self._poll_s = poll_s
        self._pool: Any = None

    async def _connection(self) -> Any:
        if self._pool is None:
            from arq import create_pool
            from arq.connections import RedisSettings

            try:
                self._pool = await create_pool(RedisSettings.from_dsn(self._url), default_queue_name=self._queue_name)
            except (OSError, ConnectionError) as exc:
                raise DependencyUnavailable("redis", f"the job queue's Redis does not answer: {exc}") from exc
        return self._pool

    async def submit(self, key: str, spec: CollectionSpec, documents: Sequence[Document]) -> str:
        pool = await self._connection()
        # arq queues a job id once: a batch queued again after a restart joins the first one.
        await pool.enqueue_job(
            TASK,
            spec_to_dict(spec),
            [document_to_dict(d) for d in documents],
            _job_id=key,
            _queue_name=self._queue_name,
        )
        return key

    async def result(self, ticket: str) -> list[PreparedDocument]:
        from arq.jobs import Job

        job = Job(ticket, await self._connection(), _queue_name=self._queue_name)
        try:
            outcome = await job.result(timeout=None, poll_delay=self._poll_s)
        except Exception as exc:  # the task raised in the worker (arq re-raises it here)
            raise DependencyUnavailable("worker", f"a worker failed on the batch: {exc!r}") from exc
        if "error" in outcome:
            raise error_from_dict(outcome["error"])
        return [prepared_from_dict(raw) for raw in outcome["documents"]]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
