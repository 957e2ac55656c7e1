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

With a queue (`RAGKIT_JOB_QUEUE=redis`), a batch's changed documents go to `ragkit worker`
processes in parts, all queued at once so several workers share the job, and the vectors that
come back are written here: the service stays the store's one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence

from ragkit.core.batches import BatchQueue, PreparedDocument
from ragkit.core.errors import BreakerOpen, CallerError, DependencyError, EmbedderMismatch, NotFound
from ragkit.core.metrics import Metrics
from ragkit.core.types import CollectionSpec, Document
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


class _Cancelled(Exception):
    """A cancel that arrived while the job waited for workers."""


WORKER_BATCH = 16  # documents per batch a worker takes
WORKER_BATCHES_IN_FLIGHT = 4  # batches queued at once, so that several workers share a job
WORKER_SILENCE_S = 10.0  # without a result for this long, the job says it waits for workers
NO_WORKER = (
    "waiting for workers: a batch queued on Redis has no result yet; is a `ragkit worker` running "
    "with this service's REDIS_URL?"
)
WORKER_REFUSALS = 3  # times a batch is queued again after a worker refused it (another embedder)
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
        queue: BatchQueue | None = None,
    ) -> None:
        """``queue``: hand the chunking and embedding to `ragkit worker` processes (jobs on Redis)."""
        self.journal = journal
        self._collections = collections
        self._metrics = metrics
        self._batch_documents = batch_documents
        self._max_attempts = max_attempts
        self._queue = queue
        self._queued: Counter[str] = Counter()  # times each batch was queued for workers
        self._wake = asyncio.Event()  # a job was submitted or cancelled
        self._lost: set[str] = set()  # jobs another process took over from this one
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
        counts = await asyncio.to_thread(self.journal.counts)
        for state in (QUEUED, RUNNING):
            self._metrics.jobs.labels(state).set(counts.get(state, 0))

    async def close(self) -> None:
        self.journal.close()
        if self._queue is not None:
            await self._queue.close()

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
                # Woken by a job submitted here, or after a while to take over what another
                # process sharing the journal left behind when it died.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.journal.lease_s / 2)
                if not self._wake.is_set():
                    await asyncio.to_thread(self.journal.requeue_interrupted)
                continue
            lease = asyncio.create_task(self._hold(job.id))
            try:
                await self._run(job)
            except Exception as exc:  # a bug must not stall every later job behind this one
                log.exception("job %s broke off", job.id)
                await self._finish(job, FAILED, f"internal error ({type(exc).__name__}); see the service log")
            finally:
                lease.cancel()

    async def _hold(self, job_id: str) -> None:
        """Renew this process's lease on the job it runs, so no other process takes it over."""
        while True:
            await asyncio.sleep(self.journal.lease_s / 3)
            if not await asyncio.to_thread(self.journal.renew, job_id):
                log.warning("job %s was taken over by another process (its lease ran out)", job_id)
                self._lost.add(job_id)  # stopped at the end of its batch: the new owner goes on
                return

    async def _run(self, job: Job) -> None:
        if job.started_at is None:
            self._metrics.job_queue_wait.observe(max(time.time() - job.created_at, 0.0))
        if not await asyncio.to_thread(self.journal.start, job.id):
            return  # cancelled in the meantime
        await self._changed()
        started, documents, chunks = time.perf_counter(), 0, 0
        group = self._batch_documents if self._queue is None else WORKER_BATCH * WORKER_BATCHES_IN_FLIGHT
        attempts, batch_size = 0, group
        while True:
            if job.id in self._lost:
                return
            if await asyncio.to_thread(self.journal.cancel_requested, job.id):
                return await self._finish(job, CANCELLED)
            batch = await asyncio.to_thread(self.journal.pending, job.id, batch_size)
            if not batch:
                return await self._finish(job, DONE)
            try:
                outcomes, written = await self._ingest(job.id, job.collection, batch)
            except _Cancelled:
                return await self._finish(job, CANCELLED)
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
            attempts, batch_size = 0, group
            documents, chunks = documents + len(outcomes), chunks + written
            elapsed = max(time.perf_counter() - started, 1e-6)
            rates = (documents / elapsed, chunks / elapsed)
            await asyncio.to_thread(self.journal.record, job.id, outcomes, written, rates)
            for outcome in outcomes:
                self._metrics.job_documents.labels(outcome.state).inc()
            await self._changed()

    async def _ingest(
        self, job_id: str, collection: str, batch: list[tuple[int, Document]]
    ) -> tuple[list[Outcome], int]:
        if self._queue is not None and len(batch) > 1:
            spec = await self._collections.spec(collection)
            # BM25 needs the collection's mean chunk length, which its first batch sets: that one
            # is ingested here, and workers get the rest.
            if spec.bm25_avg_len > 0:
                return await self._ingest_by_workers(job_id, spec, batch)
        return await self._ingest_here(collection, batch)

    async def _ingest_by_workers(
        self, job_id: str, spec: CollectionSpec, batch: list[tuple[int, Document]]
    ) -> tuple[list[Outcome], int]:
        """Unchanged documents are skipped here; the rest go to the workers in batches, all at
        once (so several workers share the job), and are written here as their vectors come back."""
        assert self._queue is not None
        seq_of = {doc.id: seq for seq, doc in batch}
        changed, unchanged = await self._collections.changed(spec.name, [doc for _, doc in batch])
        outcomes = [Outcome(seq_of[doc_id], SKIPPED) for doc_id in unchanged]
        parts = [changed[i : i + WORKER_BATCH] for i in range(0, len(changed), WORKER_BATCH)]
        pending = [asyncio.ensure_future(self._prepared_by_a_worker(job_id, spec, part)) for part in parts]
        written = 0
        try:
            # Each part is written as soon as its vectors are back, while the workers embed the rest.
            for next_done in asyncio.as_completed(pending):
                prepared = await next_done
                report = await self._collections.write_prepared(spec.name, prepared)
                outcomes += [Outcome(seq_of[item.document.id], INGESTED) for item in prepared]
                written += report.chunks
        finally:
            for task in pending:
                task.cancel()
        return sorted(outcomes, key=lambda o: o.seq), written

    async def _prepared_by_a_worker(
        self, job_id: str, spec: CollectionSpec, documents: list[Document]
    ) -> list[PreparedDocument]:
        """A worker whose embedder is not the collection's refuses the batch: it is queued again
        (so another worker may take it) before the refusal stands. Each queuing has its own key,
        numbered from 0 in this process: after a restart the first key is that of the batch
        queued before it, whose result, if a worker finished it, is taken as it is."""
        assert self._queue is not None
        base = f"{job_id}:{documents[0].id}:{len(documents)}"
        for refusal in range(WORKER_REFUSALS):
            key = f"{base}:{self._queued[base]}"
            self._queued[base] += 1
            try:
                return await self._worker_result(job_id, await self._queue.submit(key, spec, documents))
            except EmbedderMismatch:
                if refusal == WORKER_REFUSALS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _worker_result(self, job_id: str, ticket: str) -> list[PreparedDocument]:
        """The batch's result; meanwhile the job says it waits for workers when none answers for
        a while, and a cancel stops the wait (the batch may still be embedded; it is not written)."""
        assert self._queue is not None
        result = asyncio.ensure_future(self._queue.result(ticket))
        try:
            while True:
                done, _ = await asyncio.wait({result}, timeout=WORKER_SILENCE_S)
                if done:
                    return result.result()
                if await asyncio.to_thread(self.journal.cancel_requested, job_id):
                    raise _Cancelled
                await asyncio.to_thread(self.journal.wait_for, job_id, NO_WORKER)
                await self._changed()
        finally:
            result.cancel()

    async def _ingest_here(self, collection: str, batch: list[tuple[int, Document]]) -> tuple[list[Outcome], int]:
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
                single, chunks = await self._ingest_here(collection, [one])
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
