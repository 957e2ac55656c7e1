"""A collection exported and imported through the live service over HTTP: from the embedded store to a
service on qdrant-client (`QdrantClient(":memory:")`, the server API) and back, answering the same;
every damaged or hostile file refused with a status and a message a person can act on, and nothing
half-written left behind; the pages of both directions bounded.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient

import ragkit.services as services_module
from ragkit.adapters.stores.qdrant import QdrantStore
from ragkit.cli import main
from ragkit.client import RagkitClient
from ragkit.core.errors import DependencyUnavailable, ServiceError
from ragkit.rag import transfer
from tests.conftest import REPO, SECRET, Stack, start_stack
from tests.support.waiting import wait_until
from tests.test_auth import JWT_KEY, user_token

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

COLLECTIONS = "/api/v1/rag/collections"
IMPORT = f"{COLLECTIONS}/import"
QUERIES = [
    "how do I rotate the service token",
    "what happens when Ollama is down",
    "what does a 409 status mean",
    "circuit breaker half open",
    "chunk size and overlap",
]
MODES = ("dense", "sparse", "hybrid")


def client_of(stack: Stack) -> RagkitClient:
    return RagkitClient(stack.url, SECRET)


def lines_of(path: Path) -> list[bytes]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        return file.read().splitlines()


def body(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, local_embedder) -> Iterator[Stack]:  # noqa: ANN001
    """The embedded store holding `docs`: the sample documents, ingested for real."""
    stack, server = start_stack(tmp_path_factory.mktemp("source"), local_embedder)
    try:
        with client_of(stack) as client:
            client.create_collection("docs", indexed_fields={"source": "keyword"})
            files = [(p.name, p.read_bytes()) for p in sorted((REPO / "samples" / "docs").iterdir())]
            assert client.upload("docs", files)["ingested"] == len(files)
        yield stack
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


@pytest.fixture(scope="module")
def exported(source: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exports") / "docs.ndjson"
    with client_of(source) as client:
        summary = client.export_collection("docs", path)
    assert summary.points == client_of(source).collection("docs")["chunks"] > 50
    return path


@pytest.fixture
def qdrant_stack(stack_factory, monkeypatch: pytest.MonkeyPatch) -> Stack:  # noqa: ANN001
    """A service whose store is qdrant-client, as with QDRANT_URL, on its in-memory local mode."""
    with monkeypatch.context() as patch:
        patch.setattr(services_module, "_build_store", lambda settings: QdrantStore(QdrantClient(":memory:")))
        return stack_factory()


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pages and batches of 4 points, so that a short file is many of them."""
    monkeypatch.setattr(transfer, "PAGE", 4)
    return 4


def names(stack: Stack) -> list[str]:
    return [c["name"] for c in stack.http.get(COLLECTIONS).json()["collections"]]


def search(stack: Stack, collection: str, query: str, mode: str) -> list[tuple[str, float]]:
    found = client_of(stack).search(query, collection, mode=mode, top_k=8)
    assert found["mode_used"] == mode and not found["degraded"]
    return [(hit["id"], hit["score"]) for hit in found["results"]]


def branch_ties(stack: Stack, query: str) -> set[str]:
    """Points whose score in a branch of a hybrid search (the top 20 of each mode) equals another's
    exactly. The store lists such a tie in an order of its own (how its segments lie), and the fused
    (RRF) score counts the rank: a copy of the same points may give one of them 1/73 rather than 1/74
    there. Their ranks in the fused list are still compared; their fused scores cannot be."""
    tied: set[str] = set()
    for mode in ("dense", "sparse"):
        hits = client_of(stack).search(query, "docs", mode=mode, top_k=20)["results"]
        scores = [hit["score"] for hit in hits]
        tied |= {hit["id"] for hit in hits if scores.count(hit["score"]) > 1}
    return tied


# --------------------------------------------------------------------------- the round trip


def test_a_collection_moves_to_qdrant_and_back_and_answers_the_same(
    source: Stack, exported: Path, qdrant_stack: Stack, tmp_path: Path
) -> None:
    chunks = client_of(source).collection("docs")["chunks"]
    documents = client_of(source).collection("docs")["documents"]
    moved = client_of(qdrant_stack).import_collection(exported)
    assert moved == {"collection": "docs", "points": chunks, "documents": documents, "replaced": False}

    again = tmp_path / "from-qdrant.ndjson.gz"
    assert client_of(qdrant_stack).export_collection("docs", again).points == chunks
    back = client_of(source).import_collection(again, name="docs-back")
    assert back["collection"] == "docs-back" and back["points"] == chunks
    try:
        places = [(source, "docs"), (qdrant_stack, "docs"), (source, "docs-back")]
        for query in QUERIES:
            tied = branch_ties(source, query)
            for mode in MODES:
                original, *copies = (search(stack, name, query, mode) for stack, name in places)
                assert original, (query, mode)
                for copy in copies:
                    assert [i for i, _ in copy] == [i for i, _ in original], (query, mode)
                    for (point, score), (_, expected) in zip(copy, original, strict=True):
                        if mode != "hybrid" or point not in tied:
                            assert score == pytest.approx(expected, abs=1e-4), (query, mode, point)
        listings = [client_of(stack).documents(name, limit=1000) for stack, name in places]
        assert listings[0] and listings[1] == listings[0] and listings[2] == listings[0]

        # The spec travels whole (embedder, dimension, chunking, BM25 statistics, indexes, creation
        # time), and the points come back from Qdrant exactly as Edge wrote them.
        first, second = lines_of(exported), lines_of(again)
        spec_of = [json.loads(lines[0])["spec"] for lines in (first, second)]
        assert spec_of[0] == spec_of[1] and spec_of[0]["bm25_avg_len"] > 0
        assert spec_of[0]["indexed_fields"] == {"source": "keyword"}
        assert [json.loads(lines[0])["store"] for lines in (first, second)] == ["edge", "qdrant"]
        points = [[json.loads(line) for line in lines[1:-1]] for lines in (first, second)]
        assert [p["id"] for p in points[1]] == [p["id"] for p in points[0]]
        for exact, moved in zip(*points, strict=True):
            assert (moved["payload"], moved["sparse"]) == (exact["payload"], exact["sparse"])
            # Qdrant normalises a cosine vector as it is written: an Edge vector a float32 step off
            # unit length comes back a step different in some components.
            assert moved["dense"] == pytest.approx(exact["dense"], abs=1e-6)
        assert second[-1] == first[-1]
        stored = [source.services.store.backend.get_collection(n) for n in ("docs", "docs-back")]
        assert {**stored[1].__dict__, "name": "docs"} == stored[0].__dict__
    finally:
        source.http.delete(f"{COLLECTIONS}/docs-back")


def test_the_commands_export_and_import_with_a_summary(
    source: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAGKIT_API_URL", source.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)  # no developer .env is read

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    chunks = client_of(source).collection("docs")["chunks"]
    exported = run("collections", "export", "docs", "docs.ndjson.gz")
    assert exported.exit_code == 0, exported.output
    size = Path("docs.ndjson.gz").stat().st_size
    assert f"exported {chunks:,} points of docs to docs.ndjson.gz ({size / 1e6:.1f} MB)" in exported.output
    with gzip.open("docs.ndjson.gz") as written:
        assert written.readline().startswith(b'{"format":"ragkit-collection"')
    assert not Path("docs.ndjson.gz.part").exists()
    refused = run("collections", "export", "docs", "docs.ndjson.gz")
    assert refused.exit_code == 2 and "--force" in refused.output

    imported = run("collections", "import", "docs.ndjson.gz", "--name", "docs-cli")
    try:
        assert imported.exit_code == 0, imported.output
        assert f"imported {chunks:,} points" in imported.output and "into docs-cli" in imported.output
        taken = run("collections", "import", "docs.ndjson.gz")
        assert taken.exit_code == 1 and "error 409 collection_exists" in taken.output and "--name" in taken.output
    finally:
        source.http.delete(f"{COLLECTIONS}/docs-cli")


# --------------------------------------------------------------------------- refused files


def _replace_point(lines: list[bytes], index: int, **changes: Any) -> list[bytes]:
    point = json.loads(lines[index])
    point.update(changes)
    return [*lines[:index], json.dumps(point).encode(), *lines[index + 1 :]]


def _header(lines: list[bytes], **changes: Any) -> list[bytes]:
    header = json.loads(lines[0])
    for key, value in changes.items():
        if key in header["spec"]:
            header["spec"][key] = value
        else:
            header[key] = value
    return [json.dumps(header).encode(), *lines[1:]]


# (how the file is spoiled, status, code, what the message must say)
SPOILED: dict[str, tuple[Callable[[list[bytes]], bytes], int, str, str]] = {
    "cut mid-line": (
        lambda ls: body(ls)[: len(body(ls)) // 2],
        422,
        "invalid_input",
        r"ends in the middle of line \d+",
    ),
    "without its trailer": (lambda ls: body(ls[:-1]), 422, "invalid_input", r"without its trailer: it was cut off"),
    "another version": (lambda ls: body(_header(ls, version=2)), 422, "invalid_input", r"format version 2"),
    "not an export": (lambda ls: body([b'{"documents": []}', *ls[1:]]), 422, "invalid_input", r"line 1 is not"),
    "a garbage line": (
        lambda ls: body([*ls[:20], b"\x00garbage", *ls[20:]]),
        422,
        "invalid_input",
        r"line 21 is not valid JSON",
    ),
    "another dimension": (
        lambda ls: body(_replace_point(ls, 18, dense=[0.1] * 100)),
        422,
        "invalid_input",
        r"line 19: point [0-9a-f-]+ has a 100-dimensional vector, the collection's spec 384",
    ),
    "a point that is not one": (
        lambda ls: body(_replace_point(ls, 9, id="not-a-uuid")),
        422,
        "invalid_input",
        r"line 10 is not a point",
    ),
    "not a number": (
        lambda ls: body([*ls[:12], ls[12].replace(b'"dense":[', b'"dense":[NaN,', 1), *ls[13:]]),
        422,
        "invalid_input",
        r"line 13 is not valid JSON \(NaN",
    ),
    "a payload without its keys": (
        lambda ls: body(_replace_point(ls, 30, payload={"text": "no doc_id"})),
        422,
        "invalid_input",
        r"lines \d+-\d+: the store refused these points: point .* lacks payload keys",
    ),
    "another count": (
        lambda ls: body([*ls[:-1], b'{"end": true, "points": 3}']),
        422,
        "invalid_input",
        r"the trailer \(line \d+\) counts 3 points but the file holds \d+",
    ),
    "two exports joined": (lambda ls: body(ls + ls), 422, "invalid_input", r"comes after the trailer"),
    "a failed export": (
        lambda ls: body([*ls[:-1], b'{"error": {"status": 503, "code": "x", "message": "store down"}}']),
        422,
        "invalid_input",
        r"the export that wrote this file failed there",
    ),
    "empty": (lambda ls: b"", 422, "invalid_input", r"the body is empty"),
    "another embedder": (
        lambda ls: body(_header(ls, embedder="ollama:nomic-embed-text")),
        409,
        "embedder_mismatch",
        r"built with embedder 'ollama:nomic-embed-text'",
    ),
}


@pytest.mark.parametrize("case", list(SPOILED))
def test_a_spoiled_file_is_refused_and_leaves_nothing_behind(
    source: Stack, exported: Path, small_pages: int, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    spoil, status, code, message = SPOILED[case]
    backend = source.services.store.backend
    upserts: list[int] = []
    upsert = backend.upsert
    monkeypatch.setattr(backend, "upsert", lambda name, points: (upserts.append(len(points)), upsert(name, points)))
    before = names(source)

    answer = source.http.post(IMPORT, params={"name": "spoiled"}, content=spoil(lines_of(exported)))
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert re.search(message, error["message"]), error["message"]
    assert source.http.get(f"{COLLECTIONS}/spoiled").status_code == 404
    assert names(source) == before
    if case in ("without its trailer", "a garbage line", "another count", "two exports joined"):
        assert sum(upserts) > small_pages, "points were written before the file was refused, then dropped"
    assert all(n <= small_pages for n in upserts)


def test_a_line_over_the_limit_is_refused_but_a_file_over_it_is_not(stack_factory) -> None:  # noqa: ANN001
    limit = 64 * 1024
    stack = stack_factory(max_request_bytes=limit)
    documents = [{"id": f"note-{i}", "text": f"Note {i}: rotate the keys, then check the logs."} for i in range(30)]
    assert stack.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201
    assert stack.http.post(f"{COLLECTIONS}/notes/documents", json={"documents": documents}).is_success
    file = stack.http.get(f"{COLLECTIONS}/notes/export").content
    assert len(file) > limit, "the file is over the request limit"

    copied = stack.http.post(IMPORT, params={"name": "copy"}, content=iter([file]))  # streamed, no length
    assert copied.status_code == 201, copied.text
    assert copied.json()["points"] == 30

    lines = file.splitlines()
    huge = _replace_point(lines, 2, payload={**json.loads(lines[2])["payload"], "text": "x" * limit})
    refused = stack.http.post(IMPORT, params={"name": "huge"}, content=body(huge))
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["message"].startswith(f"line 3 is longer than {limit} bytes")
    assert stack.http.get(f"{COLLECTIONS}/huge").status_code == 404
    # Every other route keeps the limit.
    big = [{"id": "big", "text": "y" * limit}]
    assert stack.http.post(f"{COLLECTIONS}/notes/documents", json={"documents": big}).status_code == 413


def test_an_existing_collection_is_kept_unless_replaced(source: Stack, exported: Path) -> None:
    chunks = source.http.get(f"{COLLECTIONS}/docs").json()["chunks"]
    taken = source.http.post(IMPORT, content=exported.read_bytes())
    assert taken.status_code == 409, taken.text
    error = taken.json()["error"]
    assert error["code"] == "collection_exists"
    assert f"holds {chunks} chunks" in error["message"] and "--name" in error["message"]
    assert source.http.get(f"{COLLECTIONS}/docs").json()["chunks"] == chunks

    assert source.http.post(COLLECTIONS, json={"name": "scratch"}).status_code == 201
    notes = {"documents": [{"id": "n", "text": "a note that is replaced"}]}
    assert source.http.post(f"{COLLECTIONS}/scratch/documents", json=notes).is_success
    try:
        assert source.http.post(IMPORT, params={"name": "scratch"}, content=exported.read_bytes()).status_code == 409
        replaced = source.http.post(
            IMPORT, params={"name": "scratch", "replace": "true"}, content=exported.read_bytes()
        )
        assert replaced.status_code == 201, replaced.text
        assert replaced.json()["replaced"] is True and replaced.json()["points"] == chunks
        ids = [d["doc_id"] for d in client_of(source).documents("scratch", limit=1000)]
        assert "n" not in ids and ids == [d["doc_id"] for d in client_of(source).documents("docs", limit=1000)]
    finally:
        source.http.delete(f"{COLLECTIONS}/scratch")


def test_export_and_import_need_the_admin_scope(stack_factory, tmp_path: Path) -> None:  # noqa: ANN001
    stack = stack_factory(jwt_secret=JWT_KEY, jwt_audience="ragkit")
    assert stack.http.post(COLLECTIONS, json={"name": "docs"}).status_code == 201

    def as_user(scope: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {user_token(scope)}"}
        return stack.anon.request(method, path, headers=headers, **kwargs)

    file = as_user("read write admin", "GET", f"{COLLECTIONS}/docs/export")
    assert file.status_code == 200 and file.headers["content-type"] == "application/x-ndjson"
    for method, path, kwargs in [
        ("GET", f"{COLLECTIONS}/docs/export", {}),
        ("POST", IMPORT, {"params": {"name": "copy"}, "content": file.content}),
    ]:
        refused = as_user("read write", method, path, **kwargs)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["message"] == "this token lacks the 'admin' scope"
    assert stack.http.get(f"{COLLECTIONS}/copy").status_code == 404
    assert as_user("admin", "POST", IMPORT, params={"name": "copy"}, content=file.content).status_code == 201
    assert stack.http.get(f"{COLLECTIONS}/missing/export").json()["error"]["code"] == "collection_not_found"


# --------------------------------------------------------------------------- streamed, both ways


def test_an_export_reads_the_store_a_bounded_page_at_a_time(
    source: Stack, small_pages: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = source.services.store.backend
    pages: list[int] = []
    scroll = backend.scroll_points

    def counted(name: str, offset: str | None, limit: int) -> Any:
        pages.append(limit)
        return scroll(name, offset, limit)

    monkeypatch.setattr(backend, "scroll_points", counted)
    summary = client_of(source).export_collection("docs", tmp_path / "docs.ndjson")
    assert set(pages) == {small_pages}
    assert len(pages) == -(-summary.points // small_pages)  # every page full but the last


def test_an_export_the_store_breaks_off_leaves_no_file(
    source: Stack, small_pages: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = source.services.store.backend
    scroll = backend.scroll_points
    calls: list[str | None] = []

    def failing(name: str, offset: str | None, limit: int) -> Any:
        calls.append(offset)
        if len(calls) == 3:
            raise DependencyUnavailable("qdrant", "the store went away")
        return scroll(name, offset, limit)

    monkeypatch.setattr(backend, "scroll_points", failing)
    target = tmp_path / "docs.ndjson.gz"
    with pytest.raises(ServiceError) as caught:
        client_of(source).export_collection("docs", target)
    assert caught.value.status == 503
    assert caught.value.message == f"the export of 'docs' failed after {2 * small_pages} points: the store went away"
    assert list(tmp_path.iterdir()) == []


def test_an_upload_that_stops_half_way_leaves_nothing_behind(source: Stack, exported: Path, small_pages: int) -> None:
    lines = lines_of(exported)
    host, port = source.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            f"POST {IMPORT}?name=halfway HTTP/1.1\r\nHost: {host}\r\nX-Service-Token: {SECRET}\r\n"
            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        part = body(lines[: 3 * small_pages + 1])
        connection.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")

        def written() -> bool:
            found = source.http.get(f"{COLLECTIONS}/halfway")
            return found.status_code == 200 and found.json()["chunks"] >= 2 * small_pages

        wait_until(written, "the first batches of the upload written")
    # The client is gone before the end of its file: what it sent is dropped again.
    wait_until(lambda: source.http.get(f"{COLLECTIONS}/halfway").status_code == 404, "the half import dropped")
    assert "halfway" not in names(source)
