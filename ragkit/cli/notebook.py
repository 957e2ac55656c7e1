"""`ragkit notebook`: run the ingestion and evaluation notebooks with papermill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ragkit.core.errors import InvalidInput


@click.group("notebook")
def notebook() -> None:
    """Run the parameterized notebooks (ingest, evaluate) against the running service.

    Example: ragkit notebook run evaluate -p dataset scifact -p max_queries None -p max_documents None
    """


@notebook.command("run")
@click.argument("name")
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="KEY VALUE",
    help="A notebook parameter, read as papermill -p reads it (True, None, 3, 0.5, text); repeatable.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the executed notebook and its report go (default: DATA_DIR/runs/<timestamp>-NAME/).",
)
def run(name: str, parameters: tuple[tuple[str, str], ...], output_dir: Path | None) -> None:
    """Execute notebook NAME (ingest or evaluate) and keep the executed copy and its outputs.

    Exits with 1 if a cell fails (the executed notebook shows where), 2 for an unknown notebook
    or parameter.

    Example: ragkit notebook run evaluate -p dataset ../shared/data/beir/arguana -p max_queries 100
    """
    from ragkit.core.errors import NotebookFailed
    from ragkit.workbench.notebooks import run_notebook

    try:
        result = run_notebook(name, dict(_parse(parameters)), output_dir, progress=sys.stderr.isatty())
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from exc
    except NotebookFailed as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        sys.exit(1)
    click.echo(f"executed notebook: {result.notebook}")
    metrics = result.output_dir / "metrics.json"
    if metrics.is_file():
        report = json.loads(metrics.read_text(encoding="utf-8"))
        for mode, values in report["modes"].items():
            click.echo(
                f"{mode:<7} nDCG@10 {values['ndcg@10']:.4f}  Recall@100 {values['recall@100']:.4f}  "
                f"p95 {values['latency_ms']['p95']:.1f} ms"
            )
        click.echo(f"report: {metrics}")


def _parse(pairs: tuple[tuple[str, str], ...]) -> list[tuple[str, object]]:
    from ragkit.workbench.notebooks import parse_value

    return [(key, parse_value(value)) for key, value in pairs]
