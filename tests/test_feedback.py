"""Feedback on answers: the routes with good, wrong, missing and huge input, the log file, export."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest

from ragkit.client import RagkitClient
from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.rag.feedback import FeedbackLog, latest_per_answer, to_csv, validate_feedback
from tests.conftest import SECRET, Stack

GOOD = {
    "rating": "up",
    "question": "How do circuit breakers work?",
    "answer": "They open after five consecutive failures [1].",
    "collection": "handbook",
    "mode": "hybrid",
    "generator": "extractive",
    "degraded": False,
    "reasons": [],
    "sources": [{"doc_id": "breakers", "chunk_index": 0, "score": 0.82, "title": "Circuit breakers"}],
    "answer_id": "turn-1",
    "conversation_id": "session-1",
}
ROUTE = "/api/v1/rag/feedback"


def error_of(response) -> dict:  # noqa: ANN001
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_feedback_is_recorded_in_the_data_dir_and_exported(stack: Stack) -> None:
    response = stack.http.post(ROUTE, json=GOOD)
    assert response.status_code == 201, response.text
    saved = response.json()
    assert saved["id"] and saved["created_at"] and saved["rating"] == "up"
    assert saved["sources"][0]["doc_id"] == "breakers"

    stored = (stack.settings.data_dir / "feedback" / "feedback.jsonl").read_text().splitlines()
    assert len(stored) == 1
    assert json.loads(stored[0])["question"] == GOOD["question"]

    stack.http.post(ROUTE, json={**GOOD, "rating": "down", "comment": "too short"})
    exported = stack.http.get(ROUTE).json()
    assert [e["rating"] for e in exported] == ["up", "down"]
    assert exported[1]["comment"] == "too short"
    assert [e["rating"] for e in stack.http.get(ROUTE, params={"rating": "down"}).json()] == ["down"]
    assert stack.http.get(ROUTE, params={"collection": "elsewhere"}).json() == []
    assert len(stack.http.get(ROUTE, params={"limit": 1}).json()) == 1


def test_csv_export_is_a_spreadsheet_safe_table(stack: Stack) -> None:
    stack.http.post(ROUTE, json={**GOOD, "question": '=HYPERLINK("http://x","y"), with "quotes"\nand a newline'})
    response = stack.http.get(ROUTE, params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["question"].startswith("'=HYPERLINK")  # not run as a formula
    assert rows[0]["sources"] == "breakers#0"
    assert rows[0]["rating"] == "up"


def test_feedback_needs_the_token(stack: Stack) -> None:
    assert stack.anon.post(ROUTE, json=GOOD).status_code == 401
    assert stack.anon.get(ROUTE).status_code == 401
    wrong = {"X-Service-Token": "x" * 64}
    assert stack.anon.post(ROUTE, json=GOOD, headers=wrong).status_code == 401
    assert error_of(stack.anon.get(ROUTE, headers=wrong))["code"] == "unauthorized"


@pytest.mark.parametrize(
    "change",
    [
        {"rating": "meh"},
        {"rating": None},
        {"question": ""},
        {"question": "   "},
        {"question": 42},
        {"collection": "not a name!"},
        {"mode": "fuzzy"},
        {"degraded": "maybe"},
        {"sources": [{"chunk_index": 1}]},
        {"sources": [{"doc_id": "d", "chunk_index": -1}]},
        {"sources": "breakers"},
        {"unexpected": "field"},
        {"question": "q" * 4001},
        {"answer": "a" * 50_001},
        {"comment": "c" * 2001},
        {"reasons": ["r" * 1001]},
        {"sources": [{"doc_id": "d"}] * 101},
    ],
)
def test_bad_feedback_is_a_422_naming_the_problem(stack: Stack, change: dict) -> None:
    response = stack.http.post(ROUTE, json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_input"
    assert not (stack.settings.data_dir / "feedback" / "feedback.jsonl").exists()


def test_malformed_bodies_are_422(stack: Stack) -> None:
    for body in (b"not json", b"[]", b"{}", b"null"):
        response = stack.http.post(ROUTE, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, body
    assert stack.http.get(ROUTE, params={"format": "xml"}).status_code == 422
    assert stack.http.get(ROUTE, params={"limit": 0}).status_code == 422


def test_a_body_over_the_request_limit_is_413(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(max_request_bytes=64 * 1024)
    response = stack.http.post(ROUTE, json={**GOOD, "answer": "a" * 200_000})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_the_deprecated_prefix_serves_feedback_too(stack: Stack) -> None:
    response = stack.http.post("/api/rag/feedback", json=GOOD)
    assert response.status_code == 201
    assert response.headers["Deprecation"] == "true"


def test_client_records_and_exports(stack: Stack) -> None:
    hits = [{"id": "p1", "doc_id": "breakers", "chunk_index": 2, "score": 0.5, "text": "long text", "title": "B",
             "metadata": {"topic": "x"}}]
    with RagkitClient(stack.url, SECRET) as client:
        saved = client.feedback("Why?", "Because [1].", "down", collection="handbook", sources=hits, answer_id="a1")
        assert saved["sources"] == [{"doc_id": "breakers", "chunk_index": 2, "score": 0.5, "title": "B"}]
        assert client.feedback_export()[0]["answer_id"] == "a1"
        assert client.feedback_export(format="csv").startswith("id,created_at,rating")
        with pytest.raises(ServiceError) as raised:
            client.feedback("", "x", "up")
        assert raised.value.status == 422
    with RagkitClient(stack.url, "w" * 64) as wrong, pytest.raises(ServiceError) as raised:
        wrong.feedback_export(format="csv")
    assert raised.value.status == 401


# -- the log itself -----------------------------------------------------------------------------
def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path)
    big = {**GOOD, "answer": "x" * 40_000}  # far over PIPE_BUF: a plain append could interleave

    def write(n: int) -> None:
        for i in range(20):
            log.append(validate_feedback({**big, "answer_id": f"{n}-{i}"}))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = log.read()
    assert len(entries) == 80
    assert len({e.answer_id for e in entries}) == 80


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path)
    log.append(validate_feedback(GOOD))
    with log.path.open("a") as out:
        out.write('{"id": "half", "rating": "up", "quest')
    assert [e.question for e in log.read()] == [GOOD["question"]]


def test_a_changed_vote_replaces_the_earlier_one(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path)
    log.append(validate_feedback(GOOD))
    log.append(validate_feedback({**GOOD, "rating": "down"}))
    log.append(validate_feedback({**GOOD, "answer_id": "turn-2"}))
    latest = latest_per_answer(log.read())
    assert sorted((e.answer_id, e.rating) for e in latest) == [("turn-1", "down"), ("turn-2", "up")]


def test_validation_rules_hold_without_http() -> None:
    with pytest.raises(InvalidInput):
        validate_feedback({**GOOD, "question": "  "})
    with pytest.raises(InvalidInput):
        validate_feedback({**GOOD, "sources": [{"doc_id": "d", "score": "high"}]})
    entry = validate_feedback({"rating": "down", "question": "q"})
    assert entry.answer == "" and entry.sources == ()
    assert to_csv([entry]).splitlines()[1].split(",")[2] == "down"
