"""`ragkit health`: the service's health, breakers and dependencies."""

from __future__ import annotations

import json
import sys

import click

from ragkit.cli.common import client_from_environment, friendly_errors


@click.command()
@friendly_errors
def health() -> None:
    """Show the service's health, breakers and dependencies.

    Example: ragkit health
    """
    with client_from_environment() as client:
        report = client.health()
    click.echo(json.dumps(report, indent=2))
    if report["status"] != "ok":
        sys.exit(1)
