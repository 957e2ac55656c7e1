"""The file a collection is exported to and imported from, and a collection spec as plain data.

The file is NDJSON, one JSON object a line, so that neither end ever holds more than a page of it::

    {"format": "ragkit-collection", "version": 1, "spec": {...}, "points": 21382, "store": "edge", ...}
    {"id": "<uuid>", "dense": [0.0123, ...], "sparse": {"indices": [...], "values": [...]}, "payload": {...}}
    ...
    {"end": true, "points": 21382}

The header's ``points`` is what the collection held when the export began (a progress bar's total);
the trailer's is how many point lines come before it: an import refuses a file without its trailer
or with another count, so a file cut off anywhere is never taken for a smaller collection. An
export the service could not finish ends with ``{"error": {"status", "code", "message"}}`` instead.

Vectors are written with 9 significant digits: enough to give back every float32 exactly (what
both stores keep), about half the characters of a double's shortest form.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragkit.core.errors import InvalidInput
from ragkit.core.types import CollectionSpec, Point, SparseVector

FORMAT = "ragkit-collection"
VERSION = 1
MEDIA_TYPE = "application/x-ndjson"
_MAX_SPARSE_INDEX = 2**32 - 1  # Qdrant's sparse indices are 32-bit unsigned


def spec_to_dict(spec: CollectionSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_dict(data: Mapping[str, Any]) -> CollectionSpec:
    # Unknown keys are ignored so that a spec written by a newer ragkit still loads.
    known = {f.name for f in dataclasses.fields(CollectionSpec)}
    return CollectionSpec(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- writing


def _line(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def header_line(spec: CollectionSpec, points: int, store: str) -> bytes:
    header = {"format": FORMAT, "version": VERSION, "spec": spec_to_dict(spec), "points": points, "store": store}
    return _line(header | {"exported_at": datetime.now(UTC).isoformat(timespec="seconds")})


def _numbers(values: Iterable[float]) -> str:
    return ",".join(format(float(v), ".9g") for v in values)


def point_lines(points: Iterable[Point]) -> bytes:
    """The lines of a page of points (a few milliseconds per hundred: run it off the event loop)."""
    out = []
    for point in points:
        payload = json.dumps(dict(point.payload), ensure_ascii=False, separators=(",", ":"))
        out.append(
            f'{{"id":"{point.id}","dense":[{_numbers(point.dense)}],"sparse":{{"indices":'
            f'[{",".join(str(int(i)) for i in point.sparse.indices)}],"values":[{_numbers(point.sparse.values)}]}},'
            f'"payload":{payload}}}\n'
        )
    return "".join(out).encode()


def trailer_line(points: int) -> bytes:
    return _line({"end": True, "points": points})


def error_line(status: int, code: str, message: str) -> bytes:
    return _line({"error": {"status": status, "code": code, "message": message}})


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Header:
    spec: CollectionSpec
    points: int  # what the collection held when the export began; the trailer has the count


@dataclass(frozen=True)
class Trailer:
    points: int


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a vector may hold")


def _json(line: bytes, number: int) -> Any:
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at character {exc.pos + 1}"
    except ValueError as exc:  # a NaN or an infinity, or bytes that are not UTF-8
        problem = str(exc)
    raise InvalidInput(f"line {number} is not valid JSON ({problem}); the file is damaged: export it again")


def read_header(line: bytes) -> Header:
    """The file's first line, or an InvalidInput that says why it cannot be imported."""
    value = _json(line, 1)
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise InvalidInput(
            "line 1 is not the header of a ragkit collection export: import only a file written by "
            "`ragkit collections export` (GET /api/v1/rag/collections/{name}/export)"
        )
    if value.get("version") != VERSION:
        raise InvalidInput(
            f"the file is in export format version {value.get('version')!r}; this ragkit reads version "
            f"{VERSION}: import it with the ragkit version that exported it, or export it again with this one"
        )
    spec, points = value.get("spec"), value.get("points")
    try:
        if not isinstance(spec, dict) or not isinstance(points, int) or isinstance(points, bool):
            raise TypeError("the spec must be an object and points a number")
        return Header(spec=spec_from_dict(spec), points=points)
    except TypeError as exc:
        raise InvalidInput(f"line 1, the header, is incomplete ({exc}); the file is damaged: export it again") from exc


def _finite(values: Any, what: str, number: int) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise InvalidInput(f"line {number}: {what} must be a list of finite numbers")
    return tuple(float(v) for v in values)


def read_point(line: bytes, number: int, dimension: int) -> Point | Trailer:
    """A point line (checked against the collection's dimension), or the trailer."""
    value = _json(line, number)
    if not isinstance(value, dict):
        raise InvalidInput(f"line {number} is not a JSON object; the file is damaged: export it again")
    if "end" in value:
        points = value.get("points")
        if value["end"] is not True or not isinstance(points, int) or isinstance(points, bool):
            raise InvalidInput(f'line {number}: the trailer must be {{"end": true, "points": <count>}}')
        return Trailer(points)
    if "error" in value:
        raise InvalidInput(
            f"line {number}: the export that wrote this file failed there ({value['error']}); export it again"
        )
    try:
        pid = str(uuid.UUID(str(value["id"])))
        dense = _finite(value["dense"], "dense", number)
        sparse = value["sparse"]
        indices, values = sparse["indices"], _finite(sparse["values"], "sparse values", number)
        payload = value["payload"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"line {number} is not a point (id: a UUID, dense, sparse: {{indices, values}}, payload): {exc!r}"
        ) from exc
    if len(dense) != dimension:
        raise InvalidInput(
            f"line {number}: point {pid} has a {len(dense)}-dimensional vector, the collection's spec {dimension}"
        )
    if not isinstance(indices, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= _MAX_SPARSE_INDEX for i in indices
    ):
        raise InvalidInput(f"line {number}: sparse indices must be a list of integers in [0, 2^32)")
    if len(indices) != len(values):
        raise InvalidInput(f"line {number}: the sparse vector has {len(indices)} indices and {len(values)} values")
    if not isinstance(payload, dict):
        raise InvalidInput(f"line {number}: the payload must be a JSON object")
    return Point(id=pid, dense=dense, sparse=SparseVector(tuple(indices), values), payload=payload)
