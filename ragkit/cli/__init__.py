"""The `ragkit` command line, one module per command group. Everything but `serve`, `up` and
`secret` is a client of a running service (RAGKIT_API_URL, token from INTER_SERVICE_SECRET or `.env`)."""

from __future__ import annotations

import click

from ragkit.cli.collections import collections
from ragkit.cli.documents import ask, chat, ingest, search
from ragkit.cli.health import health
from ragkit.cli.jobs import jobs
from ragkit.cli.loadtest import loadtest
from ragkit.cli.mcp import mcp
from ragkit.cli.notebook import notebook
from ragkit.cli.server import secret, serve, up
from ragkit.cli.transfer import collections_export, collections_import
from ragkit.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragkit")
def main() -> None:
    """ragkit: retrieval-augmented generation over your document collections."""


for command in (
    serve,
    up,
    ingest,
    jobs,
    worker,
    search,
    ask,
    chat,
    collections,
    health,
    mcp,
    secret,
    loadtest,
    notebook,
):
    main.add_command(command)
collections.add_command(collections_export)
collections.add_command(collections_import)
