"""Search and answers: `/search` (POST and GET) and `/query` (JSON or server-sent events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from ragkit.core.errors import RagkitError
from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K, MAX_TOP_K, AnswerResult, SearchResult, hit_to_dict
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import (
    DEPENDENCIES,
    GATED,
    NOT_BLANK_PATTERN,
    QUERY_EVENTS_SCHEMA,
    CollectionQuery,
    Mode,
    QueryRequest,
    QueryResponse,
    SearchRequest,
    SearchResponse,
    error_responses,
)
from ragkit.rag.conversation import Turn

TAG = "rag"
router = APIRouter()


def search_response(result: SearchResult) -> dict[str, Any]:
    return {
        "query": result.query,
        "collection": result.collection,
        "results": [hit_to_dict(h) for h in result.hits],
        "mode_used": result.mode_used,
        "degraded": result.degraded,
        "reasons": list(result.reasons),
        "timings_ms": dict(result.timings_ms),
    }


def answer_response(result: AnswerResult) -> dict[str, Any]:
    # The sources are left out of asdict, which would deep-copy every one of them for nothing.
    return {**asdict(replace(result, sources=())), "sources": [hit_to_dict(h) for h in result.sources]}


_SEARCH_ERRORS = error_responses(*GATED, 404, 409, 413, *DEPENDENCIES)


@router.post("/search", response_model=SearchResponse, dependencies=[require("read")], responses=_SEARCH_ERRORS)
async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
    """Search a collection in dense, sparse (BM25) or hybrid (RRF of both) mode."""
    result = await services_of(request).pipeline.search(
        body.collection, body.query, top_k=body.top_k, mode=body.mode, filters=body.filters
    )
    return search_response(result)


@router.get(
    "/search",
    response_model=SearchResponse,
    dependencies=[require("read")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def search_get(
    request: Request,
    collection: CollectionQuery,
    query: str = Query(
        ..., min_length=1, description="Text to search for", json_schema_extra={"pattern": NOT_BLANK_PATTERN}
    ),
    top_k: int = Query(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K),
    mode: Mode = DEFAULT_MODE,
) -> dict[str, Any]:
    """The same search as POST, for quick use from a browser or curl (no filters)."""
    result = await services_of(request).pipeline.search(collection, query, top_k=top_k, mode=mode)
    return search_response(result)


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.post(
    "/query",
    response_model=QueryResponse,
    dependencies=[require("read")],
    responses={200: {"content": {"text/event-stream": {"schema": QUERY_EVENTS_SCHEMA}}}} | _SEARCH_ERRORS,
)
async def query(body: QueryRequest, request: Request):  # noqa: ANN201 - JSON or a stream
    """Answer a question from a collection, citing the passages used as [n]."""
    pipeline = services_of(request).pipeline
    history = [Turn(t.role, t.content) for t in body.history]
    if not body.stream:
        result = await pipeline.answer(
            body.collection, body.question, top_k=body.top_k, mode=body.mode, filters=body.filters, history=history
        )
        return answer_response(result)

    events = pipeline.answer_stream(
        body.collection, body.question, top_k=body.top_k, mode=body.mode, filters=body.filters, history=history
    )
    # Retrieval happens before the first event: its errors (404, 422, 503) are still plain
    # HTTP errors, not a stream that starts and then fails.
    first = await anext(events)

    async def stream() -> AsyncIterator[bytes]:
        yield sse_event(*first)
        try:
            async for event in events:
                yield sse_event(*event)
        except RagkitError as exc:
            yield sse_event("error", {"error": exc.to_dict()})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
