"""Ingestion jobs on the real embedded stack over real HTTP: submit, follow (status and events),
per-document failures, waiting out an outage, cancel, and resuming after the service is killed."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.client import RagkitClient
from tests.conftest import SECRET, Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.live import free_port
from tests.support.serve import start_serve
from tests.support.waiting import wait_until
from tests.test_auth import JWT_KEY, user_token
from tests.test_loaders import make_pdf

TOPICS = ["breakers", "tokens", "chunking", "caching", "metrics", "qdrant", "ollama", "jobs"]


def corpus(count: int, words: int = 60) -> list[dict[str, Any]]:
    return [
        {
            "id": f"doc-{i:05d}",
            "title": f"Note {i} on {TOPICS[i % len(TOPICS)]}",
            "text": " ".join(f"{TOPICS[i % len(TOPICS)]} fact{i} detail{j}" for j in range(words)),
        }
        for i in range(count)
    ]


def create(http: httpx.Client, name: str = "notes") -> None:
    assert http.post("/api/v1/rag/collections", json={"name": name}).status_code == 201


def submit(http: httpx.Client, documents: list[dict[str, Any]], name: str = "notes") -> dict[str, Any]:
    response = http.post(f"/api/v1/rag/collections/{name}/jobs", json={"documents": documents})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/api/v1/rag/jobs/{job['id']}"
    return job


def status(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/rag/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def finished(http: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    wait_until(lambda: status(http, job_id)["state"] in ("done", "failed", "cancelled"), "the job to end", timeout_s)
    return status(http, job_id)


def test_a_job_ingests_in_the_background_and_reports_what_it_did(stack: Stack) -> None:
    create(stack.http)
    docs = corpus(40)
    job = submit(stack.http, docs)
    assert job["state"] in ("queued", "running") and job["documents"]["total"] == 40
    done = finished(stack.http, job["id"])
    assert done["state"] == "done" and done["error"] is None
    assert done["documents"] == {"total": 40, "done": 40, "pending": 0, "ingested": 40, "skipped": 0, "failed": 0}
    assert done["chunks"] > 0 and done["chunks_per_s"] > 0 and done["documents_per_s"] > 0
    assert done["started_at"] and done["finished_at"] >= done["started_at"] >= done["created_at"]
    stats = stack.http.get("/api/v1/rag/collections/notes").json()
    assert (stats["documents"], stats["chunks"]) == (40, done["chunks"])
    hits = stack.http.post("/api/v1/rag/search", json={"query": "fact17 detail3", "collection": "notes"}).json()
    assert hits["results"][0]["doc_id"] == "doc-00017"

    again = finished(stack.http, submit(stack.http, docs)["id"])  # the same documents: nothing to write
    assert again["documents"]["skipped"] == 40 and again["chunks"] == 0
    listed = stack.http.get("/api/v1/rag/jobs", params={"collection": "notes"}).json()["jobs"]
    assert [j["id"] for j in listed] == [again["id"], job["id"]]  # newest first


def test_a_document_the_embedder_refuses_fails_alone_with_its_reason(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64, refused_input="OVERSIZED") as fake:
        stack = stack_factory(embedder="ollama", ollama_host=fake.url)
        create(stack.http)
        docs = corpus(6)
        docs[2]["text"] += " OVERSIZED"
        done = finished(stack.http, submit(stack.http, docs)["id"])
        assert done["state"] == "done"
        assert (done["documents"]["ingested"], done["documents"]["failed"]) == (5, 1)
        assert [e["doc_id"] for e in done["errors"]] == ["doc-00002"]
        assert "context length" in done["errors"][0]["reason"]
        assert stack.http.get("/api/v1/rag/collections/notes").json()["documents"] == 5


def test_what_ingestion_would_refuse_is_refused_at_submission(stack: Stack) -> None:
    create(stack.http)
    jobs = "/api/v1/rag/collections/notes/jobs"
    twice = corpus(2)
    twice[1]["id"] = twice[0]["id"]
    response = stack.http.post(jobs, json={"documents": twice})
    assert response.status_code == 422 and "more than once" in response.json()["error"]["message"]
    past_the_end = [{"id": "p", "text": "short", "page_starts": [0, 99]}]
    assert stack.http.post(jobs, json={"documents": past_the_end}).status_code == 422
    broken = json.dumps({"documents": [{"id": "s", "text": "broken \ud800 text"}]})  # a lone surrogate
    response = stack.http.post(jobs, content=broken, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert stack.http.get("/api/v1/rag/jobs").json()["jobs"] == []  # nothing was queued


def test_uploaded_files_that_cannot_be_read_are_listed_with_why(stack: Stack) -> None:
    create(stack.http)
    files = [
        ("files", ("guide.md", b"# Guide\n\nThe job runner writes documents in batches.")),
        ("files", ("manual.pdf", make_pdf(["Page one of the manual.", "Page two."]))),
        ("files", ("diagram.xyz", b"\x00\x01")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really")),
    ]
    response = stack.http.post("/api/v1/rag/collections/notes/jobs", files=files)
    assert response.status_code == 202, response.text
    done = finished(stack.http, response.json()["id"])
    assert (done["state"], done["documents"]["ingested"], done["documents"]["failed"]) == ("done", 2, 2)
    reasons = {e["doc_id"]: e["reason"] for e in done["errors"]}
    assert set(reasons) == {"diagram.xyz", "broken.pdf"}
    assert "unsupported file type" in reasons["diagram.xyz"] and ".md" in reasons["diagram.xyz"]


def test_progress_is_streamed_as_events_until_the_end(stack: Stack) -> None:
    create(stack.http)
    job = submit(stack.http, corpus(30))
    with RagkitClient(stack.url, SECRET) as client:
        updates = list(client.follow_job(job["id"]))
    assert updates[-1]["state"] == "done" and updates[-1]["documents"]["done"] == 30
    done_counts = [u["documents"]["done"] for u in updates]
    assert done_counts == sorted(done_counts)  # progress only goes forward


def test_wrong_missing_and_hostile_input(stack: Stack) -> None:
    create(stack.http)
    jobs = "/api/v1/rag/collections/notes/jobs"
    assert stack.http.post("/api/v1/rag/collections/nope/jobs", json={"documents": corpus(1)}).status_code == 404
    for body in ({}, {"documents": []}, {"documents": [{"title": "no text"}]}, {"documents": "x"}):
        response = stack.http.post(jobs, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["message"]
    assert stack.http.post(jobs, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    assert stack.http.post(jobs, files=[]).status_code == 422
    assert stack.anon.post(jobs, json={"documents": corpus(1)}).status_code == 401
    assert stack.anon.get("/api/v1/rag/jobs").status_code == 401
    missing = stack.http.get("/api/v1/rag/jobs/not-a-job")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert stack.http.delete("/api/v1/rag/jobs/not-a-job").status_code == 404
    assert stack.http.get("/api/v1/rag/jobs/not-a-job/events").status_code == 404
    assert stack.http.get("/api/v1/rag/jobs", params={"limit": 0}).status_code == 422
    # The service stays responsive and nothing was queued by the refusals.
    assert stack.http.get("/api/v1/rag/jobs").json()["jobs"] == []


def test_too_many_documents_for_one_job_is_413(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(max_documents_per_request=5)
    create(stack.http)
    response = stack.http.post("/api/v1/rag/collections/notes/jobs", json={"documents": corpus(6)})
    assert response.status_code == 413 and "send several jobs" in response.json()["error"]["message"]


def test_an_outage_pauses_the_job_and_cancel_stops_it_between_batches(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(embedder="ollama", ollama_host=fake.url, breaker_fail_max=1, breaker_reset_s=0.3)
        create(stack.http)
        fake.mode = "error"
        job = submit(stack.http, corpus(10))
        wait_until(lambda: status(stack.http, job["id"])["waiting"], "the job to wait for the embedder")
        waiting = status(stack.http, job["id"])
        assert waiting["state"] == "running" and waiting["documents"]["failed"] == 0
        assert "retrying in" in waiting["waiting"]
        fake.mode = "ok"  # the outage ends: the job goes on by itself, nothing failed
        done = finished(stack.http, job["id"])
        assert (done["state"], done["documents"]["ingested"], done["documents"]["failed"]) == ("done", 10, 0)

        fake.mode = "error"
        second = submit(stack.http, corpus(10, words=30))
        wait_until(lambda: status(stack.http, second["id"])["waiting"], "the second job to wait")
        cancelled = stack.http.delete(f"/api/v1/rag/jobs/{second['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
        ended = finished(stack.http, second["id"])
        assert ended["state"] == "cancelled" and ended["documents"]["pending"] == 10
        again = stack.http.delete(f"/api/v1/rag/jobs/{second['id']}")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_the_job_metrics_are_exported(stack: Stack) -> None:
    create(stack.http)
    finished(stack.http, submit(stack.http, corpus(5))["id"])
    text = stack.http.get("/metrics").text
    assert 'ragkit_jobs{state="running"} 0.0' in text and 'ragkit_jobs{state="queued"} 0.0' in text
    assert 'ragkit_job_documents_total{outcome="ingested"} 5.0' in text
    assert "ragkit_job_queue_wait_seconds_count 1.0" in text


def test_a_server_side_folder_is_read_only_inside_the_allowed_roots(stack_factory, tmp_path: Path) -> None:  # noqa: ANN001
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.md").write_text("# Alpha\n\nAlpha documents live in the allowed folder.")
    (root / "sub" / "b.txt").write_text("Beta notes, one folder down.")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / "image.png").write_bytes(b"\x89PNG")
    (outside / "secret.txt").write_text("never to be read")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    jobs = "/api/v1/rag/collections/notes/jobs"

    closed = stack_factory()
    create(closed.http)
    refused = closed.http.post(jobs, json={"path": str(root)})
    assert refused.status_code == 403 and "RAGKIT_INGEST_ROOTS" in refused.json()["error"]["message"]

    stack = stack_factory(ingest_roots=str(root), jwt_secret=JWT_KEY, jwt_audience="ragkit")
    create(stack.http)
    response = stack.http.post(jobs, json={"path": "."})
    assert response.status_code == 202, response.text
    done = finished(stack.http, response.json()["id"])
    assert (done["documents"]["ingested"], done["documents"]["failed"]) == (2, 3)
    reasons = {e["doc_id"]: e["reason"] for e in done["errors"]}
    assert set(reasons) == {"broken.pdf", "image.png", "link.txt"}
    assert "symbolic link" in reasons["link.txt"] and "unsupported" in reasons["image.png"]
    listed = stack.http.get("/api/v1/rag/collections/notes/documents").json()["documents"]
    assert sorted(d["doc_id"] for d in listed) == ["a.md", "sub/b.txt"]

    for hostile in ("../outside", str(outside), "escape", "/etc", "sub/../../outside/secret.txt"):
        response = stack.http.post(jobs, json={"path": hostile})
        assert response.status_code == 403, hostile
        assert "outside the folders" in response.json()["error"]["message"]
    assert stack.http.post(jobs, json={"path": "absent"}).status_code == 422
    assert stack.http.post(jobs, json={"path": ""}).status_code == 422
    assert stack.http.post(jobs, json={"path": "a\u0000b"}).status_code == 422
    writer = {"Authorization": f"Bearer {user_token('read write')}"}
    response = stack.anon.post(jobs, json={"path": "."}, headers=writer)
    assert response.status_code == 403 and "admin" in response.json()["error"]["message"]
    assert len(stack.http.get("/api/v1/rag/jobs").json()["jobs"]) == 1  # the refusals queued nothing


@pytest.mark.slow
def test_a_service_killed_mid_job_resumes_it_with_nothing_lost_or_doubled(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"INTER_SERVICE_SECRET": SECRET, "RAGKIT_OPTIMIZE_AFTER_INGEST": "false"}
    docs = corpus(800, words=20)
    service = start_serve(tmp_path, port, **env)
    try:
        with httpx.Client(base_url=url, headers={"X-Service-Token": SECRET}, timeout=60) as http:
            create(http)
            job = submit(http, docs)
            wait_until(lambda: status(http, job["id"])["documents"]["done"] >= 100, "the job to be under way", 120)
            service.send_signal(signal.SIGKILL)
            service.wait(30)
            service = start_serve(tmp_path, port, **env)
            cut = status(http, job["id"])
            assert cut["state"] in ("queued", "running") and 0 < cut["documents"]["done"] < len(docs)
            done = finished(http, job["id"], timeout_s=600)
            assert done["state"] == "done" and done["documents"]["failed"] == 0
            assert done["documents"]["ingested"] + done["documents"]["skipped"] == len(docs)
            stats = http.get("/api/v1/rag/collections/notes").json()
            listed = [
                d
                for offset in range(0, len(docs), 200)
                for d in http.get(
                    "/api/v1/rag/collections/notes/documents", params={"limit": 200, "offset": offset}
                ).json()["documents"]
            ]
            assert stats["documents"] == len(docs) == len({d["doc_id"] for d in listed})
            assert stats["chunks"] == sum(d["chunks"] for d in listed)  # no chunk written twice
    finally:
        service.kill()
        service.wait(30)


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture
def run(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    monkeypatch.setenv("RAGKIT_API_URL", stack.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)  # no developer .env is read

    def invoke(*args: str):  # noqa: ANN202
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_ragkit_ingest_runs_as_a_job_and_says_what_it_skipped(run, stack: Stack, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"note{i}.md").write_text(f"# Note {i}\n\nThe job runner handles note {i} in a batch.")
    (folder / "diagram.png").write_bytes(b"\x89PNG")
    result = run("ingest", str(folder), "-c", "notes")
    assert result.exit_code == 0, result.output
    assert "skipped: diagram.png: unsupported file type .png" in result.output
    assert "5 ingested, 0 unchanged" in result.output and "5/5" in result.output  # the bar's last state
    (job,) = stack.http.get("/api/v1/rag/jobs").json()["jobs"]
    assert job["state"] == "done" and job["documents"]["ingested"] == 5

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"\x89PNG")
    nothing = run("ingest", str(images), "-c", "notes")
    assert nothing.exit_code == 2 and "no documents to ingest" in nothing.output and ".md" in nothing.output


def test_ragkit_jobs_list_show_follow_and_cancel(run, stack: Stack, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "a.md").write_text("# A\n\nAlpha is the first letter.")
    detached = run("ingest", str(tmp_path / "a.md"), "-c", "notes")
    assert detached.exit_code == 0  # creates the collection; then a detached run
    detached = run("ingest", str(tmp_path / "a.md"), "-c", "notes", "--detach")
    assert detached.exit_code == 0 and "1 documents queued" in detached.output
    job_id = re.search(r"job ([0-9a-f]{32})", detached.output).group(1)
    followed = run("jobs", "follow", job_id)
    assert followed.exit_code == 0 and "0 ingested, 1 unchanged" in followed.output
    listed = run("jobs", "list", "-c", "notes")
    assert listed.exit_code == 0 and job_id in listed.output and "done" in listed.output
    shown = run("jobs", "show", job_id, "--json")
    assert json.loads(shown.output)["documents"]["skipped"] == 1
    refused = run("jobs", "cancel", job_id)
    assert refused.exit_code == 1 and "409" in refused.output and "already done" in refused.output
    unknown = run("jobs", "show", "nope")
    assert unknown.exit_code == 1 and "404" in unknown.output and "does not exist" in unknown.output
    assert "Traceback" not in followed.output + listed.output + unknown.output


def test_the_bar_counts_rate_and_eta_from_the_start_of_the_work(capsys: pytest.CaptureFixture[str]) -> None:
    """A job queued behind others shows that it waits, and its rate does not include the wait."""
    from ragkit.cli.jobs import follow_with_bar

    def status(state: str, done: int) -> dict[str, Any]:
        return {"state": state, "documents": {"total": 4, "done": done}, "chunks": done, "waiting": None}

    class Reports:  # what follow_jobs hands on from the service's events, in order
        def follow_jobs(self, jobs: list, update: Any) -> list:  # noqa: ANN401
            for report in (status("queued", 0), status("running", 2), status("done", 4)):
                update(report["documents"]["done"], report["chunks"], report)
            return [report]

    finals = follow_with_bar(Reports(), [status("queued", 0)], "job")
    shown = capsys.readouterr().err.replace("\r", "\n")
    assert finals[-1]["state"] == "done"
    assert "queued behind other jobs" in shown and "4/4" in shown and "4 chunks" in shown
