"""Request and response bodies of the HTTP API (pydantic lives only at this edge)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K, MAX_TOP_K, SearchMode

Mode = SearchMode
FilterValue = str | int | bool | list[str | int | bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Strict):
    query: str = Field(description="Text to search for")
    collection: str
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    mode: Mode = DEFAULT_MODE
    filters: dict[str, FilterValue] | None = Field(
        None, description="Exact matches on metadata fields (or doc_id); a list means any of"
    )


class QueryRequest(_Strict):
    question: str
    collection: str
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    mode: Mode = DEFAULT_MODE
    filters: dict[str, FilterValue] | None = None
    stream: bool = Field(False, description="Answer as server-sent events: sources, token…, done")


class HitOut(BaseModel):
    id: str
    score: float
    text: str
    doc_id: str
    chunk_index: int
    title: str = ""
    metadata: dict[str, Any] = {}


class SearchResponse(BaseModel):
    query: str
    collection: str
    results: list[HitOut]
    mode_used: str
    degraded: bool
    reasons: list[str]
    timings_ms: dict[str, float]


class QueryResponse(BaseModel):
    answer: str
    sources: list[HitOut]
    generator: str
    mode_used: str
    degraded: bool
    reasons: list[str]
    timings_ms: dict[str, float]


class CreateCollectionRequest(_Strict):
    name: str
    chunk_size: int | None = Field(None, description="Chunk size in the embedder's tokens")
    chunk_overlap: int | None = None


class CollectionOut(BaseModel):
    name: str
    embedder: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    created_at: str
    documents: int
    chunks: int


class DocumentIn(_Strict):
    id: str | None = Field(None, description="Stable id; defaults to a hash of the text")
    text: str
    title: str = ""
    metadata: dict[str, Any] = {}


class IngestRequest(_Strict):
    documents: list[DocumentIn]


class IngestResponse(BaseModel):
    ingested: int
    skipped_unchanged: int
    chunks: int
    seconds: float
    files: list[dict[str, Any]] | None = None


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    chunks: int
    content_hash: str
    metadata: dict[str, Any]
