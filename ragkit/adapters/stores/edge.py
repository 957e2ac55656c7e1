"""The embedded default: Qdrant Edge (``qdrant-edge-py``), the Qdrant engine in this process.

Layout under ``data_dir``::

    edge.lock                      held (flock) while an EdgeStore owns the folder
    collections/<name>/shard/      one EdgeShard per collection (segments, WAL)
    collections/<name>/spec.json   the CollectionSpec; written last, so its presence is the
                                   sign of a complete collection

What was measured on qdrant-edge-py 0.9 (and shapes this module):

* Calls may come from any thread, but the binding holds the GIL for the whole of each call.
  Reads are not serialised by this module, yet they do not run in parallel either; each query
  is short (about a millisecond on 20k x 384 points once indexed).
* ``optimize()`` holds the GIL for its whole run (about 5 s for 10k x 384 points on 2 cores): every
  Python thread of the process stalls until it returns, the event loop included. Schedule it
  when a stall is acceptable. Edge runs no background optimizer: until ``optimize()``, new points
  are searched by brute force.
* A shard's WAL is locked by whoever opened it: a second open in the same process fails too.
  ``EdgeStore`` therefore takes a lock on the whole folder when it starts.
* Errors are plain ``Exception``/``ValueError`` whose message starts with Qdrant's error kind
  ("Wrong input", "Vector dimension error", "Service runtime error", ...); ``_translate`` relies on it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from ragkit.adapters.stores import edge_disk as disk
from ragkit.adapters.stores.common import (
    DENSE_VECTOR,
    DEPENDENCY,
    SPARSE_VECTOR,
    SearchPlan,
    StoreBase,
    check_update,
    normalise_point,
    payload_indexes,
    stamp_created,
    validate_spec,
)
from ragkit.adapters.stores.edge_disk import SHARD_DIR, SPEC_FILE, FolderLock, read_spec, write_spec
from ragkit.adapters.stores.edge_query import SCHEMAS, compile_filter, query_request
from ragkit.adapters.stores.filters import Where
from ragkit.adapters.stores.records import hit_from, point_from
from ragkit.core.errors import (
    CollectionExists,
    CollectionNotFound,
    ConfigurationError,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidInput,
    RagkitError,
)
from ragkit.core.names import validate_collection_name
from ragkit.core.types import CollectionSpec, Hit, Point

log = logging.getLogger(__name__)

# Message prefixes of Qdrant errors that mean the request itself was wrong.
_INVALID_PREFIXES = (
    "Wrong input",
    "Bad input",
    "Bad request",
    "Validation failed",
    "Vector dimension error",
    "Not existing vector name",
    "Payload type does not match",
    "Wrong usage",
    "failed to parse",
)
_PAYLOAD_PAGE = 100  # payloads fetched per call after a query


class _Collection:
    """An open shard with what is kept beside it."""

    def __init__(self, directory: Path, shard: qe.EdgeShard, spec: CollectionSpec) -> None:
        self.directory = directory
        self.shard = shard
        self.spec = spec
        # Writes, index creation and optimize take this; reads do not.
        self.write_lock = threading.RLock()
        # Indexes change only when the collection is created: read once, when it is opened.
        self.indexed: set[str] = set(shard.info().payload_schema)
        self.closed = False


class EdgeStore(StoreBase):
    """VectorStore on Qdrant Edge: one shard per collection under ``data_dir/collections``.

    Shards are opened on first use and kept open until ``close()``. ``indexing_threshold_kb``
    is Qdrant's: segments smaller than that are left unindexed by ``optimize()`` (None keeps
    Qdrant's default of 10 MB of vectors, below which brute force is fast anyway).
    """

    name = "edge"

    def __init__(
        self,
        data_dir: Path,
        hnsw_m: int = 16,
        ef_construct: int = 100,
        full_scan_threshold_kb: int = 10_000,
        indexing_threshold_kb: int | None = None,
        max_search_threads: int | None = None,
        min_free_bytes: int = disk.DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._root = self.data_dir / "collections"
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(disk.start_problem(self._root, exc)) from exc
        self._hnsw = qe.HnswIndexConfig(
            m=hnsw_m,
            ef_construct=ef_construct,
            full_scan_threshold=full_scan_threshold_kb,
            max_indexing_threads=0,
        )
        self._optimizers = (
            qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
            if indexing_threshold_kb is not None
            else None
        )
        self._max_search_threads = max_search_threads
        self._open: dict[str, _Collection] = {}
        self._registry = threading.Lock()  # guards _open and the collection folders
        self._closed = False
        self._space = disk.DiskSpace(self._root, min_free_bytes)  # claimed before Edge allocates
        self._folder_lock = FolderLock(self.data_dir)  # last: nothing after it can fail and leak it

    # ------------------------------------------------------------------ plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise DependencyUnavailable(DEPENDENCY, "the embedded Qdrant Edge store is closed")

    def _translate(self, exc: Exception, name: str | None, handle: _Collection | None) -> RagkitError:
        if self._closed:
            return DependencyUnavailable(DEPENDENCY, "the embedded Qdrant Edge store is closed")
        if handle is not None and handle.closed and name:
            return CollectionNotFound(name)  # deleted while this call was using it
        storage = disk.storage_error(exc)  # a full, read-only or held disk: not the request's fault
        if storage is not None:
            return storage
        message = str(exc)
        if isinstance(exc, ValueError | TypeError) or message.startswith(_INVALID_PREFIXES):
            return InvalidInput(f"Qdrant Edge rejected the request: {message}")
        if message.startswith("Timeout"):
            return DependencyTimeout(DEPENDENCY, f"Qdrant Edge timed out: {message}")
        return DependencyUnavailable(DEPENDENCY, f"Qdrant Edge failed: {message}")

    @contextmanager
    def _backend(self, name: str | None = None, handle: _Collection | None = None) -> Iterator[None]:
        try:
            yield
        except RagkitError:
            raise
        except Exception as exc:
            raise self._translate(exc, name, handle) from exc

    def _config(self, spec: CollectionSpec) -> qe.EdgeConfig:
        # int8 with the top 1 % of values clipped (Qdrant's suggested quantile), kept in RAM; the
        # originals then stay on disk, read only to rescore the best candidates of each search.
        int8 = spec.quantization == "int8"
        quantized = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True)
        dense = qe.EdgeVectorParams(size=spec.dimension, distance=qe.Distance.Cosine, on_disk=int8 or None)
        return qe.EdgeConfig(
            vectors={DENSE_VECTOR: dense},
            quantization_config=quantized if int8 else None,
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=self._hnsw,
            optimizers=self._optimizers,
            max_search_threads=self._max_search_threads,
        )

    def _handle(self, name: str) -> _Collection:
        validate_collection_name(name)
        self._check_open()
        handle = self._open.get(name)
        if handle is not None:
            return handle
        with self._registry:
            handle = self._open.get(name)
            if handle is not None:
                return handle
            directory = self._root / name
            if not (directory / SPEC_FILE).is_file():
                raise CollectionNotFound(name)
            with self._backend(name), self._space.claim(disk.open_bytes(directory / SHARD_DIR), f"opening '{name}'"):
                spec = read_spec(directory / SPEC_FILE)
                handle = _Collection(directory, qe.EdgeShard.load(str(directory / SHARD_DIR)), spec)
            self._open[name] = handle
            return handle

    # ------------------------------------------------------------------ collections

    def create_collection(self, spec: CollectionSpec) -> None:
        spec = stamp_created(validate_spec(spec))
        self._check_open()
        with self._registry:
            directory = self._root / spec.name
            if (directory / SPEC_FILE).is_file():
                raise CollectionExists(spec.name)
            needed = disk.shard_bytes(len(payload_indexes(spec)))
            with self._backend(spec.name), self._space.claim(needed, f"creating '{spec.name}'"):
                if directory.exists():  # the remains of an interrupted create or delete
                    shutil.rmtree(directory)
                shard = qe.EdgeShard.create(str(directory / SHARD_DIR), self._config(spec))
                try:
                    for path, kind in payload_indexes(spec).items():
                        shard.update(qe.UpdateOperation.create_field_index(path, SCHEMAS[kind]))
                    write_spec(directory / SPEC_FILE, spec)
                except BaseException:
                    shard.close()
                    shutil.rmtree(directory, ignore_errors=True)
                    raise
                self._open[spec.name] = _Collection(directory, shard, spec)

    def get_collection(self, name: str) -> CollectionSpec:
        validate_collection_name(name)
        self._check_open()
        handle = self._open.get(name)
        if handle is not None:
            return handle.spec
        path = self._root / name / SPEC_FILE
        if not path.is_file():
            raise CollectionNotFound(name)
        with self._backend(name):
            return read_spec(path)

    def update_collection(self, spec: CollectionSpec) -> None:
        handle = self._handle(spec.name)
        with handle.write_lock, self._backend(spec.name, handle):
            new = check_update(handle.spec, spec)
            write_spec(handle.directory / SPEC_FILE, new)
            handle.spec = new

    def list_collections(self) -> list[CollectionSpec]:
        self._check_open()
        with self._backend():
            names = sorted(p.parent.name for p in self._root.glob(f"*/{SPEC_FILE}"))
        specs = []
        for name in names:
            try:
                specs.append(self.get_collection(name))
            except CollectionNotFound:  # deleted meanwhile
                continue
        return specs

    def delete_collection(self, name: str) -> None:
        validate_collection_name(name)
        self._check_open()
        with self._registry:
            directory = self._root / name
            if not (directory / SPEC_FILE).is_file():
                raise CollectionNotFound(name)
            handle = self._open.pop(name, None)
            with self._backend(name):
                if handle is not None:
                    with handle.write_lock:
                        handle.closed = True
                        handle.shard.close()
                # The spec goes first: from then on the collection does not exist, even if
                # removing its files fails (the next create of that name clears them).
                (directory / SPEC_FILE).unlink()
            try:
                shutil.rmtree(directory)
            except OSError as exc:
                log.warning("could not remove the files of deleted collection %s: %s", name, exc)

    # ------------------------------------------------------------------ points

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        handle = self._handle(name)
        converted = []
        with self._backend(name, handle):  # the binding converts payloads here and may refuse one
            for point in points:
                pid, dense, sparse, payload = normalise_point(point, handle.spec.dimension)
                vectors = {
                    DENSE_VECTOR: dense,
                    SPARSE_VECTOR: qe.SparseVector(list(sparse.indices), list(sparse.values)),
                }
                converted.append(qe.Point(pid, vectors, payload))
        if not converted:
            return
        needed = disk.upsert_bytes(points)
        with handle.write_lock, self._space.claim(needed, f"writing {len(points)} chunks"), self._backend(name, handle):
            handle.shard.update(qe.UpdateOperation.upsert_points(converted))

    def _count(self, name: str, where: Where | None) -> int:
        handle = self._handle(name)
        with self._backend(name, handle):
            return handle.shard.count(qe.CountRequest(exact=True, filter=compile_filter(where)))

    def _doc_counts(self, name: str, where: Where | None, limit: int) -> dict[str, int]:
        handle = self._handle(name)
        with self._backend(name, handle):
            response = handle.shard.facet(
                qe.FacetRequest(key="doc_id", limit=max(limit, 1), exact=True, filter=compile_filter(where))
            )
        return {str(hit.value): hit.count for hit in response.hits}

    def _payloads(self, name: str, where: Where, limit: int, *, with_text: bool = False) -> list[dict[str, Any]]:
        handle = self._handle(name)
        with self._backend(name, handle):
            records, _ = handle.shard.scroll(
                qe.ScrollRequest(
                    limit=limit,
                    filter=compile_filter(where),
                    with_payload=True if with_text else qe.PayloadSelector.Exclude(["text"]),
                    with_vector=False,
                )
            )
        return [dict(r.payload or {}) for r in records]

    def _scroll(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]:
        handle = self._handle(name)
        with self._backend(name, handle):
            request = qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
            records, following = handle.shard.scroll(request)
        points = [point_from(record.id, record.vector, record.payload) for record in records]
        return points, None if following is None else str(following)

    def _delete(self, name: str, where: Where) -> None:
        handle = self._handle(name)
        with handle.write_lock, self._space.claim(0, "deleting chunks"), self._backend(name, handle):
            handle.shard.update(qe.UpdateOperation.delete_points_by_filter(compile_filter(where)))

    def _write_guard(self, name: str) -> threading.RLock:
        return self._handle(name).write_lock

    def _indexed_paths(self, name: str) -> set[str]:
        return super()._indexed_paths(name) | self._handle(name).indexed

    def _query(self, name: str, plan: SearchPlan) -> list[Hit]:
        handle = self._handle(name)
        with self._backend(name, handle):  # building the request converts values too: its errors are ours
            points = handle.shard.query(query_request(plan, quantized=handle.spec.quantization == "int8"))
            # The payloads come in pages, each call short: every call into Edge holds the GIL, and
            # a thousand payloads fetched by the query itself held it for tens of milliseconds.
            payloads: dict[str, Any] = {}
            for start in range(0, len(points), _PAYLOAD_PAGE):
                page = [p.id for p in points[start : start + _PAYLOAD_PAGE]]
                for record in handle.shard.retrieve(page, with_payload=True, with_vector=False):
                    payloads[str(record.id)] = record.payload
        # A point deleted between the two calls (its document re-ingested meanwhile) is left out.
        return [hit_from(p.id, p.score, payloads[str(p.id)]) for p in points if str(p.id) in payloads]

    # ------------------------------------------------------------------ lifecycle

    def optimize(self, name: str) -> None:
        """Merge segments and build the HNSW index. Blocks, and stalls the process (see module doc)."""
        handle = self._handle(name)
        needed = disk.optimize_bytes(handle.directory / SHARD_DIR)
        with handle.write_lock, self._space.claim(needed, f"optimizing '{name}'"), self._backend(name, handle):
            handle.shard.optimize()

    def ping(self) -> None:
        self._check_open()
        if not self._root.is_dir():
            raise DependencyUnavailable(DEPENDENCY, f"the embedded store folder {self._root} has disappeared")

    def close(self) -> None:
        """Flush and close every shard and release the folder. Idempotent."""
        with self._registry:
            if self._closed:
                return
            self._closed = True
            handles = list(self._open.items())
            self._open.clear()
        failure: tuple[str, Exception] | None = None
        for name, handle in handles:
            with handle.write_lock:
                handle.closed = True
                try:
                    handle.shard.flush()
                    handle.shard.close()
                except Exception as exc:  # keep closing the others, report the first
                    failure = failure or (name, exc)
        self._folder_lock.release()
        if failure is not None:
            name, exc = failure
            raise DependencyUnavailable(DEPENDENCY, f"closing collection '{name}' failed: {exc}") from exc
