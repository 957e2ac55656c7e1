"""Request and response bodies of the HTTP API (pydantic lives only at this edge).

Requests are strict: a JSON string is not a number and `true` is not 1 (`top_k: "5"` is a 422, not
a coerced 5); a number is an integer when it has no fraction (5.0 is 5). The rules a value must
follow (a collection name's pattern, a filter's caps, a non-blank query) are checked once, in the
domain, whichever way a request comes in; here they are only declared, from the same constants,
so the OpenAPI document says what the service does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import fastapi
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ragkit.core.names import COLLECTION_NAME_PATTERN, METADATA_KEY_PATTERN
from ragkit.core.types import (
    DEFAULT_MODE,
    DEFAULT_TOP_K,
    INDEX_KINDS,
    MAX_FILTER_INT,
    MAX_FILTER_KEYS,
    MAX_FILTER_VALUE_CHARS,
    MAX_FILTER_VALUES,
    MAX_INDEXED_FIELDS,
    MAX_TOP_K,
    MIN_FILTER_INT,
    IndexKind,
    SearchMode,
)
from ragkit.rag.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from ragkit.rag.conversation import MAX_HISTORY_TURNS, MAX_TURN_CHARS
from ragkit.rag.locate import MAX_PAGES

Mode = SearchMode


def _whole_number(value: Any) -> Any:
    # JSON has numbers, not integers: 5.0 is the number 5, and JSON Schema's "integer" says so.
    # What strict refuses is another JSON type: "5" or true.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_whole_number)]


def bounded_integer(**bounds: int) -> Any:
    """An `Integer` with bounds that stay JSON Schema's minimum/maximum inside an optional field
    (placed after the validator, pydantic would write them as "ge"/"le", which JSON Schema lacks)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_whole_number)]


FilterValue = str | Integer | bool | list[str | Integer | bool]

# At least one character that str.strip() keeps: the domain refuses text that is only whitespace.
# The class lists exactly the characters str.isspace() is true for (tests/test_openapi_fuzz.py
# checks it), because JSON Schema's \s is a different set.
NOT_BLANK_PATTERN = "[^\\t-\\r\\x1c- \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"

CollectionName = Annotated[str, Field(json_schema_extra={"pattern": COLLECTION_NAME_PATTERN, "examples": ["handbook"]})]
NonBlank = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": NOT_BLANK_PATTERN})]
# The same as route parameters: in the path (`/collections/{name}`) and the query (`GET /search`).
CollectionPath = Annotated[
    str, fastapi.Path(json_schema_extra={"pattern": COLLECTION_NAME_PATTERN}, examples=["handbook"])
]
CollectionQuery = Annotated[
    str, fastapi.Query(json_schema_extra={"pattern": COLLECTION_NAME_PATTERN}, examples=["handbook"])
]

_FILTER_SCALAR: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_FILTER_VALUE_CHARS},
        # 2**63 (exclusive) rather than 2**63 - 1: a JSON number that large is read as a double by
        # many tools, and 2**63 is one exactly, where 2**63 - 1 is not.
        {"type": "integer", "minimum": MIN_FILTER_INT, "exclusiveMaximum": MAX_FILTER_INT + 1},
        {"type": "boolean"},
    ]
}
Filters = Annotated[
    dict[str, FilterValue] | None,
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "object",
                    "maxProperties": MAX_FILTER_KEYS,
                    "propertyNames": {"pattern": METADATA_KEY_PATTERN},
                    "additionalProperties": {
                        "anyOf": [
                            _FILTER_SCALAR,
                            {"type": "array", "items": _FILTER_SCALAR, "minItems": 1, "maxItems": MAX_FILTER_VALUES},
                        ]
                    },
                },
                {"type": "null"},
            ],
            "description": "Exact matches on metadata fields (or doc_id), all of them; a list means any of",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Machine-readable: invalid_input, collection_not_found, rate_limited, ...")
    message: str = Field(description="What went wrong and what to do about it, for a person")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class SearchRequest(_Strict):
    query: NonBlank = Field(description="Text to search for")
    collection: CollectionName
    top_k: Integer = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    mode: Mode = DEFAULT_MODE
    filters: Filters = None


class TurnIn(_Strict):
    role: Literal["user", "assistant"]
    content: NonBlank = Field(max_length=MAX_TURN_CHARS)


class QueryRequest(_Strict):
    question: NonBlank
    collection: CollectionName
    top_k: Integer = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    mode: Mode = DEFAULT_MODE
    filters: Filters = None
    stream: bool = Field(False, description="Answer as server-sent events: sources, token…, done")
    history: list[TurnIn] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_TURNS,
        description="The conversation so far, oldest first; a follow-up question is made standalone "
        "from it before retrieval (the answer's standalone_query says what was searched)",
    )


class HitOut(BaseModel):
    id: str
    score: float
    text: str
    doc_id: str
    chunk_index: int
    title: str = ""
    metadata: dict[str, Any] = {}
    page: int | None = Field(None, description="First page of the passage (PDF page, slide), when the source has pages")
    page_end: int | None = None
    section: str = Field("", description="The heading the passage sits under")


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
    standalone_query: str = Field(description="What was searched: the question, made standalone from the history")


class CreateCollectionRequest(_Strict):
    name: CollectionName
    chunk_size: bounded_integer(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE) | None = Field(
        None, description="Chunk size in the embedder's tokens"
    )
    chunk_overlap: bounded_integer(ge=0, lt=MAX_CHUNK_SIZE) | None = Field(
        None,
        description="Tokens a chunk shares with the previous one: less than chunk_size (or than the service's "
        "default chunk size when chunk_size is not given)",
    )
    indexed_fields: Annotated[
        dict[str, IndexKind] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "object",
                        "maxProperties": MAX_INDEXED_FIELDS,
                        "propertyNames": {"pattern": METADATA_KEY_PATTERN, "not": {"const": "doc_id"}},
                        "additionalProperties": {"enum": list(INDEX_KINDS)},
                    },
                    {"type": "null"},
                ],
                "description": "Metadata fields to build a payload index for, with its type. Filtering works on "
                "any field; an index makes it fast on a large collection. Fixed at creation.",
            }
        ),
    ] = None
    quantization: Literal["none", "int8"] = Field(
        "none",
        description="int8: dense vectors also kept as 8-bit scalars in RAM, searched first and rescored with "
        "the originals (for large collections: less memory per search). Fixed at creation.",
    )


class CollectionOut(BaseModel):
    name: str
    embedder: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    created_at: str
    documents: int
    chunks: int
    indexed_fields: dict[str, IndexKind] = {}
    quantization: str = "none"


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class CollectionDeleted(BaseModel):
    deleted: str


class CollectionImported(BaseModel):
    collection: str
    points: int = Field(description="Points written, each with its id, vectors and payload as exported")
    documents: int
    replaced: bool = Field(description="Whether a collection of that name was dropped first (replace=true)")


class DocumentIn(_Strict):
    id: NonBlank | None = Field(None, description="Stable id; defaults to a hash of the text")
    text: NonBlank
    title: str = ""
    metadata: dict[str, Any] = {}
    page_starts: list[Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]] = Field(
        [],
        max_length=MAX_PAGES,
        description="Where each page starts in the text (character offsets, ascending): chunks then cite pages",
    )


class IngestRequest(_Strict):
    documents: list[DocumentIn] = Field(min_length=1, description="Document ids must be distinct in one request")


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


class PassageOut(BaseModel):
    chunk_index: int
    text: str
    page: int | None = None
    page_end: int | None = None
    section: str = ""


class DocumentContent(DocumentOut):
    collection: str
    text: str = Field(description="The document as stored: its chunks joined, their overlaps once")
    complete: bool = Field(description="False when the document has more chunks than are read back")
    passages: list[PassageOut]


class DocumentList(BaseModel):
    collection: str
    documents: list[DocumentOut]
    limit: int
    offset: int


class DocumentDeleted(BaseModel):
    deleted: str
    chunks: int


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    }


_STRINGS = {"type": "array", "items": {"type": "string"}}
# The server-sent events of `POST /query` with `stream: true`, one schema per event.
QUERY_EVENTS_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _event(
            "sources",
            {
                "type": "object",
                "required": ["sources", "standalone_query", "mode_used", "degraded", "reasons"],
                "properties": {
                    "sources": {"type": "array", "items": {"$ref": "#/components/schemas/HitOut"}},
                    "standalone_query": {"type": "string"},
                    "mode_used": {"type": "string"},
                    "degraded": {"type": "boolean"},
                    "reasons": _STRINGS,
                },
            },
        ),
        _event("token", {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
        _event("degraded", {"type": "object", "required": ["reasons"], "properties": {"reasons": _STRINGS}}),
        _event(
            "done",
            {
                "type": "object",
                "required": ["answer", "generator", "degraded", "reasons", "timings_ms"],
                "properties": {
                    "answer": {"type": "string"},
                    "generator": {"type": "string"},
                    "degraded": {"type": "boolean"},
                    "reasons": _STRINGS,
                    "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
                },
            },
        ),
        _event(
            "error",
            {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}, "reasons": _STRINGS},
            },
        ),
    ]
}

_ERROR_DESCRIPTIONS = {
    401: "No valid credentials (X-Service-Token or a bearer JWT)",
    403: "The credentials lack the scope this route needs",
    404: "Unknown collection, document or job",
    409: "Conflict: the collection exists, or was built with another embedder, or the job is finished",
    413: "The request body (or its number of documents) is over the limit",
    422: "Invalid input; the message says which field and why",
    429: "Rate limited; retry after Retry-After seconds",
    502: "A dependency refused the request (Qdrant credentials, an unknown model)",
    503: "A dependency is unavailable or its circuit breaker is open; retry after Retry-After seconds",
    504: "A dependency did not answer in time",
}
GATED = (401, 403, 422, 429)  # every /api route: credentials, scope, input, rate limit
DEPENDENCIES = (502, 503, 504)  # routes that reach the store or the models


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the errors it can answer, each with the error body."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}
