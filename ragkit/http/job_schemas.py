"""The bodies of the ingestion-job routes (`http/routes/jobs.py`), as the OpenAPI document shows them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ragkit.http.schemas import _Strict
from ragkit.rag.jobs import JOB_STATES


class PathJobRequest(_Strict):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="A file or folder on the service's machine, inside RAGKIT_INGEST_ROOTS (relative: to the "
        "first of them); needs the admin scope",
    )


class JobDocuments(BaseModel):
    total: int
    done: int = Field(description="ingested + skipped + failed")
    pending: int
    ingested: int
    skipped: int = Field(description="unchanged since they were last ingested (same content hash)")
    failed: int


class JobError(BaseModel):
    doc_id: str = Field(description="The document's id, or the file's name when it could not be read")
    reason: str


class JobStatus(BaseModel):
    id: str
    collection: str
    state: str = Field(description=" → ".join(JOB_STATES[:3]) + ", or failed, or cancelled")
    documents: JobDocuments
    chunks: int = Field(description="Chunks written so far")
    documents_per_s: float
    chunks_per_s: float
    eta_s: float | None = Field(description="Seconds left at the current rate, while running")
    error: str | None = Field(description="Why the whole job failed (the collection was deleted, ...)")
    waiting: str | None = Field(description="Why a running job is waiting: a dependency is down; it retries")
    cancel_requested: bool
    errors: list[JobError] = Field(description="The documents that failed, with their reasons (the first 100)")
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


class JobList(BaseModel):
    jobs: list[JobStatus]
