"""`ragkit loadtest` and the fault scenario, with real locust runs against a live service.

The runs are short (a few users for a few seconds): they prove the plumbing — reports written,
the summary line printed, the gate failing a run that misses its budget, the fault scenario
degrading and recovering — not the latency figures, which `make bench` and the README own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.core.errors import InvalidInput
from ragkit.workbench import loadtest as lt
from tests.conftest import SCIFACT, SECRET, Stack

SUMMARY = re.compile(r"^p50=\d+ms p95=\d+ms p99=\d+ms rps=[\d.]+ failures=[\d.]+%$", re.MULTILINE)


def scifact_documents(limit: int) -> list[dict]:
    documents = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            documents.append({"id": row["_id"], "title": row.get("title", ""), "text": row["text"]})
            if len(documents) == limit:
                return documents
    return documents


def load_collection(stack: Stack, name: str = "scifact", documents: int = 24) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": name}).status_code == 201
    response = stack.http.post(
        f"/api/v1/rag/collections/{name}/documents", json={"documents": scifact_documents(documents)}
    )
    assert response.status_code == 200, response.text


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["loadtest", *args], env={"INTER_SERVICE_SECRET": SECRET})
    return result.exit_code, result.output


# -- arguments and the gate, without a service --------------------------------------------------

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-u", "0"], "--users must be at least 1"),
        (["-t", "soon"], "invalid run time"),
        (["--budget", "search"], "invalid budget"),
        (["--budget", "search=-5"], "invalid budget"),
        (["--mix", "search:fuzzy=2"], "unknown task 'search:fuzzy'"),
        (["--think-time", "2,1"], "MIN <= MAX"),
        (["--host", "ftp://example"], "invalid service URL"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    code, output = run_cli("--host", "http://127.0.0.1:9", *args) if "--host" not in args else run_cli(*args)
    assert code == 2, output
    assert message in output


def test_unreachable_service_is_a_clear_error() -> None:
    code, output = run_cli("--host", "http://127.0.0.1:9", "-t", "5s")
    assert code == 1
    assert "cannot reach" in output.lower() or "127.0.0.1:9" in output


def test_budgets_and_gate() -> None:
    assert lt.parse_budget("search=50") == ("search", 50.0)
    assert lt.parse_budget("ask=1.5s") == ("ask", 1500.0)
    assert lt.parse_duration("1m30s") == 90.0
    budgets = {"search": 50.0, "search:sparse": 20.0}
    assert lt.budget_for("search:dense", budgets, 500) == 50.0
    assert lt.budget_for("search:sparse", budgets, 500) == 20.0
    assert lt.budget_for("health", budgets, 500) == 500.0
    assert lt.budget_for("ingest", budgets, 500) is None  # measured, not gated, unless named

    stats = [
        lt.RouteStats("search:dense", 100, 0, 20, 45, 60, 10.0),
        lt.RouteStats("search:sparse", 100, 0, 10, 25, 30, 10.0),
        lt.RouteStats("ingest", 5, 0, 3000, 9000, 9000, 0.1),
        lt.RouteStats(lt.AGGREGATED, 205, 3, 15, 40, 60, 20.1),
    ]
    failed = [v.route for v in lt.evaluate(stats, budgets) if not v.passed]
    assert failed == ["search:sparse", "all requests"]  # 25 ms > 20 ms; 3/205 failed > 1 %
    assert lt.evaluate([], budgets)[-1].passed is False  # no request at all is no pass


def test_query_stream_never_repeats_a_text() -> None:
    stream = lt.QueryStream(["what is a breaker", "rotate the token now"], repeat=False)
    sent = [stream.next() for _ in range(40)]
    assert len(set(sent)) == 40
    # Widening only adds spaces: the model sees the same words.
    assert {" ".join(s.split()) for s in sent} == {"what is a breaker", "rotate the token now"}
    with pytest.raises(InvalidInput):
        lt.parse_mix("ask=0")


# -- real runs -----------------------------------------------------------------------------------

def test_loadtest_writes_reports_and_gates(stack: Stack, tmp_path: Path) -> None:
    load_collection(stack)
    code, output = run_cli(
        "--host", stack.url, "-u", "5", "-r", "5", "-t", "6s", "--data-dir", str(tmp_path),
        "--default-budget", "20000",  # this run proves the plumbing; the budget gate is tested below
    )
    assert code == 0, output
    assert SUMMARY.search(output), output
    assert "locust used" in output
    (run_dir,) = (tmp_path / "runs").glob("loadtest-*")
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "report.html", "summary.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["passed"] is True
    assert summary["locust_cpu"]["cpu_s"] > 0
    load = summary["machine"]["load_average_1min"]
    assert load["before"] >= 0 and load["after"] > 0, "a busy run leaves a load average above zero"
    assert f"{load['before']:.2f} before, {load['after']:.2f} after" in output
    routes = {r["name"] for r in summary["routes"]}
    assert {"search:hybrid", "Aggregated"} <= routes

    code, output = run_cli(
        "--host", stack.url, "-u", "2", "-r", "2", "-t", "3s", "--data-dir", str(tmp_path),
        "--mix", "search:hybrid=1", "--budget", "search=0.001",
    )
    assert code == 1, output
    assert "FAIL search:hybrid: P95" in output
    assert SUMMARY.search(output), output


def test_the_ingest_scenario_ingests_through_jobs_while_others_read(stack: Stack, tmp_path: Path) -> None:
    load_collection(stack)
    code, output = run_cli(
        "--host", stack.url, "-u", "3", "-r", "3", "-t", "8s", "--data-dir", str(tmp_path),
        "--scenario", "ingest", "--default-budget", "20000",
    )
    assert code == 0, output
    (run_dir,) = (tmp_path / "runs").glob("loadtest-*")
    routes = {r["name"]: r for r in json.loads((run_dir / "summary.json").read_text())["routes"]}
    assert routes["ingest"]["requests"] >= 1 and routes["ingest"]["failures"] == 0
    assert routes["ingest:status"]["requests"] >= 1  # the job is followed, as ragkit ingest does
    jobs = stack.http.get("/api/v1/rag/jobs", params={"collection": "loadtest-ingest"}).json()["jobs"]
    assert jobs and jobs[-1]["documents"]["total"] == 64
    assert any(j["documents"]["ingested"] > 0 for j in jobs)


def test_fault_scenario_degrades_then_recovers(stack_factory, tmp_path: Path) -> None:  # noqa: ANN001
    from loadtests.fault import run_fault_scenario
    from tests.support.fake_ollama import FakeOllama

    with FakeOllama(dim=8) as fake:
        stack = stack_factory(
            ollama_host=fake.url, embedder="local", generator="ollama", breaker_reset_s=1.0, ollama_timeout_s=2.0
        )
        load_collection(stack, "fault", documents=12)
        run_dir = lt.new_run_dir(tmp_path, "fault")
        report = run_fault_scenario(
            host=stack.url, token=SECRET, fake=fake, run_dir=run_dir, collection="fault",
            users=3, run_time="10s", down_at=2.5, up_at=5.5, breaker_reset_s=1.0,
        )
    assert report.failure_ratio <= 0.01, report  # generation down degrades the answer, never fails it
    assert report.down_requests > 0 and report.degraded_while_down > 0.9, report
    assert report.p95_down_ms is not None
    assert report.recovered_in_s is not None and report.recovered_in_s < 4.0, report  # reset 1 s + a probe
    assert (run_dir / "fault.json").is_file()
    assert report.line().startswith("fault: failures=")


# -- the users sweep (loadtests/sweep.py): its mistakes are the caller's, said before any service starts

SWEEP = Path(__file__).resolve().parent.parent / "loadtests" / "sweep.py"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--users", "ten"], "--users takes whole numbers"),
        (["--users", "0,10"], "at least one count of 1 or more"),
        (["--backends", "onnx,gpu"], "--backends takes onnx and/or torch"),
        ([], "holds no collection 'absent': ingest it first"),
    ],
)
def test_sweep_refuses_wrong_arguments_before_starting_anything(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, str(SWEEP), "--data-dir", str(tmp_path), "--collection", "absent", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a refused run"
