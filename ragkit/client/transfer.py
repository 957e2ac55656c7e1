"""The export and import routes of `RagkitClient` (a mixin, like `jobs.py`): a collection streamed to a
file and from one, a line at a time, so that neither the client nor the service ever holds it whole.
A FILE ending in ``.gz`` is written and read gzip-compressed."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from ragkit.core.errors import InvalidInput, ServiceError
from ragkit.core.transfer import MEDIA_TYPE, Header, read_header

# Bytes read from the file per chunk of an upload; the service cuts the stream into lines itself.
UPLOAD_CHUNK = 256 * 1024
# Called with (points so far, points the header expects).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportSummary:
    collection: str
    points: int
    path: Path
    bytes: int  # the file's size on disk (compressed, for a .gz)


def open_file(path: Path, mode: str, *, named: Path | None = None) -> IO[bytes]:
    """The file as bytes, through gzip when its name (or ``named``'s) ends in .gz (level 6: most of the
    gain of 9 in a fraction of its time)."""
    if (named or path).suffix == ".gz":
        return gzip.open(path, mode, compresslevel=6)  # type: ignore[return-value]
    return path.open(mode)  # type: ignore[return-value]


def file_header(path: Path) -> Header:
    """The header of an export file, read and checked without reading the rest."""
    try:
        with open_file(path, "rb") as file:
            first = file.readline()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    return read_header(first)


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


class TransferRoutes:
    _http: httpx.Client
    _reaching: Callable[[], contextlib.AbstractContextManager[None]]
    _decode: Callable[[httpx.Response], Any]

    def export_collection(self, name: str, path: Path, on_progress: Progress | None = None) -> ExportSummary:
        """Write the collection to ``path``, through a ``.part`` file beside it that becomes ``path``
        only once the service's trailer has arrived: an export cut off leaves no file that looks whole."""
        path = Path(path)
        part = path.with_name(path.name + ".part")
        url = f"/api/v1/rag/collections/{quote(name, safe='')}/export"
        try:
            with self._reaching(), self._http.stream("GET", url) as response:
                if not response.is_success:
                    response.read()
                    self._decode(response)
                with open_file(part, "wb", named=path) as out:
                    points = _copy(name, _lines(response.iter_bytes()), out, on_progress)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return ExportSummary(collection=name, points=points, path=path, bytes=path.stat().st_size)

    def import_collection(
        self,
        path: Path,
        *,
        name: str | None = None,
        replace: bool = False,
        on_progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Create a collection from an export file, under its own name or ``name``; ``replace`` drops
        a collection of that name that holds points first. The file is checked (its header) before
        anything is sent, then streamed."""
        path = Path(path)
        expected = file_header(path).points

        def body() -> Iterator[bytes]:
            sent = 0
            with open_file(path, "rb") as file:
                while chunk := file.read(UPLOAD_CHUNK):
                    yield chunk
                    sent += chunk.count(b"\n")
                    if on_progress is not None:
                        on_progress(max(sent - 1, 0), expected)  # the header is no point

        params: dict[str, Any] = {"replace": "true" if replace else "false"}
        if name is not None:
            params["name"] = name
        with self._reaching():
            response = self._http.post(
                "/api/v1/rag/collections/import", params=params, content=body(), headers={"Content-Type": MEDIA_TYPE}
            )
        return self._decode(response)


def _copy(name: str, lines: Iterator[bytes], out: IO[bytes], on_progress: Progress | None) -> int:
    """Copy the export's lines to ``out``; the number of points, once the trailer has confirmed it."""
    first = next(lines, b"")
    expected = read_header(first).points
    out.write(first + b"\n")
    points = 0
    last = b""
    for line in lines:
        if not line:
            continue
        if last:
            out.write(last + b"\n")
            points += 1
            if on_progress is not None and points % 256 == 0:
                on_progress(points, expected)
        last = line
    try:
        end = json.loads(last)
    except ValueError:
        end = {}
    end = end if isinstance(end, dict) else {}
    if "error" in end:
        error = end["error"]
        raise ServiceError(
            int(error.get("status", 500)),
            error.get("code", "internal"),
            f"the export of '{name}' failed after {points} points: {error.get('message')}",
        )
    if end.get("end") is not True or end.get("points") != points:
        raise InvalidInput(f"the export of '{name}' stopped after {points} points, before its end; try again")
    out.write(last + b"\n")
    if on_progress is not None:
        on_progress(points, expected)
    return points
