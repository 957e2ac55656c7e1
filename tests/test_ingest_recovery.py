"""A service killed in the middle of an ingestion; re-running the same ingestion finishes it
with no duplicate and no stale chunk."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, Stack
from tests.support.live import free_port
from tests.support.serve import start_serve

# Part of the fault-injection suite (tests/test_faults.py): the service killed mid-ingestion.
pytestmark = pytest.mark.faults

DOCS = [
    {
        "id": f"doc-{i:03d}",
        "title": f"Report {i}",
        "text": " ".join(
            f"Finding {j} of report {i} concerns topic {(i * 7 + j) % 13} in some detail." for j in range(30)
        ),
    }
    for i in range(60)
]


def start_service(data_dir: Path, port: int) -> subprocess.Popen:
    return start_serve(data_dir, port, INTER_SERVICE_SECRET=SECRET, RAGKIT_EMBED_BATCH_SIZE="16")


def test_killed_ingestion_is_finished_by_rerunning_it(tmp_path: Path, stack: Stack) -> None:
    # Reference: the same documents ingested in one go on a separate store.
    stack.http.post("/api/v1/rag/collections", json={"name": "reports"})
    reference = stack.http.post("/api/v1/rag/collections/reports/documents", json={"documents": DOCS}).json()

    data_dir = tmp_path / "killed"  # not the reference stack's folder: each store has one owner
    data_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"X-Service-Token": SECRET}
    service = start_service(data_dir, port)
    try:
        httpx.post(f"{url}/api/v1/rag/collections", json={"name": "reports"}, headers=headers)

        def ingest_until_killed() -> None:
            with contextlib.suppress(httpx.TransportError):  # the kill cuts this request off
                httpx.post(
                    f"{url}/api/v1/rag/collections/reports/documents",
                    json={"documents": DOCS},
                    headers=headers,
                    timeout=300,
                )

        threading.Thread(target=ingest_until_killed, daemon=True).start()
        deadline = time.monotonic() + 120
        written = 0
        while time.monotonic() < deadline:
            written = httpx.get(f"{url}/api/v1/rag/collections/reports", headers=headers, timeout=10).json()["chunks"]
            if written > 0:
                break
            time.sleep(0.05)
        assert 0 < written < reference["chunks"], "the kill must land in the middle of the ingestion"
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)

    service = start_service(data_dir, port)
    try:
        rerun = httpx.post(
            f"{url}/api/v1/rag/collections/reports/documents", json={"documents": DOCS}, headers=headers, timeout=300
        ).json()
        assert rerun["ingested"] > 0 and rerun["ingested"] + rerun["skipped_unchanged"] == len(DOCS)
        info = httpx.get(f"{url}/api/v1/rag/collections/reports", headers=headers).json()
        assert info["chunks"] == reference["chunks"] and info["documents"] == len(DOCS)
        third = httpx.post(
            f"{url}/api/v1/rag/collections/reports/documents", json={"documents": DOCS}, headers=headers, timeout=300
        ).json()
        assert third["skipped_unchanged"] == len(DOCS) and third["chunks"] == 0
    finally:
        service.terminate()
        service.wait(timeout=30)
