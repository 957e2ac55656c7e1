"""`/collections/{name}/documents`: list, ingest (JSON or uploaded files) and delete documents."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ragkit.core.errors import InvalidInput, PayloadTooLarge
from ragkit.core.types import Document
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import DocumentIn, DocumentOut, IngestRequest, IngestResponse

TAG = "documents"
router = APIRouter()


@router.get("/collections/{name}/documents", dependencies=[require("read")])
async def list_documents(
    name: str, request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
) -> dict[str, Any]:
    states = await services_of(request).collections.documents(name, limit=limit, offset=offset)
    docs = [
        DocumentOut(
            doc_id=s.doc_id, title=s.title, chunks=s.present, content_hash=s.content_hash, metadata=dict(s.metadata)
        ).model_dump()
        for s in states
    ]
    return {"collection": name, "documents": docs, "limit": limit, "offset": offset}


def _document_from(item: DocumentIn) -> Document:
    doc_id = item.id if item.id is not None else hashlib.sha256(item.text.encode()).hexdigest()[:32]
    if not str(doc_id).strip():
        raise InvalidInput("a document id must not be empty")
    return Document(id=str(doc_id), text=item.text, title=item.title, metadata=item.metadata)


@router.post(
    "/collections/{name}/documents",
    response_model=IngestResponse,
    dependencies=[require("write")],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": IngestRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }
                },
            }
        }
    },
)
async def ingest(name: str, request: Request) -> Any:
    """Ingest documents as JSON `{documents: [...]}` or upload files (multipart field `files`):
    .txt .md .html .pdf .json .jsonl. Unchanged documents are skipped; changed ones replaced."""
    services = services_of(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _ingest_files(name, request)
    try:
        body = IngestRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidInput(
            'send JSON {"documents": [{"text": ...}]} or multipart files; '
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        ) from exc
    if not body.documents:
        raise InvalidInput("no documents given")
    limit = services.settings.max_documents_per_request
    if len(body.documents) > limit:
        raise PayloadTooLarge(f"{len(body.documents)} documents in one request; the limit is {limit}; send batches")
    report = await services.collections.ingest(name, [_document_from(d) for d in body.documents])
    return report.as_dict()


async def _ingest_files(name: str, request: Request) -> Any:
    form = await request.form()
    files = [(f.filename or "upload", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
    upload = await services_of(request).collections.ingest_files(name, files)
    rows = [
        {"filename": f.filename, "status": "ok", "documents": f.documents, **f.report.as_dict()}
        if f.report is not None
        else {"filename": f.filename, "status": "failed", "error": f.error}
        for f in upload.files
    ]
    if upload.all_failed:
        return JSONResponse(
            status_code=422,
            content={"error": {"code": "invalid_input", "message": "no file could be ingested", "files": rows}},
        )
    return {**upload.totals(), "files": rows}


@router.delete("/collections/{name}/documents/{doc_id:path}", dependencies=[require("write")])
async def delete_document(name: str, doc_id: str, request: Request) -> dict[str, Any]:
    """Remove one document and all its chunks."""
    removed = await services_of(request).collections.delete_document(name, doc_id)
    return {"deleted": doc_id, "chunks": removed}
