"""Commands over a collection's contents: `ingest`, `search` and `ask`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ragkit.cli.common import client_from_environment, friendly_errors
from ragkit.client import DEFAULT_BATCH_DOCUMENTS
from ragkit.core.errors import InvalidInput
from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K, SEARCH_MODES


def _documents_in(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    from ragkit.rag.loaders import load_path

    return [
        {"id": doc.id, "text": doc.text, "title": doc.title, "metadata": dict(doc.metadata)}
        for raw in paths
        for doc in load_path(Path(raw))
    ]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-c", "--collection", required=True, help="Collection to ingest into (created if missing).")
@click.option("--chunk-size", type=int, help="Chunk size in tokens, for a new collection.")
@click.option("--chunk-overlap", type=int, help="Chunk overlap in tokens, for a new collection.")
@click.option("--batch", default=DEFAULT_BATCH_DOCUMENTS, show_default=True, type=click.IntRange(1, 1000),
              help="Documents per request.")
@friendly_errors
def ingest(paths: tuple[str, ...], collection: str, chunk_size: int | None, chunk_overlap: int | None,
           batch: int) -> None:
    """Ingest files or folders (.txt .md .html .pdf .json .jsonl) into a collection.

    Example: ragkit ingest docs/ notes.pdf -c handbook
    """
    from tqdm import tqdm

    with client_from_environment() as client:
        _, created = client.ensure_collection(collection, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        if created:
            click.echo(f"created collection {collection}")
        try:
            documents = _documents_in(paths)
        except InvalidInput as exc:
            raise click.UsageError(exc.message) from exc
        with tqdm(total=len(documents), unit="doc", desc=f"ingesting into {collection}") as bar:
            summary = client.ingest_documents(collection, documents, batch_size=batch, progress=bar.update)
    for failure in summary.failures:
        click.secho(f"failed: {failure['id']}: {failure['error']}", fg="red", err=True)
    click.echo(f"{summary.ingested} ingested, {summary.unchanged} unchanged, {summary.chunks} chunks written")
    if summary.failures:
        sys.exit(1)


def _print_hits(hits: list[dict[str, Any]]) -> None:
    for rank, hit in enumerate(hits, start=1):
        preview = " ".join(hit["text"].split())[:160]
        click.echo(f"{rank:>2}. {hit['score']:.4f}  {hit['doc_id']}#{hit['chunk_index']}  {preview}")


@click.command()
@click.argument("query")
@click.option("-c", "--collection", required=True)
@click.option("-k", "--top-k", default=DEFAULT_TOP_K, show_default=True, type=int)
@click.option("-m", "--mode", default=DEFAULT_MODE, show_default=True, type=click.Choice(SEARCH_MODES))
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
@friendly_errors
def search(query: str, collection: str, top_k: int, mode: str, as_json: bool) -> None:
    """Search a collection.

    Example: ragkit search "what does a 409 mean" -c ragkit-docs -m hybrid
    """
    with client_from_environment() as client:
        result = client.search(query, collection, top_k=top_k, mode=mode)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if result["degraded"]:
        click.secho("degraded: " + "; ".join(result["reasons"]), fg="yellow")
    _print_hits(result["results"])


@click.command()
@click.argument("question")
@click.option("-c", "--collection", required=True)
@click.option("-k", "--top-k", default=DEFAULT_TOP_K, show_default=True, type=int)
@click.option("-m", "--mode", default=DEFAULT_MODE, show_default=True, type=click.Choice(SEARCH_MODES))
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer.")
@friendly_errors
def ask(question: str, collection: str, top_k: int, mode: str, no_stream: bool) -> None:
    """Ask a question; the answer cites its sources as [n].

    Example: ragkit ask "how do I rotate the service token?" -c ragkit-docs
    """
    with client_from_environment() as client:
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
