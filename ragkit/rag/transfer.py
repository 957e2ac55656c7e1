"""Export and import of a whole collection: its points (both vectors, payloads, ids) and its spec, as
the NDJSON of `ragkit.core.transfer`, so that a collection moves between stores without embedding
anything again.

Both directions stream: the export reads the store a page at a time and the import writes a batch
at a time, so neither holds more than a page of points however large the collection. The import
creates the collection from the file's spec and drops it again when anything goes wrong (a broken
line, a cut-off file, the client going away, the store failing): a failed import leaves no half
collection behind. While it runs, the collection is visible with the points written so far.

An export is a walk over the store, not a snapshot: points written meanwhile may or may not be in
it. Export a collection while nothing ingests into it for an exact copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ragkit.core.errors import (
    CallerError,
    CollectionExists,
    CollectionNotFound,
    InvalidInput,
    PayloadTooLarge,
    RagkitError,
)
from ragkit.core.names import validate_collection_name
from ragkit.core.transfer import (
    Trailer,
    error_line,
    header_line,
    point_lines,
    read_header,
    read_point,
    trailer_line,
)
from ragkit.core.types import CollectionSpec, Embedder, Point, Store
from ragkit.rag.ingest import check_embedder, learn_dimension

log = logging.getLogger(__name__)

# Points per read of the store and per write to it: a bounded call each (a few milliseconds of
# Edge, which holds the GIL while it runs), and a bounded amount of memory whatever the collection.
PAGE = 256
# A batch of an import is also cut at this many bytes of lines, so that large payloads (a big
# document's metadata is copied into each of its chunks) do not make a batch of 256 huge.
BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ImportReport:
    collection: str
    points: int
    documents: int
    replaced: bool  # an existing collection of that name was dropped first


async def export_lines(store: Store, name: str) -> AsyncIterator[bytes]:
    """The export of a collection, a page of lines at a time. The collection is looked up before
    this returns (an unknown one raises here, before any line is sent); a failure after that ends the
    file with an error line instead of the trailer, which an import refuses."""
    stats = await store.stats(name)
    return _export(store, stats.spec, stats.chunks)


async def _export(store: Store, spec: CollectionSpec, expected: int) -> AsyncIterator[bytes]:
    yield header_line(spec, expected, store.name)
    written = 0
    offset: str | None = None
    try:
        while True:
            points, offset = await store.scroll_points(spec.name, offset, PAGE)
            if points:
                yield await asyncio.to_thread(point_lines, points)
                written += len(points)
            if offset is None:
                break
    except RagkitError as exc:
        log.warning("export of %s failed after %d points: %s", spec.name, written, exc.message)
        yield error_line(exc.status, exc.code, exc.message)
        return
    yield trailer_line(written)


async def numbered_lines(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of a byte stream, blank lines skipped; a line longer than ``max_line_bytes``
    is refused as soon as that many bytes of it arrived, so no line is ever held larger."""
    pending = bytearray()
    number = 0
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            number += 1
            if end - start > max_line_bytes:
                raise _too_long(number, max_line_bytes)
            line = bytes(pending[start:end]).strip()
            if line:
                yield number, line
            start = end + 1
        del pending[:start]
        if len(pending) > max_line_bytes:
            raise _too_long(number + 1, max_line_bytes)
    last = bytes(pending).strip()
    if last:
        # A file written whole ends with a newline; without one, the last line is whole only if it parses.
        try:
            json.loads(last)
        except ValueError:
            raise InvalidInput(
                f"the file ends in the middle of line {number + 1}: it was cut off (an interrupted export or "
                "copy); export the collection again"
            ) from None
        yield number + 1, last


def _too_long(number: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"line {number} is longer than {limit} bytes, the most one line may hold (RAGKIT_MAX_REQUEST_BYTES, "
        "one request's limit); the file is damaged, or was exported by a service with a higher limit: raise it here"
    )


class Importer:
    """One import: the collection it creates from the file's spec, its points in batches, and the
    collection dropped again if anything fails before the trailer is checked."""

    def __init__(self, store: Store, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    async def run(
        self,
        chunks: AsyncIterator[bytes],
        *,
        name: str | None,
        replace: bool,
        max_line_bytes: int,
    ) -> ImportReport:
        lines = numbered_lines(chunks, max_line_bytes)
        first = await anext(lines, None)
        if first is None:
            raise InvalidInput("the body is empty: send a file written by `ragkit collections export`")
        spec = read_header(first[1]).spec
        if name is not None:
            spec = dataclasses.replace(spec, name=name)
        validate_collection_name(spec.name)
        # The vectors are of use only to a service that embeds its queries with the same model.
        await learn_dimension(self._embedder)
        check_embedder(spec, self._embedder)
        replaced = await self._make_room(spec.name, replace)
        await self._store.create_collection(spec)  # CollectionExists if another import got there first
        try:
            written = await self._write(spec, lines)
        except BaseException:
            await self._drop(spec.name)
            raise
        stats = await self._store.stats(spec.name)
        return ImportReport(collection=spec.name, points=written, documents=stats.documents, replaced=replaced)

    async def _make_room(self, name: str, replace: bool) -> bool:
        """An empty collection of that name is replaced; one that holds points only when asked."""
        try:
            stats = await self._store.stats(name)
        except CollectionNotFound:
            return False
        if stats.chunks and not replace:
            raise CollectionExists(
                name,
                f" and holds {stats.chunks} chunks: import under another name (ragkit collections import FILE "
                "--name NEW, ?name=), or replace it (--replace, ?replace=true), which deletes what it holds",
            )
        await self._store.delete_collection(name)
        return True

    async def _write(self, spec: CollectionSpec, lines: AsyncIterator[tuple[int, bytes]]) -> int:
        written = 0
        end: tuple[int, Trailer] | None = None  # the trailer and its line
        batch: list[tuple[int, bytes]] = []
        size = 0
        last = 1
        async for number, line in lines:
            last = number
            if end is not None:
                raise _after_trailer(number, end[0])
            batch.append((number, line))
            size += len(line)
            if len(batch) >= PAGE or size >= BATCH_BYTES:
                count, end = await self._write_batch(spec, batch)
                written += count
                batch, size = [], 0
        if batch:
            count, end = await self._write_batch(spec, batch)
            written += count
        if end is None:
            raise InvalidInput(
                f"the file ends at line {last} without its trailer: it was cut off (an interrupted export or "
                "copy); export the collection again"
            )
        if end[1].points != written:
            raise InvalidInput(
                f"the trailer (line {end[0]}) counts {end[1].points} points but the file holds {written}; the file "
                "is damaged: export the collection again"
            )
        return written

    async def _write_batch(
        self, spec: CollectionSpec, batch: list[tuple[int, bytes]]
    ) -> tuple[int, tuple[int, Trailer] | None]:
        points, end = await asyncio.to_thread(_decode, batch, spec.dimension)
        if points:
            try:
                await self._store.upsert(spec.name, points)
            except CallerError as exc:
                raise InvalidInput(
                    f"lines {batch[0][0]}-{batch[-1][0]}: the store refused these points: {exc.message}"
                ) from exc
        return len(points), end

    async def _drop(self, name: str) -> None:
        # Shielded: a client that went away cancels the request, not the clean-up.
        try:
            await asyncio.shield(self._store.delete_collection(name))
        except RagkitError as exc:
            log.error("a failed import left collection %s behind; dropping it failed: %s", name, exc.message)


def _decode(batch: list[tuple[int, bytes]], dimension: int) -> tuple[list[Point], tuple[int, Trailer] | None]:
    """The points of a batch of lines, and the trailer if it is among them (then the last of them)."""
    points: list[Point] = []
    end: tuple[int, Trailer] | None = None
    for number, line in batch:
        if end is not None:
            raise _after_trailer(number, end[0])
        item = read_point(line, number, dimension)
        if isinstance(item, Trailer):
            end = (number, item)
        else:
            points.append(item)
    return points, end


def _after_trailer(number: int, trailer_at: int) -> InvalidInput:
    return InvalidInput(
        f"line {number} comes after the trailer (line {trailer_at}), which ends the file; the file is damaged "
        "(two exports joined?): export the collection again"
    )
