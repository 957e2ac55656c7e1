"""Ingestion jobs scaled out: the embedded service queues batches on a real redis-server and real
`ragkit worker` processes embed them; one is SIGKILLed mid-job and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.test_jobs import corpus, create, finished, status, submit

pytestmark = pytest.mark.skipif(not RedisServer.available(), reason="redis-server is not installed")
BATCH_TIMEOUT_S = 5  # a killed worker's batch is taken by another 10 s after this


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Worker:
    """A `ragkit worker` child process; its log lines are kept to see what it did."""

    def __init__(self, redis_url: str, workdir: Path, **env: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ragkit", "worker", "--batch-timeout", str(BATCH_TIMEOUT_S)],
            env={
                **os.environ,
                "REDIS_URL": redis_url,
                "RAGKIT_DATA_DIR": str(workdir),
                "HF_HUB_OFFLINE": "1",
                "RAGKIT_LOCAL_BACKEND": "torch",  # the tests' service embeds with torch too: the same name
                **env,
            },
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started = threading.Event()
        threading.Thread(target=self._read, args=(started,), daemon=True).start()
        assert started.wait(120), f"the worker did not start: {self.lines}"

    def _read(self, started: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "ready: taking batches" in line:  # once it listens on the queue
                started.set()

    def embedded(self) -> int:
        return sum("embedded" in line for line in self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def test_two_workers_share_a_job_and_one_killed_mid_job_loses_nothing(
    stack_factory,
    redis: RedisServer,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    stack: Stack = stack_factory(job_queue="redis", redis_url=redis.url)
    create(stack.http)
    docs = corpus(360, words=20)
    workers = [Worker(redis.url, tmp_path / f"worker{i}") for i in range(2)]
    try:
        job = submit(stack.http, docs)
        wait_until(lambda: all(w.embedded() >= 1 for w in workers), "both workers to take batches", 120)
        workers[0].process.send_signal(signal.SIGKILL)  # busy: each takes the next batch at once
        workers[0].process.wait(30)
        done = finished(stack.http, job["id"], timeout_s=300)
        assert done["state"] == "done" and done["documents"]["failed"] == 0, done
        assert done["documents"]["ingested"] == len(docs)
        stats = stack.http.get("/api/v1/rag/collections/notes").json()
        assert stats["documents"] == len(docs) and stats["chunks"] == done["chunks"]  # nothing twice
        # The vectors a worker made are the service's: each finds its document.
        search = "/api/v1/rag/search"
        sparse = stack.http.post(search, json={"query": "fact301", "collection": "notes", "mode": "sparse"}).json()
        assert sparse["results"][0]["doc_id"] == "doc-00301"
        doc = next(d for d in docs if d["id"] == "doc-00302")  # one chunk: embedded as title and text
        query = {"query": f"{doc['title']}\n{doc['text']}", "collection": "notes", "mode": "dense"}
        top = stack.http.post(search, json=query).json()["results"][0]
        assert top["doc_id"] == "doc-00302" and top["score"] > 0.99
        assert workers[1].embedded() > 1
    finally:
        for worker in workers:
            worker.stop()


def test_a_worker_with_another_embedder_is_refused(stack_factory, redis: RedisServer, tmp_path: Path) -> None:  # noqa: ANN001
    stack: Stack = stack_factory(job_queue="redis", redis_url=redis.url)
    create(stack.http)
    # Its first batch is written by the service (it sets BM25's mean length); the rest wait for workers.
    first = submit(stack.http, corpus(80))
    wait_until(lambda: status(stack.http, first["id"])["waiting"], "the job to wait for workers", 60)
    waiting = status(stack.http, first["id"])
    assert waiting["documents"]["ingested"] == 64 and "is a `ragkit worker` running" in waiting["waiting"]
    cancelled = stack.http.delete(f"/api/v1/rag/jobs/{first['id']}").json()
    assert cancelled["cancel_requested"] and finished(stack.http, first["id"])["state"] == "cancelled"
    with FakeOllama(dim=64) as fake:
        stale = Worker(redis.url, tmp_path / "stale", RAGKIT_EMBEDDER="ollama", OLLAMA_HOST=fake.url)
        try:
            job = submit(stack.http, corpus(40, words=25))
            ended = finished(stack.http, job["id"], timeout_s=120)
        finally:
            stale.stop()
    assert ended["state"] == "failed"
    assert "a worker now uses 'ollama:nomic-embed-text'" in ended["error"]
    assert "built with embedder 'local:all-MiniLM-L6-v2'" in ended["error"]
    assert stack.http.get("/api/v1/rag/collections/notes").json()["documents"] == 64  # no foreign vectors


def test_the_queue_needs_redis(stack_factory) -> None:  # noqa: ANN001
    from ragkit.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        stack_factory(job_queue="redis")
    result = subprocess.run(
        [sys.executable, "-m", "ragkit", "worker"], env={**os.environ, "REDIS_URL": ""}, capture_output=True, text=True
    )
    assert result.returncode == 1 and "needs REDIS_URL" in result.stderr
