"""Observability for operators, on a real service over HTTP: the request id (accepted, made,
returned, logged, passed on to Ollama), JSON log lines, the per-stage latency metrics, and the
Prometheus alert rules (promtool checks them, runs their unit tests, and every metric they name
must be served by a live service)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ragkit.core.logs import configure_logging
from ragkit.core.metrics import STAGES
from ragkit.http.app import create_app
from ragkit.http.request_id import MAX_REQUEST_ID_CHARS
from ragkit.services import build_services
from tests.conftest import REPO, SECRET, Stack, make_settings
from tests.support.fake_ollama import FakeOllama
from tests.support.live import LiveServer
from tests.support.waiting import wait_until

DOCS = [
    {
        "id": "breakers",
        "title": "Circuit breakers",
        "text": "A breaker opens after five consecutive failures. "
        "While open, calls fail fast. After thirty seconds one probe is let through.",
    },
    {
        "id": "tokens",
        "title": "Tokens",
        "text": "Rotate the service token by listing the new and the old secret "
        "separated by a comma, then restart the service.",
    },
]
QUESTION = {"question": "When does a breaker open?", "collection": "docs", "top_k": 2}
GENERATED = re.compile(r"[0-9a-f]{32}")  # what the service makes when it does not take the caller's id
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run installs it)")


def prepare(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": DOCS}).status_code == 200


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(dim=64, slow_seconds=60.0, stream_delay=0.02) as server:
        yield server


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """The service's own logging set-up (JSON lines to data/logs/ragkit.log), undone afterwards."""
    root = logging.getLogger("ragkit")
    saved = (list(root.handlers), root.level)
    configure_logging(tmp_path / "logged")
    try:
        yield tmp_path / "logged" / "logs" / "ragkit.log"
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved[0], saved[1]


def log_lines(path: Path, offset: int = 0) -> list[dict]:
    """Every line written since ``offset``, each of which must be one JSON object."""
    with path.open("rb") as log:
        log.seek(offset)
        return [json.loads(line) for line in log.read().decode().splitlines()]


def access_lines(path: Path, offset: int = 0) -> int:
    return sum(1 for line in log_lines(path, offset) if line.get("event") == "request")


# -- the request id ---------------------------------------------------------------------------------
def test_a_callers_request_id_is_returned_and_passed_on_to_ollama(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = stack_factory(embedder="ollama", generator="ollama", ollama_host=fake.url, ollama_timeout_s=10.0)
    # The start-up probe of the embedding size serves no request: it must carry no id.
    warm_up = fake.request_headers("/api/embed")
    assert warm_up and all("x-request-id" not in h for h in warm_up)
    prepare(stack)
    fake.reset_counters()

    answer = stack.http.post("/api/v1/rag/query", json=QUESTION, headers={"X-Request-ID": "caller-42:a.b_c"})
    assert answer.status_code == 200 and answer.json()["generator"] == "ollama:llama3.2"
    assert answer.headers["X-Request-ID"] == "caller-42:a.b_c"
    assert [h.get("x-request-id") for h in fake.request_headers("/api/embed")] == ["caller-42:a.b_c"]
    assert [h.get("x-request-id") for h in fake.request_headers("/api/chat")] == ["caller-42:a.b_c"]

    # Without one, the service makes an id, returns it, and the upstream calls carry that one.
    fake.reset_counters()
    streamed_question = {**QUESTION, "question": "What is let through?", "stream": True}
    with stack.http.stream("POST", "/api/v1/rag/query", json=streamed_question) as streamed:
        events = [line for line in streamed.iter_lines() if line.startswith("event:")]
        made = streamed.headers["X-Request-ID"]
    assert events[-1] == "event: done" and GENERATED.fullmatch(made)
    assert [h.get("x-request-id") for h in fake.request_headers("/api/chat")] == [made]


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(None, id="none"),
        pytest.param(b"", id="empty"),
        pytest.param(b"x" * (MAX_REQUEST_ID_CHARS + 1), id="too-long"),
        pytest.param(b"two words", id="space"),
        pytest.param(b'quote"d', id="quote"),
        pytest.param(b"a;b=c", id="separators"),
        pytest.param("caf\u00e9".encode(), id="non-ascii"),
        pytest.param(b"tab\there", id="control"),
        pytest.param([b"first", b"second"], id="two-headers"),
    ],
)
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_fresh_one(stack: Stack, sent) -> None:  # noqa: ANN001
    if sent is None:
        headers: list[tuple[bytes, bytes]] = []
    elif isinstance(sent, list):
        headers = [(b"X-Request-ID", value) for value in sent]
    else:
        headers = [(b"X-Request-ID", sent)]
    responses = [stack.http.get("/api/v1/rag/collections", headers=headers) for _ in range(2)]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(r.status_code == 200 for r in responses)
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert ids[0] != ids[1], "every request gets an id of its own"


def test_the_longest_allowed_request_id_is_kept(stack: Stack) -> None:
    longest = "a1._:-" * (MAX_REQUEST_ID_CHARS // 6) + "z" * (MAX_REQUEST_ID_CHARS % 6)
    assert len(longest) == MAX_REQUEST_ID_CHARS
    response = stack.http.get("/api/v1/rag/collections", headers={"X-Request-ID": longest})
    assert response.headers["X-Request-ID"] == longest


def test_every_response_carries_the_request_id_errors_included(
    tmp_path: Path, local_embedder, json_log: Path  # noqa: ANN001
) -> None:
    settings = make_settings(tmp_path / "data", max_request_bytes=1024)
    services = build_services(settings, embedder=local_embedder)
    app = create_app(settings, services)

    async def broken() -> None:
        raise RuntimeError("a bug, not a caller's mistake")

    # A route with a bug: the unhandled-error path is answered outside every middleware of ours.
    app.add_api_route("/broken", broken)
    headers = {"X-Service-Token": SECRET}

    def anonymous(h: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in h.items() if k != "X-Service-Token"}

    try:
        # No keep-alive: uvicorn closes a connection after an unhandled error, and a pooled one
        # reused at that moment would fail for reasons that have nothing to do with this test.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30, limits=no_reuse) as client:
            calls = {
                200: lambda h: client.get("/health", headers=h),
                401: lambda h: client.get("/api/v1/rag/collections", headers=anonymous(h)),
                404: lambda h: client.get("/api/v1/rag/collections/nope", headers=h),
                413: lambda h: client.post("/api/v1/rag/collections", headers=h, content=b"x" * 4096),
                422: lambda h: client.post("/api/v1/rag/search", headers=h, json={"query": ""}),
                500: lambda h: client.get("/broken", headers=h),
            }
            for status, call in calls.items():
                given = f"given-{status}"
                response = call({**headers, "X-Request-ID": given})
                assert response.status_code == status, (status, response.text)
                assert response.headers.get("X-Request-ID") == given, f"{status} lost the caller's id"
                made = call(headers).headers.get("X-Request-ID")
                assert made is not None and GENERATED.fullmatch(made), f"{status} without an id got {made!r}"
    finally:
        services.store.close()
    # The 500's traceback is logged under the id its caller got back.
    tracebacks = [line for line in log_lines(json_log) if "exception" in line]
    assert len(tracebacks) == 2 and all("a bug" in line["exception"] for line in tracebacks)
    assert tracebacks[0]["request_id"] == "given-500" and GENERATED.fullmatch(tracebacks[1]["request_id"])


def test_every_log_line_of_a_request_carries_its_id_and_only_its_own(
    stack_factory, fake: FakeOllama, json_log: Path  # noqa: ANN001
) -> None:
    stack = stack_factory(
        generator="ollama", embedder="local", ollama_host=fake.url, ollama_timeout_s=30.0, optimize_after_ingest=False
    )
    prepare(stack)
    # Both answers wait at the Ollama stand-in, so the two requests are certainly in flight
    # together, interleaved on one event loop: an id kept anywhere but in the request's own
    # context would end up on the other request's lines.
    fake.set_mode("hold", "/api/chat", seconds=60)
    # An access line is written once the app is done, a moment after its caller has the answer:
    # the lines of the requests so far must all be in before the ones of this test are read.
    wait_until(lambda: access_lines(json_log) == 2, "the access lines of the collection's set-up")
    offset = json_log.stat().st_size

    def ask(request_id: str) -> httpx.Response:
        return stack.http.post("/api/v1/rag/query", json=QUESTION, headers={"X-Request-ID": request_id})

    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(ask, request_id) for request_id in ("req-a", "req-b")]
        wait_until(lambda: fake.count("/api/chat") == 2, "both answers to reach the Ollama stand-in", timeout_s=30)
        fake.set_mode("error", "/api/chat")  # the host fails both: each answer degrades, and logs it
        responses = [answer.result(timeout=60) for answer in answers]
    for response, request_id in zip(responses, ("req-a", "req-b"), strict=True):
        assert response.status_code == 200 and response.json()["generator"] == "extractive"
        assert response.headers["X-Request-ID"] == request_id
    assert sorted(h.get("x-request-id") for h in fake.request_headers("/api/chat")) == ["req-a", "req-b"]

    wait_until(lambda: access_lines(json_log, offset) == 2, "the access lines of both answers")
    lines = log_lines(json_log, offset)
    assert {line.get("request_id") for line in lines} == {"req-a", "req-b"}, lines
    for request_id in ("req-a", "req-b"):
        own = [line for line in lines if line["request_id"] == request_id]
        events = [line.get("event") for line in own]
        assert events.count("degraded") == 1, own
        assert events.count("request") == 1, own
        access = next(line for line in own if line.get("event") == "request")
        assert access["route"] == "/api/v1/rag/query" and access["status"] == 200 and access["method"] == "POST"
        assert all({"time", "level", "logger"} <= set(line) for line in own)


# -- stage metrics ----------------------------------------------------------------------------------
def stage_samples(stack: Stack) -> dict[tuple[str, str], float]:
    """(stage, "count" | "sum") → value, from the live /metrics."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(stack.anon.get("/metrics").text):
        if family.name == "ragkit_stage_duration_seconds":
            for sample in family.samples:
                kind = sample.name.rsplit("_", 1)[-1]
                if kind in ("count", "sum"):
                    found[(sample.labels["stage"], kind)] = sample.value
    return found


def grown(before: dict, after: dict, kind: str) -> dict[str, float]:
    return {
        stage: after.get((stage, kind), 0.0) - before.get((stage, kind), 0.0)
        for stage, k in after
        if k == kind and after.get((stage, kind), 0.0) != before.get((stage, kind), 0.0)
    }


def test_each_rag_stage_is_timed_under_its_documented_name(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = stack_factory(generator="ollama", embedder="local", ollama_host=fake.url, ollama_timeout_s=10.0)
    prepare(stack)
    assert set(stage[0] for stage in stage_samples(stack)) <= set(STAGES), "a stage outside STAGES"

    before = stage_samples(stack)
    assert stack.http.post("/api/v1/rag/search", json={"query": "probe", "collection": "docs"}).status_code == 200
    after_search = stage_samples(stack)
    assert grown(before, after_search, "count") == {"embed": 1, "retrieve": 1, "search_total": 1}

    answer = stack.http.post("/api/v1/rag/query", json=QUESTION)
    assert answer.json()["generator"] == "ollama:llama3.2"
    after_answer = stage_samples(stack)
    assert grown(after_search, after_answer, "count") == {
        "embed": 1,
        "retrieve": 1,
        "search_total": 1,
        "generate": 1,
        "answer_total": 1,
    }

    with stack.http.stream("POST", "/api/v1/rag/query", json={**QUESTION, "stream": True}) as streamed:
        tokens = sum(1 for line in streamed.iter_lines() if line == "event: token")
    assert tokens > 3  # the stand-in streams word by word, 20 ms apart
    after_stream = stage_samples(stack)
    assert grown(after_answer, after_stream, "count") == {
        "embed": 1,
        "retrieve": 1,
        "search_total": 1,
        "generate": 1,
        "first_token": 1,
        "answer_total": 1,
    }
    seconds = grown(after_answer, after_stream, "sum")
    # The first token comes after retrieval and well before the last of the words 20 ms apart.
    assert seconds["search_total"] <= seconds["first_token"] < seconds["answer_total"] - 0.04, seconds
    assert seconds["answer_total"] >= seconds["generate"]
    help_text = stack.anon.get("/metrics").text
    assert all(stage in help_text for stage in ("embed", "retrieve", "generate", "first_token", "answer_total"))


def test_counters_for_operators_exist_from_start_up(stack: Stack) -> None:
    families = {f.name: f for f in text_string_to_metric_families(stack.anon.get("/metrics").text)}
    dropped = families["ragkit_dropped_citations"]
    assert [(s.name, s.value) for s in dropped.samples if s.name.endswith("_total")] == [
        ("ragkit_dropped_citations_total", 0.0)
    ]
    assert families["ragkit_rate_limit_rejections"].type == "counter"


# -- alert rules ------------------------------------------------------------------------------------
def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@needs_promtool
def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    def promtool(*args: str, cwd: Path = REPO) -> str:
        done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    # The config loads the rules: the relative path in rule_files resolves.
    assert "1 rule files found" in promtool("check", "config", "deploy/prometheus.yml")

    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "RagkitBreakerOpen",
        "RagkitSearchLatencyHigh",
        "RagkitAnswerLatencyHigh",
        "RagkitErrorRatioHigh",
        "RagkitNotReady",
    }
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert fired == names, "every alert has a unit test in which it fires"
    assert quiet == names, "and one in which it must stay quiet"


_SELECTOR = re.compile(r"\b(ragkit_[A-Za-z0-9_]+)\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_every_metric_the_alerts_use_is_served_by_a_live_service(stack: Stack) -> None:
    prepare(stack)
    assert stack.http.post("/api/v1/rag/search", json={"query": "breaker", "collection": "docs"}).status_code == 200
    assert stack.http.post("/api/v1/rag/query", json=QUESTION).status_code == 200
    samples = [
        sample
        for family in text_string_to_metric_families(stack.anon.get("/metrics").text)
        for sample in family.samples
    ]

    checked = set()
    for rule in alert_rules():
        for name, matchers in _SELECTOR.findall(rule["expr"]):
            served = [s for s in samples if s.name == name]
            assert served, f"{rule['alert']} uses {name}, which /metrics does not serve"
            for label, op, value in _MATCHER.findall(matchers):
                assert any(label in s.labels for s in served), f"{rule['alert']}: {name} has no label {label}"
                if op == "=":
                    assert any(s.labels.get(label) == value for s in served), (
                        f"{rule['alert']}: no {name} sample with {label}={value!r}"
                    )
            checked.add(name)
    assert checked == {
        "ragkit_breaker_state",
        "ragkit_stage_duration_seconds_bucket",
        "ragkit_http_requests_total",
        "ragkit_ready",
    }
    ready = [s.value for s in samples if s.name == "ragkit_ready"]
    assert ready == [1.0]


def test_readiness_is_a_series_prometheus_can_alert_on(stack: Stack) -> None:
    def ready_value() -> float:
        families = text_string_to_metric_families(stack.anon.get("/metrics").text)
        return next(s.value for f in families for s in f.samples if s.name == "ragkit_ready")

    assert ready_value() == 1.0
    stack.services.store.close()  # the store goes away from under the service
    # Readiness checks are reused for a few seconds; the series follows the very next verdict.
    wait_until(lambda: stack.anon.get("/health/ready").status_code == 503, "readiness to fail", timeout_s=30)
    assert ready_value() == 0.0
