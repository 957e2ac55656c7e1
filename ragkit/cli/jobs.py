"""`ragkit jobs list|show|cancel|follow`, and the progress bar `ragkit ingest` follows its jobs with."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from ragkit.cli.common import client_from_environment, friendly_errors


def follow_with_bar(client: Any, jobs: Sequence[dict[str, Any]], description: str) -> list[dict[str, Any]]:
    """Follow jobs with one bar over all their documents; the service reports each job at least
    every second, so the rate and ETA stay live."""
    from tqdm import tqdm

    total = sum(job["documents"]["total"] for job in jobs)
    with tqdm(total=total, unit="doc", desc=description, mininterval=0.5) as bar:
        running = False

        def update(done: int, chunks: int, status: dict[str, Any]) -> None:
            nonlocal running
            if status["state"] == "queued":  # behind other jobs: no rate or ETA to speak of yet
                bar.set_postfix_str("queued behind other jobs")
                return
            if not running:  # the rate and ETA count from the start of the work, not of the wait
                running = True
                bar.reset(total=total)
            bar.n = done
            bar.set_postfix_str(_postfix(chunks, status), refresh=False)
            bar.refresh()

        return client.follow_jobs(jobs, update)


def _postfix(chunks: int, status: dict[str, Any]) -> str:
    waiting = f" · waiting: {status['waiting']}" if status.get("waiting") else ""
    return f"{chunks} chunks{waiting}"


def report(finals: Sequence[dict[str, Any]]) -> bool:
    """Print what the jobs did and every document that failed; True when nothing failed."""
    counts = {key: sum(f["documents"][key] for f in finals) for key in ("ingested", "skipped", "failed")}
    for final in finals:
        for error in final["errors"]:
            click.secho(f"failed: {error['doc_id']}: {error['reason']}", fg="red", err=True)
        shown = len(final["errors"])
        if final["documents"]["failed"] > shown:
            click.secho(
                f"... and {final['documents']['failed'] - shown} more: ragkit jobs show {final['id']}", err=True
            )
        if final["state"] != "done":
            reason = f": {final['error']}" if final.get("error") else ""
            click.secho(f"job {final['id']} {final['state']}{reason}", fg="red", err=True)
    chunks = sum(f["chunks"] for f in finals)
    click.echo(f"{counts['ingested']} ingested, {counts['skipped']} unchanged, {chunks} chunks written")
    return counts["failed"] == 0 and all(f["state"] == "done" for f in finals)


def _line(job: dict[str, Any]) -> str:
    docs = job["documents"]
    eta = f"  ETA {job['eta_s']:.0f} s" if job.get("eta_s") is not None else ""
    return (
        f"{job['id']}  {job['state']:<9}  {job['collection']:<20}  {docs['done']}/{docs['total']} documents"
        f"  {docs['failed']} failed  {job['chunks']} chunks{eta}  {job['created_at']}"
    )


@click.group()
def jobs() -> None:
    """Ingestion jobs: list, show, follow or cancel them.

    Example: ragkit jobs list
    """


@jobs.command("list")
@click.option("-c", "--collection", help="Only the jobs of this collection.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@friendly_errors
def list_jobs(collection: str | None, limit: int) -> None:
    """The newest jobs first.

    Example: ragkit jobs list -c handbook
    """
    with client_from_environment() as client:
        found = client.jobs(collection, limit=limit)
    if not found:
        click.echo("no jobs" + (f" for {collection}" if collection else ""))
    for job in found:
        click.echo(_line(job))


@jobs.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON status.")
@friendly_errors
def show(job_id: str, as_json: bool) -> None:
    """One job's state, counts, rate, ETA and failed documents.

    Example: ragkit jobs show 3f2a...
    """
    with client_from_environment() as client:
        job = client.job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo(_line(job))
    if job.get("waiting"):
        click.echo(f"waiting: {job['waiting']}")
    if job.get("error"):
        click.secho(f"error: {job['error']}", fg="red")
    for error in job["errors"]:
        click.echo(f"failed: {error['doc_id']}: {error['reason']}")


@jobs.command()
@click.argument("job_id")
@friendly_errors
def follow(job_id: str) -> None:
    """Follow a job with a progress bar until it ends (Ctrl+C leaves it running).

    Example: ragkit jobs follow 3f2a...
    """
    with client_from_environment() as client:
        job = client.job(job_id)
        finals = follow_with_bar(client, [job], f"job {job_id[:8]} into {job['collection']}")
    if not report(finals):
        sys.exit(1)


@jobs.command()
@click.argument("job_id")
@friendly_errors
def cancel(job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one after the batch it is writing.

    Example: ragkit jobs cancel 3f2a...
    """
    with client_from_environment() as client:
        job = client.cancel_job(job_id)
    click.echo(f"job {job_id} {'cancelled' if job['state'] == 'cancelled' else 'stops after its current batch'}")
