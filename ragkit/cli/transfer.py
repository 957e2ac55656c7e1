"""`ragkit collections export|import`: a collection moved to a file and from one, with its vectors,
so that it changes store (the embedded one, a Qdrant server) without embedding anything again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragkit.cli.common import client_from_environment, friendly_errors


def _bar(description: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=None, unit="point", desc=description, mininterval=0.5, unit_scale=True)


def _progress(bar: Any) -> Any:
    def update(done: int, expected: int) -> None:
        if bar.total != expected:
            bar.total = expected
        bar.n = done
        bar.refresh()

    return update


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


@click.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@friendly_errors
def collections_export(name: str, file: Path, force: bool) -> None:
    """Export collection NAME, vectors and all, to FILE.

    The file is NDJSON, gzip-compressed when FILE ends in .gz; `ragkit collections import` reads it
    into any ragkit service with the same embedder, on the embedded store or a Qdrant server, without
    embedding again. It is written as FILE.part and renamed once complete. Needs the admin scope.

    Example: ragkit collections export handbook handbook.ndjson.gz
    """
    if file.exists() and not force:
        raise click.UsageError(f"{file} exists; pass --force to overwrite it")
    with client_from_environment() as client, _bar(f"exporting {name}") as bar:
        summary = client.export_collection(name, file, on_progress=_progress(bar))
    click.echo(f"exported {summary.points:,} points of {name} to {file} ({_size(summary.bytes)})")


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Create the collection under this name instead of the exported one.")
@click.option("--replace", is_flag=True, help="Drop an existing collection of that name first, with all it holds.")
@friendly_errors
def collections_import(file: Path, name: str | None, replace: bool) -> None:
    """Create a collection from FILE, written by `ragkit collections export`.

    Its spec (embedder, dimension, chunking, BM25 statistics, indexed fields) and points (ids,
    vectors, payloads) are written as they were: nothing is embedded again. Refused when a
    collection of that name holds points (unless --replace), when this service's embedder is not
    the file's, and when the file is damaged or cut off; a refused import leaves no collection
    behind. Needs the admin scope.

    Example: ragkit collections import handbook.ndjson.gz --name handbook-copy
    """
    with client_from_environment() as client, _bar(f"importing {file.name}") as bar:
        report = client.import_collection(file, name=name, replace=replace, on_progress=_progress(bar))
    replaced = ", replacing the one there was" if report["replaced"] else ""
    click.echo(
        f"imported {report['points']:,} points ({report['documents']:,} documents) into "
        f"{report['collection']} from {file}{replaced}"
    )
