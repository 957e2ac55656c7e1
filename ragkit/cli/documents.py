"""Commands over a collection's contents: `ingest`, `search`, `ask` and `chat`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ragkit.cli.common import client_from_environment, friendly_errors
from ragkit.cli.jobs import follow_with_bar, report
from ragkit.client import RagkitClient
from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K, SEARCH_MODES, document_to_dict, source_location
from ragkit.rag.conversation import recent_turns


def _documents_in(paths: tuple[str, ...], skipped: list[tuple[str, str]]) -> list[dict[str, Any]]:
    from ragkit.rag.loaders import load_path

    return [document_to_dict(doc) for raw in paths for doc in load_path(Path(raw), skipped)]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-c", "--collection", required=True, help="Collection to ingest into (created if missing).")
@click.option("--chunk-size", type=int, help="Chunk size in tokens, for a new collection.")
@click.option("--chunk-overlap", type=int, help="Chunk overlap in tokens, for a new collection.")
@click.option("--detach", is_flag=True, help="Submit the jobs and return; follow them with `ragkit jobs follow`.")
@friendly_errors
def ingest(
    paths: tuple[str, ...], collection: str, chunk_size: int | None, chunk_overlap: int | None, detach: bool
) -> None:
    """Ingest files or folders (.txt .md .html .pdf .docx .pptx .json .jsonl) into a collection,
    as background jobs on the service, followed with a progress bar (Ctrl+C leaves them running).

    Example: ragkit ingest docs/ notes.pdf -c handbook
    """
    skipped: list[tuple[str, str]] = []
    try:
        documents = _documents_in(paths, skipped)
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from exc
    for name, reason in skipped:
        click.secho(f"skipped: {name}: {reason}", fg="yellow", err=True)
    if not documents:
        from ragkit.rag.loaders import SUPPORTED_EXTENSIONS

        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise click.UsageError(f"no documents to ingest in {', '.join(paths)}; supported types: {supported}")
    with client_from_environment() as client:
        _, created = client.ensure_collection(collection, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        if created:
            click.echo(f"created collection {collection}")
        submitted = client.submit_jobs(collection, documents)
        if detach:
            for job in submitted:
                click.echo(f"job {job['id']}: {job['documents']['total']} documents queued")
            click.echo(f"follow with: ragkit jobs follow {submitted[0]['id']}  (or ragkit jobs list -c {collection})")
            return
        finals = follow_with_bar(client, submitted, f"ingesting into {collection}")
    if not report(finals):
        sys.exit(1)


def _print_hits(hits: list[dict[str, Any]]) -> None:
    for rank, hit in enumerate(hits, start=1):
        preview = " ".join(hit["text"].split())[:160]
        click.echo(f"{rank:>2}. {hit['score']:.4f}  {source_location(hit)}  {preview}")


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
        _answer(client, question, collection, top_k=top_k, mode=mode, stream=not no_stream)


@click.command()
@click.option("-c", "--collection", required=True)
@click.option("-k", "--top-k", default=DEFAULT_TOP_K, show_default=True, type=int)
@click.option("-m", "--mode", default=DEFAULT_MODE, show_default=True, type=click.Choice(SEARCH_MODES))
@friendly_errors
def chat(collection: str, top_k: int, mode: str) -> None:
    """Talk with a collection: each question is asked with the conversation so far, so follow-ups
    ("and how do I configure it?") work. /new starts a new conversation; /quit, Ctrl+D or Ctrl+C end.

    Example: ragkit chat -c ragkit-docs
    """
    turns: list[tuple[str, str]] = []
    with client_from_environment() as client:
        click.echo(f"Chatting with {collection}. /new starts over, /quit ends.")
        while True:
            try:
                question = click.prompt("you", prompt_suffix="> ", default="", show_default=False).strip()
            except (EOFError, click.Abort):
                click.echo()
                return
            if question in ("/quit", "/exit"):
                return
            if question == "/new":
                turns.clear()
                click.echo("New conversation.")
                continue
            if not question:
                continue
            try:
                answer = _answer(
                    client, question, collection, top_k=top_k, mode=mode, stream=True, history=recent_turns(turns)
                )
            except ServiceError as exc:
                # One failed question does not end the conversation.
                click.secho(f"error: {exc.message}", fg="red", err=True)
                continue
            turns.append((question, answer))


def _answer(
    client: RagkitClient,
    question: str,
    collection: str,
    *,
    top_k: int,
    mode: str,
    stream: bool,
    history: list[dict[str, str]] | None = None,
) -> str:
    """Print one answer (streamed or whole), what was searched when the history changed it, why it
    is degraded and its sources; return the answer."""
    history = history or []
    if not stream:
        result = client.query(question, collection, top_k=top_k, mode=mode, history=history)
        click.echo(result["answer"])
        answer, sources, reasons = result["answer"], result["sources"], result["reasons"]
        searched = result.get("standalone_query", question)
    else:
        answer, sources, reasons, searched = "", [], [], question
        for event, data in client.query_stream(question, collection, top_k=top_k, mode=mode, history=history):
            if event == "sources":
                sources, reasons = data["sources"], list(data["reasons"])
                searched = data.get("standalone_query", question)
            elif event == "token":
                answer += data["text"]
                click.echo(data["text"], nl=False)
            elif event in ("degraded", "done", "error"):
                reasons = list(data.get("reasons", reasons))
        click.echo()
    if searched and searched != question:
        click.secho(f"(searched for: {searched})", dim=True)
    if reasons:
        click.secho("degraded: " + "; ".join(reasons), fg="yellow")
    click.echo("\nSources:")
    for n, hit in enumerate(sources, start=1):
        click.echo(f"[{n}] {source_location(hit)} ({hit['doc_id']}#{hit['chunk_index']}, score {hit['score']:.4f})")
    return answer
