"""The workbench in a real browser: `streamlit run app.py` against a live service, driven through
Debian's headless Chromium with playwright (browser downloads are not possible here, hence
`executable_path`). Screenshots of every page go to `test-artifacts/` (not committed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SECRET, Stack
from tests.support.live import free_port
from tests.test_loaders import make_pdf
from tests.test_ui import DOCS, QUESTION, write_run

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def workbench(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """The Streamlit server in a child process, pointed at the live stack; yields its URL."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    assert stack.http.post("/api/v1/rag/collections", json={"name": "handbook"}).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/handbook/documents", json={"documents": DOCS}).is_success
    data_dir = tmp_path / "ui-data"
    write_run(data_dir / "runs", "2025-01-01-baseline", "2025-01-01T10:00:00", 0.66, 0.64)
    write_run(data_dir / "runs", "2025-01-02-small-chunks", "2025-01-02T10:00:00", 0.69, 0.65, chunk_size=120)
    port = free_port()
    env = {
        **os.environ, "RAGKIT_API_URL": stack.url, "INTER_SERVICE_SECRET": SECRET,
        "RAGKIT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
    }
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"streamlit exited:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"streamlit did not start:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


PDFS = [
    ("rate-limits.pdf", ["Rate limits", "Every end user may send one hundred requests per minute.",
                         "A caller over the limit gets status 429 with a Retry-After header."], "Rate limits"),
    ("backups.pdf", ["Backups", "Snapshots of the data directory are taken every night at two o'clock."], "Backups"),
]


def test_a_person_uploads_pdfs_asks_and_opens_a_citation(workbench: str, stack: Stack) -> None:
    """The issue's "done when": upload a few PDFs, ask, see a cited answer stream in, open the
    citation, compare search modes, look at Health."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1600})
            page.set_default_timeout(30_000)
            page.goto(f"{workbench}/collections")
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([
                {"name": name, "mimeType": "application/pdf", "buffer": make_pdf(["\n".join(lines)], title=title)}
                for name, lines, title in PDFS
            ])
            page.get_by_role("button", name="Ingest 2 files").click()
            # The upload is a job; the page follows it live until it is done.
            expect(page.get_by_text("done · into 'handbook' · 2 of 2 documents · 2 ingested")).to_be_visible(
                timeout=30_000
            )
            page.screenshot(path=str(ARTIFACTS / "ui-upload.png"), full_page=True)

            page.get_by_test_id("stSidebarNav").get_by_text("Ask", exact=True).click()
            chat = page.get_by_placeholder("Ask a question about handbook")
            chat.fill("How many requests per minute may an end user send?")
            chat.press("Enter")
            first = page.get_by_test_id("stChatMessage").nth(1)
            expect(first).to_contain_text("one hundred requests per minute")
            expect(first.get_by_test_id("stExpander").first).to_contain_text("[1] Rate limits")

            chat.fill(QUESTION)
            chat.press("Enter")
            assistant = page.get_by_test_id("stChatMessage").nth(3)
            expect(assistant).to_contain_text("five consecutive failures")
            expect(assistant).to_contain_text("[1]")
            citation = assistant.get_by_test_id("stExpander").first
            expect(citation).to_contain_text("[1] Circuit breakers")
            citation.get_by_text("[1] Circuit breakers").click()
            expect(citation).to_contain_text("Retry-After header")  # the source chunk, opened
            expect(assistant).to_contain_text("retrieval")
            assistant.get_by_test_id("stFeedbackButton").first.click()  # thumbs up
            expect(page.get_by_text("Thanks, your feedback is saved.")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "ui-ask.png"), full_page=True)

            stored = stack.http.get("/api/v1/rag/feedback").json()
            assert [(e["rating"], e["question"]) for e in stored] == [("up", QUESTION)]
            documents = stack.http.get("/api/v1/rag/collections/handbook/documents").json()["documents"]
            assert {"rate-limits.pdf", "backups.pdf"} <= {d["doc_id"] for d in documents}

            # The other pages, for a person to look at (and to prove they render in a browser).
            visits = [
                ("Search", "search"), ("Collections", "collections"), ("Feedback", "feedback"),
                ("Health", "health"), ("Evaluation", "evaluation"),
            ]
            for title, name in visits:
                page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
                expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
                if name == "search":
                    page.get_by_label("Query").fill("circuit breaker failures")
                    page.get_by_text("Compare all modes").click()
                    page.get_by_role("button", name="Search").click()
                    expect(page.get_by_text("also in hybrid").first).to_be_visible()
                if name == "health":
                    expect(page.get_by_text("local_generation")).to_be_visible()
                    page.get_by_text("2 s", exact=True).click()
                    # The page refreshes by itself: the second sample turns into charts.
                    expect(page.get_by_text("API requests per second")).to_be_visible(timeout=15_000)
                if name in ("health", "evaluation"):
                    expect(page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg").first).to_be_visible()
                if name == "evaluation":
                    expect(page.get_by_text("2025-01-02-small-chunks").first).to_be_visible()
                expect(page.get_by_test_id("stException")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)
        finally:
            browser.close()
