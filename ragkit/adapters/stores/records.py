"""Stored points read back as ragkit's types: a search hit, a chunk, a document's state and, for an
export, the whole point. Both stores return payloads and named vectors alike, so one reading serves
both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragkit.core.types import Chunk, DocumentState, Hit, Point, SparseVector

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"


def hit_from(point_id_: object, score: float, payload: Mapping[str, Any] | None) -> Hit:
    payload = payload or {}
    return Hit(
        id=str(point_id_),
        score=float(score),
        text=payload.get("text", ""),
        doc_id=payload.get("doc_id", ""),
        chunk_index=int(payload.get("chunk_index", 0)),
        metadata=payload.get("metadata") or {},
        title=payload.get("title", ""),
        page=payload.get("page"),
        page_end=payload.get("page_end"),
        section=payload.get("section", ""),
    )


def point_from(point_id_: object, vectors: Any, payload: Mapping[str, Any] | None) -> Point:
    """A stored point read back whole, for an export: both stores return vectors by name."""
    sparse = (vectors or {}).get(SPARSE_VECTOR)  # absent for a chunk without terms (stopwords only)
    terms = SparseVector(tuple(sparse.indices), tuple(sparse.values)) if sparse else SparseVector((), ())
    return Point(str(point_id_), list(vectors[DENSE_VECTOR]), terms, dict(payload or {}))


def chunk_from(payload: Mapping[str, Any]) -> Chunk:
    return Chunk(
        doc_id=payload.get("doc_id", ""),
        chunk_index=int(payload.get("chunk_index", 0)),
        text=payload.get("text", ""),
        title=payload.get("title", ""),
        metadata=payload.get("metadata") or {},
        page=payload.get("page"),
        page_end=payload.get("page_end"),
        section=payload.get("section", ""),
    )


def state_from(payload: Mapping[str, Any], present: int, total: int | None = None) -> DocumentState:
    return DocumentState(
        doc_id=payload["doc_id"],
        content_hash=payload.get("content_hash", ""),
        chunk_count=int(payload.get("chunk_count", 0)),
        present=present,
        total=present if total is None else total,
        title=payload.get("title", ""),
        metadata=payload.get("metadata") or {},
    )
