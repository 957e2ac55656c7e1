"""Every route of DESIGN.md §3 with good, wrong, missing, huge and hostile input, over real HTTP."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragkit.core.types import CollectionSpec
from tests.conftest import SECRET, Stack

DOCS = [
    {
        "id": "breakers",
        "title": "Circuit breakers",
        "text": "A circuit breaker opens after five consecutive failures of a dependency. While it is open, "
        "calls fail fast with status 503 and a Retry-After header. After thirty seconds one probe is let "
        "through.",
        "metadata": {"topic": "resilience", "year": 2024},
    },
    {
        "id": "tokens",
        "title": "Service tokens",
        "text": "Every API route needs the X-Service-Token header. To rotate the secret, list the new and the old "
        "secret separated by a comma, restart, then remove the old one.",
        "metadata": {"topic": "security"},
    },
    {
        "id": "ingest",
        "title": "Ingestion",
        "text": "Unchanged documents are skipped by their content hash. A changed document replaces its chunks "
        "without leaving stale chunks behind.",
        "metadata": {"topic": "ingestion", "year": 2025},
    },
]


def create(stack: Stack, name: str = "handbook", **extra: object) -> None:
    response = stack.http.post("/api/v1/rag/collections", json={"name": name, **extra})
    assert response.status_code == 201, response.text


def ingest(stack: Stack, docs: list[dict], name: str = "handbook") -> dict:
    response = stack.http.post(f"/api/v1/rag/collections/{name}/documents", json={"documents": docs})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def loaded(stack: Stack) -> Stack:
    create(stack)
    ingest(stack, DOCS)
    return stack


def error_of(response) -> dict:  # noqa: ANN001
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return body["error"]


# -- health and metrics ----------------------------------------------------------------------
def test_health_is_open_and_lists_the_configured_backends_breakers(stack: Stack) -> None:
    body = stack.anon.get("/health").json()
    assert body["status"] == "ok"
    # The embedded default: no Ollama and no Redis configured, so no breakers for them.
    assert set(body["circuit_breakers"]) == {"qdrant_search", "qdrant_upsert", "local_embedding", "local_generation"}
    assert set(body["circuit_breakers"].values()) == {"closed"}
    assert body["dependencies"]["store"]["backend"] == "edge"
    assert body["version"]
    assert stack.anon.get("/health/live").json() == {"status": "alive"}
    assert stack.anon.get("/health/ready").status_code == 200
    assert SECRET not in json.dumps(body)


def metric(stack: Stack, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the series does not exist yet), read as Prometheus reads it."""
    for family in text_string_to_metric_families(stack.anon.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_metrics_count_the_searches_and_ingestion_actually_made(stack: Stack) -> None:
    create(stack)
    report = ingest(stack, DOCS)
    # Series that exist from start-up would pass without any work done: these grow with the work.
    assert metric(stack, "ragkit_ingested_chunks_total", collection="handbook") == report["chunks"] > 0
    assert metric(stack, "ragkit_ingested_documents_total", collection="handbook", outcome="ingested") == len(DOCS)
    route = {"method": "POST", "route": "/api/v1/rag/search"}
    before = {
        "ok": metric(stack, "ragkit_http_requests_total", **route, status="200"),
        "timed": metric(stack, "ragkit_http_request_duration_seconds_count", **route),
        "embed": metric(stack, "ragkit_stage_duration_seconds_count", stage="embed"),
        "search": metric(stack, "ragkit_stage_duration_seconds_count", stage="retrieve"),
    }
    # Distinct queries, so no answer can come from a cache instead of the stages.
    for query in ("breaker", "rotate the secret", "stale chunks"):
        assert stack.http.post("/api/v1/rag/search", json={"query": query, "collection": "handbook"}).status_code == 200
    after = {
        "ok": metric(stack, "ragkit_http_requests_total", **route, status="200"),
        "timed": metric(stack, "ragkit_http_request_duration_seconds_count", **route),
        "embed": metric(stack, "ragkit_stage_duration_seconds_count", stage="embed"),
        "search": metric(stack, "ragkit_stage_duration_seconds_count", stage="retrieve"),
    }
    assert {key: after[key] - before[key] for key in before} == {"ok": 3, "timed": 3, "embed": 3, "search": 3}
    assert metric(stack, "ragkit_breaker_state", breaker="qdrant_search") == 0  # closed after healthy searches


def test_openapi_docs_are_served(stack: Stack) -> None:
    assert stack.anon.get("/docs").status_code == 200
    spec = stack.anon.get("/openapi.json").json()
    assert "/api/v1/rag/search" in spec["paths"]


# -- auth -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Service-Token": "wrong" * 10},
        {"X-Service-Token": ""},
        {"X-Service-Token": "é".encode() * 40},
        {"Authorization": "Bearer nope"},
    ],
)
def test_every_api_route_needs_the_token(stack: Stack, headers: dict) -> None:
    bodies = set()
    for method, path in [
        ("GET", "/api/v1/rag/collections"),
        ("POST", "/api/v1/rag/search"),
        ("POST", "/api/v1/rag/query"),
        ("DELETE", "/api/v1/rag/collections/x"),
        ("GET", "/api/rag/collections"),
    ]:
        response = stack.anon.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        bodies.add(response.text)
    assert len(bodies) == 1, "a wrong and a missing token must look the same"


# -- collections ------------------------------------------------------------------------------
def test_collection_lifecycle(stack: Stack) -> None:
    create(stack, "notes", chunk_size=120, chunk_overlap=20)
    again = stack.http.post("/api/v1/rag/collections", json={"name": "notes"})
    assert again.status_code == 409 and error_of(again)["code"] == "collection_exists"
    listed = stack.http.get("/api/v1/rag/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["notes"]
    info = stack.http.get("/api/v1/rag/collections/notes").json()
    assert info["chunk_size"] == 120 and info["chunk_overlap"] == 20
    assert info["embedder"] == "local:all-MiniLM-L6-v2" and info["dimension"] == 384
    assert stack.http.delete("/api/v1/rag/collections/notes").status_code == 200
    gone = stack.http.get("/api/v1/rag/collections/notes")
    assert gone.status_code == 404 and error_of(gone)["code"] == "collection_not_found"
    assert stack.http.delete("/api/v1/rag/collections/notes").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "../../etc"},
        {"name": "a" * 300},
        {"name": "spaces are bad"},
        {"name": "ok", "chunk_size": 0},
        {"name": "ok", "chunk_size": 100, "chunk_overlap": 100},
        {"name": "ok", "chunk_size": -5},
        {"name": "ok", "chunk_size": "big"},
        {"name": 12},
        {},
        {"name": "ok", "unexpected": True},
        {"name": "ok", "quantization": "int4"},
        {"name": "ok", "quantization": None},
    ],
)
def test_bad_collection_requests_are_422(stack: Stack, body: dict) -> None:
    response = stack.http.post("/api/v1/rag/collections", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_input"
    assert stack.http.get("/api/v1/rag/collections").json()["collections"] == []


def test_an_int8_collection_says_so_and_answers_like_any_other(stack: Stack) -> None:
    created = stack.http.post("/api/v1/rag/collections", json={"name": "large", "quantization": "int8"})
    assert created.status_code == 201, created.text
    assert created.json()["quantization"] == "int8"
    assert stack.http.post("/api/v1/rag/collections", json={"name": "plain"}).json()["quantization"] == "none"
    documents = [{"id": "tokens", "text": "Rotate the service token by listing the old and the new secret."}]
    assert stack.http.post("/api/v1/rag/collections/large/documents", json={"documents": documents}).status_code == 200
    found = stack.http.post("/api/v1/rag/search", json={"query": "rotate the token", "collection": "large"}).json()
    assert found["results"][0]["doc_id"] == "tokens" and found["mode_used"] == "hybrid"
    assert stack.http.get("/api/v1/rag/collections/large").json()["quantization"] == "int8"


def test_unknown_collection_is_404_everywhere(stack: Stack) -> None:
    for method, path, body in [
        ("POST", "/api/v1/rag/search", {"query": "x", "collection": "nope"}),
        ("POST", "/api/v1/rag/query", {"question": "x", "collection": "nope"}),
        ("GET", "/api/v1/rag/collections/nope/documents", None),
        ("POST", "/api/v1/rag/collections/nope/documents", {"documents": [{"text": "x"}]}),
        ("DELETE", "/api/v1/rag/collections/nope/documents/x", None),
    ]:
        response = stack.http.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert "nope" in error_of(response)["message"]


# -- ingestion --------------------------------------------------------------------------------
def test_ingest_is_idempotent_and_replaces_changed_documents(loaded: Stack) -> None:
    chunks = loaded.http.get("/api/v1/rag/collections/handbook").json()["chunks"]
    again = ingest(loaded, DOCS)
    assert again["ingested"] == 0 and again["skipped_unchanged"] == 3
    assert loaded.http.get("/api/v1/rag/collections/handbook").json()["chunks"] == chunks

    changed = dict(DOCS[2], text="Ingestion now uses a write-ahead journal called the ledger.")
    report = ingest(loaded, [changed])
    assert report["ingested"] == 1
    hits = loaded.http.post(
        "/api/v1/rag/search",
        json={"query": "stale chunks content hash", "collection": "handbook", "filters": {"doc_id": "ingest"}},
    ).json()["results"]
    assert hits and all("ledger" in h["text"] for h in hits), "a stale chunk of the old version survived"
    docs = loaded.http.get("/api/v1/rag/collections/handbook/documents").json()["documents"]
    assert sorted(d["doc_id"] for d in docs) == ["breakers", "ingest", "tokens"]


@pytest.mark.parametrize(
    "body",
    [
        {"documents": []},
        {"documents": [{"title": "no text"}]},
        {"documents": [{"text": ""}]},
        {"documents": [{"text": "   "}]},
        {"documents": [{"text": 5}]},
        {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
        {"documents": "not a list"},
        {"docs": []},
    ],
)
def test_bad_ingest_bodies_are_422_and_lose_nothing(loaded: Stack, body: dict) -> None:
    before = loaded.http.get("/api/v1/rag/collections/handbook").json()
    response = loaded.http.post("/api/v1/rag/collections/handbook/documents", json=body)
    assert response.status_code == 422, response.text
    assert loaded.http.get("/api/v1/rag/collections/handbook").json() == before


def test_malformed_json_is_422(loaded: Stack) -> None:
    for path in ["/api/v1/rag/search", "/api/v1/rag/collections/handbook/documents", "/api/v1/rag/collections"]:
        response = loaded.http.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (path, response.text)


def test_too_many_documents_and_too_large_bodies_are_413(stack_factory) -> None:  # noqa: ANN001
    small = stack_factory(max_documents_per_request=5, max_request_bytes=64 * 1024)
    create(small)
    response = small.http.post(
        "/api/v1/rag/collections/handbook/documents", json={"documents": [{"text": f"doc {i}"} for i in range(6)]}
    )
    assert response.status_code == 413 and "5" in error_of(response)["message"]
    huge = small.http.post("/api/v1/rag/collections/handbook/documents", json={"documents": [{"text": "x" * 200_000}]})
    assert huge.status_code == 413
    assert error_of(huge)["code"] == "payload_too_large"

    def chunked():  # no Content-Length: the limit must hold on the stream too
        for _ in range(100):
            yield b"x" * 4096

    streamed = small.http.post(
        "/api/v1/rag/collections/handbook/documents", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert small.http.get("/api/v1/rag/collections/handbook").json()["chunks"] == 0


def test_file_upload_reports_each_file(stack: Stack) -> None:
    create(stack)
    files = [
        ("files", ("guide.md", b"# Guide\n\nThe ledger keeps every write in order.", "text/markdown")),
        ("files", ("notes.txt", "Caf\u00e9 notes: the breaker trips after five failures.".encode(), "text/plain")),
        ("files", ("broken.jsonl", b'{"text": "fine"}\n{oops\n', "application/json")),
        ("files", ("image.png", b"\x89PNG\r\n", "image/png")),
    ]
    response = stack.http.post("/api/v1/rag/collections/handbook/documents", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    by_name = {f["filename"]: f for f in body["files"]}
    assert by_name["guide.md"]["status"] == "ok" and by_name["notes.txt"]["status"] == "ok"
    assert by_name["broken.jsonl"]["status"] == "failed" and "2" in by_name["broken.jsonl"]["error"]
    assert by_name["image.png"]["status"] == "failed"
    assert body["ingested"] == 2
    only_bad = stack.http.post(
        "/api/v1/rag/collections/handbook/documents", files=[("files", ("x.exe", b"MZ", "application/octet-stream"))]
    )
    assert only_bad.status_code == 422


def test_delete_document_removes_all_its_chunks(loaded: Stack) -> None:
    long_doc = {"id": "guide/long.md", "text": " ".join(f"Sentence number {i} is about ledgers." for i in range(200))}
    ingest(loaded, [long_doc])
    removed = loaded.http.delete("/api/v1/rag/collections/handbook/documents/guide/long.md")
    assert removed.status_code == 200 and removed.json()["chunks"] > 1
    hits = loaded.http.post(
        "/api/v1/rag/search", json={"query": "ledgers", "collection": "handbook", "top_k": 10}
    ).json()["results"]
    assert all(h["doc_id"] != "guide/long.md" for h in hits)
    missing = loaded.http.delete("/api/v1/rag/collections/handbook/documents/guide/long.md")
    assert missing.status_code == 404 and error_of(missing)["code"] == "document_not_found"


def test_embedder_mismatch_is_409_and_says_which(stack: Stack) -> None:
    spec = CollectionSpec(
        name="legacy", embedder="ollama:nomic-embed-text", dimension=768, chunk_size=200, chunk_overlap=30
    )
    stack.services.store.backend.create_collection(spec)
    search = stack.http.post("/api/v1/rag/search", json={"query": "x", "collection": "legacy", "mode": "dense"})
    assert search.status_code == 409
    message = error_of(search)["message"]
    assert "ollama:nomic-embed-text" in message and "local:all-MiniLM-L6-v2" in message
    write = stack.http.post("/api/v1/rag/collections/legacy/documents", json={"documents": [{"text": "x"}]})
    assert write.status_code == 409


# -- search and answers -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_search_finds_the_relevant_document_in_every_mode(loaded: Stack, mode: str) -> None:
    response = loaded.http.post(
        "/api/v1/rag/search",
        json={"query": "how do I rotate the service secret?", "collection": "handbook", "mode": mode, "top_k": 3},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode_used"] == mode and body["degraded"] is False and body["reasons"] == []
    assert body["results"][0]["doc_id"] == "tokens"
    first = body["results"][0]
    assert set(first) >= {"id", "score", "text", "doc_id", "chunk_index", "metadata"}
    assert body["timings_ms"]["total"] > 0


def test_search_filters_and_get_form(loaded: Stack) -> None:
    body = loaded.http.post(
        "/api/v1/rag/search", json={"query": "failures", "collection": "handbook", "filters": {"topic": "security"}}
    ).json()
    assert {h["doc_id"] for h in body["results"]} == {"tokens"}
    any_of = loaded.http.post(
        "/api/v1/rag/search", json={"query": "failures", "collection": "handbook", "filters": {"year": [2024, 2025]}}
    ).json()
    assert {h["doc_id"] for h in any_of["results"]} == {"breakers", "ingest"}
    got = loaded.http.get("/api/v1/rag/search", params={"query": "breaker", "collection": "handbook", "top_k": 1})
    assert got.status_code == 200 and len(got.json()["results"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"query": "", "collection": "handbook"},
        {"query": "   ", "collection": "handbook"},
        {"query": "x" * 100_000, "collection": "handbook"},
        {"query": "x", "collection": "handbook", "top_k": 0},
        {"query": "x", "collection": "handbook", "top_k": 100_000},
        {"query": "x", "collection": "handbook", "mode": "magic"},
        {"query": "x", "collection": "handbook", "filters": {"topic": {"$ne": 1}}},
        {"query": "x", "collection": "handbook", "filters": ["a"]},
        {"query": None, "collection": "handbook"},
        {"collection": "handbook"},
        {"query": "x"},
    ],
)
def test_bad_searches_are_422(loaded: Stack, body: dict) -> None:
    response = loaded.http.post("/api/v1/rag/search", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_input"


def test_hostile_queries_are_just_text(loaded: Stack) -> None:
    for query in [
        "'; DROP TABLE points; --",
        "<script>alert(1)</script>",
        "\u0000\u202e\U0001f4a5",
        "../../etc/passwd",
    ]:
        response = loaded.http.post("/api/v1/rag/search", json={"query": query, "collection": "handbook"})
        assert response.status_code == 200, (query, response.text)


def test_query_answers_with_numbered_citations(loaded: Stack) -> None:
    response = loaded.http.post(
        "/api/v1/rag/query",
        json={"question": "What happens after five consecutive failures?", "collection": "handbook", "top_k": 3},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generator"] == "extractive" and body["degraded"] is False
    assert "[1]" in body["answer"]
    assert body["sources"][0]["doc_id"] == "breakers"
    assert {"retrieval", "generation"} <= set(body["timings_ms"])


def test_query_streams_server_sent_events(loaded: Stack) -> None:
    events = []
    with loaded.http.stream(
        "POST",
        "/api/v1/rag/query",
        json={"question": "How are tokens rotated?", "collection": "handbook", "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and "token" in names
    answer = "".join(d["text"] for e, d in events if e == "token")
    assert answer == events[-1][1]["answer"] and "[" in answer


def test_stream_errors_before_the_first_event_are_plain_http(loaded: Stack) -> None:
    response = loaded.http.post("/api/v1/rag/query", json={"question": "x", "collection": "nope", "stream": True})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")


# -- versioning -------------------------------------------------------------------------------
def test_unversioned_alias_works_with_a_deprecation_header(loaded: Stack) -> None:
    old = loaded.http.post("/api/rag/search", json={"query": "breaker", "collection": "handbook"})
    assert old.status_code == 200
    assert old.headers["Deprecation"] == "true"
    assert "/api/v1/rag/search" in old.headers["Link"]
    new = loaded.http.post("/api/v1/rag/search", json={"query": "breaker", "collection": "handbook"})
    assert "Deprecation" not in new.headers
    assert [h["id"] for h in old.json()["results"]] == [h["id"] for h in new.json()["results"]]


def test_unknown_routes_and_methods(stack: Stack) -> None:
    missing = stack.http.get("/api/v2/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    # The token is valid, so the only thing wrong is the method: 405, never 401 or 404.
    wrong = [("PUT", "/api/v1/rag/search"), ("DELETE", "/api/v1/rag/collections"), ("PATCH", "/api/rag/search")]
    for method, path in wrong:
        wrong_method = stack.http.request(method, path, json={})
        assert wrong_method.status_code == 405, f"{method} {path}: {wrong_method.status_code} {wrong_method.text}"
        assert error_of(wrong_method)["code"] == "method_not_allowed"


def test_client_round_trip_with_awkward_document_ids(loaded: Stack) -> None:
    from ragkit.client import RagkitClient

    awkward = "notes/a b?c#d%.md"
    with RagkitClient(loaded.url, SECRET) as client:
        assert client.ingest("handbook", [{"id": awkward, "text": "Awkward ids survive the trip."}])["ingested"] == 1
        assert awkward in [d["doc_id"] for d in client.documents("handbook")]
        assert client.delete_document("handbook", awkward)["deleted"] == awkward
        assert awkward not in [d["doc_id"] for d in client.documents("handbook")]
