"""Locust load test of a running ragkit service (`ragkit loadtest` runs it headless).

Users authenticate with the service token (INTER_SERVICE_SECRET from the environment or `.env`)
and run a weighted mix of requests named after what they exercise, so that budgets can be set
per name: ``search:hybrid``, ``search:dense``, ``search:sparse``, ``ask`` (no streaming),
``collections`` and ``health``. Tasks tagged ``ingest`` belong to one extra user that keeps
ingesting into a scratch collection while the others read, as ingestion jobs followed to their
end (``ingest``: the submission, ``ingest:status``: its polls); leave it out with
``--exclude-tags ingest`` (``ragkit loadtest`` does unless ``--scenario ingest``).

Queries come from a BEIR ``queries.jsonl`` (default: SciFact's, in ../shared/data next to the
repo). Each query is used once as written; after the file is used up, the same queries come
back with one run of spaces widened. That embeds to the identical vector (the tokenizer splits
on whitespace) but is a different text, so the service's query-vector cache never answers for
the model and the figures are those of real work. RAGKIT_LOADTEST_REPEAT=1 sends exact repeats
instead, to see what that cache is worth.

Settings (environment; the first three also as locust options --collection, --queries, --request-log):
  RAGKIT_LOADTEST_COLLECTION  collection to read (default: the one with the most chunks)
  RAGKIT_LOADTEST_QUERIES     query file (.jsonl with "text", or one query per line)
  RAGKIT_LOADTEST_LOG         write one JSON line per request here (for analyses over time)
  RAGKIT_LOADTEST_MIX         task weights, e.g. "search:hybrid=6,ask=2" (default below)
  RAGKIT_LOADTEST_WAIT        a user's think time between requests in seconds, "MIN,MAX" (0.5,1.5)
  RAGKIT_LOADTEST_REPEAT      1: send exact repeats once the queries are used up

Example:
  locust -f ragkit/workbench/loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000 \
      --exclude-tags ingest
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, between, events, tag, task
from locust.env import Environment

from ragkit.workbench.loadtest.plan import QueryStream, parse_mix, parse_think_time, read_queries

# In a checkout this file is ragkit/workbench/loadtest/locustfile.py; the evaluation data sits
# beside the checkout (../shared/data). An installed ragkit has no such folder: pass --queries.
REPO = Path(__file__).resolve().parents[3]
DEFAULT_QUERIES = REPO.parent / "shared" / "data" / "beir" / "scifact" / "queries.jsonl"
DEFAULT_MIX = "search:hybrid=6,search:dense=3,search:sparse=3,ask=2,collections=1,health=1"
INGEST_COLLECTION = "loadtest-ingest"
JOB_DOCUMENTS = 64  # documents per ingestion job of the ingest scenario
JOB_POLL_S = 0.5
JOB_DEADLINE_S = 120.0  # a job not done by then is left to the service; the next one is submitted
API = "/api/v1/rag"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    env = os.environ.get
    parser.add_argument("--collection", default=env("RAGKIT_LOADTEST_COLLECTION", ""), help="collection to read")
    parser.add_argument("--queries", default=env("RAGKIT_LOADTEST_QUERIES", str(DEFAULT_QUERIES)), help="query file")
    parser.add_argument("--request-log", default=env("RAGKIT_LOADTEST_LOG", ""), help="per-request JSONL file")


def service_token() -> str:
    from ragkit.client import resolve_connection

    _, token = resolve_connection(env_file=str(REPO / ".env") if not Path(".env").is_file() else ".env")
    return token


# -- shared state, set up once per locust process in `init` -----------------------------------

class _State:
    token = ""
    collection = ""
    queries: QueryStream | None = None
    log: Any = None
    log_lock = threading.Lock()


def _pick_collection(environment: Environment, token: str) -> str:
    import httpx

    response = httpx.get(
        f"{environment.host}{API}/collections", headers={"X-Service-Token": token}, timeout=30
    )
    response.raise_for_status()
    candidates = [c for c in response.json()["collections"] if c["name"] != INGEST_COLLECTION and c["chunks"] > 0]
    if not candidates:
        raise RuntimeError("the service has no collection with chunks to search; ingest one first")
    return max(candidates, key=lambda c: c["chunks"])["name"]


@events.test_start.add_listener
def _setup(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    # Tags are applied just before this event: `--exclude-tags ingest` leaves the Ingester without a
    # task, and a user without tasks would only raise errors, so it is not spawned at all.
    environment.user_classes[:] = [u for u in environment.user_classes if u.tasks]
    _State.token = service_token()
    _State.collection = getattr(options, "collection", "") or _pick_collection(environment, _State.token)
    queries_path = Path(getattr(options, "queries", "") or DEFAULT_QUERIES)
    repeat = os.environ.get("RAGKIT_LOADTEST_REPEAT", "") == "1"
    _State.queries = QueryStream(read_queries(queries_path), repeat=repeat)
    log_path = getattr(options, "request_log", "")
    if log_path:
        # Line-buffered: the fault scenario reads this file while the run goes on.
        _State.log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in test_stop


@events.test_stop.add_listener
def _teardown(environment: Environment, **_: Any) -> None:
    if _State.log is not None:
        _State.log.close()
        _State.log = None


def _record(name: str, started: float, elapsed_ms: float, ok: bool, extra: dict[str, Any] | None = None) -> None:
    """One line per request for analyses over time (the fault scenario); only when asked for."""
    if _State.log is None:
        return
    line = json.dumps({"t": round(started, 4), "name": name, "ms": round(elapsed_ms, 2), "ok": ok, **(extra or {})})
    with _State.log_lock:
        _State.log.write(line + "\n")


# -- tasks ----------------------------------------------------------------------------------------

def _call(user: FastHttpUser, name: str, method: str, path: str, body: dict | None = None) -> dict | None:
    started = time.time()
    t0 = time.perf_counter()
    with user.client.request(
        method, path, json=body, name=name, headers={"X-Service-Token": _State.token}, catch_response=True
    ) as response:
        elapsed = (time.perf_counter() - t0) * 1000
        if not 200 <= response.status_code < 300:  # a job's submission is a 202
            detail = (response.text or "")[:200]
            response.failure(f"HTTP {response.status_code}: {detail}")
            _record(name, started, elapsed, False, {"status": response.status_code})
            return None
        try:
            data = response.json()
        except ValueError:
            response.failure("the answer is not JSON")
            _record(name, started, elapsed, False)
            return None
        extra = {}
        if isinstance(data, dict) and "degraded" in data:
            extra = {"degraded": data["degraded"], "generator": data.get("generator")}
        _record(name, started, elapsed, True, extra)
        return data


def _search(mode: str) -> Callable[[FastHttpUser], None]:
    def search(user: FastHttpUser) -> None:
        assert _State.queries is not None
        body = {"query": _State.queries.next(), "collection": _State.collection, "top_k": 5, "mode": mode}
        _call(user, f"search:{mode}", "POST", f"{API}/search", body)

    search.__name__ = f"search_{mode}"
    return search


def _ask(user: FastHttpUser) -> None:
    assert _State.queries is not None
    body = {"question": _State.queries.next(), "collection": _State.collection, "top_k": 5, "stream": False}
    _call(user, "ask", "POST", f"{API}/query", body)


def _collections(user: FastHttpUser) -> None:
    _call(user, "collections", "GET", f"{API}/collections")


def _health(user: FastHttpUser) -> None:
    # /health is open; sending the token anyway is harmless and keeps one code path.
    _call(user, "health", "GET", "/health")


READ_TASKS: dict[str, Callable[[FastHttpUser], None]] = {
    "search:hybrid": _search("hybrid"),
    "search:dense": _search("dense"),
    "search:sparse": _search("sparse"),
    "ask": _ask,
    "collections": _collections,
    "health": _health,
}


def _think_time() -> Callable[[Any], float]:
    return between(*parse_think_time(os.environ.get("RAGKIT_LOADTEST_WAIT") or "0.5,1.5"))


def _weighted_tasks() -> dict[Callable, float]:
    weights = parse_mix(os.environ.get("RAGKIT_LOADTEST_MIX") or DEFAULT_MIX)
    # Locust wants integer weights; scale so that fractional mixes keep their ratios.
    return {READ_TASKS[name]: max(round(w * 10), 1) for name, w in weights.items() if w > 0}


class Reader(FastHttpUser):
    """A person (or a UI, a notebook) reading: searches, questions, listings, health checks."""

    wait_time = _think_time()
    tasks = _weighted_tasks()


class Ingester(FastHttpUser):
    """One user that keeps ingesting while the readers read (tag ``ingest``)."""

    fixed_count = 1
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        queries = Path(self.environment.parsed_options.queries or DEFAULT_QUERIES)
        self._documents = self._corpus(queries)
        self._counter = itertools.count()
        with self.client.post(
            f"{API}/collections", json={"name": INGEST_COLLECTION}, headers={"X-Service-Token": _State.token},
            name="ingest:setup", catch_response=True,
        ) as response:
            if response.status_code in (201, 409):  # created, or left by an earlier run: either way it is there
                response.success()

    def on_stop(self) -> None:
        # The scratch collection goes with the run; the service's own collections are never touched.
        self.client.delete(
            f"{API}/collections/{INGEST_COLLECTION}", headers={"X-Service-Token": _State.token}, name="ingest:setup"
        )

    @staticmethod
    def _corpus(queries: Path) -> Iterator[dict[str, Any]]:
        """The BEIR corpus beside the query file; without one, the queries themselves."""
        corpus = queries.with_name("corpus.jsonl")
        if corpus.is_file():
            rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
            documents = [{"title": r.get("title", ""), "text": r["text"]} for r in rows if r.get("text")]
        else:
            documents = [{"title": "", "text": q} for q in read_queries(queries)]
        return itertools.cycle(documents)

    @tag("ingest")
    @task
    def ingest(self) -> None:
        """A job of 64 documents, followed to its end as `ragkit ingest` does (`ingest:status`
        polls); then the next one: ingestion runs all the time, one job after the other."""
        batch = []
        for _ in range(JOB_DOCUMENTS):
            n = next(self._counter)
            doc = next(self._documents)
            batch.append({"id": f"loadtest-{os.getpid()}-{n}", "text": doc["text"], "title": doc["title"]})
        job = _call(self, "ingest", "POST", f"{API}/collections/{INGEST_COLLECTION}/jobs", {"documents": batch})
        deadline = time.monotonic() + JOB_DEADLINE_S
        while job is not None and job.get("state") in ("queued", "running") and time.monotonic() < deadline:
            gevent.sleep(JOB_POLL_S)
            job = _call(self, "ingest:status", "GET", f"{API}/jobs/{job['id']}")
