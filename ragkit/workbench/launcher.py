"""`ragkit up`: the service and the UI as child processes, with a sample collection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
from dotenv import dotenv_values

from ragkit.core.config import new_secret

SAMPLE_COLLECTION = "ragkit-docs"
ENV_FILE = Path(".env")


def ensure_secret(env_file: Path = ENV_FILE) -> str:
    """The service token from the environment or .env; a fresh one written to .env if neither has it."""
    current = os.environ.get("INTER_SERVICE_SECRET") or (
        dotenv_values(env_file).get("INTER_SERVICE_SECRET") if env_file.is_file() else None
    )
    if current:
        return current
    secret = new_secret()
    with env_file.open("a", encoding="utf-8") as out:
        out.write(f"INTER_SERVICE_SECRET={secret}\n")
    env_file.chmod(0o600)
    click.echo(f"wrote a new INTER_SERVICE_SECRET to {env_file}")
    return secret


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the service exited with code {process.returncode}; see the log above")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise click.ClickException(f"the service did not become ready at {url} within {timeout_s:.0f} s")


def ingest_samples(url: str, secret: str, samples: Path) -> None:
    from ragkit.client import RagkitClient
    from ragkit.rag.loaders import load_path

    with RagkitClient(url, secret) as client:
        if any(c["name"] == SAMPLE_COLLECTION for c in client.collections()):
            return
        if not samples.is_dir():
            click.echo(f"no sample folder at {samples}; skipping the sample collection")
            return
        client.ensure_collection(SAMPLE_COLLECTION)
        docs = [
            {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)} for d in load_path(samples)
        ]
        summary = client.ingest_documents(SAMPLE_COLLECTION, docs)
        click.echo(f"sample collection '{SAMPLE_COLLECTION}': {summary.ingested} documents, {summary.chunks} chunks")


def run_workbench(*, port: int, ui_port: int, with_ui: bool, samples: Path) -> None:
    secret = ensure_secret()
    env = {
        **os.environ,
        "INTER_SERVICE_SECRET": secret,
        "RAGKIT_API_URL": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "1",
    }
    url = env["RAGKIT_API_URL"]
    children = [subprocess.Popen([sys.executable, "-m", "ragkit", "serve", "--port", str(port)], env=env)]
    try:
        wait_ready(url, children[0])
        ingest_samples(url, secret, samples)
        ui_url = None
        if with_ui and Path("app.py").is_file():
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "streamlit",
                        "run",
                        "app.py",
                        "--server.port",
                        str(ui_port),
                        "--server.headless",
                        "true",
                        "--browser.gatherUsageStats",
                        "false",
                    ],
                    env=env,
                )
            )
            ui_url = f"http://127.0.0.1:{ui_port}"
        click.secho(f"\nragkit is up.\n  service  {url}  (API docs: {url}/docs)", fg="green")
        if ui_url:
            click.secho(f"  UI       {ui_url}", fg="green")
        click.echo(
            "\nEvery /api/v1 call needs the token from .env:\n"
            "  export INTER_SERVICE_SECRET=$(sed -n 's/^INTER_SERVICE_SECRET=//p' .env)\n"
            f'  curl -s -H "X-Service-Token: $INTER_SERVICE_SECRET" '
            f"'{url}/api/v1/rag/search?collection={SAMPLE_COLLECTION}&query=circuit+breakers'\n"
            f"  curl -s {url}/health\n\nPress Ctrl+C to stop."
        )
        while all(child.poll() is None for child in children):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
