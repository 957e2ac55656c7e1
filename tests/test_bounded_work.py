"""Bounded work per request: no caller can make one request cost the service unbounded work.

* filters are capped (keys, values per key, value sizes, the integer range of the store), and a
  request over a cap is a 422 that says which cap and how to stay under it;
* a read never creates a payload index (creating one holds the GIL and the collection's write
  lock): indexes come only from the fields a collection declares when it is created;
* a filter on fields without an index is checked point by point inside the store, so chunks x
  unindexed fields is capped too, and beyond the cap a 422 names the fields to index;
* the CPU-heavy steps of a request run off the event loop, so `/health/live` keeps answering
  while the heaviest allowed request runs (measured against a real `ragkit serve`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragkit.adapters.stores.edge import EdgeStore
from ragkit.adapters.stores.qdrant import QdrantStore
from ragkit.core.errors import InvalidInput
from ragkit.core.types import (
    MAX_FILTER_KEYS,
    MAX_FILTER_VALUE_CHARS,
    MAX_FILTER_VALUES,
    MAX_UNINDEXED_CHECKS,
    CollectionSpec,
    VectorStore,
)
from ragkit.rag.sparse import Bm25Encoder
from tests.conftest import SECRET, Stack
from tests.support.live import free_port
from tests.support.serve import start_serve
from tests.test_store_contract import make_points, open_store, unit_vector

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

SEARCH = "/api/v1/rag/search"
COLLECTIONS = "/api/v1/rag/collections"
BUILT_IN_INDEXES = {"doc_id", "content_hash", "chunk_index"}


def payload_indexes(store: VectorStore, name: str) -> dict[str, str] | None:
    """The payload indexes the backend really holds for ``name`` (field → type, as Qdrant says);
    None where they cannot be seen: qdrant-client's local mode accepts indexes but keeps none."""
    if isinstance(store, EdgeStore):
        schema = store._handle(name).shard.info().payload_schema
        return {field: str(info.data_type).rsplit(".", 1)[-1].lower() for field, info in schema.items()}
    assert isinstance(store, QdrantStore)
    if store._client.init_options.get("location") == ":memory:":
        return None
    schema = store._client.get_collection(name).payload_schema
    return {field: str(info.data_type.value).lower() for field, info in schema.items()}


def search_body(filters: Any, collection: str = "notes") -> dict[str, Any]:
    return {"query": "launch checklist", "collection": collection, "mode": "sparse", "filters": filters}


@pytest.fixture
def notes(stack: Stack) -> Stack:
    created = stack.http.post(
        COLLECTIONS, json={"name": "notes", "indexed_fields": {"team": "keyword", "year": "integer"}}
    )
    assert created.status_code == 201, created.text
    documents = [
        {
            "id": f"note-{i}",
            "text": f"Launch checklist number {i}: verify the backups, then page the on-call engineer.",
            "metadata": {"team": ["infra", "web", "data"][i % 3], "year": 2020 + i % 4, "urgent": i % 2 == 0},
        }
        for i in range(12)
    ]
    ingested = stack.http.post(f"{COLLECTIONS}/notes/documents", json={"documents": documents})
    assert ingested.status_code == 200, ingested.text
    return stack


# --------------------------------------------------------------------------- filter caps


def test_too_many_filter_keys_is_an_actionable_422(notes: Stack) -> None:
    # Finding 1: 200 distinct keys once built 200 payload indexes in one read.
    for count in (MAX_FILTER_KEYS + 1, 200):
        filters = {f"field_{i}": "x" for i in range(count)}
        response = notes.http.post(SEARCH, json=search_body(filters))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert str(MAX_FILTER_KEYS) in error["message"] and str(count) in error["message"], error
    at_cap = {f"field_{i}": "x" for i in range(MAX_FILTER_KEYS - 1)} | {"team": "infra"}
    assert notes.http.post(SEARCH, json=search_body(at_cap)).status_code == 200


def test_too_many_values_or_too_long_a_value_is_a_422(notes: Stack) -> None:
    cases = {
        "values": {"team": [f"t{i}" for i in range(MAX_FILTER_VALUES + 1)]},
        "characters": {"team": "x" * (MAX_FILTER_VALUE_CHARS + 1)},
        "characters in a list": {"team": ["infra", "x" * (MAX_FILTER_VALUE_CHARS + 1)]},
    }
    for word, filters in cases.items():
        response = notes.http.post(SEARCH, json=search_body(filters))
        assert response.status_code == 422, (word, response.text)
        message = response.json()["error"]["message"]
        assert "team" in message and word.split()[0] in message, (word, message)
    at_cap = {"team": ["infra"] + ["x" * MAX_FILTER_VALUE_CHARS] * (MAX_FILTER_VALUES - 1)}
    hits = notes.http.post(SEARCH, json=search_body(at_cap)).json()["results"]
    assert hits and {h["metadata"]["team"] for h in hits} == {"infra"}


@pytest.mark.parametrize("value", [10**23, -(10**23), 2**63, -(2**63) - 1, [1, 10**23]])
def test_filter_integer_outside_the_store_range_is_422(notes: Stack, value: Any) -> None:
    # Finding 5: 10**23 raised OverflowError inside the Edge store, answered as a 500.
    response = notes.http.post(SEARCH, json=search_body({"year": value}))
    assert response.status_code == 422, response.text
    assert "64-bit" in response.json()["error"]["message"]


def test_filter_integers_at_the_edges_of_the_range_are_accepted(notes: Stack) -> None:
    for value in (2**63 - 1, -(2**63)):
        response = notes.http.post(SEARCH, json=search_body({"year": value}))
        assert response.status_code == 200, response.text
        assert response.json()["results"] == []


# --------------------------------------------------------------------------- payload indexes


def test_a_filtered_search_creates_no_payload_index(notes: Stack) -> None:
    # Finding 1: every filter key read was indexed on the spot, by the read.
    store = notes.services.store.backend
    before = payload_indexes(store, "notes")
    assert set(before) == BUILT_IN_INDEXES | {"metadata.team", "metadata.year"}
    filters = {"urgent": True, "team": "web", "year": [2020, 2022], "unknown": "x"}
    response = notes.http.post(SEARCH, json=search_body({k: v for k, v in filters.items() if k != "unknown"}))
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert hits and all(h["metadata"]["urgent"] is True and h["metadata"]["team"] == "web" for h in hits)
    assert notes.http.post(SEARCH, json=search_body(filters)).json()["results"] == []
    assert payload_indexes(store, "notes") == before


def test_declared_fields_are_indexed_at_creation_and_shown(notes: Stack) -> None:
    info = notes.http.get(f"{COLLECTIONS}/notes").json()
    assert info["indexed_fields"] == {"team": "keyword", "year": "integer"}
    kinds = payload_indexes(notes.services.store.backend, "notes")
    assert (kinds["metadata.team"], kinds["metadata.year"]) == ("keyword", "integer")
    listed = {c["name"]: c for c in notes.http.get(COLLECTIONS).json()["collections"]}
    assert listed["notes"]["indexed_fields"] == info["indexed_fields"]


@pytest.mark.parametrize(
    "indexed_fields",
    [
        {"team": "text"},
        {"a.b": "keyword"},
        {"": "keyword"},
        {"doc_id": "keyword"},
        {f"f{i}": "keyword" for i in range(MAX_FILTER_KEYS + 1)},
        ["team"],
        {"team": 1},
    ],
)
def test_bad_indexed_fields_are_422(stack: Stack, indexed_fields: Any) -> None:
    response = stack.http.post(COLLECTIONS, json={"name": "bad", "indexed_fields": indexed_fields})
    assert response.status_code == 422, response.text
    assert stack.http.get(f"{COLLECTIONS}/bad").status_code == 404


@pytest.fixture(params=("edge", "qdrant"))
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = open_store(request.param, tmp_path)
    yield opened
    opened.close()


def test_every_store_indexes_declared_fields_only(any_store: VectorStore) -> None:
    spec = CollectionSpec(
        name="docs",
        embedder="local:all-MiniLM-L6-v2",
        dimension=384,
        chunk_size=200,
        chunk_overlap=20,
        indexed_fields={"topic": "keyword", "year": "integer", "reviewed": "bool"},
    )
    any_store.create_collection(spec)
    assert any_store.get_collection("docs").indexed_fields == spec.indexed_fields
    bm25 = Bm25Encoder(avg_len=5.0)
    any_store.upsert(
        "docs", make_points("docs", "a", ["alpha beta"], bm25=bm25, metadata={"topic": "x", "colour": "red"})
    )
    declared = payload_indexes(any_store, "docs")
    if declared is not None:
        assert set(declared) == BUILT_IN_INDEXES | {"metadata.topic", "metadata.year", "metadata.reviewed"}
    hits = any_store.search(
        "docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3, filters={"colour": "red", "n": 7}
    )
    assert hits == []
    hits = any_store.search(
        "docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3, filters={"colour": "red"}
    )
    assert [h.doc_id for h in hits] == ["a"]
    assert payload_indexes(any_store, "docs") == declared
    with pytest.raises(InvalidInput, match="cannot change"):  # no index is built after creation
        any_store.update_collection(dataclasses.replace(spec, indexed_fields={"colour": "keyword"}))
    assert any_store.get_collection("docs").indexed_fields == spec.indexed_fields


def test_every_store_bounds_the_checks_of_unindexed_fields(any_store: VectorStore) -> None:
    # Without an index a filter is checked point by point inside the store (on Edge holding the GIL):
    # chunks x unindexed fields is capped, so no read stalls the service however large the collection.
    fields = [f"f{k}" for k in range(MAX_FILTER_KEYS)]
    declared = dict.fromkeys(fields[:8], "keyword")
    any_store.create_collection(
        CollectionSpec(
            name="docs", embedder="e", dimension=384, chunk_size=200, chunk_overlap=20, indexed_fields=declared
        )
    )
    chunks = MAX_UNINDEXED_CHECKS // 8 + 1  # more than the cap allows for eight unindexed fields
    any_store.upsert(
        "docs",
        make_points(
            "docs",
            "big",
            [f"chunk {i}" for i in range(chunks)],
            bm25=Bm25Encoder(avg_len=2.0),
            metadata=dict.fromkeys(fields, "v"),
        ),
    )
    search = {"mode": "dense", "dense": unit_vector("q"), "sparse": None, "top_k": 5}
    with pytest.raises(InvalidInput) as refused:
        any_store.search("docs", **search, filters=dict.fromkeys(fields, "v"))
    assert "f8" in refused.value.message and "indexed_fields" in refused.value.message
    assert "f0" not in refused.value.message.split("no payload index for")[1].split(":")[0]
    assert len(any_store.search("docs", **search, filters=dict.fromkeys(fields[:8] + fields[8:15], "v"))) == 5
    assert len(any_store.search("docs", **search, filters=dict.fromkeys(fields[:8], "v") | {"doc_id": "big"})) == 5
    # Hybrid search filters in both of its branches: half as many unindexed fields.
    hybrid = search | {"mode": "hybrid", "sparse": Bm25Encoder(avg_len=2.0).embed_query("chunk")}
    with pytest.raises(InvalidInput):
        any_store.search("docs", **hybrid, filters=dict.fromkeys(fields[8:12], "v"))
    assert len(any_store.search("docs", **hybrid, filters=dict.fromkeys(fields[:8] + fields[8:11], "v"))) == 5


def test_every_store_refuses_out_of_range_filter_integers(any_store: VectorStore) -> None:
    any_store.create_collection(
        CollectionSpec(name="docs", embedder="e", dimension=384, chunk_size=200, chunk_overlap=20)
    )
    with pytest.raises(InvalidInput):
        any_store.search("docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3, filters={"n": 10**23})


# --------------------------------------------------------------------------- ingestion input


def test_metadata_that_json_cannot_carry_is_422(stack: Stack) -> None:
    # Python's JSON reader accepts NaN; the store cannot hold it and failed with a 500.
    assert stack.http.post(COLLECTIONS, json={"name": "plain"}).status_code == 201
    body = '{"documents": [{"id": "n", "text": "not a number", "metadata": {"ratio": NaN}}]}'
    response = stack.http.post(
        f"{COLLECTIONS}/plain/documents", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "not plain JSON" in response.json()["error"]["message"]
    assert stack.http.get(f"{COLLECTIONS}/plain").json()["chunks"] == 0


def test_a_lone_surrogate_in_an_upload_fails_that_file_alone(stack: Stack) -> None:
    assert stack.http.post(COLLECTIONS, json={"name": "plain"}).status_code == 201
    files = [
        ("files", ("broken.json", b'{"id": "s", "text": "half a pair \\ud800 here"}', "application/json")),
        ("files", ("fine.txt", b"A perfectly ordinary text file.", "text/plain")),
    ]
    response = stack.http.post(f"{COLLECTIONS}/plain/documents", files=files)
    assert response.status_code == 200, response.text
    outcome = {f["filename"]: f for f in response.json()["files"]}
    assert outcome["broken.json"]["status"] == "failed" and "surrogate" in outcome["broken.json"]["error"]
    assert outcome["fine.txt"]["status"] == "ok"


# --------------------------------------------------------------------------- names


def test_a_collection_name_with_a_final_newline_is_422(stack: Stack) -> None:
    # Finding 6: re.match(r"...$") accepted "good\n" (201, and a folder with a newline in its name).
    response = stack.http.post(COLLECTIONS, json={"name": "good\n"})
    assert response.status_code == 422, response.text
    names = [c["name"] for c in stack.http.get(COLLECTIONS).json()["collections"]]
    assert names == []
    assert not any("\n" in p.name for p in stack.settings.data_dir.rglob("*"))
    assert stack.http.post(COLLECTIONS, json={"name": "good"}).status_code == 201


# --------------------------------------------------------------------------- the event loop under load

HEALTH_BUDGET_S = 0.1
HEAVY_DOC_BYTES = 10 * 1024 * 1024


def heavy_document() -> dict[str, Any]:
    """About 10 MB of prose in paragraphs: every sentence different, so chunking, BM25 and the
    model all do their full work."""
    sentences = []
    size, i = 0, 0
    while size < HEAVY_DOC_BYTES:
        sentence = f"Observation {i} of the survey records {i * 7 % 1013} samples near station {i % 97}."
        sentences.append(sentence + ("\n\n" if i % 8 == 7 else " "))
        size += len(sentence) + 1
        i += 1
    return {
        "id": "survey",
        "title": "Field survey",
        "text": "".join(sentences),
        # f*: declared as indexed when the collection is created; u*: not
        "metadata": {f"{kind}{k}": "v" for kind in "fu" for k in range(MAX_FILTER_KEYS - 1)},
    }


INDEXED_FIELDS = {f"f{k}": "keyword" for k in range(MAX_FILTER_KEYS - 1)}


def heaviest_search(chunks: int) -> dict[str, Any]:
    """The most a search may ask of a collection of ``chunks``: every filter key, as many of them
    unindexed as the cap on unindexed checks allows, every value (of the longest allowed size) for
    each, all of them matching, the longest query and the most results, in hybrid mode."""
    filler = ["x" * MAX_FILTER_VALUE_CHARS] * (MAX_FILTER_VALUES - 1)
    unindexed = min(MAX_UNINDEXED_CHECKS // (2 * chunks), MAX_FILTER_KEYS - 1)  # hybrid filters twice
    fields = [f"u{k}" for k in range(unindexed)] + [f"f{k}" for k in range(MAX_FILTER_KEYS - 1 - unindexed)]
    filters = {field: ["v", *filler] for field in fields} | {"doc_id": ["survey", *filler]}
    query = ("samples recorded near the station during the survey " * 80)[:4000]
    return {"query": query, "collection": "survey", "mode": "hybrid", "top_k": 1000, "filters": filters}


def start_service(data_dir: Path, port: int) -> subprocess.Popen:
    # A process of its own: in the test process the service would share the GIL with the client
    # that measures it.
    return start_serve(data_dir, port, INTER_SERVICE_SECRET=SECRET)


def stop(process: subprocess.Popen) -> None:
    # uvicorn waits for requests in flight before it exits: a cut-off ingestion would hold it.
    process.kill()
    process.wait(timeout=60)


def live_latencies(client: httpx.Client, busy: Callable[[], bool], deadline: float) -> list[tuple[float, float]]:
    """(seconds since the start, round trip) of `/health/live`, every 50 ms while ``busy()``; a
    timeout counts in full."""
    latencies = []
    begin = time.monotonic()
    while busy() and time.monotonic() < deadline:
        started = time.perf_counter()
        with contextlib.suppress(httpx.TimeoutException):
            assert client.get("/health/live").status_code == 200
        latencies.append((round(time.monotonic() - begin, 1), time.perf_counter() - started))
        threading.Event().wait(0.05)
    return latencies


def worst(latencies: list[tuple[float, float]]) -> dict[str, Any]:
    slowest = sorted(latencies, key=lambda sample: sample[1], reverse=True)
    return {
        "max_ms": round(slowest[0][1] * 1000, 1),
        "p99_ms": round(slowest[len(slowest) // 100][1] * 1000, 1),
        "probes": len(latencies),
        "slowest_ms_at_s": [(round(latency * 1000), at) for at, latency in slowest[:5]],
    }


def in_background(work: Callable[[], Any]) -> tuple[threading.Event, dict[str, Any]]:
    """Runs ``work`` in a thread; the event is set once it has returned or raised."""
    done, outcome = threading.Event(), {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, outcome


def upserts(client: httpx.Client) -> int:
    """Point batches the service has written so far (from its own metrics)."""
    prefix = 'ragkit_store_operation_duration_seconds_count{operation="upsert"}'
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return int(float(lines[0].split()[-1])) if lines else 0


WRITE_BATCHES_MEASURED = 8


@pytest.mark.slow
def test_health_answers_within_100_ms_during_the_heaviest_requests(tmp_path: Path) -> None:
    """Finding 2: one 10 MB document kept /health/live from answering for minutes (JSON parsing
    and chunking ran on the event loop); finding 1: a search could build payload indexes.

    The ingestion is measured from the upload through parsing, hashing and chunking the whole
    document and into its writing, for WRITE_BATCHES_MEASURED batches of points; the rest is the
    same batch step again (embedding takes minutes on two cores), so the service is stopped there
    and started again on what it wrote, which the heaviest search then reads."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, headers={"X-Service-Token": SECRET}, timeout=600)
    probe = httpx.Client(base_url=url, timeout=5)
    service = start_service(tmp_path, port)
    try:
        created = api.post(COLLECTIONS, json={"name": "survey", "indexed_fields": INDEXED_FIELDS})
        assert created.status_code == 201, created.text
        body = json.dumps({"documents": [heavy_document()]}).encode()
        assert HEAVY_DOC_BYTES < len(body) < 32 * 1024 * 1024  # under the default body limit
        probe.get("/health/live")  # connected before timing starts
        done, ingest = in_background(
            lambda: api.post(
                f"{COLLECTIONS}/survey/documents", content=body, headers={"Content-Type": "application/json"}
            )
        )
        started = time.monotonic()
        first_batch: list[float] = []

        def writing_the_first_batches() -> bool:
            written = upserts(probe)
            if written and not first_batch:
                first_batch.append(round(time.monotonic() - started, 1))
            return not done.is_set() and written < WRITE_BATCHES_MEASURED

        during_ingest = live_latencies(probe, writing_the_first_batches, started + 600)
        ingest_seconds = time.monotonic() - started
        assert "error" not in ingest, ingest.get("error")
        written = upserts(probe)
        assert written >= WRITE_BATCHES_MEASURED or (done.is_set() and ingest["result"].status_code == 200), written
    finally:
        stop(service)

    service = start_service(tmp_path, port)
    try:
        search = heaviest_search(api.get(f"{COLLECTIONS}/survey").json()["chunks"])
        first = api.post(SEARCH, json=search)
        assert first.status_code == 200, first.text
        assert len(first.json()["results"]) == 1000, "the heaviest search matches and returns the most results"
        probe.get("/health/live")
        done, searches = in_background(lambda: [api.post(SEARCH, json=search) for _ in range(30)])
        during_search = live_latencies(probe, lambda: not done.is_set(), time.monotonic() + 600)
        assert "error" not in searches, searches.get("error")
        assert all(r.status_code == 200 and len(r.json()["results"]) == 1000 for r in searches["result"])
    finally:
        stop(service)
        api.close()
        probe.close()

    report = {
        "ingest": worst(during_ingest) | {"seconds": round(ingest_seconds, 1), "first_batch_s": first_batch},
        "search": worst(during_search),
        "load_average": os.getloadavg(),
    }
    print(f"\n/health/live during the heaviest requests: {report}")
    assert len(during_ingest) >= 20 and len(during_search) >= 10, report
    # 99 of 100 probes within the budget, and none far past it: on a machine shared with other work
    # one probe in hundreds can wait for a core that is not ours to give, whatever the service does.
    assert report["ingest"]["p99_ms"] < HEALTH_BUDGET_S * 1000, report
    assert report["ingest"]["max_ms"] < 3 * HEALTH_BUDGET_S * 1000, report
    # The heaviest search (1,000 hits with payloads, 16 filter keys, a 4,000-character query):
    # payloads come in pages and the query is embedded on ONNX Runtime, which releases the GIL;
    # measured p99 44 ms at load average 0.9 and 83 ms at 4.0.
    assert report["search"]["p99_ms"] < HEALTH_BUDGET_S * 1000, report
    assert report["search"]["max_ms"] < 3 * HEALTH_BUDGET_S * 1000, report


@pytest.mark.slow
def test_health_answers_within_100_ms_while_a_large_upload_is_parsed_and_loaded(tmp_path: Path) -> None:
    """A multipart upload of about 20 MB of files (under the default body limit): the form is
    parsed as it streams in, and each file loaded and chunked in a worker thread, so liveness
    probes keep answering until the first points are written."""
    port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Service-Token": SECRET}, timeout=600)
    probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    text = "\n".join(heavy_document()["text"] for _ in range(2))
    files = [
        ("files", ("survey.txt", text.encode(), "text/plain")),
        ("files", ("notes.md", text[: len(text) // 4].encode(), "text/markdown")),
    ]
    service = start_service(tmp_path, port)
    try:
        assert api.post(COLLECTIONS, json={"name": "uploads"}).status_code == 201
        probe.get("/health/live")
        done, upload = in_background(lambda: api.post(f"{COLLECTIONS}/uploads/documents", files=files))
        started = time.monotonic()
        latencies = live_latencies(probe, lambda: not done.is_set() and upserts(probe) < 2, started + 600)
        assert "error" not in upload, upload.get("error")
    finally:
        stop(service)
        api.close()
        probe.close()
    report = worst(latencies) | {"seconds": round(time.monotonic() - started, 1), "load_average": os.getloadavg()}
    print(f"\n/health/live during a large upload: {report}")
    assert len(latencies) >= 20, report
    assert report["p99_ms"] < HEALTH_BUDGET_S * 1000, report
    assert report["max_ms"] < 3 * HEALTH_BUDGET_S * 1000, report
