"""`ragkit worker`: chunks and embeds ingestion batches for the service, from the job queue on Redis."""

from __future__ import annotations

import click

from ragkit.cli.common import friendly_errors


@click.command()
@click.option(
    "--batch-timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds a batch may take; a batch whose worker died is taken by another 10 s after this.",
)
@click.option("--burst", is_flag=True, help="Stop once the queue is empty (for scripts and tests).")
@friendly_errors
def worker(batch_timeout: float, burst: bool) -> None:
    """Take ingestion batches from the job queue (REDIS_URL) and embed them for the service.

    The service must run with RAGKIT_JOB_QUEUE=redis and the same REDIS_URL; each worker uses
    the embedder its own settings give (the collection's, or it refuses the batch).

    Example: REDIS_URL=redis://queue-host:6379/0 ragkit worker
    """
    from ragkit.core.config import get_settings
    from ragkit.core.logs import configure_logging, known_secrets
    from ragkit.worker import build_worker

    settings = get_settings()
    configure_logging(settings.data_dir, secrets=known_secrets(settings))
    runner = build_worker(settings, batch_timeout_s=batch_timeout, burst=burst)
    click.echo(f"ragkit worker: batches from {_safe(settings.redis_url or '')}, embedder {runner.ctx['embedder'].name}")
    runner.run()


def _safe(url: str) -> str:
    """The Redis URL without its password, for the start-up line."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://…@{rest.split('@', 1)[1]}"
