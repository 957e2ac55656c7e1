"""`/collections`: list, create, show and drop collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ragkit.core.types import CollectionStats
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import (
    DEPENDENCIES,
    GATED,
    CollectionDeleted,
    CollectionList,
    CollectionOut,
    CollectionPath,
    CreateCollectionRequest,
    error_responses,
)

TAG = "collections"
router = APIRouter()


def collection_out(stats: CollectionStats) -> dict[str, Any]:
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
        indexed_fields=dict(spec.indexed_fields),
        quantization=spec.quantization,
    ).model_dump()


@router.get(
    "/collections",
    response_model=CollectionList,
    dependencies=[require("read")],
    responses=error_responses(*GATED, 409, *DEPENDENCIES),
)
async def list_collections(request: Request) -> dict[str, Any]:
    """Every collection with its size and how it was built."""
    return {"collections": [collection_out(s) for s in await services_of(request).collections.all_stats()]}


@router.post(
    "/collections",
    status_code=201,
    response_model=CollectionOut,
    dependencies=[require("write")],
    responses=error_responses(*GATED, 409, 413, *DEPENDENCIES),
)
async def create_collection(body: CreateCollectionRequest, request: Request) -> dict[str, Any]:
    """Create an empty collection bound to the service's current embedder, with a payload index for
    each of its `indexed_fields` (indexes are built only here, never by a search)."""
    stats = await services_of(request).collections.create(
        body.name,
        chunk_size=body.chunk_size,
        chunk_overlap=body.chunk_overlap,
        indexed_fields=body.indexed_fields,
        quantization=body.quantization,
    )
    return collection_out(stats)


@router.get(
    "/collections/{name}",
    response_model=CollectionOut,
    dependencies=[require("read")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def get_collection(name: CollectionPath, request: Request) -> dict[str, Any]:
    return collection_out(await services_of(request).collections.stats(name))


@router.delete(
    "/collections/{name}",
    response_model=CollectionDeleted,
    dependencies=[require("admin")],
    responses=error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def delete_collection(name: CollectionPath, request: Request) -> dict[str, Any]:
    """Drop a collection and everything in it."""
    await services_of(request).collections.drop(name)
    return {"deleted": name}
