"""`ragkit worker`: takes ingestion batches from the job queue on Redis, chunks, embeds and
BM25-encodes them with this machine's embedder, and hands the vectors back to the service that
queued them (which writes them: it owns the store). Start as many as there are machines or
cores to spare; each takes one batch at a time, so its embedder has the cores to itself.

A worker whose embedder is not the collection's refuses the batch (as a 409 would), so vectors
of another model never reach a collection; another worker, or the service, gets it again.
"""

from __future__ import annotations

import logging
from typing import Any

from ragkit.adapters.job_queue import QUEUE_NAME, TASK, mismatch_to_dict, prepared_to_dict
from ragkit.adapters.stores.common import spec_from_dict
from ragkit.core.config import Settings
from ragkit.core.errors import ConfigurationError, EmbedderMismatch, RagkitError
from ragkit.core.types import document_from_dict
from ragkit.rag.ingest import learn_dimension, prepare_documents
from ragkit.services import build_embedder

log = logging.getLogger("ragkit.worker")


async def ingest_batch(ctx: dict[str, Any], spec: dict[str, Any], documents: list[dict[str, Any]]) -> dict[str, Any]:
    embedder = ctx["embedder"]
    collection = spec_from_dict(spec)
    try:
        await learn_dimension(embedder)
        prepared = await prepare_documents([document_from_dict(d) for d in documents], collection, embedder)
    except EmbedderMismatch:
        log.warning("refused a batch of %s: it was built with %s", collection.name, collection.embedder)
        return {"error": mismatch_to_dict(collection, embedder.name, embedder.dimension)}
    except RagkitError as exc:  # an embedder outage or bad input: the service decides what to do
        return {"error": exc.to_dict()}
    log.info("embedded %d documents of %s", len(prepared), collection.name)
    return {"documents": [prepared_to_dict(item) for item in prepared]}


def build_worker(settings: Settings, *, batch_timeout_s: float = 120.0, burst: bool = False) -> Any:
    """An arq worker over REDIS_URL with this machine's embedder (the one the service would build)."""
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    if not settings.redis_url:
        raise ConfigurationError("ragkit worker needs REDIS_URL: the job queue the service puts batches on")
    embedder = build_embedder(settings)

    async def ready(ctx: dict[str, Any]) -> None:
        log.info("ready: taking batches from the queue %s with %s", QUEUE_NAME, embedder.name)

    return Worker(
        functions=[func(ingest_batch, name=TASK)],
        on_startup=ready,
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        ctx={"embedder": embedder},
        max_jobs=1,  # one batch at a time: the embedder uses every core it is given
        job_timeout=batch_timeout_s,
        keep_result=3600,
        burst=burst,
        handle_signals=True,
    )
