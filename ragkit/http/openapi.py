"""The OpenAPI document of one service instance, true to what that instance enforces.

FastAPI derives the document from the routes and the bodies of `schemas.py`; what it cannot know
is added here: the limits that come from this instance's settings (`RAGKIT_MAX_TOP_K`,
`RAGKIT_MAX_QUERY_CHARS`, `RAGKIT_MAX_DOCUMENTS`), how a caller authenticates, the
`Retry-After` header of the answers that carry one, and the JSON ingest body (the route reads it
itself, to parse it off the event loop).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ragkit.core.config import Settings
from ragkit.http.job_schemas import PathJobRequest
from ragkit.http.schemas import IngestRequest

API_PREFIXES = ("/api/v1/", "/api/")
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _add_ingest_body(document)
            _apply_limits(document, settings)
            _declare_security(document, settings)
            _declare_retry_after(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if isinstance(operation, dict)
    ]


def _add_ingest_body(document: dict[str, Any]) -> None:
    """The bodies the ingestion routes read themselves (JSON or multipart), so FastAPI does not
    know them: the documents, and a job's server-side path."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (IngestRequest, PathJobRequest):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[model.__name__] = generated


def _apply_limits(document: dict[str, Any], settings: Settings) -> None:
    schemas = document["components"]["schemas"]
    for name, text_field in (("SearchRequest", "query"), ("QueryRequest", "question")):
        properties = schemas[name]["properties"]
        properties["top_k"]["maximum"] = settings.max_top_k
        properties[text_field]["maxLength"] = settings.max_query_chars
    schemas["IngestRequest"]["properties"]["documents"]["maxItems"] = settings.max_documents_per_request
    for path, method, operation in _operations(document):
        if method != "get" or not path.endswith("/search"):
            continue
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "top_k":
                parameter["schema"]["maximum"] = settings.max_top_k
            elif parameter["name"] == "query":
                parameter["schema"]["maxLength"] = settings.max_query_chars


def _declare_security(document: dict[str, Any], settings: Settings) -> None:
    schemes: dict[str, Any] = {"ServiceToken": {"type": "apiKey", "in": "header", "name": "X-Service-Token"}}
    if settings.jwt_secret or settings.jwt_public_key:
        schemes["BearerJWT"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    document["components"]["securitySchemes"] = schemes
    for path, _, operation in _operations(document):
        if path.startswith(API_PREFIXES):
            operation["security"] = [{name: []} for name in schemes]


def _declare_retry_after(document: dict[str, Any]) -> None:
    for _, _, operation in _operations(document):
        for status in ("429", "503", "504"):
            response = operation.get("responses", {}).get(status)
            if response is not None:
                response.setdefault("headers", {})["Retry-After"] = _RETRY_AFTER
