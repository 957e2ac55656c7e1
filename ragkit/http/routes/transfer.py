"""`/collections/{name}/export` and `/collections/import`: a whole collection out as a stream of NDJSON
and back in from one (`ragkit.core.transfer` is the file, `ragkit.rag.transfer` the work), so that it
moves between the embedded store and a Qdrant server without embedding anything again.

Both are for the `admin` scope: an export reads every chunk of a collection, an import writes a whole
one. The import's body is the one request body the body-size limit does not count (`http/app.py`
exempts this path): a collection is as large as it is. Each of its lines is bounded instead, by that
same limit (`RAGKIT_MAX_REQUEST_BYTES`), and never more than a batch of lines is held at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRouter
from starlette.requests import ClientDisconnect

from ragkit.core.errors import InvalidInput
from ragkit.core.names import COLLECTION_NAME_PATTERN
from ragkit.core.transfer import MEDIA_TYPE
from ragkit.http.deps import require, services_of
from ragkit.http.schemas import DEPENDENCIES, GATED, CollectionImported, CollectionPath, error_responses

TAG = "collections"
router = APIRouter()
IMPORT_PATH = "/collections/import"
_FILE = {MEDIA_TYPE: {"schema": {"type": "string", "description": "The lines of an export"}}}


@router.get(
    "/collections/{name}/export",
    dependencies=[require("admin")],
    response_class=StreamingResponse,
    responses={200: {"description": "A header line, a line per point, a trailer line", "content": _FILE}}
    | error_responses(*GATED, 404, 409, *DEPENDENCIES),
)
async def export_collection(name: CollectionPath, request: Request) -> StreamingResponse:
    """The whole collection as NDJSON: a header with the format version and the collection's spec, a
    line per point (its id, dense and sparse vectors and payload), then a trailer with the count. A
    failure part way ends the stream with an `error` line instead of the trailer."""
    lines = await services_of(request).collections.export(name)
    disposition = f'attachment; filename="{name}.ndjson"'
    return StreamingResponse(lines, media_type=MEDIA_TYPE, headers={"Content-Disposition": disposition})


@router.post(
    IMPORT_PATH,
    status_code=201,
    response_model=CollectionImported,
    dependencies=[require("admin")],
    responses=error_responses(*GATED, 409, 413, *DEPENDENCIES),
    openapi_extra={"requestBody": {"required": True, "content": _FILE}},
)
async def import_collection(
    request: Request,
    name: str | None = Query(
        None,
        description="Import under this name instead of the exported one",
        json_schema_extra={"pattern": COLLECTION_NAME_PATTERN},
    ),
    replace: bool = Query(False, description="Drop a collection of that name that holds points, first"),
) -> dict[str, Any]:
    """Create a collection from an export (the body, streamed): its spec, then its points in batches.
    409 when the collection exists and holds points (unless `replace`); 422 for a file of another
    format version, a broken line (its number is given), a vector of another dimension than the
    spec's, or a file cut off before its trailer; 413 for a line over the request limit. A failed
    import drops the collection it created."""
    services = services_of(request)
    report = await services.collections.import_file(
        _body(request), name=name, replace=replace, max_line_bytes=services.settings.max_request_bytes
    )
    return CollectionImported(
        collection=report.collection, points=report.points, documents=report.documents, replaced=report.replaced
    ).model_dump()


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise InvalidInput("the upload stopped before the end of the file: the client went away") from exc
