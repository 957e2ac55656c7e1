"""Commands that run ragkit itself: `serve`, `up` and `secret` (no running service needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ragkit.core.errors import RagkitError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes (needs QDRANT_URL).")
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP service.

    Example: ragkit serve --port 8000
    """
    import uvicorn

    from ragkit.core.config import get_settings
    from ragkit.core.logs import configure_logging, known_secrets, redacting_log_config
    from ragkit.http.app import create_app
    from ragkit.http.gate import SERVER_OPTIONS

    settings = get_settings()
    secrets = known_secrets(settings)
    configure_logging(settings.data_dir, secrets=secrets)
    # uvicorn's own logs (the access log writes each URL as sent) redact secrets too; and the gate,
    # not uvicorn, decides whose X-Forwarded-For to believe (SERVER_OPTIONS).
    server = {"log_config": redacting_log_config(uvicorn.config.LOGGING_CONFIG, secrets), **SERVER_OPTIONS}
    if workers > 1 and not settings.qdrant_url:
        raise click.UsageError("the embedded store belongs to one process: --workers > 1 needs QDRANT_URL")
    try:
        from ragkit.services import check_settings

        check_settings(settings)
        if not settings.qdrant_url:
            # The app builds its store in its lifespan, where a failure is a traceback and exit 3:
            # a data directory that is read-only, full or held by another service is said here.
            from ragkit.adapters.stores.edge_disk import check_folder
            from ragkit.services import edge_folder

            check_folder(edge_folder(settings))
        app = create_app(settings)
    except RagkitError as exc:
        click.secho(f"ragkit refuses to start: {exc.message}", fg="red", err=True)
        sys.exit(2)
    if workers > 1:
        uvicorn.run("ragkit.__main__:app_factory", factory=True, host=host, port=port, workers=workers, **server)
    else:
        uvicorn.run(app, host=host, port=port, log_level="info", **server)


@click.command()
@click.option("--port", default=8000, show_default=True, type=int, help="Service port.")
@click.option("--ui-port", default=8501, show_default=True, type=int, help="Streamlit UI port.")
@click.option("--no-ui", is_flag=True, help="Start only the service.")
@click.option("--samples", default="samples/docs", show_default=True, help="Folder ingested on first start.")
def up(port: int, ui_port: int, no_ui: bool, samples: str) -> None:
    """Start the service (and the UI) with a sample collection, and wait.

    Both ports are checked before anything starts; a busy one is reported with the process holding it.
    Exits 0 on Ctrl+C, 1 when a port is busy or the service or the UI stops on its own.

    Example: ragkit up
    """
    from ragkit.workbench.launcher import run_workbench

    run_workbench(port=port, ui_port=ui_port, with_ui=not no_ui, samples=Path(samples))


@click.command()
def secret() -> None:
    """Print a new random service secret (64 hex characters).

    Example: ragkit secret
    """
    from ragkit.core.config import new_secret

    click.echo(new_secret())
