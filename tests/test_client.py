"""`RagkitClient` against the app in-process (no network), and its one ingestion driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ragkit.client import RagkitClient
from ragkit.core.errors import ServiceError
from ragkit.http.app import create_app
from ragkit.services import build_services
from tests.conftest import SECRET, make_settings


@pytest.fixture
def client(tmp_path: Path, local_embedder) -> Iterator[RagkitClient]:  # noqa: ANN001
    settings = make_settings(tmp_path)
    services = build_services(settings, embedder=local_embedder)
    try:
        with TestClient(create_app(settings, services)) as http, RagkitClient(token=SECRET, http=http) as ragkit:
            yield ragkit
    finally:
        services.store.close()


def test_ensure_collection_creates_once_and_recreates_on_request(client: RagkitClient) -> None:
    stats, created = client.ensure_collection("handbook", chunk_size=64, chunk_overlap=8)
    assert created and stats["chunk_size"] == 64
    again, created = client.ensure_collection("handbook", chunk_size=128)
    assert not created and again["chunk_size"] == 64, "an existing collection keeps how it was built"
    client.ingest("handbook", [{"id": "a", "text": "Breakers open after five failures."}])
    fresh, created = client.ensure_collection("handbook", recreate=True)
    assert created and fresh["documents"] == 0


def test_ingest_documents_reports_progress_and_isolates_a_bad_document(client: RagkitClient) -> None:
    client.ensure_collection("handbook")
    documents = [{"id": f"doc-{i}", "text": f"Document number {i} is about circuit breakers."} for i in range(5)]
    documents.insert(2, {"id": "empty", "text": "   "})  # the service refuses it: no text
    ticks: list[int] = []
    summary = client.ingest_documents("handbook", documents, batch_size=4, progress=ticks.append)
    assert ticks == [4, 2], "one tick per batch, counting its documents"
    assert summary.ingested == 5 and summary.unchanged == 0 and summary.chunks >= 5
    assert [f["id"] for f in summary.failures] == ["empty"] and "no text" in summary.failures[0]["error"]
    again = client.ingest_documents("handbook", documents[:2], batch_size=4)
    assert again.unchanged == 2 and again.ingested == 0


def test_an_outage_or_a_refusal_stops_the_run(client: RagkitClient) -> None:
    with pytest.raises(ServiceError) as missing:
        client.ingest_documents("nowhere", [{"id": "a", "text": "x"}])
    assert missing.value.status == 404
