"""The `/api/v1/rag` routes (also served, deprecated, under `/api/rag`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ragkit.auth import Principal
from ragkit.chunking import validate_chunking
from ragkit.errors import InvalidInput, PayloadTooLarge, RagkitError
from ragkit.ingest import learn_dimension
from ragkit.loaders import load_bytes
from ragkit.pipeline import hit_to_dict
from ragkit.schemas import (
    CollectionOut,
    CreateCollectionRequest,
    DocumentOut,
    IngestRequest,
    IngestResponse,
    Mode,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
)
from ragkit.services import Services
from ragkit.stores._common import validate_collection_name
from ragkit.types import CollectionSpec, CollectionStats, Document


def services_of(request: Request) -> Services:
    return request.app.state.services


def require(scope: str):  # noqa: ANN201 - a FastAPI dependency factory
    async def dependency(request: Request) -> Principal:
        return await request.app.state.gate.admit(request, scope)

    return Depends(dependency)


router = APIRouter()


def _collection_out(stats: CollectionStats) -> dict[str, Any]:
    spec = stats.spec
    return CollectionOut(
        name=spec.name,
        embedder=spec.embedder,
        dimension=spec.dimension,
        chunk_size=spec.chunk_size,
        chunk_overlap=spec.chunk_overlap,
        created_at=spec.created_at,
        documents=stats.documents,
        chunks=stats.chunks,
    ).model_dump()


def _search_response(result) -> dict[str, Any]:  # noqa: ANN001 - pipeline.SearchResult
    return {
        "query": result.query,
        "collection": result.collection,
        "results": [hit_to_dict(h) for h in result.hits],
        "mode_used": result.mode_used,
        "degraded": result.degraded,
        "reasons": result.reasons,
        "timings_ms": result.timings_ms,
    }


@router.post("/search", response_model=SearchResponse, dependencies=[require("read")])
async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
    """Search a collection in dense, sparse (BM25) or hybrid (RRF of both) mode."""
    result = await services_of(request).pipeline.search(
        body.collection, body.query, top_k=body.top_k, mode=body.mode, filters=body.filters
    )
    return _search_response(result)


@router.get("/search", response_model=SearchResponse, dependencies=[require("read")])
async def search_get(
    request: Request,
    query: str = Query(..., description="Text to search for"),
    collection: str = Query(...),
    top_k: int = 5,
    mode: Mode = "hybrid",
) -> dict[str, Any]:
    """The same search as POST, for quick use from a browser or curl (no filters)."""
    result = await services_of(request).pipeline.search(collection, query, top_k=top_k, mode=mode)
    return _search_response(result)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.post(
    "/query",
    response_model=QueryResponse,
    dependencies=[require("read")],
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def query(body: QueryRequest, request: Request):  # noqa: ANN201 - JSON or a stream
    """Answer a question from a collection, citing the passages used as [n]."""
    pipeline = services_of(request).pipeline
    if not body.stream:
        result = await pipeline.answer(
            body.collection, body.question, top_k=body.top_k, mode=body.mode, filters=body.filters
        )
        return {**asdict(result), "sources": [hit_to_dict(h) for h in result.sources]}

    events = pipeline.answer_stream(
        body.collection, body.question, top_k=body.top_k, mode=body.mode, filters=body.filters
    )
    # Retrieval happens before the first event: its errors (404, 422, 503) are still plain
    # HTTP errors, not a stream that starts and then fails.
    first = await anext(events)

    async def stream() -> AsyncIterator[bytes]:
        yield _sse(*first)
        try:
            async for event in events:
                yield _sse(*event)
        except RagkitError as exc:
            yield _sse("error", {"error": exc.to_dict()})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/collections", dependencies=[require("read")])
async def list_collections(request: Request) -> dict[str, Any]:
    """Every collection with its size and how it was built."""
    services = services_of(request)
    pipeline = services.pipeline
    specs: list[CollectionSpec] = await pipeline.store_call("qdrant_search", services.store.list_collections)
    out = []
    for spec in specs:
        stats = await pipeline.store_call("qdrant_search", services.store.stats, spec.name)
        out.append(_collection_out(stats))
    return {"collections": out}


@router.post("/collections", status_code=201, response_model=CollectionOut, dependencies=[require("write")])
async def create_collection(body: CreateCollectionRequest, request: Request) -> dict[str, Any]:
    """Create an empty collection bound to the service's current embedder."""
    services = services_of(request)
    settings = services.settings
    validate_collection_name(body.name)
    chunk_size = body.chunk_size if body.chunk_size is not None else settings.chunk_size
    chunk_overlap = (
        body.chunk_overlap if body.chunk_overlap is not None else min(settings.chunk_overlap, chunk_size // 2)
    )
    validate_chunking(chunk_size, chunk_overlap)
    embedder = services.embedder
    await learn_dimension(embedder, services.breakers)
    spec = CollectionSpec(
        name=body.name,
        embedder=embedder.name,
        dimension=embedder.dimension,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    await services.pipeline.store_call("qdrant_upsert", services.store.create_collection, spec)
    return _collection_out(CollectionStats(spec=spec, documents=0, chunks=0))


@router.get("/collections/{name}", response_model=CollectionOut, dependencies=[require("read")])
async def get_collection(name: str, request: Request) -> dict[str, Any]:
    services = services_of(request)
    stats = await services.pipeline.store_call("qdrant_search", services.store.stats, name)
    return _collection_out(stats)


@router.delete("/collections/{name}", dependencies=[require("admin")])
async def delete_collection(name: str, request: Request) -> dict[str, Any]:
    """Drop a collection and everything in it."""
    services = services_of(request)
    await services.pipeline.store_call("qdrant_upsert", services.store.delete_collection, name)
    return {"deleted": name}


@router.get("/collections/{name}/documents", dependencies=[require("read")])
async def list_documents(
    name: str, request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
) -> dict[str, Any]:
    services = services_of(request)
    states = await services.pipeline.store_call(
        "qdrant_search", services.store.list_documents, name, limit=limit, offset=offset
    )
    docs = [
        DocumentOut(
            doc_id=s.doc_id, title=s.title, chunks=s.present, content_hash=s.content_hash, metadata=dict(s.metadata)
        ).model_dump()
        for s in states
    ]
    return {"collection": name, "documents": docs, "limit": limit, "offset": offset}


def _document_from(item: Any) -> Document:
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
async def ingest(name: str, request: Request) -> dict[str, Any]:
    """Ingest documents as JSON `{documents: [...]}` or upload files (multipart field `files`):
    .txt .md .html .pdf .json .jsonl. Unchanged documents are skipped; changed ones replaced."""
    services = services_of(request)
    limit = services.settings.max_documents_per_request
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _ingest_files(name, request, services)
    try:
        body = IngestRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidInput(
            'send JSON {"documents": [{"text": ...}]} or multipart files; '
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        ) from exc
    if not body.documents:
        raise InvalidInput("no documents given")
    if len(body.documents) > limit:
        raise PayloadTooLarge(f"{len(body.documents)} documents in one request; the limit is {limit}; send batches")
    documents = [_document_from(d) for d in body.documents]
    report = await services.ingestor.ingest(name, documents)
    request.app.state.optimizer.schedule(name)
    return report.as_dict()


async def _ingest_files(name: str, request: Request, services: Services) -> dict[str, Any]:
    form = await request.form()
    uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
    if not uploads:
        raise InvalidInput("no files in the upload; send them in the multipart field 'files'")
    # The collection must exist before any file is read (404 beats a list of per-file errors).
    await services.pipeline.store_call("qdrant_search", services.store.get_collection, name)
    totals = {"ingested": 0, "skipped_unchanged": 0, "chunks": 0, "seconds": 0.0}
    files = []
    for upload in uploads:
        filename = upload.filename or "upload"
        try:
            documents = load_bytes(filename, await upload.read())
            if not documents:
                raise InvalidInput(f"{filename} holds no text")
            report = await services.ingestor.ingest(name, documents)
        except RagkitError as exc:
            if exc.status >= 500:
                raise  # a dependency outage is not this file's fault: fail the request
            files.append({"filename": filename, "status": "failed", "error": exc.message})
            continue
        result = report.as_dict()
        files.append({"filename": filename, "status": "ok", "documents": len(documents), **result})
        for key in totals:
            totals[key] += result[key]
    if all(f["status"] == "failed" for f in files):
        return JSONResponse(
            status_code=422,
            content={"error": {"code": "invalid_input", "message": "no file could be ingested", "files": files}},
        )
    request.app.state.optimizer.schedule(name)
    return {**totals, "files": files}


@router.delete("/collections/{name}/documents/{doc_id:path}", dependencies=[require("write")])
async def delete_document(name: str, doc_id: str, request: Request) -> dict[str, Any]:
    """Remove one document and all its chunks."""
    services = services_of(request)
    removed = await services.pipeline.store_call("qdrant_upsert", services.store.delete_document, name, doc_id)
    return {"deleted": doc_id, "chunks": removed}
