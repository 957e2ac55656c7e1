"""The `ragkit` command line against a live service over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.cli.reference import current_section, render
from tests.conftest import REPO, SECRET, Stack
from tests.support.live import free_port
from tests.support.serve import ctrl_c_works


@pytest.fixture
def run(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    monkeypatch.setenv("RAGKIT_API_URL", stack.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)  # no developer .env is read

    def invoke(*args: str, input: str | None = None):  # noqa: A002, ANN202
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def test_ingest_search_ask_and_collections(run, stack: Stack) -> None:  # noqa: ANN001
    ingested = run("ingest", str(REPO / "samples" / "docs"), "-c", "docs")
    assert ingested.exit_code == 0, ingested.output
    assert "created collection docs" in ingested.output
    count = int(re.search(r"(\d+) ingested", ingested.output).group(1))
    assert count == len(list((REPO / "samples" / "docs").iterdir()))
    again = run("ingest", str(REPO / "samples" / "docs"), "-c", "docs")
    assert f"0 ingested, {count} unchanged" in again.output

    found = run("search", "what does a 409 status mean", "-c", "docs", "-k", "3")
    assert found.exit_code == 0 and len(found.output.strip().splitlines()) == 3
    assert "http-api.md" in found.output or "faq.html" in found.output

    asked = run("ask", "What happens when Ollama is down?", "-c", "docs")
    assert asked.exit_code == 0 and "[1]" in asked.output and "Sources:" in asked.output
    plain = run("ask", "How do I rotate the service token?", "-c", "docs", "--no-stream")
    assert plain.exit_code == 0 and "[1]" in plain.output

    listed = run("collections", "list")
    assert "docs" in listed.output and f"{count} docs" in listed.output
    assert '"chunk_size": 200' in run("collections", "show", "docs").output
    assert run("collections", "create", "empty", "--chunk-size", "64", "--chunk-overlap", "8").exit_code == 0
    refused = run("collections", "delete", "empty", input="n\n")
    assert refused.exit_code != 0 and "empty" in run("collections", "list").output
    assert run("collections", "delete", "empty", "--yes").exit_code == 0
    assert "empty" not in run("collections", "list").output
    health = run("health", "--json")  # the default is a table for people; --json is the stable form
    assert health.exit_code == 0 and json.loads(health.output)["status"] == "ok"


def test_chat_keeps_the_conversation_and_a_new_one_forgets_it(run, stack: Stack) -> None:  # noqa: ANN001
    assert run("ingest", str(REPO / "samples" / "docs"), "-c", "docs").exit_code == 0
    script = "How do I rotate the service token?\nand how do I generate it?\n/new\nand how do I generate it?\n/quit\n"
    talked = run("chat", "-c", "docs", input=script)
    assert talked.exit_code == 0, talked.output
    assert talked.output.count("Sources:") == 3
    # The follow-up was searched with the subject carried over, and only while the conversation lasted.
    searched = re.findall(r"\(searched for: (.+)\)", talked.output)
    assert len(searched) == 1 and "token" in searched[0].lower() and searched[0].startswith("and how do I generate it?")
    assert "New conversation." in talked.output
    # A question to a missing collection is an error line; the chat goes on to the next question.
    missing = run("chat", "-c", "nope", input="anything?\n")
    assert missing.exit_code == 0 and "error:" in missing.output and "nope" in missing.output


def test_ask_cites_the_page_of_a_pdf(run, stack: Stack, tmp_path: Path) -> None:  # noqa: ANN001
    from tests.test_pages import MANUAL_PAGES, make_pdf

    (tmp_path / "manual.pdf").write_bytes(make_pdf(MANUAL_PAGES))
    created = run("collections", "create", "manuals", "--chunk-size", "24", "--chunk-overlap", "0")
    assert created.exit_code == 0, created.output
    assert run("ingest", str(tmp_path / "manual.pdf"), "-c", "manuals").exit_code == 0
    asked = run("ask", "What must I do before an upgrade?", "-c", "manuals", "-k", "1")
    assert asked.exit_code == 0, asked.output
    assert "[1] manual.pdf, p. 3 " in asked.output  # the page went from the CLI's loader through the service


def test_errors_are_one_readable_line(run, tmp_path: Path) -> None:  # noqa: ANN001
    missing = run("search", "x", "-c", "nope")
    assert missing.exit_code == 1 and "404" in missing.output and "nope" in missing.output
    bad = run("collections", "create", "bad name")
    assert bad.exit_code == 1 and "422" in bad.output
    bad_file = tmp_path / "data.exe"
    bad_file.write_bytes(b"MZ")
    unsupported = run("ingest", str(bad_file), "-c", "docs")
    assert unsupported.exit_code == 2 and ".txt" in unsupported.output
    assert run("ingest", str(tmp_path / "absent"), "-c", "docs").exit_code == 2
    assert "Traceback" not in missing.output + bad.output + unsupported.output


def test_wrong_token_and_no_service_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch, stack: Stack, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGKIT_API_URL", stack.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", "wrong-" + "w" * 40)
    wrong = CliRunner().invoke(main, ["collections", "list"])
    assert wrong.exit_code == 1 and "401" in wrong.output and "INTER_SERVICE_SECRET" in wrong.output
    monkeypatch.setenv("RAGKIT_API_URL", f"http://127.0.0.1:{free_port()}")
    down = CliRunner().invoke(main, ["search", "x", "-c", "docs"])
    assert down.exit_code == 1 and "not reachable" in down.output and "make up" in down.output


def test_every_command_has_an_example_and_the_readme_matches_help() -> None:
    def commands(group, prefix=()):  # noqa: ANN001, ANN202
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))

    for path, command in commands(main):
        assert "Example:" in (command.help or ""), f"ragkit {' '.join(path)} has no Example in its help"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert current_section(readme) == render().strip(), "README's CLI section is stale: run `make docs`"


def test_python_dash_m_is_the_same_program() -> None:
    done = subprocess.run([sys.executable, "-m", "ragkit", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "ingest" in done.stdout and "serve" in done.stdout


def children_of(pid: int) -> list[int]:
    """The direct children of a process, from Linux's /proc."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_ragkit_up_starts_a_service_with_the_sample_collection(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "INTER_SERVICE_SECRET"}
    env.update({"RAGKIT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "ragkit", "up", "--no-ui", "--port", str(port), "--samples", str(REPO / "samples/docs")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group, so whatever it leaves behind can be found (and cleaned up) by group.
        start_new_session=True,
        preexec_fn=ctrl_c_works,
    )
    output = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if "Press Ctrl+C to stop" in line or process.poll() is not None:
                break
        text = "".join(output)
        assert "ragkit is up" in text, text
        secret = re.search(r"^INTER_SERVICE_SECRET=([0-9a-f]{64})$", (tmp_path / ".env").read_text(), re.M).group(1)
        assert oct((tmp_path / ".env").stat().st_mode & 0o777) == "0o600"
        url = f"http://127.0.0.1:{port}"
        hits = httpx.get(
            f"{url}/api/v1/rag/search",
            params={"collection": "ragkit-docs", "query": "circuit breakers"},
            headers={"X-Service-Token": secret},
        ).json()["results"]
        assert hits and "breaker" in hits[0]["text"].lower()
        assert (
            httpx.get(f"{url}/api/v1/rag/search", params={"collection": "ragkit-docs", "query": "x"}).status_code == 401
        )
        children = children_of(process.pid)
        assert len(children) == 1, "with --no-ui, `ragkit up` runs the service and nothing else"

        # Ctrl+C is how a person stops it: a clean exit, after the service has shut down.
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)  # EOF only once no child holds the output open
        text += rest
        assert process.returncode == 0, text
        # The service stopped through its own shutdown (store closed), not by the kill after a timeout.
        assert "Application shutdown complete" in rest, rest
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # nothing of the group is left running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health/live", timeout=5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
