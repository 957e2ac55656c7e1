"""`ragkit health`: the service's health, breakers and dependencies."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from ragkit.cli.common import client_from_environment, friendly_errors

# Colour says at a glance what needs attention; click drops it when the output is not a terminal.
COLOURS = {"ok": "green", "closed": "green", "degraded": "yellow", "recovering": "yellow", "half_open": "yellow"}


def _styled(value: str) -> str:
    return click.style(value, fg=COLOURS.get(value.split(" ", 1)[0], "red"))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], styled_column: int) -> list[str]:
    # Widths come from the plain text: escape codes would count as characters and skew the columns.
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [
            _styled(cell) + " " * (width - len(cell)) if i == styled_column else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render(report: dict[str, Any], url: str) -> str:
    lines = [f"ragkit {report.get('version', '?')} at {url}: {_styled(report['status'])}", ""]
    dependencies = []
    for name, dep in report.get("dependencies", {}).items():
        status = str(dep.get("status", ""))
        if dep.get("error"):
            status += f" ({dep['error']})"
        dependencies.append([name, str(dep.get("backend", "")), status])
    if dependencies:
        lines += _table(["dependency", "backend", "status"], dependencies, styled_column=2) + [""]
    breakers = [[name, str(state)] for name, state in sorted(report.get("circuit_breakers", {}).items())]
    if breakers:
        lines += _table(["circuit breaker", "state"], breakers, styled_column=1)
    return "\n".join(lines).rstrip()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON of GET /health.")
@friendly_errors
def health(as_json: bool) -> None:
    """Show the service's health, breakers and dependencies.

    Exits 1 when the status is not ok (degraded or down), so scripts can gate on it.

    Example: ragkit health
    """
    with client_from_environment() as client:
        report = client.health()
    click.echo(json.dumps(report, indent=2) if as_json else render(report, client.api_url))
    if report["status"] != "ok":
        sys.exit(1)
