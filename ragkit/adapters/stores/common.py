"""What the Edge and qdrant-client stores share, so that they behave the same by construction.

* the names: vectors ``dense`` (cosine) and ``bm25`` (IDF modifier), the payload layout, the
  collection-name rule and the deterministic point id;
* a backend-neutral filter tree (``Match``/``AtLeast``/``Where``) that each store compiles to its
  own library's classes, and the translation of the caller's flat ``filters`` into it;
* ``StoreBase``: every method whose logic is not backend-specific (stats, document state, stale
  deletion, document listing, search planning), written once on top of a handful of primitives
  each store implements.

Point payload layout (built by the caller)::

    doc_id: str  chunk_index: int  chunk_count: int  content_hash: str
    text: str    title: str        metadata: dict    (+ any extra keys, stored as given)
"""

from __future__ import annotations

import dataclasses
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragkit.adapters.stores.filters import (
    Where,
    doc_where,
    docs_where,
    first_chunks_where,
    heads_where,
    stale_where,
    translate_filters,
    unindexed_fields,
    version_where,
)
from ragkit.adapters.stores.records import DENSE_VECTOR, SPARSE_VECTOR, chunk_from, state_from  # noqa: F401 - names the stores import from here
from ragkit.core.errors import DocumentNotFound, InvalidInput
from ragkit.core.names import validate_collection_name, validate_indexed_fields
from ragkit.core.transfer import spec_from_dict, spec_to_dict  # noqa: F401 - the stores import them from here
from ragkit.core.types import (
    MAX_UNINDEXED_CHECKS,
    QUANTIZATIONS,
    Chunk,
    CollectionSpec,
    CollectionStats,
    DocumentState,
    Hit,
    IndexKind,
    Point,
    SearchMode,
    SparseVector,
)

DEPENDENCY = "qdrant"  # the name every DependencyError from a store carries, Edge included
# Indexed in every collection: document operations filter on doc_id and content_hash, document
# heads and stale chunks on chunk_index.
BUILT_IN_INDEXES: dict[str, IndexKind] = {"doc_id": "keyword", "content_hash": "keyword", "chunk_index": "integer"}
REQUIRED_PAYLOAD = ("doc_id", "chunk_index", "chunk_count", "content_hash")
RRF_K = 60  # the constant of the RRF paper; set explicitly because Qdrant's implicit default (2) differs
MAX_PAGE = 1000
MAX_DOCUMENT_CHUNKS = 5000  # of one document read back whole: some 7 MB of text at most


# --------------------------------------------------------------------------- collection specs


def validate_spec(spec: CollectionSpec) -> CollectionSpec:
    validate_collection_name(spec.name)
    problems = []
    if not isinstance(spec.dimension, int) or spec.dimension < 1:
        problems.append(f"dimension must be a positive integer, got {spec.dimension!r}")
    if not isinstance(spec.chunk_size, int) or spec.chunk_size < 1:
        problems.append(f"chunk_size must be a positive integer, got {spec.chunk_size!r}")
    if not isinstance(spec.chunk_overlap, int) or not 0 <= spec.chunk_overlap < max(spec.chunk_size, 1):
        problems.append(f"chunk_overlap must be in [0, chunk_size), got {spec.chunk_overlap!r}")
    if not spec.embedder:
        problems.append("embedder must be named")
    if spec.quantization not in QUANTIZATIONS:
        problems.append(f"quantization must be one of {list(QUANTIZATIONS)}, got {spec.quantization!r}")
    if not spec.bm25_avg_len >= 0:
        problems.append(f"bm25_avg_len must not be negative, got {spec.bm25_avg_len!r}")
    if problems:
        raise InvalidInput(f"invalid collection '{spec.name}': " + "; ".join(problems), collection=spec.name)
    return dataclasses.replace(spec, indexed_fields=validate_indexed_fields(spec.indexed_fields))


def payload_indexes(spec: CollectionSpec) -> dict[str, IndexKind]:
    """Every payload index of a collection, by payload path. Built when the collection is created and
    only then: building one stalls the store, so no read may trigger it."""
    declared = {f"metadata.{key}": kind for key, kind in spec.indexed_fields.items()}
    return BUILT_IN_INDEXES | declared


def stamp_created(spec: CollectionSpec) -> CollectionSpec:
    if spec.created_at:
        return spec
    return dataclasses.replace(spec, created_at=datetime.now(UTC).isoformat(timespec="seconds"))


def check_update(stored: CollectionSpec, new: CollectionSpec) -> CollectionSpec:
    """The new spec to store, refusing changes the existing vectors could not follow."""
    new = validate_spec(new)
    if new.dimension != stored.dimension:
        raise InvalidInput(
            f"collection '{new.name}' holds {stored.dimension}-dimensional vectors; its dimension cannot "
            f"change to {new.dimension} (create a new collection instead)",
            collection=new.name,
        )
    if dict(new.indexed_fields) != dict(stored.indexed_fields):
        raise InvalidInput(
            f"collection '{new.name}' was created with the indexed fields {dict(stored.indexed_fields)}; they "
            "cannot change (create a new collection that declares the others)",
            collection=new.name,
        )
    if new.quantization != stored.quantization:
        raise InvalidInput(
            f"collection '{new.name}' was created with quantization {stored.quantization!r}; it cannot "
            "change (create a new collection with the other one and ingest the documents into it)",
            collection=new.name,
        )
    return dataclasses.replace(new, created_at=new.created_at or stored.created_at)


# --------------------------------------------------------------------------- points and results


def normalise_point(point: Point, dimension: int | None = None) -> tuple[str, list[float], SparseVector, dict]:
    """Check a point against the payload contract; return (canonical id, dense, sparse, payload)."""
    try:
        pid = str(uuid.UUID(str(point.id)))
    except ValueError as exc:
        raise InvalidInput(f"point id {point.id!r} is not a UUID (use ragkit.core.names.point_id)") from exc
    payload = dict(point.payload)
    missing = [key for key in REQUIRED_PAYLOAD if key not in payload]
    if missing:
        raise InvalidInput(f"point {pid} lacks payload keys {missing}")
    if not isinstance(payload["doc_id"], str) or not payload["doc_id"]:
        raise InvalidInput(f"point {pid}: doc_id must be a non-empty string")
    for key in ("chunk_index", "chunk_count"):
        if not isinstance(payload[key], int) or isinstance(payload[key], bool) or payload[key] < 0:
            raise InvalidInput(f"point {pid}: {key} must be a non-negative integer")
    if not isinstance(payload["content_hash"], str):
        raise InvalidInput(f"point {pid}: content_hash must be a string")
    payload.setdefault("text", "")
    payload.setdefault("title", "")
    payload["metadata"] = dict(payload.get("metadata") or {})
    dense = [float(x) for x in point.dense]
    if dimension is not None and len(dense) != dimension:
        raise InvalidInput(f"point {pid}: dense vector has {len(dense)} dimensions, the collection {dimension}")
    if len(point.sparse.indices) != len(point.sparse.values):
        raise InvalidInput(f"point {pid}: sparse vector has different numbers of indices and values")
    return pid, dense, point.sparse, payload


# --------------------------------------------------------------------------- search planning


@dataclass(frozen=True)
class SearchPlan:
    mode: SearchMode
    limit: int
    prefetch_limit: int  # per branch of a hybrid query
    dense: list[float] | None
    sparse: SparseVector | None  # None also when the query has no terms (only stopwords)
    where: Where | None

    @property
    def nothing_to_match(self) -> bool:
        return self.mode == "sparse" and self.sparse is None


def plan_search(
    mode: str,
    dense: Sequence[float] | None,
    sparse: SparseVector | None,
    top_k: int,
    filters: Mapping[str, Any] | None,
) -> SearchPlan:
    # The mode and top_k were checked by the caller (`ragkit.rag.pipeline`); what is checked here
    # is what only the store knows it needs: the query vectors its mode reads.
    if mode in ("dense", "hybrid") and (dense is None or len(dense) == 0):
        raise InvalidInput(f"{mode} search needs a dense query vector")
    if mode in ("sparse", "hybrid") and sparse is None:
        raise InvalidInput(f"{mode} search needs a sparse (BM25) query vector")
    if sparse is not None and len(sparse.indices) != len(sparse.values):
        raise InvalidInput("sparse query vector has different numbers of indices and values")
    # A query of stopwords only has no terms: sparse search finds nothing and hybrid search
    # is left with its dense branch, on both stores alike.
    terms = sparse if sparse is not None and sparse.indices else None
    return SearchPlan(
        mode=mode,  # type: ignore[arg-type]
        limit=top_k,
        prefetch_limit=max(top_k * 2, 20),
        dense=[float(x) for x in dense] if dense is not None and len(dense) else None,
        sparse=terms,
        where=translate_filters(filters),
    )


# --------------------------------------------------------------------------- shared store logic


class StoreBase(ABC):
    """The store methods that only combine primitives. Subclasses implement the primitives,
    translating their backend's exceptions into ragkit errors."""

    @abstractmethod
    def get_collection(self, name: str) -> CollectionSpec: ...

    @abstractmethod
    def _count(self, name: str, where: Where | None) -> int: ...

    @abstractmethod
    def _doc_counts(self, name: str, where: Where | None, limit: int) -> dict[str, int]:
        """Points per distinct doc_id among those matching ``where`` (a facet)."""

    @abstractmethod
    def _payloads(self, name: str, where: Where, limit: int, *, with_text: bool = False) -> list[dict[str, Any]]:
        """Payloads of up to ``limit`` points matching ``where``, without the chunk text unless asked."""

    @abstractmethod
    def _delete(self, name: str, where: Where) -> None: ...

    @abstractmethod
    def _write_guard(self, name: str) -> AbstractContextManager[object]:
        """Held around read-then-write sequences, so their count matches what they delete."""

    @abstractmethod
    def _query(self, name: str, plan: SearchPlan) -> list[Hit]: ...

    @abstractmethod
    def _scroll(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]: ...

    def _indexed_paths(self, name: str) -> set[str]:
        """Payload paths with an index: the built-in and declared ones; a store adds those it finds
        (a collection made before indexes were declared has the ones its searches created)."""
        return set(payload_indexes(self.get_collection(name)))

    # -- shared

    def stats(self, name: str) -> CollectionStats:
        spec = self.get_collection(name)
        chunks = self._count(name, None)
        # A document's chunk 0 is one point (ids are per document and chunk index) and is written
        # first, so counting those is exact and an indexed count; a facet over every doc_id took
        # 0.5 s at 14k chunks, during which the store held every other request.
        documents = self._count(name, first_chunks_where()) if chunks else 0
        return CollectionStats(spec=spec, documents=documents, chunks=chunks)

    def document_state(self, name: str, doc_id: str) -> DocumentState | None:
        validate_collection_name(name)
        heads = self._payloads(name, heads_where([doc_id]), 1)
        if not heads:
            # No chunk 0 (written out of order by hand): any chunk still tells the version.
            heads = self._payloads(name, doc_where(doc_id), 1)
            if not heads:
                return None
        head = heads[0]
        present = self._count(name, version_where(doc_id, head.get("content_hash", "")))
        return state_from(head, present, self._count(name, doc_where(doc_id)))

    def document_chunks(self, name: str, doc_id: str) -> tuple[DocumentState, list[Chunk]] | None:
        """The stored chunks of a document's current version in their order (the first
        ``MAX_DOCUMENT_CHUNKS``), or None when the collection has no such document."""
        state = self.document_state(name, doc_id)
        if state is None:
            return None
        limit = min(max(state.present, 1), MAX_DOCUMENT_CHUNKS)
        payloads = self._payloads(name, version_where(doc_id, state.content_hash), limit, with_text=True)
        chunks = sorted((chunk_from(p) for p in payloads), key=lambda c: c.chunk_index)
        return state, chunks

    def delete_stale(self, name: str, doc_id: str, keep_hash: str, keep_count: int) -> int:
        validate_collection_name(name)
        where = stale_where(doc_id, keep_hash, keep_count)
        with self._write_guard(name):
            stale = self._count(name, where)
            if stale:
                self._delete(name, where)
        return stale

    def delete_document(self, name: str, doc_id: str) -> int:
        validate_collection_name(name)
        where = doc_where(doc_id)
        with self._write_guard(name):
            removed = self._count(name, where)
            if not removed:
                raise DocumentNotFound(name, doc_id)
            self._delete(name, where)
        return removed

    def scroll_points(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]:
        """Up to ``limit`` points in id order from ``offset`` (None: the first) with both vectors and their whole
        payloads, and the next page's offset (None after the last): an export's pages, each a bounded call."""
        validate_collection_name(name)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"a page of points holds 1-{MAX_PAGE} of them, got {limit}")
        return self._scroll(name, offset, limit)

    def list_documents(self, name: str, limit: int = 100, offset: int = 0) -> list[DocumentState]:
        """Documents sorted by id; ``offset``/``limit`` page over that order."""
        validate_collection_name(name)
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"limit must be 1-{MAX_PAGE} and offset non-negative, got {limit}, {offset}")
        chunks = self._count(name, None)
        if not chunks:
            return []
        totals = self._doc_counts(name, None, chunks)
        page = sorted(totals)[offset : offset + limit]
        if not page:
            return []
        heads = {p["doc_id"]: p for p in self._payloads(name, heads_where(page), len(page))}
        for doc_id in page:  # a document without chunk 0 still gets listed
            if doc_id not in heads:
                heads.update({p["doc_id"]: p for p in self._payloads(name, doc_where(doc_id), 1)})
        # Chunks of each document's current version, counted here from the page's payloads (no
        # text): one filter on the page's ids, where a filter per version took seconds per page.
        rows = self._payloads(name, docs_where(page), sum(totals[d] for d in page))
        current = {doc_id: head.get("content_hash") for doc_id, head in heads.items()}
        present = Counter(r["doc_id"] for r in rows if r.get("content_hash") == current.get(r["doc_id"]))
        return [state_from(heads[d], present.get(d, 0)) for d in page if d in heads]

    def search(
        self,
        name: str,
        *,
        mode: SearchMode,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        validate_collection_name(name)
        plan = plan_search(mode, dense, sparse, top_k, filters)
        self._check_scan(name, plan)
        if plan.nothing_to_match:
            self._count(name, None)  # still answers CollectionNotFound for an unknown collection
            return []
        # Fused scores tie often (1/(k+1) + 1/(k+2) for a hit first in one branch and second in the
        # other, and the other way round), and the backends order ties as they happen to: by id,
        # so the same request always lists the same hits in the same order.
        return sorted(self._query(name, plan), key=lambda hit: (-hit.score, hit.id))

    def _check_scan(self, name: str, plan: SearchPlan) -> None:
        """Refuse a filter whose unindexed fields would be checked on too many points (see
        MAX_UNINDEXED_CHECKS): a read must not stall the store however large the collection."""
        if plan.where is None:
            return
        fields = unindexed_fields(plan.where, self._indexed_paths(name))
        if not fields:
            return
        branches = 2 if plan.mode == "hybrid" and plan.sparse is not None else 1  # each applies the filter
        points = self._count(name, None)
        checks = points * len(fields) * branches
        if checks > MAX_UNINDEXED_CHECKS:
            raise InvalidInput(
                f"collection '{name}' has {points} chunks and no payload index for {', '.join(fields)}: this "
                f"{plan.mode} search would check {checks} values one by one, over the limit of "
                f"{MAX_UNINDEXED_CHECKS}. Filter on fewer of these fields, or create the collection with "
                "them in indexed_fields",
                collection=name,
                fields=fields,
            )
