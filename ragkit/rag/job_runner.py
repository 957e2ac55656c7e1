"""Runs the ingestion jobs of the journal, one at a time, in the service's own event loop.

A job's pending documents are ingested in batches through the same idempotent ingestion as the
documents route; each batch's outcomes are recorded before the next starts, which is where a
cancel takes effect (no document is left half written). What may happen to a batch:

* it is written: each document is recorded ingested or skipped (unchanged);
* a document the dependency refuses (an input over the model's context): the batch is retried a
  document at a time, so only that document fails, with its reason (what ingestion would refuse
  of the documents themselves is refused at submission, 422);
* a dependency is down: the job waits and retries; an open breaker is waited out without
  counting, so an outage pauses the job instead of failing every remaining document. A document
  that still fails after ``max_attempts`` tries with the breaker closed is recorded as failed;
* the collection is gone, or its embedder is not the service's: the job fails, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from ragkit.core.errors import BreakerOpen, CallerError, DependencyError, EmbedderMismatch, NotFound
from ragkit.core.metrics import Metrics
from ragkit.core.types import Document
from ragkit.rag.collections import Collections
from ragkit.rag.ingest import unique_documents
from ragkit.rag.jobs import (
    CANCELLED,
    DOCUMENT_FAILED,
    DONE,
    FAILED,
    INGESTED,
    QUEUED,
    RUNNING,
    SKIPPED,
    Job,
    JobJournal,
    Outcome,
)

log = logging.getLogger("ragkit.jobs")
FIRST_RETRY_S = 1.0  # after a dependency's failure; doubled at each further one
MAX_WAIT_S = 30.0  # the longest pause between two tries while a dependency is down


class JobRunner:
    def __init__(
        self,
        journal: JobJournal,
        collections: Collections,
        metrics: Metrics,
        *,
        batch_documents: int = 32,
        max_attempts: int = 3,
    ) -> None:
        self.journal = journal
        self._collections = collections
        self._metrics = metrics
        self._batch_documents = batch_documents
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()  # a job was submitted or cancelled
        self.changed = asyncio.Condition()  # notified after every recorded change (for followers)

    # -- what the routes call -----------------------------------------------------------------
    async def submit(
        self, collection: str, documents: Sequence[Document], failures: Sequence[tuple[str, str]] = ()
    ) -> Job:
        await self._collections.stats(collection)  # an unknown collection is a 404 now, not a failed job
        await asyncio.to_thread(unique_documents, documents)  # and so is what ingestion would refuse
        job = await asyncio.to_thread(self.journal.submit, collection, documents, failures)
        for _ in failures:
            self._metrics.job_documents.labels(DOCUMENT_FAILED).inc()
            self._metrics.job_failures.labels("unreadable").inc()
        await self._changed()
        return job

    async def cancel(self, job_id: str) -> Job:
        job = await asyncio.to_thread(self.journal.request_cancel, job_id)
        await self._changed()
        return job

    async def _changed(self) -> None:
        self._wake.set()
        await self._count_jobs()
        async with self.changed:
            self.changed.notify_all()

    async def _count_jobs(self) -> None:
        for state in (QUEUED, RUNNING):
            self._metrics.jobs.labels(state).set(await asyncio.to_thread(self.journal.count, state))

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: resume what a killed process left running, then take jobs in order."""
        resumed = await asyncio.to_thread(self.journal.requeue_interrupted)
        if resumed:
            log.info("resuming %d interrupted ingestion job(s)", resumed)
        while True:
            self._wake.clear()
            job = await asyncio.to_thread(self.journal.next_job)
            if job is None:
                await self._count_jobs()
                await self._wake.wait()
                continue
            try:
                await self._run(job)
            except Exception as exc:  # a bug must not stall every later job behind this one
                log.exception("job %s broke off", job.id)
                await self._finish(job, FAILED, f"internal error ({type(exc).__name__}); see the service log")

    async def _run(self, job: Job) -> None:
        if job.started_at is None:
            self._metrics.job_queue_wait.observe(max(time.time() - job.created_at, 0.0))
        if not await asyncio.to_thread(self.journal.start, job.id):
            return  # cancelled in the meantime
        await self._changed()
        started, documents, chunks = time.perf_counter(), 0, 0
        attempts, batch_size = 0, self._batch_documents
        while True:
            current = await asyncio.to_thread(self.journal.get, job.id)
            if current.cancel_requested:
                return await self._finish(job, CANCELLED)
            batch = await asyncio.to_thread(self.journal.pending, job.id, batch_size)
            if not batch:
                return await self._finish(job, DONE)
            try:
                outcomes, written = await self._ingest(job.collection, batch)
            except (NotFound, EmbedderMismatch) as exc:
                return await self._finish(job, FAILED, exc.message)
            except DependencyError as exc:
                if isinstance(exc, BreakerOpen):  # waited out, not counted: the outage is known
                    await self._wait(job, exc, exc.retry_after)
                    continue
                attempts += 1
                if attempts < self._max_attempts:
                    await self._wait(job, exc, FIRST_RETRY_S * 2 ** (attempts - 1))
                    continue
                if len(batch) > 1:  # find out whether one document is the trouble
                    attempts, batch_size = 0, 1
                    continue
                outcomes, written = [Outcome(batch[0][0], DOCUMENT_FAILED, _reason(exc, attempts))], 0
                self._metrics.job_failures.labels(exc.code).inc()
            attempts, batch_size = 0, self._batch_documents
            documents, chunks = documents + len(outcomes), chunks + written
            elapsed = max(time.perf_counter() - started, 1e-6)
            rates = (documents / elapsed, chunks / elapsed)
            await asyncio.to_thread(self.journal.record, job.id, outcomes, written, rates)
            for outcome in outcomes:
                self._metrics.job_documents.labels(outcome.state).inc()
            await self._changed()

    async def _ingest(self, collection: str, batch: list[tuple[int, Document]]) -> tuple[list[Outcome], int]:
        try:
            report = await self._collections.ingest(collection, [doc for _, doc in batch], optimize=False)
        except (NotFound, EmbedderMismatch):
            raise
        except CallerError as exc:
            if len(batch) == 1:
                self._metrics.job_failures.labels(exc.code).inc()
                return [Outcome(batch[0][0], DOCUMENT_FAILED, exc.message)], 0
            outcomes, written = [], 0
            for one in batch:  # one at a time: only the document at fault fails
                single, chunks = await self._ingest(collection, [one])
                outcomes += single
                written += chunks
            return outcomes, written
        ingested = set(report.document_ids)
        return [Outcome(seq, INGESTED if doc.id in ingested else SKIPPED) for seq, doc in batch], report.chunks

    async def _wait(self, job: Job, exc: DependencyError, pause: float) -> None:
        pause = min(max(pause, 0.1), MAX_WAIT_S)
        reason = f"{exc.message}; retrying in {pause:.1f} s"
        log.warning("job %s waits: %s", job.id, reason)
        await asyncio.to_thread(self.journal.wait_for, job.id, reason)
        await self._changed()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):  # a cancel (or a new job) wakes the job early
            await asyncio.wait_for(self._wake.wait(), pause)

    async def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        await asyncio.to_thread(self.journal.finish, job.id, state, error)
        if state != FAILED:
            self._collections.optimize(job.collection)
        log.info("job %s %s%s", job.id, state, f": {error}" if error else "")
        await self._changed()


def _reason(exc: DependencyError, attempts: int) -> str:
    return f"{exc.message} (after {attempts} attempts)"
