"""`/collections/{name}/documents`: list, ingest (JSON or uploaded files), read back and delete documents."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ragkit.core.errors import InvalidInput, PayloadTooLarge
from ragkit.core.types import Document, DocumentState
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import (
    DEPENDENCIES,
    GATED,
    CollectionPath,
    DocumentContent,
    DocumentDeleted,
    DocumentIn,
    DocumentList,
    DocumentOut,
    IngestRequest,
    IngestResponse,
    error_responses,
)
from ragkit.rag.collections import StoredDocument

TAG = "documents"
router = APIRouter()
# The two bodies ingestion takes, here and by the jobs route: JSON documents, or uploaded files.
INGEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/IngestRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                            "description": "Each file is read by its extension; one that cannot be read "
                            "fails alone (422 when none could)",
                        }
                    },
                }
            },
        },
    }
}


@router.get(
    "/collections/{name}/documents",
    response_model=DocumentList,
    dependencies=[require("read")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def list_documents(
    request: Request,
    name: CollectionPath,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    states = await services_of(request).collections.documents(name, limit=limit, offset=offset)
    docs = [_summary(s) for s in states]
    return {"collection": name, "documents": docs, "limit": limit, "offset": offset}


def _document_from(item: DocumentIn) -> Document:
    doc_id = item.id if item.id is not None else hashlib.sha256(item.text.encode()).hexdigest()[:32]
    if not str(doc_id).strip():
        raise InvalidInput("a document id must not be empty")
    return Document(
        id=str(doc_id), text=item.text, title=item.title, metadata=item.metadata, page_starts=tuple(item.page_starts)
    )


def documents_of(raw: bytes) -> list[Document]:
    """The documents of a JSON ingest body. Parsing a body of many megabytes takes a while: this
    runs in a worker thread, never on the event loop."""
    try:
        body = IngestRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(
            'send JSON {"documents": [{"text": ...}]} or multipart files; '
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        ) from exc
    return [_document_from(d) for d in body.documents]


@router.post(
    "/collections/{name}/documents",
    response_model=IngestResponse,
    dependencies=[require("write")],
    responses=error_responses(*GATED, 404, 409, 413, *DEPENDENCIES),
    openapi_extra=INGEST_BODY,
)
async def ingest(request: Request, name: CollectionPath) -> Any:
    """Ingest documents as JSON `{documents: [...]}` or upload files (multipart field `files`):
    .txt .md .html .pdf .docx .pptx .json .jsonl. Unchanged documents are skipped; changed ones replaced."""
    services = services_of(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _ingest_files(name, request)
    documents = await asyncio.to_thread(documents_of, await request.body())
    if not documents:
        raise InvalidInput("no documents given")
    limit = services.settings.max_documents_per_request
    if len(documents) > limit:
        raise PayloadTooLarge(f"{len(documents)} documents in one request; the limit is {limit}; send batches")
    report = await services.collections.ingest(name, documents)
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


@router.get(
    "/collections/{name}/documents/{doc_id:path}",
    response_model=DocumentContent,
    dependencies=[require("read")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def get_document(request: Request, doc_id: str, name: CollectionPath) -> dict[str, Any]:
    """One document as stored: its text, metadata and passages (with their pages and sections)."""
    return document_out(name, await services_of(request).collections.document(name, doc_id))


def _summary(state: DocumentState) -> dict[str, Any]:
    return DocumentOut(
        doc_id=state.doc_id,
        title=state.title,
        chunks=state.present,
        content_hash=state.content_hash,
        metadata=dict(state.metadata),
    ).model_dump()


def document_out(collection: str, found: StoredDocument) -> dict[str, Any]:
    return {
        "collection": collection,
        **_summary(found.state),
        "text": found.text,
        "complete": found.complete,
        "passages": [
            {"chunk_index": c.chunk_index, "text": c.text, "page": c.page, "page_end": c.page_end, "section": c.section}
            for c in found.chunks
        ],
    }


@router.delete(
    "/collections/{name}/documents/{doc_id:path}",
    response_model=DocumentDeleted,
    dependencies=[require("write")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def delete_document(request: Request, doc_id: str, name: CollectionPath) -> dict[str, Any]:
    """Remove one document and all its chunks."""
    removed = await services_of(request).collections.delete_document(name, doc_id)
    return {"deleted": doc_id, "chunks": removed}
