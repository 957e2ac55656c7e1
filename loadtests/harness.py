"""What the fault scenario and the benchmark share: a ragkit service in a child process, and
BEIR documents to put in it.

The service runs as `python -m ragkit serve` in its own process, as in production: it owns its
data folder, and its memory and CPU can be read from outside without the client's mixed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SCIFACT = SHARED_DATA / "beir" / "scifact"
BENCH_SECRET = "loadtest-" + "0123456789abcdef" * 4  # only ever given to services started here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    pass


class ServiceProcess:
    """`python -m ragkit serve` on 127.0.0.1 with the given environment; stopped on exit."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(data_dir).resolve()  # the child runs in another folder
        self.secret = BENCH_SECRET
        # Servers a developer's shell points at stay out unless asked for: the embedded default.
        inherited = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "REDIS_URL", "OLLAMA_HOST")}
        self._env = {
            **inherited,
            "INTER_SERVICE_SECRET": self.secret,
            "RAGKIT_DATA_DIR": str(self.data_dir),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self._log_path = log or self.data_dir / "service.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self._spawn()
            try:
                self._wait_ready(timeout_s)
                return self
            except PortTaken:
                # Another process took the port between free_port() and our bind: pick a new one.
                self.stop()
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError("could not get a free port for the service in 3 attempts")

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "ragkit", "serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def _spawn(self) -> None:
        log = self._log_path.open("ab")
        # cwd: the data folder, so that no developer's .env (another token or folder) is read.
        self.process = subprocess.Popen(
            self._command(), env=self._env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.data_dir)
        )
        log.close()

    def _wait_ready(self, timeout_s: float) -> None:
        from ragkit.workbench.loadtest import listening_pid

        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-3000:]
                if "address already in use" in tail.lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"the service exited with code {self.process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2.0).status_code == 200:
                    # On a busy machine another test server may answer on this port: only ours counts.
                    owner = listening_pid(self.url)
                    if owner is not None and owner != self.process.pid:
                        raise PortTaken(self.port)
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the service did not become ready within {timeout_s:.0f} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def peak_rss_bytes(self) -> int:
        """The process's high-water mark of resident memory (VmHWM), which the kernel keeps."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Service-Token": self.secret}, timeout=timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # lets the store flush and release its folder
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def beir_documents(folder: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The corpus of a BEIR dataset as ragkit ingestion documents, in file order."""
    documents = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if not row.get("text"):
                continue
            documents.append({"id": str(row["_id"]), "text": row["text"], "title": row.get("title", "")})
            if limit is not None and len(documents) >= limit:
                break
    return documents


def beir_queries(folder: Path, limit: int | None = None) -> list[str]:
    queries = []
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line).get("text", "").strip()
            if text:
                queries.append(text)
            if limit is not None and len(queries) >= limit:
                break
    return queries


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ingest_over_http(client: httpx.Client, collection: str, documents: list[dict[str, Any]]) -> int:
    """Create the collection if needed and ingest; returns the number of chunks written."""
    response = client.post("/api/v1/rag/collections", json={"name": collection})
    if response.status_code not in (201, 409):
        response.raise_for_status()
    chunks = 0
    for group in batches(documents, 64):
        response = client.post(f"/api/v1/rag/collections/{collection}/documents", json={"documents": group})
        response.raise_for_status()
        chunks += int(response.json()["chunks"])
    return chunks
