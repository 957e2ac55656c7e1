"""The OpenAPI document is true to the service, and the edge is strict about types.

* Strict types: a JSON string is not a number and `true` is not 1 (`top_k: "5"` is a 422).
* The document declares the constraints the service enforces (name patterns, lengths, ranges,
  this instance's limits), every error a route answers with its `{"error": {...}}` body, and the
  real media types (`/metrics`, the CSV export).
* schemathesis fuzzes every operation of a live service over real HTTP (127.0.0.1) with a bounded
  number of examples: no 5xx, no answer outside the document (status, media type, body, headers),
  valid data accepted and invalid data refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ragkit.http.app import create_app
from ragkit.http.schemas import NOT_BLANK_PATTERN
from tests.conftest import SECRET, Stack, make_settings, start_stack

API = "/api/v1/rag"


# --------------------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/search", {"query": "q", "collection": "handbook", "top_k": "5"}),
        ("/search", {"query": "q", "collection": "handbook", "top_k": True}),
        ("/search", {"query": "q", "collection": "handbook", "top_k": 5.5}),
        ("/search", {"query": 5, "collection": "handbook"}),
        ("/query", {"question": "q", "collection": "handbook", "top_k": "3"}),
        ("/query", {"question": "q", "collection": "handbook", "stream": "false"}),
        ("/query", {"question": "q", "collection": "handbook", "stream": 0}),
        ("/collections", {"name": "strict", "chunk_size": "200"}),
        ("/collections", {"name": "strict", "chunk_overlap": True}),
        ("/collections/handbook/documents", {"documents": [{"id": 7, "text": "seven"}]}),
        ("/feedback", {"rating": "up", "question": "q", "degraded": "true"}),
        ("/feedback", {"rating": "up", "question": "q", "sources": [{"doc_id": "a", "chunk_index": "0"}]}),
        ("/feedback", {"rating": "up", "question": "q", "sources": [{"doc_id": "a", "score": True}]}),
    ],
)
def test_numbers_and_booleans_are_not_coerced(fuzz_stack: Stack, path: str, body: dict[str, Any]) -> None:
    response = fuzz_stack.http.post(API + path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


def test_a_number_without_a_fraction_is_an_integer(fuzz_stack: Stack) -> None:
    # JSON has one number type: 2.0 is the number 2 (JSON Schema's "integer" agrees); only other
    # JSON types are refused.
    body = {"query": "secret rotation", "collection": "handbook", "top_k": 2.0, "filters": {"year": [2025.0]}}
    response = fuzz_stack.http.post(f"{API}/search", json=body)
    assert response.status_code == 200, response.text
    assert [hit["doc_id"] for hit in response.json()["results"]] == ["runbook"]


# --------------------------------------------------------------------------- the document


@pytest.fixture(scope="module")
def document(fuzz_stack: Stack) -> dict[str, Any]:
    return fuzz_stack.anon.get("/openapi.json").json()


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return document["paths"][path][method]


def test_the_not_blank_pattern_is_exactly_what_strip_removes() -> None:
    pattern = re.compile(NOT_BLANK_PATTERN)
    for code in range(0x110000):
        character = chr(code)
        assert (pattern.search(character) is not None) == (character.strip() != ""), hex(code)


def test_constraints_are_declared_where_the_service_enforces_them(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    name_pattern = schemas["CreateCollectionRequest"]["properties"]["name"]["pattern"]
    assert name_pattern == "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
    assert schemas["SearchRequest"]["properties"]["collection"]["pattern"] == name_pattern
    path_name = _operation(document, "get", f"{API}/collections/{{name}}")["parameters"][0]
    assert (path_name["name"], path_name["schema"]["pattern"]) == ("name", name_pattern)
    search = schemas["SearchRequest"]["properties"]
    assert search["query"]["minLength"] == 1 and search["query"]["maxLength"] == 4000
    assert (search["top_k"]["minimum"], search["top_k"]["maximum"]) == (1, 1000)
    filters = search["filters"]["anyOf"][0]
    assert filters["maxProperties"] == 16 and filters["propertyNames"]["pattern"]
    assert schemas["IngestRequest"]["properties"]["documents"]["maxItems"] == 2000


def test_every_keyword_is_json_schema(document: dict[str, Any]) -> None:
    # pydantic writes some constraints under its own names ("ge", "le") where it cannot place them;
    # a validator or a fuzzer would silently ignore those.
    unknown = []

    def walk(node: Any, path: str, in_properties: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_properties and key in {"ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of"}:
                    unknown.append(f"{path}/{key}")
                walk(value, f"{path}/{key}", key == "properties" and not in_properties)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}", False)

    walk(document, "", False)
    assert not unknown


def test_the_limits_are_this_instances_own(stack_factory) -> None:  # noqa: ANN001
    limited = stack_factory(max_top_k=50, max_query_chars=300, max_documents_per_request=10)
    schemas = limited.anon.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["SearchRequest"]["properties"]["top_k"]["maximum"] == 50
    assert schemas["QueryRequest"]["properties"]["question"]["maxLength"] == 300
    assert schemas["IngestRequest"]["properties"]["documents"]["maxItems"] == 10


def test_every_error_is_declared_with_its_body(document: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorResponse"
    expected = {
        ("post", f"{API}/search"): {401, 403, 404, 409, 413, 422, 429, 503},
        ("post", f"{API}/query"): {401, 403, 404, 409, 413, 422, 429, 503},
        ("get", f"{API}/collections"): {401, 403, 422, 429, 503},
        ("post", f"{API}/collections"): {401, 403, 409, 413, 422, 429, 503},
        ("get", f"{API}/collections/{{name}}"): {401, 403, 404, 422, 429, 503},
        ("delete", f"{API}/collections/{{name}}"): {401, 403, 404, 422, 429, 503},
        ("post", f"{API}/collections/{{name}}/documents"): {401, 403, 404, 409, 413, 422, 429, 503},
        ("delete", f"{API}/collections/{{name}}/documents/{{doc_id}}"): {401, 403, 404, 422, 429, 503},
        ("post", f"{API}/feedback"): {401, 403, 413, 422, 429},
    }
    for (method, path), statuses in expected.items():
        responses = _operation(document, method, path)["responses"]
        for status in statuses:
            content = responses[str(status)]["content"]["application/json"]["schema"]
            assert content == {"$ref": error_ref}, (method, path, status)
        assert "Retry-After" in responses["429"]["headers"]
        assert _operation(document, method, path)["security"] == [{"ServiceToken": []}]
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"}


def test_media_types_are_the_ones_served(fuzz_stack: Stack, document: dict[str, Any]) -> None:
    metrics = _operation(document, "get", "/metrics")["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert fuzz_stack.anon.get("/metrics").headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    export = _operation(document, "get", f"{API}/feedback")["responses"]["200"]["content"]
    assert set(export) == {"application/json", "text/csv"}
    csv = fuzz_stack.http.get(f"{API}/feedback", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")


# --------------------------------------------------------------------------- schemathesis

# Bounded: a few dozen examples per operation keep the whole run near a minute on two cores.
# 413 joins the statuses that refuse schema-violating data: it is the documented answer to a body
# over a declared limit (2,001 documents against the document's maxItems of 2,000).
FUZZ_CONFIG = f"""
headers = {{ "X-Service-Token" = "{SECRET}" }}
[generation]
max-examples = 60
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, local_embedder) -> Iterator[Stack]:  # noqa: ANN001
    stack, server = start_stack(tmp_path_factory.mktemp("fuzz"), local_embedder)
    try:
        assert stack.http.post(f"{API}/collections", json={"name": "handbook"}).status_code == 201
        documents = [
            {"id": "guide", "text": "Rotate the service secret every quarter.", "metadata": {"topic": "security"}},
            {"id": "runbook", "text": "Page the on-call engineer when the breaker opens.", "metadata": {"year": 2025}},
        ]
        assert stack.http.post(f"{API}/collections/handbook/documents", json={"documents": documents}).is_success
        yield stack
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


def _document() -> dict[str, Any]:
    # Built like the live service's (same settings) but without starting it: schemathesis makes its
    # tests when this module is collected. test_the_fuzzed_document_is_the_one_served checks they agree.
    return create_app(make_settings(Path("unused"))).openapi()


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    # A collection's import takes the lines of an export; what is generated for them is a string.
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_dict(_document(), config=SchemathesisConfig.from_str(FUZZ_CONFIG)).exclude(
    tag="deprecated"  # the same handlers again, under the old prefix
)
JSON_SAFE_INTEGER = 2**53


def _integers(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _integers(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield value


def _json_safe(body: Any) -> bool:
    # The generator computes bounds as doubles, which cannot tell 2**63 - 1 from 2**63 + 190: beyond
    # 2**53 it calls out-of-range integers valid. The integer range of filters is checked exactly
    # in tests/test_bounded_work.py instead.
    return all(abs(n) < JSON_SAFE_INTEGER for n in _integers(body))


def test_the_fuzzed_document_is_the_one_served(document: dict[str, Any]) -> None:
    assert document == _document()


# Rules that JSON Schema cannot state, by operation: a request valid by the document may still be
# refused with a 422 for these, and for these only.
BEYOND_JSON_SCHEMA = {
    # one field compared with another (with chunk_size's default when it is not given)
    ("POST", f"{API}/collections"): r"^chunk_overlap must be at least 0 and less than chunk_size",
    # items unique by one of their fields; and what an uploaded file holds (it fails alone, and the
    # request only when no file could be read)
    ("POST", f"{API}/collections/{{name}}/documents"): r"appears more than once in one request|^no file could be"
    # page offsets compared with the text's length and with each other
    r"|page_starts must be ascending offsets into the text",
    # which message is the question (the last, a user's), and the question's limit (messages before
    # it may be longer: they are history)
    # what the lines of an export hold (the body is a string to JSON Schema)
    ("POST", f"{API}/collections/import"): r"^line \d+|^the body is empty|^the file ends in the middle of line",
    ("POST", "/openai/v1/chat/completions"): r"^the last message|^the query is \d+ characters",
}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_service_keeps_to_its_openapi_document(case: Any, fuzz_stack: Stack) -> None:
    if not _json_safe(case.body):
        return
    call = {"base_url": fuzz_stack.url, "headers": {"X-Service-Token": SECRET}}
    operation = (case.operation.method.upper(), case.operation.path)
    if operation == ("POST", "/mcp"):
        # A protocol endpoint: the document states the envelope only, and what is in it (a method,
        # its params) is answered by the MCP SDK, a refusal as a JSON-RPC error, never a 500.
        response = case.call_and_validate(**call, excluded_checks=[positive_data_acceptance])
        if response.status_code == 400 and "json" in str(response.headers.get("content-type", "")):
            assert isinstance(response.json()["error"]["code"], int), response.text
        return
    rule = BEYOND_JSON_SCHEMA.get(operation)
    if rule is None:
        case.call_and_validate(**call)
        return
    response = case.call_and_validate(**call, excluded_checks=[positive_data_acceptance])
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
        message = response.json()["error"]["message"]
        assert re.search(rule, message), f"valid data refused for another reason: {message}"
