"""Ingestion as jobs: submit (202 and a `Location`), follow (status, or server-sent events),
list and cancel. The job runner (`rag/job_runner.py`) does the work in the background; the
journal (`rag/jobs.py`) keeps it across restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ragkit.core.config import Settings
from ragkit.core.errors import Forbidden, InvalidInput, PayloadTooLarge
from ragkit.core.types import Document
from ragkit.http.auth import Principal
from ragkit.http.deps import require, services_of
from ragkit.http.job_schemas import JobList, JobStatus, PathJobRequest
from ragkit.http.routes.documents import INGEST_BODY, documents_of
from ragkit.http.routes.rag import sse_event
from ragkit.http.schemas import DEPENDENCIES, GATED, CollectionPath, error_responses
from ragkit.rag.loaders import allowed_path, load_bytes, load_path

TAG = "jobs"
router = APIRouter()
PATH_BODY_BYTES = 8192
# The documents route's bodies, and a server-side path.
JOB_BODY: dict[str, Any] = {
    "requestBody": {
        **INGEST_BODY["requestBody"],
        "content": {
            **INGEST_BODY["requestBody"]["content"],
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/IngestRequest"},
                        {"$ref": "#/components/schemas/PathJobRequest"},
                    ]
                }
            },
        },
    }
}
KEEPALIVE_S = 1.0  # an event stream sends the status at least this often, so rates and ETA stay live


def _location(request: Request, job_id: str) -> str:
    return str(request.url_for("get_job", job_id=job_id).path)


@router.post(
    "/collections/{name}/jobs",
    status_code=202,
    response_model=JobStatus,
    responses=error_responses(*GATED, 404, 413, *DEPENDENCIES),
    openapi_extra=JOB_BODY,
)
async def submit_job(request: Request, name: CollectionPath, principal: Annotated[Principal, require("write")]) -> Any:
    """Ingest in the background: the same bodies as the documents route (JSON documents or
    multipart files), or `{"path": ...}`, a file or folder on the service's machine inside
    RAGKIT_INGEST_ROOTS (admin scope). Answers 202 with the job, its `Location` to follow."""
    services = services_of(request)
    limit = services.settings.max_documents_per_request
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        documents, failures = await _files_of(request)
    else:
        raw = await request.body()
        server_path = _server_path(raw)
        if server_path is not None:
            if "admin" not in principal.scopes:  # it reads the service's own disk
                raise Forbidden("a server-side path needs the 'admin' scope", required_scope="admin")
            documents, failures = await asyncio.to_thread(_path_documents, services.settings, server_path)
            limit = services.settings.max_job_documents
        else:
            documents, failures = await asyncio.to_thread(documents_of, raw), []
    if not documents and not failures:
        raise InvalidInput("no documents given")
    if len(documents) > limit:
        raise PayloadTooLarge(f"{len(documents)} documents in one job; the limit is {limit}; send several jobs")
    job = await services.jobs.submit(name, documents, failures)
    return JSONResponse(job.as_dict(), status_code=202, headers={"Location": _location(request, job.id)})


def _server_path(raw: bytes) -> str | None:
    """The path of a `{"path": ...}` body; None for any other body (documents)."""
    if len(raw) > PATH_BODY_BYTES:  # a path request is small; a documents body is parsed once, later
        return None
    try:
        return PathJobRequest.model_validate_json(raw).path
    except ValidationError:
        return None


def _path_documents(settings: Settings, raw: str) -> tuple[list[Document], list[tuple[str, str]]]:
    """A file or folder on this machine, if an admin allowed it; files that cannot be read (and
    symbolic links, which could lead outside the allowed folders) are the job's failures."""
    path = allowed_path(raw, settings.ingest_root_paths)
    skipped: list[tuple[str, str]] = []
    documents = list(load_path(path, skipped, follow_links=False))
    return documents, skipped


async def _files_of(request: Request) -> tuple[list[Document], list[tuple[str, str]]]:
    """The documents of the uploaded files; a file that cannot be read (an unsupported type, a
    broken PDF) becomes a failed entry of the job, with its reason, and the others go on."""
    form = await request.form()
    files = [(f.filename or "upload", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
    if not files:
        raise InvalidInput("no files in the upload; send them in the multipart field 'files'")
    documents: list[Document] = []
    failures: list[tuple[str, str]] = []
    seen: set[str] = set()
    for filename, content in files:
        try:
            loaded = await asyncio.to_thread(load_bytes, filename, content)
        except InvalidInput as exc:
            failures.append((filename, exc.message))
            continue
        if not loaded:
            failures.append((filename, f"{filename} holds no text"))
        for doc in loaded:
            if doc.id in seen:
                failures.append((doc.id, f"document id '{doc.id}' appears more than once in this job"))
                continue
            seen.add(doc.id)
            documents.append(doc)
    return documents, failures


@router.get("/jobs", response_model=JobList, dependencies=[require("read")], responses=error_responses(*GATED))
async def list_jobs(
    request: Request,
    collection: str | None = Query(None, max_length=255, description="Only the jobs of this collection"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """The newest jobs first."""
    jobs = await asyncio.to_thread(services_of(request).jobs.journal.list, collection, limit)
    return {"jobs": [job.as_dict() for job in jobs]}


@router.get(
    "/jobs/{job_id}", response_model=JobStatus, dependencies=[require("read")], responses=error_responses(*GATED, 404)
)
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """A job's state, counts, rates, ETA and the reasons of its failed documents."""
    return (await asyncio.to_thread(services_of(request).jobs.journal.get, job_id)).as_dict()


@router.delete(
    "/jobs/{job_id}",
    response_model=JobStatus,
    dependencies=[require("write")],
    responses=error_responses(*GATED, 404, 409),
)
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel a job: a queued one at once, a running one when the batch it is writing is done
    (what was written stays; no document is left half written). 409 when it has finished."""
    return (await services_of(request).jobs.cancel(job_id)).as_dict()


@router.get(
    "/jobs/{job_id}/events",
    dependencies=[require("read")],
    responses={200: {"content": {"text/event-stream": {}}, "description": "`progress` events, then `end`"}}
    | error_responses(*GATED, 404),
)
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """The job's status as server-sent events: a `progress` event at each change (and at least
    every second), and `end` with the final status when it finishes."""
    runner = services_of(request).jobs
    first = await asyncio.to_thread(runner.journal.get, job_id)  # a 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        job = first
        while not job.finished:
            yield sse_event("progress", job.as_dict())
            async with runner.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runner.changed.wait(), KEEPALIVE_S)
            job = await asyncio.to_thread(runner.journal.get, job_id)
        yield sse_event("end", job.as_dict())

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
