"""The Streamlit workbench, page by page, with AppTest against a live service (real HTTP, the
real embedded stack), plus unit tests of the helpers in `ragkit.workbench.ui`."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ragkit.workbench.ui import connection, display, endpoints, evaluation, prometheus
from tests.conftest import REPO, SECRET, Stack, start_stack
from tests.support.fake_ollama import FakeOllama
from tests.support.live import free_port
from tests.support.waiting import wait_until
from tests.test_loaders import make_pdf

APP = REPO / "app.py"
TIMEOUT = 30  # per script run; a run is well under a second here, this is slack for a busy CI machine

DOCS = [
    {"id": "breakers", "title": "Circuit breakers",
     "text": "A circuit breaker opens after five consecutive failures of a dependency. While it is open, calls "
             "fail fast with status 503 and a Retry-After header. After thirty seconds one probe is let through.",
     "metadata": {"topic": "resilience"}},
    {"id": "tokens", "title": "Service tokens",
     "text": "Every API route needs the X-Service-Token header. To rotate the secret, list the new and the old "
             "secret separated by a comma, restart, then remove the old one.", "metadata": {"topic": "security"}},
    {"id": "ingest", "title": "Ingestion",
     "text": "Unchanged documents are skipped by their content hash. A changed document replaces its chunks "
             "without leaving stale chunks behind.", "metadata": {"topic": "ingestion"}},
]
QUESTION = "How many failures open a circuit breaker?"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory (no developer .env) and data directory for the UI."""
    ui_dir = tmp_path / "ui"
    ui_dir.mkdir()
    monkeypatch.chdir(ui_dir)
    monkeypatch.setenv("RAGKIT_DATA_DIR", str(ui_dir / "data"))
    monkeypatch.delenv("RAGKIT_API_URL", raising=False)
    monkeypatch.delenv("INTER_SERVICE_SECRET", raising=False)
    return ui_dir


def point_ui_at(monkeypatch: pytest.MonkeyPatch, url: str, token: str = SECRET) -> None:
    monkeypatch.setenv("RAGKIT_API_URL", url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", token)


def load(stack: Stack, name: str = "handbook") -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": name}).status_code == 201
    response = stack.http.post(f"/api/v1/rag/collections/{name}/documents", json={"documents": DOCS})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, local_embedder) -> Iterator[Stack]:  # noqa: ANN001
    """One loaded service for the tests that only read (starting one costs about a second)."""
    stack, server = start_stack(tmp_path_factory.mktemp("shared"), local_embedder)
    try:
        load(stack)
        yield stack
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


@pytest.fixture
def loaded(shared: Stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The shared service with the handbook collection; tests using it must not change it."""
    point_ui_at(monkeypatch, shared.url)
    return shared


@pytest.fixture
def ui(stack: Stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A service of the test's own, empty."""
    point_ui_at(monkeypatch, stack.url)
    return stack


@pytest.fixture
def fresh(ui: Stack) -> Stack:
    """A service of the test's own with the handbook collection, for tests that change it."""
    load(ui)
    return ui


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    """No exception on screen and no script error."""
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    """Everything written on the page, for "does it say ..." checks."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    parts += [x.label for x in at.expander] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def ask(at: AppTest, question: str = QUESTION) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert_clean(at)
    return at


# -- Ask --------------------------------------------------------------------------------------------
def test_ask_streams_an_answer_with_numbered_citations_and_timings(loaded: Stack) -> None:
    at = start()
    assert at.title[0].value == "Ask"
    assert at.selectbox(key="ask_collection").value == "handbook"
    ask(at)
    user, assistant = at.chat_message
    assert user.name == "user" and assistant.name == "assistant"
    answer = assistant.markdown[0].value
    assert "five consecutive failures" in answer and "[1]" in answer
    labels = [e.label for e in assistant.expander]
    assert labels[0].startswith("**[1]** Circuit breakers") and "cited" in labels[0]
    assert len(labels) == 3  # one per retrieved passage, numbered as in the answer
    assert labels[0].count("▰") == 5  # the best score fills the bar; the others are relative to it
    opened = assistant.expander[0]
    # The passage, the sentence the answer quotes in bold (it was quoted from it).
    (passage,) = [m.value for m in opened.markdown]
    assert re.search(r"\*\*[^*]*five consecutive failures[^*]*\*\*", passage), passage
    details = opened.caption[0]
    assert details.value.startswith("rank 1 of 3 (100% of the best score)")
    assert "`breakers`" in details.value and "topic: resilience" in details.value
    assert details.help.startswith("Raw score ")  # the raw number on hover, not in the way
    timing = assistant.caption[-1].value
    assert "retrieval" in timing and "generation" in timing and "hybrid search" in timing
    assert not assistant.warning  # not degraded

    ask(at, "How do I rotate the secret?")
    assert len(at.chat_message) == 4  # the conversation is kept
    assert "secret" in at.chat_message[3].markdown[0].value


def test_controls_reach_the_service(loaded: Stack) -> None:
    at = start()
    at.segmented_control(key="ask_mode").set_value("sparse")
    at.slider(key="ask_top_k").set_value(1).run()
    ask(at)
    assistant = at.chat_message[1]
    assert len(assistant.expander) == 1
    assert "sparse search" in assistant.caption[-1].value


def test_thumbs_are_stored_through_the_service_and_shown_on_the_feedback_page(fresh: Stack) -> None:
    at = ask(start())
    at.feedback[0].set_value(0).run()
    assert_clean(at)
    assert "feedback is saved" in texts(at)
    lines = (fresh.settings.data_dir / "feedback" / "feedback.jsonl").read_text().splitlines()
    stored = json.loads(lines[-1])
    assert stored["rating"] == "down" and stored["question"] == QUESTION
    assert "five consecutive failures" in stored["answer"]
    assert stored["collection"] == "handbook" and stored["sources"][0]["doc_id"] == "breakers"

    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["question"]) == [QUESTION] and list(table["rating"]) == ["down"]
    assert [b.label for b in at.get("download_button")] == ["Download JSON", "Download CSV"]


def test_a_follow_up_is_asked_with_the_conversation_and_a_new_one_forgets_it(loaded: Stack) -> None:
    at = ask(start())
    follow_up = "and how do they close again?"
    ask(at, follow_up)
    assistant = at.chat_message[3]
    searched = [c.value for c in assistant.caption if c.value.startswith("Searched for:")]
    # The follow-up was made standalone from the first question: "they" are circuit breakers.
    assert len(searched) == 1 and "breaker" in searched[0].lower(), searched
    first = at.chat_message[1]
    assert not [c for c in first.caption if c.value.startswith("Searched for:")]  # asked on its own

    (new,) = [b for b in at.button if b.label == "New conversation"]
    new.click().run()
    assert not at.chat_message
    ask(at, follow_up)  # now nothing to lean on: searched as typed
    assert not [c for c in at.chat_message[1].caption if c.value.startswith("Searched for:")]


@pytest.mark.parametrize("outage", ["error", "stopped"])
def test_degraded_banner_says_why_when_generation_is_down(
    stack_factory, workdir: Path, monkeypatch: pytest.MonkeyPatch, outage: str  # noqa: ANN001
) -> None:
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        point_ui_at(monkeypatch, stack.url)
        if outage == "error":
            fake.mode = "error"
        else:
            fake.stop()
        at = ask(start())
        assistant = at.chat_message[1]
        banner = assistant.warning[0].value
        assert banner.startswith("**Degraded answer.**")
        assert "generation unavailable" in banner and "extractively" in banner
        assert "[1]" in assistant.markdown[0].value  # still an answer, with citations
        assert "extractive answer" in assistant.caption[-1].value


def test_a_generator_answer_streams_through_ollama(stack_factory, workdir: Path, monkeypatch) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        point_ui_at(monkeypatch, stack.url)
        at = ask(start())
        assistant = at.chat_message[1]
        assert assistant.markdown[0].value.startswith("According to the context")
        assert not assistant.warning
        assert fake.count("/api/chat") == 1


# -- Search -----------------------------------------------------------------------------------------
def test_search_shows_a_results_table(loaded: Stack) -> None:
    at = start("search")
    at.text_input(key="search_query").set_value("rotate the secret")
    at.button[0].click().run()  # the form's Search button
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table.columns) == ["#", "score", "document", "where", "doc_id", "chunk", "preview", "metadata"]
    assert table["doc_id"][0] == "tokens" and table["where"][0].startswith(table["document"][0])
    assert "security" in table["metadata"][0]
    assert "X-Service-Token" in at.text[0].value  # the chosen result in full


def test_search_compares_the_three_modes_side_by_side(loaded: Stack) -> None:
    at = start("search")
    at.text_input(key="search_query").set_value("circuit breaker failures")
    at.toggle(key="search_compare").set_value(True)
    at.button[0].click().run()
    assert_clean(at)
    headings = [m.value for m in at.markdown if m.value.startswith("####")]
    assert headings == ["#### hybrid", "#### dense", "#### sparse"]
    for column in at.columns[-3:]:  # each mode's ranked list, best first
        assert column.markdown[1].value.startswith("**1.** Circuit breakers · chunk 0 · `")
    assert "3 also in hybrid" in texts(at)


def test_an_empty_search_asks_for_a_query(loaded: Stack) -> None:
    at = start("search")
    at.button[0].click().run()
    assert "Type a query first" in texts(at)
    assert not at.dataframe


# -- Collections ------------------------------------------------------------------------------------
def test_collections_create_validates_before_sending(ui: Stack) -> None:
    at = start("collections")
    assert "No collections yet" in texts(at)
    at.text_input[0].set_value("bad name!")
    at.number_input[0].set_value(8)
    at.number_input[1].set_value(10)
    at.button[0].click().run()
    errors = [e.value for e in at.error]
    assert any(e.startswith("Name:") for e in errors)
    assert any(e.startswith("Chunk size:") for e in errors)
    assert ui.http.get("/api/v1/rag/collections").json()["collections"] == []

    at.text_input[0].set_value("manuals")
    at.number_input[0].set_value(120)
    at.number_input[1].set_value(20)
    at.button[0].click().run()
    assert_clean(at)
    assert "Created collection 'manuals'" in at.success[0].value
    stats = ui.http.get("/api/v1/rag/collections/manuals").json()
    assert (stats["chunk_size"], stats["chunk_overlap"]) == (120, 20)
    assert at.dataframe[0].value["name"].tolist() == ["manuals"]


def test_uploading_several_files_ingests_them_with_a_result_per_file(ui: Stack) -> None:
    ui.http.post("/api/v1/rag/collections", json={"name": "manuals"})
    at = start("collections")
    uploader = at.file_uploader[0]
    for name, content, mime in [
        ("breakers.md", b"# Circuit breakers\n\nA breaker opens after five failures.", "text/markdown"),
        ("notes.txt", b"Tokens rotate by listing two secrets.", "text/plain"),
        ("broken.pdf", b"this is not a pdf at all", "application/pdf"),
        ("guide.pdf", make_pdf(["Rate limits apply per user.", "Retry after the given seconds."], title="Guide"),
         "application/pdf"),
        ("faq.jsonl", b'{"id": "q1", "text": "Hybrid search fuses dense and sparse results."}\n'
                      b'{"id": "q2", "text": "Sparse search uses BM25."}\n', "application/jsonl"),
    ]:
        uploader.upload(name, content, mime)
    at.run()
    ingest = next(b for b in at.button if b.label.startswith("Ingest"))
    assert ingest.label == "Ingest 5 files"
    ingest.click().run()
    assert_clean(at)
    job = finished_job(ui)
    at.run()  # the page's next refresh after the job ended
    assert_clean(at)
    assert progress_texts(at) == [
        "done · into 'manuals' · 6 of 6 documents · 5 ingested, 0 unchanged · 1 failed · "
        f"{job['chunks']} chunks"
    ]
    failed = table_with(at, "why it failed").to_dict("records")
    assert [row["document or file"] for row in failed] == ["broken.pdf"] and failed[0]["why it failed"]
    assert ui.http.get("/api/v1/rag/collections/manuals").json()["documents"] == 5
    assert at.dataframe[0].value["documents"].tolist() == [5]  # the list is fresh
    assert "guide.pdf" in table_with(at, "title")["document"].tolist()  # and browsable
    assert not [b for b in at.button if b.label == "Cancel"]  # nothing left to cancel

    # The same file again is reported as unchanged, not ingested twice.
    at.file_uploader[0].upload("notes.txt", b"Tokens rotate by listing two secrets.", "text/plain").run()
    next(b for b in at.button if b.label.startswith("Ingest")).click().run()
    finished_job(ui)
    at.run()
    assert "1 of 1 documents · 0 ingested, 1 unchanged" in progress_texts(at)[0]


def test_a_waiting_job_says_why_and_can_be_cancelled(stack_factory, workdir: Path, monkeypatch) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(embedder="ollama", ollama_host=fake.url, breaker_fail_max=1, breaker_reset_s=0.3)
        stack.http.post("/api/v1/rag/collections", json={"name": "manuals"})
        point_ui_at(monkeypatch, stack.url)
        fake.mode = "error"
        job = stack.http.post("/api/v1/rag/collections/manuals/jobs", json={"documents": DOCS}).json()
        wait_until(lambda: stack.http.get(f"/api/v1/rag/jobs/{job['id']}").json()["waiting"], "the job to wait")
        at = start("collections")
        assert progress_texts(at)[0].startswith("running · into 'manuals' · 0 of 3 documents")
        assert any(w.value.startswith("Waiting: ") and "retrying in" in w.value for w in at.warning)
        next(b for b in at.button if b.label == "Cancel").click().run()
        assert_clean(at)
        assert finished_job(stack)["state"] == "cancelled"
        at.run()
        assert progress_texts(at)[0].startswith("cancelled · into 'manuals'")
        assert not [b for b in at.button if b.label == "Cancel"]


def finished_job(stack: Stack) -> dict:
    """The newest job, once it has ended (the page submits and moves on; the service works)."""
    newest = lambda: stack.http.get("/api/v1/rag/jobs", params={"limit": 1}).json()["jobs"][0]  # noqa: E731
    wait_until(lambda: newest()["state"] in ("done", "failed", "cancelled"), "the upload's job to end", 60)
    return newest()


def progress_texts(at: AppTest) -> list[str]:
    return [element.proto.text for element in at.get("progress")]


def test_browsing_and_deleting_a_document(fresh: Stack) -> None:
    at = start("collections")
    documents = at.dataframe[1].value
    assert sorted(documents["document"]) == ["breakers", "ingest", "tokens"]
    at.selectbox(key="delete_doc_handbook").set_value("tokens")
    at.button(key="delete_document").click().run()
    assert_clean(at)
    assert "Deleted document 'tokens'" in at.success[0].value
    remaining = [d["doc_id"] for d in fresh.http.get("/api/v1/rag/collections/handbook/documents").json()["documents"]]
    assert sorted(remaining) == ["breakers", "ingest"]
    assert sorted(at.dataframe[1].value["document"]) == ["breakers", "ingest"]


def test_deleting_a_collection_needs_its_name_typed(fresh: Stack) -> None:
    at = start("collections")
    delete = next(b for b in at.button if b.label == "Delete collection")
    assert delete.disabled
    at.text_input(key="drop_confirm_handbook").set_value("handboo").run()
    assert next(b for b in at.button if b.label == "Delete collection").disabled
    at.text_input(key="drop_confirm_handbook").set_value("handbook").run()
    next(b for b in at.button if b.label == "Delete collection").click().run()
    assert_clean(at)
    assert "Deleted collection 'handbook'" in at.success[0].value
    assert fresh.http.get("/api/v1/rag/collections/handbook").status_code == 404
    assert "No collections yet" in texts(at)


# -- Health -----------------------------------------------------------------------------------------
def test_health_shows_breakers_dependencies_and_traffic(loaded: Stack) -> None:
    at = start("health")
    page = texts(at)
    assert ":green-badge[ok]" in page and "`local_generation`  \n:green-badge[closed]" in page
    assert "`edge`" in page and "Vector store" in page
    assert "Collecting samples" in page
    loaded.http.post("/api/v1/rag/search", json={"query": "breaker", "collection": "handbook"})
    time.sleep(0.05)
    at.run()
    assert_clean(at)
    assert "Collecting samples" not in texts(at)
    routes = at.dataframe[0].value
    assert "/api/v1/rag/search" in routes["route"].tolist()
    assert "/health" not in routes["route"].tolist()  # the page's own polling is left out
    assert "retrieve" in at.dataframe[1].value["stage"].tolist()


def test_health_shows_an_open_breaker_in_red(stack_factory, workdir: Path, monkeypatch) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local", breaker_fail_max=1)
        load(stack)
        point_ui_at(monkeypatch, stack.url)
        fake.stop()
        stack.http.post("/api/v1/rag/query", json={"question": QUESTION, "collection": "handbook"})
        at = start("health")
        page = texts(at)
        assert "`ollama_generation`  \n:red-badge[open]" in page
        assert ":orange-badge[degraded]" in page and "Degraded: a dependency is failing" in page
        assert "`ollama:llama3.2`  \n:red-badge[failing]" in page  # the generator's dependency card


def requests_counted(stack: Stack, route: str) -> float:
    snapshot = prometheus.parse_metrics(stack.http.get("/metrics").text, time.time())
    return sum(s.value for s in snapshot.named(prometheus.REQUESTS) if s.labels.get("route") == route)


def test_health_shows_the_openai_and_mcp_endpoints_as_their_clients_see_them(loaded: Stack) -> None:
    before = requests_counted(loaded, "/openai/v1/models")
    at = start("health")
    page = texts(at)
    assert "**OpenAI-compatible API**  \n:green-badge[ok]" in page
    assert "**MCP server**  \n:green-badge[ok]" in page
    assert "1 model: ragkit/handbook" in page
    assert re.search(r"4 tools: (search|ask|list_collections|get_document)", page), page
    assert {c.value for c in at.code} >= {f"{loaded.url}/openai/v1", f"{loaded.url}/mcp"}
    at.run()  # a refresh within the check interval does not check again
    assert_clean(at)
    assert requests_counted(loaded, "/openai/v1/models") == before + 1


def test_endpoint_checks_say_why_an_endpoint_fails(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(service_rate_limit="1/minute")
    models, mcp = endpoints.check_endpoints(stack.url, SECRET)
    assert models.ok and models.detail == "up, no models yet: create a collection"
    assert not mcp.ok and mcp.detail.startswith("HTTP 429: rate limited")  # the limit's second request
    for check in endpoints.check_endpoints(stack.url, "not-the-token"):
        assert check.status == "failing" and check.detail.startswith("HTTP 401: the workbench's token is refused")
    down = f"http://127.0.0.1:{free_port()}"
    for check in endpoints.check_endpoints(down, SECRET):
        assert not check.ok and check.detail == "not reachable (ConnectError)" and check.elapsed_ms is None


# -- Evaluation -------------------------------------------------------------------------------------
def write_run(runs: Path, name: str, created: str, hybrid: float, dense: float, chunk_size: int = 200) -> None:
    folder = runs / name
    folder.mkdir(parents=True)
    modes = {
        mode: {"ndcg@10": score, "recall@100": score + 0.2, "mrr@10": score - 0.05,
               "latency_ms": {"p50": 4.0, "p95": 9.5, "p99": 15.0}}
        for mode, score in (("hybrid", hybrid), ("dense", dense))
    }
    (folder / "metrics.json").write_text(json.dumps({
        "dataset": "scifact", "collection": "scifact", "queries": 300,
        "config": {"embedder": "local:all-MiniLM-L6-v2", "chunk_size": chunk_size, "chunk_overlap": 30, "top_k": 100},
        "modes": modes, "created_at": created, "ragkit_version": "0.1.0",
    }))


def test_evaluation_lists_and_compares_runs(loaded: Stack, workdir: Path) -> None:
    runs = workdir / "data" / "runs"
    write_run(runs, "2025-01-01-baseline", "2025-01-01T10:00:00", 0.66, 0.64)
    write_run(runs, "2025-01-02-small-chunks", "2025-01-02T10:00:00", 0.69, 0.65, chunk_size=120)
    (runs / "broken").mkdir()
    (runs / "broken" / "metrics.json").write_text("{not json")
    at = start("evaluation")
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["2025-01-02-small-chunks"] * 2 + ["2025-01-01-baseline"] * 2
    assert table["chunk_size"].tolist() == [120, 120, 200, 200]
    assert table["ndcg@10"].tolist() == pytest.approx([0.69, 0.65, 0.66, 0.64])
    assert "1 run folder(s) could not be read" in texts(at)
    assert len(at.get("vega_lite_chart")) == 4  # nDCG, Recall, MRR, latency

    at.multiselect(key="eval_modes").set_value(["hybrid"]).run()
    assert at.dataframe[0].value["mode"].tolist() == ["hybrid", "hybrid"]


def test_evaluation_explains_when_runs_cannot_be_started(loaded: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "notebook_command_available", lambda: (False, "no `ragkit notebook run` yet"))
    at = start("evaluation")
    assert "No evaluation runs yet" in texts(at)
    assert "no `ragkit notebook run` yet" in texts(at)
    assert at.button[-1].label == "Start evaluation" and at.button[-1].disabled


FAKE_NOTEBOOK = textwrap.dedent("""
    # Stands in for `ragkit notebook run evaluate`: writes the executed notebook cell by cell like
    # papermill, then metrics.json, into --output-dir. After the first cell it holds until the test
    # creates the gate file, so the test sees the run in progress for certain, then lets it finish.
    import json, os, pathlib, sys, time
    args = sys.argv[1:]
    out = pathlib.Path(args[args.index("--output-dir") + 1])
    params = {args[i + 1]: args[i + 2] for i in range(0, args.index("--output-dir"), 3)}
    gate = pathlib.Path(os.environ["FAKE_NOTEBOOK_GATE"])
    out.mkdir(parents=True)
    cells = [{"cell_type": "code", "metadata": {"papermill": {"status": "pending"}}} for _ in range(4)]
    for index, cell in enumerate(cells):
        cell["metadata"]["papermill"]["status"] = "completed"
        (out / "evaluate.ipynb").write_text(json.dumps({"cells": cells}))
        held_until = time.monotonic() + 60
        while index == 0 and not gate.exists():
            if time.monotonic() > held_until:
                sys.exit("the test never opened the gate")
            time.sleep(0.01)
        time.sleep(float(params.get("pause", 0)))
    (out / "metrics.json").write_text(json.dumps({
        "dataset": params["dataset"], "collection": "c", "queries": int(params["max_queries"]),
        "config": {"top_k": int(params["top_k"]), "note": params.get("note")},
        "modes": {m: {"ndcg@10": 0.7} for m in params["modes"].split(",")},
        "created_at": "2030-01-01T00:00:00", "ragkit_version": "0.1.0"}))
    print("executed notebook:", out / "evaluate.ipynb")
""")


@pytest.fixture
def fake_notebook(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs use FAKE_NOTEBOOK; returns the gate file that lets a run go on past its first cell."""
    script = workdir / "fake_notebook.py"
    script.write_text(FAKE_NOTEBOOK)
    gate = workdir / "fake_notebook.gate"
    monkeypatch.setenv("FAKE_NOTEBOOK_GATE", str(gate))
    monkeypatch.setattr(evaluation, "notebook_command_available", lambda: (True, ""))
    monkeypatch.setattr(
        evaluation, "evaluate_command",
        lambda params, output_dir: [sys.executable, str(script),
                                    *[x for k, v in params.items() for x in ("-p", k, str(v))],
                                    "--output-dir", str(output_dir)],
    )
    return gate


def wait_for(job: evaluation.EvaluationJob, seconds: float = 20) -> None:
    wait_until(lambda: not job.running, "the run to end", timeout_s=seconds)


def test_evaluation_starts_a_run_and_shows_its_progress(loaded: Stack, workdir: Path, fake_notebook: Path) -> None:
    at = start("evaluation")
    at.multiselect[-1].set_value(["hybrid", "sparse"])
    at.number_input[1].set_value(20)  # queries
    at.checkbox[1].check()  # the whole corpus
    at.text_area[0].set_value("note=from the UI\nnot a parameter line")
    at.button[-1].click().run()
    assert "line 2: write KEY=VALUE" in texts(at)  # nothing started
    assert "evaluation_job" not in at.session_state

    at.text_area[0].set_value("note=from the UI\npause=0.01")
    at.button[-1].click().run()
    assert_clean(at)
    job = at.session_state["evaluation_job"]
    assert job.command[2:-2] == [
        "-p", "dataset", "scifact", "-p", "modes", "hybrid,sparse", "-p", "top_k", "100", "-p", "max_queries", "20",
        "-p", "max_documents", "None", "-p", "note", "from the UI", "-p", "pause", "0.01"]
    assert job.output_dir.parent == workdir / "data" / "runs" and job.output_dir.name.endswith("-evaluate")
    # The run holds after its first cell until the gate opens: it is surely running when the page looks.
    wait_until(lambda: job.cells() == (1, 4) or not job.running, "the run's first cell", timeout_s=20)
    at.run()
    assert job.running, job.output()
    assert "cell 1 of 4" in at.get("progress")[0].proto.text  # shown while it runs

    fake_notebook.touch()
    wait_for(job)
    at.run()
    assert_clean(at)
    assert "The run finished" in texts(at)
    table = at.dataframe[0].value
    assert table["run"].tolist() == [job.output_dir.name] * 2 and table["mode"].tolist() == ["hybrid", "sparse"]
    assert job.progress() == 1.0


def test_a_failed_run_says_why(loaded: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "notebook_command_available", lambda: (True, ""))
    monkeypatch.setattr(
        evaluation, "evaluate_command",
        lambda params, output_dir: [sys.executable, "-c", "import sys; print('error: unknown parameter x'); "
                                    "sys.exit(2)"],
    )
    at = start("evaluation")
    at.button[-1].click().run()
    wait_for(at.session_state["evaluation_job"])
    at.run()
    assert_clean(at)
    assert "exited with code 2: error: unknown parameter x" in at.error[0].value


def test_a_run_can_be_stopped(loaded: Stack, fake_notebook: Path) -> None:
    at = start("evaluation")
    at.text_area[0].set_value("pause=30")
    at.button[-1].click().run()
    job = at.session_state["evaluation_job"]
    next(b for b in at.button if b.label == "Stop the run").click().run()
    assert_clean(at)
    assert job.returncode is not None and not job.running
    assert "The run was stopped" in at.error[0].value


# -- when things go wrong ---------------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "search", "collections", "feedback", "health"])
def test_service_down_shows_how_to_start_it(workdir: Path, monkeypatch: pytest.MonkeyPatch, page: str | None) -> None:
    point_ui_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    at = start(page)
    assert at.title[0].value == "The ragkit service is not reachable"
    page_text = texts(at)
    assert "`make up`" in page_text and "`ragkit serve`" in page_text
    assert ":red-badge[not reachable]" in page_text  # the sidebar says so too
    assert not at.chat_input


def test_evaluation_still_lists_runs_while_the_service_is_down(workdir: Path, monkeypatch) -> None:  # noqa: ANN001
    point_ui_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    write_run(workdir / "data" / "runs", "r1", "2025-01-01T10:00:00", 0.6, 0.5)
    at = start("evaluation")
    assert at.dataframe[0].value["run"].tolist() == ["r1", "r1"]
    assert at.button[-1].disabled


def test_a_wrong_token_says_so(shared: Stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_ui_at(monkeypatch, shared.url, token="w" * 64)
    at = start()
    assert at.title[0].value == "The service refused the token"
    assert "INTER_SERVICE_SECRET" in texts(at) and "from the environment" in texts(at)
    assert ":red-badge[token refused]" in texts(at)
    at.switch_page("app_pages/health.py").run()  # open endpoints still work
    assert_clean(at)
    assert at.title[0].value == "Health" and ":green-badge[ok]" in texts(at)


def test_a_missing_token_says_how_to_set_one(shared: Stack, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_API_URL", shared.url)
    at = start()
    assert at.title[0].value == "The service refused the token"
    assert "No service token is configured" in at.error[0].value


def test_url_and_token_come_from_dotenv(shared: Stack, workdir: Path) -> None:
    (workdir / ".env").write_text(f"RAGKIT_API_URL={shared.url}\nINTER_SERVICE_SECRET={SECRET}\n")
    at = start()
    assert f"`{shared.url}`" in texts(at)
    assert "URL from .env · token from .env" in texts(at)


def test_something_else_on_the_port_is_not_a_traceback(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    class NotRagkit(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotRagkit)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        point_ui_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        at = start()
        assert at.title[0].value == "This is not a ragkit service"
    finally:
        server.shutdown()
        server.server_close()


HOSTILE = [
    "",
    "   ",
    "x" * 5000,  # over the service's question limit
    "<script>alert(1)</script> **bold** [link](javascript:alert(1)) :red[x] $$\\frac{1}{0}$$",
    "\x00\x01 null bytes \u202e right-to-left",  # (lone surrogates cannot come from a browser: UTF-8 only)
    "{{ 7*7 }} ' OR 1=1 -- ; DROP TABLE",
]


def test_nothing_typed_into_ask_or_search_shows_an_exception(loaded: Stack) -> None:
    at = start()
    for text in HOSTILE:
        at.chat_input[0].set_value(text).run()
        assert_clean(at)
    asked = [t for t in HOSTILE if t.strip()]
    assert len(at.chat_message) == 2 * len(asked)  # blank ones are ignored, the others answered or refused
    assert "<script>" in at.chat_message[2].markdown[0].value  # shown as text, never run
    at.switch_page("app_pages/search.py").run()
    for text in HOSTILE:
        at.text_input(key="search_query").set_value(text)
        at.button[0].click().run()
        assert_clean(at)


def test_nothing_typed_into_the_collection_forms_shows_an_exception(loaded: Stack) -> None:
    at = start("collections")
    for name, size, overlap in [("", 200, 30), ("a" * 80, 10**9, -5), ("../etc", 50, 50), ("ok-name", 100, 100),
                                ("handbook", 200, 30)]:
        at.text_input[0].set_value(name)
        at.number_input[0].set_value(size)
        at.number_input[1].set_value(overlap)
        at.button[0].click().run()
        assert_clean(at)
        assert at.error
    assert "already exists" in " ".join(e.value for e in at.error)
    at.text_input(key="drop_confirm_handbook").set_value("\x00" * 3).run()
    assert_clean(at)


def test_a_collection_deleted_elsewhere_is_an_error_not_a_traceback(fresh: Stack) -> None:
    # The collection disappears between the page listing it and the question being sent.
    from ragkit.workbench.ui import common

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "collection_names", lambda: ["ghost", "handbook"])
        at = ask(start())
    error = at.chat_message[1].error[0].value
    assert "collection 'ghost' does not exist" in error and "HTTP 404" in error
    fresh.http.delete("/api/v1/rag/collections/handbook")
    at.run()
    assert "There is no collection yet" in texts(at)


def test_an_unexpected_error_is_a_message_not_a_traceback(loaded: Stack) -> None:
    from ragkit.workbench.ui import common

    def broken() -> list[str]:
        raise RuntimeError("a bug")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "collection_names", broken)
        at = start()
    assert "Something went wrong: RuntimeError: a bug" in at.error[0].value


# -- helpers (no Streamlit) -------------------------------------------------------------------------
METRICS_BEFORE = """
# TYPE ragkit_http_requests counter
ragkit_http_requests_total{method="POST",route="/api/v1/rag/search",status="200"} 10.0
ragkit_http_requests_total{method="GET",route="/health",status="200"} 50.0
# TYPE ragkit_http_request_duration_seconds histogram
ragkit_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/api/v1/rag/search"} 5.0
ragkit_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/api/v1/rag/search"} 10.0
ragkit_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/api/v1/rag/search"} 10.0
ragkit_http_request_duration_seconds_count{method="POST",route="/api/v1/rag/search"} 10.0
ragkit_http_request_duration_seconds_sum{method="POST",route="/api/v1/rag/search"} 0.3
"""
METRICS_AFTER = """
# TYPE ragkit_http_requests counter
ragkit_http_requests_total{method="POST",route="/api/v1/rag/search",status="200"} 28.0
ragkit_http_requests_total{method="POST",route="/api/v1/rag/search",status="503"} 2.0
ragkit_http_requests_total{method="GET",route="/health",status="200"} 90.0
# TYPE ragkit_http_request_duration_seconds histogram
ragkit_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/api/v1/rag/search"} 5.0
ragkit_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/api/v1/rag/search"} 30.0
ragkit_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/api/v1/rag/search"} 30.0
ragkit_http_request_duration_seconds_count{method="POST",route="/api/v1/rag/search"} 30.0
ragkit_http_request_duration_seconds_sum{method="POST",route="/api/v1/rag/search"} 1.3
# TYPE ragkit_stage_duration_seconds histogram
ragkit_stage_duration_seconds_bucket{le="0.005",stage="embed"} 3.0
ragkit_stage_duration_seconds_bucket{le="0.01",stage="embed"} 4.0
ragkit_stage_duration_seconds_bucket{le="+Inf",stage="embed"} 4.0
ragkit_stage_duration_seconds_count{stage="embed"} 4.0
ragkit_stage_duration_seconds_sum{stage="embed"} 0.016
"""


def test_rates_and_latency_between_two_scrapes_leave_out_polling() -> None:
    before = prometheus.parse_metrics(METRICS_BEFORE, at=100.0)
    after = prometheus.parse_metrics(METRICS_AFTER, at=110.0)
    point = prometheus.rate_point(before, after)
    assert point is not None
    assert point["requests/s"] == 2.0  # 20 API requests in 10 s; the 40 health checks do not count
    assert point["5xx/s"] == 0.2
    assert point["mean ms"] == 50.0  # 1.0 s over 20 requests
    assert point["p50 ms"] == pytest.approx(55.0)  # all 20 in (10 ms, 100 ms]: halfway
    assert prometheus.rate_point(after, before) is None  # counters went back: a restart, no point
    assert prometheus.rate_point(after, after) is None  # no time passed
    later = prometheus.parse_metrics(METRICS_AFTER, at=120.0)
    series = prometheus.rate_series([before, after, later])
    assert series[0] == point and series[1]["requests/s"] == 0.0 and series[1]["p50 ms"] is None
    routes = prometheus.route_table(after)
    assert routes == [{"method": "POST", "route": "/api/v1/rag/search", "requests": 30, "4xx": 0, "5xx": 2,
                       "mean ms": 43.3, "p95 ms": 94.6}]
    (stage,) = prometheus.stage_table(after)
    assert stage["stage"] == "embed" and stage["count"] == 4 and stage["mean ms"] == 4.0


def test_histogram_quantile_edge_cases() -> None:
    assert prometheus.histogram_quantile(0.5, {}) is None
    assert prometheus.histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert prometheus.histogram_quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1  # beyond the last bound
    assert prometheus.histogram_quantile(0.5, {0.1: 10.0, float("inf"): 10.0}) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        prometheus.parse_metrics("this is { not prometheus", at=0)


def test_progress_is_read_from_papermill_and_tqdm_output() -> None:
    assert evaluation.parse_progress("") is None
    assert evaluation.parse_progress("starting\n") is None
    assert evaluation.parse_progress("Executing:  40%|####      | 4/10 [00:02<00:03]\rExecuting:  50%|#####") == 0.5
    assert evaluation.parse_progress("Executing: 3/12 [00:01<00:05]\n") == 0.25
    assert evaluation.parse_progress("Executing: 12/12 [00:09<00:00]\nwrote metrics.json\n") == 1.0


def test_extra_parameters_are_parsed_and_bad_lines_named() -> None:
    params, problems = evaluation.parse_extra_parameters("a=1\n# comment\n\n b = two words \n=x\nno-sep\n9x=1")
    assert params == {"a": "1", "b": "two words"}
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7"]
    assert evaluation.evaluate_command({"dataset": "scifact", "max_queries": None}, Path("out"), python="py") == [
        "py", "-m", "ragkit", "notebook", "run", "evaluate", "-p", "dataset", "scifact", "-p", "max_queries", "None",
        "--output-dir", "out"]
    assert evaluation.new_run_dir(Path("d"), datetime(2025, 1, 2, 3, 4, 5)) == Path("d/runs/20250102-030405-evaluate")


def test_runs_tolerate_means_with_per_query_scores_and_missing_metrics(tmp_path: Path) -> None:
    run = tmp_path / "r" / "metrics.json"
    run.parent.mkdir()
    run.write_text(json.dumps({"dataset": "arguana", "modes": {"sparse": {"ndcg@10": {"mean": 0.4, "per_query": [1]},
                                                                          "recall@100": "n/a"}}}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text(json.dumps({"modes": {}}))
    runs, problems = evaluation.load_runs(tmp_path)
    assert len(runs) == 1 and len(problems) == 1
    table = evaluation.comparison_table(runs)
    assert table.loc[0, "ndcg@10"] == 0.4 and pd.isna(table.loc[0, "recall@100"])
    assert evaluation.chart_frame(table, "recall@100").empty
    assert evaluation.load_runs(tmp_path / "missing") == ([], [])


def test_display_rules() -> None:
    assert display.cited_numbers("a [1] b [3], c [12]") == {1, 3, 12}
    assert display.escape_markdown("a_b *c* [d](e)") == r"a\_b \*c\* \[d\]\(e\)"
    hit = {"title": "A *title*", "chunk_index": 3, "score": 0.0246, "page": 4, "page_end": 5, "section": "Setup"}
    label = display.source_label(2, hit, cited=True, best_score=0.0328)
    assert label == r"**[2]** A \*title\*, pp\. 4–5 · Setup · ▰▰▰▰▱ · :blue[cited]"
    assert display.source_label(1, {"doc_id": "d", "metadata": {"source": "m.pdf"}, "page": 2}, cited=False) == (
        r"**[1]** m\.pdf, p\. 2"
    )
    # The cited sentence is found by the words the answer quotes from it, whatever the citation's position.
    passage = "Breakers open after five failures. They close again after a probe. Unrelated text."
    shown = display.passage_markdown(passage, "They close again after a probe [2]. Other [1].", 2)
    assert shown == r"Breakers open after five failures\. **They close again after a probe\.** Unrelated text\."
    assert display.passage_markdown(passage, "Nothing from it [2].", 2) == display.escape_markdown(passage)
    assert display.validate_new_collection("ok", 200, 30, ["other"]) == []
    assert len(display.validate_new_collection("ok", 200, 200, [])) == 1
    files = [("a.md", b"x" * 400), ("b.md", b"y" * 400), ("c.md", b"z" * 300), ("huge.pdf", b"p" * 5000)]
    assert [[n for n, _ in batch] for batch in display.upload_batches(files, 2000)] == [
        ["a.md", "b.md"], ["c.md"], ["huge.pdf"]]  # under half the limit each; an oversized file alone
    running = {"state": "running", "collection": "c", "chunks": 40, "documents_per_s": 2.5, "eta_s": 12.2,
               "documents": {"done": 20, "total": 50, "ingested": 18, "skipped": 1, "failed": 1}}
    assert display.job_caption(running) == ("running · into 'c' · 20 of 50 documents · 18 ingested, 1 unchanged · "
                                             "1 failed · 40 chunks · 2.5 documents/s · about 12 s left")
    assert display.preview("word " * 100, 20).endswith("…")
    assert display.timings_caption({"retrieval": 12.4, "generation": 3, "total": 15.4}, mode_used="dense") == (
        "retrieval 12 ms · generation 3 ms · total 15 ms · dense search")


def test_connection_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGKIT_API_URL", raising=False)
    monkeypatch.delenv("INTER_SERVICE_SECRET", raising=False)
    monkeypatch.delenv("RAGKIT_DATA_DIR", raising=False)
    conn = connection.current_connection()
    assert (conn.api_url, conn.url_source, conn.token_source) == ("http://127.0.0.1:8000", "default", "missing")
    assert connection.data_dir() == Path("data")
    (tmp_path / ".env").write_text("INTER_SERVICE_SECRET=new,old\nRAGKIT_DATA_DIR=/srv/rag\n")
    conn = connection.current_connection()
    assert (conn.token, conn.token_source) == ("new", ".env")
    assert connection.data_dir() == Path("/srv/rag")
    assert connection.max_upload_mb() == 32
    monkeypatch.setenv("RAGKIT_MAX_REQUEST_BYTES", "8388608")
    assert connection.max_upload_mb() == 8
