"""The ingestion-job routes of `RagkitClient` (a mixin: it sends through the client's own
plumbing, so errors are the same `ServiceError` / `ServiceUnreachable`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ragkit.core.config import DEFAULT_MAX_REQUEST_BYTES

# What one job's request may hold: under the service's default limits (2000 documents, 32 MiB).
JOB_DOCUMENTS = 1000
JOB_BYTES = DEFAULT_MAX_REQUEST_BYTES // 2


def job_batches(documents: Sequence[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """The documents cut into requests under the service's default limits, in order."""
    batch: list[Mapping[str, Any]] = []
    size = 0
    for doc in documents:
        doc_size = len(json.dumps(doc)) + 2
        if batch and (len(batch) >= JOB_DOCUMENTS or size + doc_size > JOB_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        yield batch


class JobRoutes:
    _request: Callable[..., Any]
    _events: Callable[..., Iterator[tuple[str, dict[str, Any]]]]

    def submit_job(
        self,
        collection: str,
        documents: Sequence[Mapping[str, Any]] = (),
        *,
        files: Sequence[tuple[str, bytes]] = (),
    ) -> dict[str, Any]:
        """Queue documents (as dicts, like `ingest`) or files ((name, content) pairs) for
        ingestion in the background; the answer is the job, queued."""
        path = f"/api/v1/rag/collections/{quote(collection, safe='')}/jobs"
        if files:
            return self._request("POST", path, files=[("files", (name, content)) for name, content in files])
        return self._request("POST", path, json={"documents": list(documents)})

    def submit_jobs(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Queue any number of documents: one job per request that fits the service's limits."""
        return [self.submit_job(collection, batch) for batch in job_batches(documents)]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/rag/jobs/{quote(job_id, safe='')}")

    def jobs(self, collection: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"collection": collection} if collection else {})}
        return self._request("GET", "/api/v1/rag/jobs", params=params)["jobs"]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/rag/jobs/{quote(job_id, safe='')}")

    def follow_jobs(
        self, jobs: Sequence[Mapping[str, Any]], on_update: Callable[[int, int, dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Follow jobs one after the other (the service runs them in submission order) to their
        ends; ``on_update(documents done, chunks written, status)`` over all of them at each
        report, at least every second. The final statuses, in order."""
        finals: list[dict[str, Any]] = []
        done_before = chunks_before = 0
        for job in jobs:
            status = dict(job)
            for status in self.follow_job(job["id"]):
                if on_update is not None:
                    on_update(done_before + status["documents"]["done"], chunks_before + status["chunks"], status)
            done_before += status["documents"]["total"]
            chunks_before += status["chunks"]
            finals.append(status)
        return finals

    def follow_job(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's status at each change, as the service reports it (server-sent events),
        until it has finished; the last one yielded is the final status."""
        for event, data in self._events("GET", f"/api/v1/rag/jobs/{quote(job_id, safe='')}/events"):
            yield data
            if event == "end":
                return
