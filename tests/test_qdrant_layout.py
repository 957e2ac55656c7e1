"""A collection on a Qdrant server or cluster is created with the layout the configuration gives
(RAGKIT_QDRANT_SHARDS, RAGKIT_QDRANT_REPLICATION, RAGKIT_QDRANT_WRITE_CONSISTENCY): checked on
the request the official client sends to a stand-in that speaks the part of Qdrant's REST API a
collection's creation uses (no Qdrant server runs here)."""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ragkit.core.types import CollectionSpec
from ragkit.services import _build_store
from tests.conftest import make_settings


class _Qdrant(BaseHTTPRequestHandler):
    created: list[tuple[str, dict[str, Any]]] = []
    indexed: list[str] = []
    version_asked = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _answer(self, result: Any) -> None:
        body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "":
            type(self).version_asked.set()
            # The server version the installed client is made for (it warns about any other).
            version = importlib.metadata.version("qdrant-client")
            body = json.dumps({"title": "qdrant - vector search engine", "version": version}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.endswith("/exists"):
            self._answer({"exists": False})
        else:
            self.send_error(404)

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        path = self.path.split("?")[0]
        if path.endswith("/index"):
            type(self).indexed.append(body["field_name"])
            self._answer({"operation_id": 1, "status": "completed"})
        else:
            type(self).created.append((path, body))
            self._answer(True)


@pytest.fixture
def qdrant() -> Iterator[str]:
    _Qdrant.created, _Qdrant.indexed, _Qdrant.version_asked = [], [], threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Qdrant)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        # The client asks for the server's version in a thread of its own: answered before the
        # stand-in goes, or it warns that it could not check compatibility.
        _Qdrant.version_asked.wait(5)
        server.shutdown()
        server.server_close()


def spec() -> CollectionSpec:
    return CollectionSpec(
        name="handbook", embedder="local:all-MiniLM-L6-v2", dimension=384, chunk_size=200, chunk_overlap=30
    )


def test_a_collection_on_a_cluster_gets_the_configured_shards_replicas_and_write_consistency(
    qdrant: str,
    tmp_path,  # noqa: ANN001
) -> None:
    settings = make_settings(
        tmp_path, qdrant_url=qdrant, qdrant_shard_number=3, qdrant_replication_factor=2, qdrant_write_consistency=1
    )
    store = _build_store(settings)
    store.create_collection(spec())
    [(path, body)] = _Qdrant.created
    assert path == "/collections/handbook"
    assert (body["shard_number"], body["replication_factor"], body["write_consistency_factor"]) == (3, 2, 1)
    assert body["vectors"]["dense"] == {"size": 384, "distance": "Cosine"}
    assert {"doc_id", "content_hash", "chunk_index"} <= set(_Qdrant.indexed)


def test_without_cluster_settings_qdrant_chooses_its_own_defaults(qdrant: str, tmp_path) -> None:  # noqa: ANN001
    store = _build_store(make_settings(tmp_path, qdrant_url=qdrant))
    store.create_collection(spec())
    [(_, body)] = _Qdrant.created
    # Unset means absent from the request, not zero: the server's own defaults apply.
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & {k for k, v in body.items() if v}
