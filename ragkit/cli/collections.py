"""`ragkit collections`: list, show, create and delete collections (export and import: `transfer.py`)."""

from __future__ import annotations

import json

import click

from ragkit.cli.common import client_from_environment, friendly_errors


@click.group()
def collections() -> None:
    """List, show, create, delete, export and import collections.

    Example: ragkit collections list
    """


@collections.command("list")
@friendly_errors
def collections_list() -> None:
    """List collections with their sizes.

    Example: ragkit collections list
    """
    with client_from_environment() as client:
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
    with client_from_environment() as client:
        click.echo(json.dumps(client.collection(name), indent=2))


@collections.command("create")
@click.argument("name")
@click.option("--chunk-size", type=int)
@click.option("--chunk-overlap", type=int)
@click.option(
    "--quantization",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="int8: also keep the vectors as 8-bit scalars in RAM (large collections).",
)
@friendly_errors
def collections_create(name: str, chunk_size: int | None, chunk_overlap: int | None, quantization: str) -> None:
    """Create an empty collection.

    Example: ragkit collections create handbook --chunk-size 200 --chunk-overlap 30
    """
    with client_from_environment() as client:
        created = client.create_collection(
            name, chunk_size=chunk_size, chunk_overlap=chunk_overlap, quantization=quantization
        )
    shown = "" if created["quantization"] == "none" else f", {created['quantization']} quantization"
    click.echo(
        f"created {created['name']} (chunk size {created['chunk_size']}, overlap {created['chunk_overlap']}{shown})"
    )


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
    with client_from_environment() as client:
        client.delete_collection(name)
    click.echo(f"deleted {name}")
