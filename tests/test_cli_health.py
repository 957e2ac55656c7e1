"""`ragkit health` against a live service: a table for people, --json for scripts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragkit.cli import main
from tests.conftest import SECRET, Stack
from tests.support.fake_ollama import FakeOllama


def health(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str):  # noqa: ANN201
    monkeypatch.setenv("RAGKIT_API_URL", stack.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)  # no developer .env is read
    return CliRunner().invoke(main, ["health", *args], catch_exceptions=False)


def row(output: str, *cells: str) -> bool:
    """A table row holding these cells in this order, separated by column padding."""
    return re.search(r"^" + r"\s+".join(re.escape(c) for c in cells) + r"\s*$", output, re.M) is not None


def test_a_healthy_service_is_a_readable_table(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    report = stack.anon.get("/health").json()
    shown = health(stack, monkeypatch, tmp_path)
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == f"ragkit {report['version']} at {stack.url}: ok"
    assert row(shown.output, "dependency", "backend", "status")
    for name, dep in report["dependencies"].items():
        assert row(shown.output, name, dep["backend"], dep["status"]), shown.output
    assert row(shown.output, "circuit breaker", "state")
    for name, state in report["circuit_breakers"].items():
        assert row(shown.output, name, state), shown.output
    assert "{" not in shown.output and "\x1b[" not in shown.output  # no JSON, no colour codes in a pipe


def test_json_is_the_raw_report(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = health(stack, monkeypatch, tmp_path, "--json")
    assert raw.exit_code == 0
    assert json.loads(raw.output) == stack.anon.get("/health").json()


def test_an_open_breaker_shows_as_degraded_and_exits_1(stack_factory, monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(
            generator="ollama", embedder="local", ollama_host=fake.url, ollama_timeout_s=1.0, breaker_fail_max=1
        )
        assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
        documents = [{"id": "a", "title": "A", "text": "A breaker opens after consecutive failures."}]
        assert stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": documents}).is_success
        fake.set_mode("error", "/api/chat")
        question = {"question": "When does a breaker open?", "collection": "docs"}
        answer = stack.http.post("/api/v1/rag/query", json=question)
        assert answer.json()["degraded"] is True

        shown = health(stack, monkeypatch, tmp_path)
        assert shown.exit_code == 1, shown.output
        assert shown.output.splitlines()[0].endswith(": degraded")
        assert row(shown.output, "generator", "ollama:llama3.2", "failing"), shown.output
        assert row(shown.output, "ollama_generation", "open"), shown.output
        raw = health(stack, monkeypatch, tmp_path, "--json")
        assert raw.exit_code == 1 and json.loads(raw.output)["status"] == "degraded"
