"""`/collections`: list, create, show and drop collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ragkit.core.types import CollectionStats
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import CollectionOut, CreateCollectionRequest

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
    ).model_dump()


@router.get("/collections", dependencies=[require("read")])
async def list_collections(request: Request) -> dict[str, Any]:
    """Every collection with its size and how it was built."""
    return {"collections": [collection_out(s) for s in await services_of(request).collections.all_stats()]}


@router.post("/collections", status_code=201, response_model=CollectionOut, dependencies=[require("write")])
async def create_collection(body: CreateCollectionRequest, request: Request) -> dict[str, Any]:
    """Create an empty collection bound to the service's current embedder."""
    stats = await services_of(request).collections.create(
        body.name, chunk_size=body.chunk_size, chunk_overlap=body.chunk_overlap
    )
    return collection_out(stats)


@router.get("/collections/{name}", response_model=CollectionOut, dependencies=[require("read")])
async def get_collection(name: str, request: Request) -> dict[str, Any]:
    return collection_out(await services_of(request).collections.stats(name))


@router.delete("/collections/{name}", dependencies=[require("admin")])
async def delete_collection(name: str, request: Request) -> dict[str, Any]:
    """Drop a collection and everything in it."""
    await services_of(request).collections.drop(name)
    return {"deleted": name}
