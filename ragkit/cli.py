"""The `ragkit` command line. Everything but `serve`, `up` and `secret` is a client of a
running service (RAGKIT_API_URL, token from INTER_SERVICE_SECRET or `.env`)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ragkit.errors import InvalidInput, RagkitError, ServiceError

BATCH_DOCUMENTS = 32


def _client():  # noqa: ANN202 - imported lazily: `ragkit secret` needs no httpx
    from ragkit.client import RagkitClient

    return RagkitClient()


def friendly_errors(fn: Callable) -> Callable:
    """A person gets one line saying what went wrong and what to do, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as exc:
            hint = " (check INTER_SERVICE_SECRET in .env matches the service's)" if exc.status == 401 else ""
            click.secho(f"error {exc.status} {exc.code}: {exc.message}{hint}", fg="red", err=True)
            sys.exit(1)
        except RagkitError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragkit")
def main() -> None:
    """ragkit: retrieval-augmented generation over your document collections."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes (needs QDRANT_URL).")
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP service.

    Example: ragkit serve --port 8000
    """
    import uvicorn

    from ragkit.config import get_settings
    from ragkit.logs import configure_logging
    from ragkit.service import create_app

    settings = get_settings()
    configure_logging(settings.data_dir)
    if workers > 1 and not settings.qdrant_url:
        raise click.UsageError("the embedded store belongs to one process: --workers > 1 needs QDRANT_URL")
    try:
        app = create_app(settings)
    except RagkitError as exc:
        click.secho(f"ragkit refuses to start: {exc.message}", fg="red", err=True)
        sys.exit(2)
    if workers > 1:
        uvicorn.run("ragkit.__main__:app_factory", factory=True, host=host, port=port, workers=workers)
    else:
        uvicorn.run(app, host=host, port=port, log_level="info")


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="Service port.")
@click.option("--ui-port", default=8501, show_default=True, type=int, help="Streamlit UI port.")
@click.option("--no-ui", is_flag=True, help="Start only the service.")
@click.option("--samples", default="samples/docs", show_default=True, help="Folder ingested on first start.")
def up(port: int, ui_port: int, no_ui: bool, samples: str) -> None:
    """Start the service (and the UI) with a sample collection, and wait.

    Example: ragkit up
    """
    from ragkit.launcher import run_workbench

    run_workbench(port=port, ui_port=ui_port, with_ui=not no_ui, samples=Path(samples))


def _documents_in(paths: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    from ragkit.loaders import load_path

    for raw in paths:
        for doc in load_path(Path(raw)):
            yield {"id": doc.id, "text": doc.text, "title": doc.title, "metadata": dict(doc.metadata)}


def _batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-c", "--collection", required=True, help="Collection to ingest into (created if missing).")
@click.option("--chunk-size", type=int, help="Chunk size in tokens, for a new collection.")
@click.option("--chunk-overlap", type=int, help="Chunk overlap in tokens, for a new collection.")
@click.option("--batch", default=BATCH_DOCUMENTS, show_default=True, type=click.IntRange(1, 1000),
              help="Documents per request.")
@friendly_errors
def ingest(paths: tuple[str, ...], collection: str, chunk_size: int | None, chunk_overlap: int | None,
           batch: int) -> None:
    """Ingest files or folders (.txt .md .html .pdf .json .jsonl) into a collection.

    Example: ragkit ingest docs/ notes.pdf -c handbook
    """
    from tqdm import tqdm

    with _client() as client:
        try:
            client.collection(collection)
        except ServiceError as exc:
            if exc.status != 404:
                raise
            client.create_collection(collection, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
            click.echo(f"created collection {collection}")
        totals = {"ingested": 0, "skipped_unchanged": 0, "chunks": 0}
        try:
            documents = list(_documents_in(paths))
        except InvalidInput as exc:
            raise click.UsageError(exc.message) from exc
        with tqdm(total=len(documents), unit="doc", desc=f"ingesting into {collection}") as bar:
            for group in _batches(iter(documents), batch):
                result = client.ingest(collection, group)
                for key in totals:
                    totals[key] += result[key]
                bar.update(len(group))
    click.echo(
        f"{totals['ingested']} ingested, {totals['skipped_unchanged']} unchanged, {totals['chunks']} chunks written"
    )


def _print_hits(hits: list[dict[str, Any]]) -> None:
    for rank, hit in enumerate(hits, start=1):
        preview = " ".join(hit["text"].split())[:160]
        click.echo(f"{rank:>2}. {hit['score']:.4f}  {hit['doc_id']}#{hit['chunk_index']}  {preview}")


@main.command()
@click.argument("query")
@click.option("-c", "--collection", required=True)
@click.option("-k", "--top-k", default=5, show_default=True, type=int)
@click.option("-m", "--mode", default="hybrid", show_default=True, type=click.Choice(["dense", "sparse", "hybrid"]))
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
@friendly_errors
def search(query: str, collection: str, top_k: int, mode: str, as_json: bool) -> None:
    """Search a collection.

    Example: ragkit search "what does a 409 mean" -c ragkit-docs -m hybrid
    """
    with _client() as client:
        result = client.search(query, collection, top_k=top_k, mode=mode)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if result["degraded"]:
        click.secho("degraded: " + "; ".join(result["reasons"]), fg="yellow")
    _print_hits(result["results"])


@main.command()
@click.argument("question")
@click.option("-c", "--collection", required=True)
@click.option("-k", "--top-k", default=5, show_default=True, type=int)
@click.option("-m", "--mode", default="hybrid", show_default=True, type=click.Choice(["dense", "sparse", "hybrid"]))
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer.")
@friendly_errors
def ask(question: str, collection: str, top_k: int, mode: str, no_stream: bool) -> None:
    """Ask a question; the answer cites its sources as [n].

    Example: ragkit ask "how do I rotate the service token?" -c ragkit-docs
    """
    with _client() as client:
        if no_stream:
            result = client.query(question, collection, top_k=top_k, mode=mode)
            click.echo(result["answer"])
            sources, reasons = result["sources"], result["reasons"]
        else:
            sources, reasons = [], []
            for event, data in client.query_stream(question, collection, top_k=top_k, mode=mode):
                if event == "sources":
                    sources, reasons = data["sources"], list(data["reasons"])
                elif event == "token":
                    click.echo(data["text"], nl=False)
                elif event in ("degraded", "done", "error"):
                    reasons = list(data.get("reasons", reasons))
            click.echo()
    if reasons:
        click.secho("degraded: " + "; ".join(reasons), fg="yellow")
    click.echo("\nSources:")
    for n, hit in enumerate(sources, start=1):
        click.echo(f"[{n}] {hit['doc_id']}#{hit['chunk_index']} (score {hit['score']:.4f})")


@main.group()
def collections() -> None:
    """List, show, create and delete collections.

    Example: ragkit collections list
    """


@collections.command("list")
@friendly_errors
def collections_list() -> None:
    """List collections with their sizes.

    Example: ragkit collections list
    """
    with _client() as client:
        items = client.collections()
    if not items:
        click.echo("no collections yet; create one with `ragkit ingest PATH -c NAME`")
    for c in items:
        click.echo(f"{c['name']:<30} {c['documents']:>7} docs {c['chunks']:>8} chunks  {c['embedder']}")


@collections.command("show")
@click.argument("name")
@friendly_errors
def collections_show(name: str) -> None:
    """Show one collection.

    Example: ragkit collections show ragkit-docs
    """
    with _client() as client:
        click.echo(json.dumps(client.collection(name), indent=2))


@collections.command("create")
@click.argument("name")
@click.option("--chunk-size", type=int)
@click.option("--chunk-overlap", type=int)
@friendly_errors
def collections_create(name: str, chunk_size: int | None, chunk_overlap: int | None) -> None:
    """Create an empty collection.

    Example: ragkit collections create handbook --chunk-size 200 --chunk-overlap 30
    """
    with _client() as client:
        created = client.create_collection(name, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    click.echo(f"created {created['name']} (chunk size {created['chunk_size']}, overlap {created['chunk_overlap']})")


@collections.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def collections_delete(name: str, yes: bool) -> None:
    """Delete a collection and all its documents.

    Example: ragkit collections delete handbook --yes
    """
    if not yes:
        click.confirm(f"Delete collection '{name}' and all its documents?", abort=True)
    with _client() as client:
        client.delete_collection(name)
    click.echo(f"deleted {name}")


@main.command()
@friendly_errors
def health() -> None:
    """Show the service's health, breakers and dependencies.

    Example: ragkit health
    """
    with _client() as client:
        report = client.health()
    click.echo(json.dumps(report, indent=2))
    if report["status"] != "ok":
        sys.exit(1)


@main.command()
def secret() -> None:
    """Print a new random service secret (64 hex characters).

    Example: ragkit secret
    """
    from ragkit.auth import new_secret

    click.echo(new_secret())


from ragkit.loadtest_cli import loadtest  # noqa: E402

main.add_command(loadtest)

from ragkit.notebook_cli import notebook  # noqa: E402

main.add_command(notebook)
