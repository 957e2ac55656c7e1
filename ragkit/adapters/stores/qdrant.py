"""VectorStore on a Qdrant server or cluster through ``qdrant-client`` (also ``QdrantClient(":memory:")``).

The client is built by the caller, and its ``timeout=`` is the only bound on each call: build it
with one (``ragkit.services`` passes ``RAGKIT_QDRANT_TIMEOUT``); qdrant-client's default is 5 s.
Every write waits for the server to apply it (``wait=True``), so a read that follows sees it.
In local mode (``":memory:"`` or ``path=``), which is not thread-safe, calls are serialised.

A collection's ``CollectionSpec`` lives in the collection's own metadata (Qdrant >= 1.16) under
``ragkit_spec``; collections without it were not made by ragkit and are left alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ragkit.adapters.stores.common import (
    DENSE_VECTOR,
    DEPENDENCY,
    RRF_K,
    SPARSE_VECTOR,
    SearchPlan,
    StoreBase,
    check_update,
    normalise_point,
    payload_indexes,
    spec_from_dict,
    spec_to_dict,
    stamp_created,
    validate_spec,
)
from ragkit.adapters.stores.filters import AtLeast, Match, Where
from ragkit.adapters.stores.records import hit_from, point_from
from ragkit.core.errors import (
    CollectionExists,
    CollectionNotFound,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidInput,
    RagkitError,
    UpstreamRejected,
)
from ragkit.core.names import validate_collection_name
from ragkit.core.types import CollectionSpec, Hit, Point

try:  # only present when qdrant-client talks gRPC
    import grpc
except ImportError:  # pragma: no cover
    grpc = None  # type: ignore[assignment]

SPEC_KEY = "ragkit_spec"
# Quantization "int8" as on Edge (stores/edge.py): 8-bit scalars in RAM, the top 1 % clipped;
# dense searches walk twice the candidates on them and rank them again on the originals.
_QUANTIZED = qm.ScalarQuantization(
    scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)
)
_RESCORED = qm.SearchParams(quantization=qm.QuantizationSearchParams(rescore=True, oversampling=2.0))

_SCHEMAS: dict[str, qm.PayloadSchemaType] = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "bool": qm.PayloadSchemaType.BOOL,
}
_WITHOUT_TEXT = qm.PayloadSelectorExclude(exclude=["text"])


def _server_message(exc: UnexpectedResponse) -> str:
    try:
        return str(exc.structured()["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.reason_phrase or f"HTTP {exc.status_code}"


def _translate(exc: Exception, name: str | None) -> RagkitError:
    """qdrant-client's exceptions (REST, gRPC and local mode) → the ragkit error tree."""
    if isinstance(exc, ResourceExhaustedResponse):
        return DependencyUnavailable(
            DEPENDENCY, f"Qdrant is overloaded: {exc}", retry_after=exc.retry_after_s
        )
    if isinstance(exc, UnexpectedResponse):
        status, message = exc.status_code or 0, _server_message(exc)
        if status == 404 and name:
            return CollectionNotFound(name)
        if status == 409 and name:
            return CollectionExists(name)
        if status in (400, 422):
            return InvalidInput(f"Qdrant rejected the request: {message}")
        if status in (408, 504):
            return DependencyTimeout(DEPENDENCY, f"Qdrant timed out: {message}")
        if status in (401, 403):
            return UpstreamRejected(f"Qdrant refused the credentials (HTTP {status}); check QDRANT_API_KEY")
        if 400 <= status < 500 and status != 429:
            return UpstreamRejected(f"Qdrant answered HTTP {status}: {message}")
        return DependencyUnavailable(DEPENDENCY, f"Qdrant answered HTTP {status}: {message}")
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, httpx.TimeoutException):
            return DependencyTimeout(DEPENDENCY, f"Qdrant did not answer in time ({type(source).__name__})")
        return DependencyUnavailable(DEPENDENCY, f"Qdrant is unreachable: {type(source).__name__}: {source}")
    if isinstance(exc, httpx.TimeoutException):
        return DependencyTimeout(DEPENDENCY, f"Qdrant did not answer in time ({type(exc).__name__})")
    if grpc is not None and isinstance(exc, grpc.RpcError):
        return _translate_grpc(exc, name)
    message = str(exc)
    if isinstance(exc, json.JSONDecodeError):
        # A 200 that is not JSON: a proxy's sign-in page or something else at QDRANT_URL. The
        # server did not answer as Qdrant, so it counts as an outage, not as the caller's mistake.
        return DependencyUnavailable(DEPENDENCY, f"the server at QDRANT_URL did not answer as Qdrant: {message}")
    if isinstance(exc, ValueError):  # local mode reports everything the server would 4xx this way
        if name and "not found" in message:
            return CollectionNotFound(name)
        if name and "already exists" in message:
            return CollectionExists(name)
        return InvalidInput(f"Qdrant rejected the request: {message}")
    return DependencyUnavailable(DEPENDENCY, f"Qdrant failed: {type(exc).__name__}: {message}")


def _translate_grpc(exc: Any, name: str | None) -> RagkitError:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    codes = grpc.StatusCode
    if code == codes.NOT_FOUND and name:
        return CollectionNotFound(name)
    if code == codes.ALREADY_EXISTS and name:
        return CollectionExists(name)
    if code in (codes.INVALID_ARGUMENT, codes.FAILED_PRECONDITION, codes.OUT_OF_RANGE):
        return InvalidInput(f"Qdrant rejected the request: {details}")
    if code == codes.DEADLINE_EXCEEDED:
        return DependencyTimeout(DEPENDENCY, f"Qdrant did not answer in time: {details}")
    if code in (codes.UNAUTHENTICATED, codes.PERMISSION_DENIED):
        return UpstreamRejected("Qdrant refused the credentials; check QDRANT_API_KEY")
    return DependencyUnavailable(DEPENDENCY, f"Qdrant failed ({code}): {details}")


def _compile(where: Where | None) -> qm.Filter | None:
    if where is None:
        return None

    def condition(c: Match | AtLeast | Where) -> Any:
        if isinstance(c, Where):
            return _compile(c)
        if isinstance(c, AtLeast):
            return qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value))
        if len(c.values) == 1:
            return qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.values[0]))
        if c.kind in ("keyword", "integer"):
            return qm.FieldCondition(key=c.key, match=qm.MatchAny(any=list(c.values)))
        # MatchAny takes only strings or only integers: booleans and mixtures become a should.
        return qm.Filter(
            should=[qm.FieldCondition(key=c.key, match=qm.MatchValue(value=v)) for v in c.values]
        )

    return qm.Filter(
        must=[condition(c) for c in where.must] or None,
        should=[condition(c) for c in where.should] or None,
        must_not=[condition(c) for c in where.must_not] or None,
    )


def _nearest(plan: SearchPlan, branch: str) -> tuple[Any, str]:
    if branch == "dense":
        return plan.dense, DENSE_VECTOR
    assert plan.sparse is not None
    return qm.SparseVector(indices=list(plan.sparse.indices), values=list(plan.sparse.values)), SPARSE_VECTOR


class QdrantStore(StoreBase):
    """VectorStore on qdrant-client. ``shard_number``, ``replication_factor`` and
    ``write_consistency_factor`` apply to the collections it creates (None: the server's defaults)."""

    name = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
    ) -> None:
        self._client = client
        # int8 collections, learned from their specs (read before every search): rescored searches.
        self._quantized: set[str] = set()
        self._shard_number = shard_number
        self._replication_factor = replication_factor
        self._write_consistency_factor = write_consistency_factor
        # qdrant-client's local mode (":memory:" or path=) is not thread-safe: concurrent upserts and
        # queries fail inside its numpy code. Against a server calls run concurrently.
        options = client.init_options
        local = options.get("location") == ":memory:" or options.get("path") is not None
        self._serial: AbstractContextManager[object] = threading.RLock() if local else nullcontext()
        # Payload indexes found on the server, per collection: they change only when one is created.
        self._indexed: dict[str, set[str]] = {}

    @contextmanager
    def _backend(self, name: str | None = None) -> Iterator[None]:
        with self._serial:
            try:
                yield
            except RagkitError:
                raise
            except Exception as exc:
                raise _translate(exc, name) from exc

    # ------------------------------------------------------------------ collections

    def create_collection(self, spec: CollectionSpec) -> None:
        spec = stamp_created(validate_spec(spec))
        int8 = spec.quantization == "int8"  # then the originals stay on disk, read only to rescore
        dense = qm.VectorParams(size=spec.dimension, distance=qm.Distance.COSINE, on_disk=int8 or None)
        with self._backend(spec.name):
            if self._client.collection_exists(spec.name):
                raise CollectionExists(spec.name)
            self._client.create_collection(
                spec.name,
                vectors_config={DENSE_VECTOR: dense},
                sparse_vectors_config={SPARSE_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                shard_number=self._shard_number,
                replication_factor=self._replication_factor,
                write_consistency_factor=self._write_consistency_factor,
                quantization_config=_QUANTIZED if int8 else None,
                metadata={SPEC_KEY: spec_to_dict(spec)},
            )
            for path, kind in payload_indexes(spec).items():
                self._client.create_payload_index(spec.name, path, _SCHEMAS[kind], wait=True)

    def _info(self, name: str) -> qm.CollectionInfo:
        validate_collection_name(name)
        with self._backend(name):
            return self._client.get_collection(name)

    @staticmethod
    def _spec_of(name: str, info: qm.CollectionInfo) -> CollectionSpec | None:
        stored = (info.config.metadata or {}).get(SPEC_KEY)
        if isinstance(stored, str):  # tolerate a spec stored as a JSON string
            stored = json.loads(stored)
        return spec_from_dict(stored) if isinstance(stored, Mapping) else None

    def get_collection(self, name: str) -> CollectionSpec:
        spec = self._spec_of(name, self._info(name))
        if spec is None:
            raise Conflict(
                f"collection '{name}' exists in Qdrant but was not created by ragkit; use another name",
                collection=name,
            )
        if spec.quantization == "int8":
            self._quantized.add(name)
        return spec

    def update_collection(self, spec: CollectionSpec) -> None:
        new = check_update(self.get_collection(spec.name), spec)
        with self._backend(spec.name):
            self._client.update_collection(spec.name, metadata={SPEC_KEY: spec_to_dict(new)})

    def list_collections(self) -> list[CollectionSpec]:
        with self._backend():
            names = sorted(c.name for c in self._client.get_collections().collections)
        specs = []
        for name in names:
            try:
                spec = self._spec_of(name, self._info(name))
            except (CollectionNotFound, InvalidInput):  # deleted meanwhile, or a name ragkit would not make
                continue
            if spec is not None:
                specs.append(spec)
        return specs

    def delete_collection(self, name: str) -> None:
        self.get_collection(name)  # unknown → CollectionNotFound; foreign collections are not ours to drop
        with self._backend(name):
            self._client.delete_collection(name)
        self._indexed.pop(name, None)
        self._quantized.discard(name)

    # ------------------------------------------------------------------ points

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        validate_collection_name(name)
        structs = []
        for point in points:
            # No dimension check here (it would cost a round trip per batch): Qdrant answers a 400.
            pid, dense, sparse, payload = normalise_point(point)
            vectors = {
                DENSE_VECTOR: dense,
                SPARSE_VECTOR: qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
            }
            structs.append(qm.PointStruct(id=pid, vector=vectors, payload=payload))
        with self._backend(name):
            if not structs:
                self._client.get_collection(name)  # an empty batch still checks the collection exists
                return
            self._client.upsert(name, points=structs, wait=True)

    def _count(self, name: str, where: Where | None) -> int:
        validate_collection_name(name)
        with self._backend(name):
            return self._client.count(name, count_filter=_compile(where), exact=True).count

    def _doc_counts(self, name: str, where: Where | None, limit: int) -> dict[str, int]:
        validate_collection_name(name)
        with self._backend(name):
            response = self._client.facet(
                name, key="doc_id", facet_filter=_compile(where), limit=max(limit, 1), exact=True
            )
        return {str(hit.value): hit.count for hit in response.hits}

    def _payloads(self, name: str, where: Where, limit: int, *, with_text: bool = False) -> list[dict[str, Any]]:
        validate_collection_name(name)
        with self._backend(name):
            records, _ = self._client.scroll(
                name,
                scroll_filter=_compile(where),
                limit=limit,
                with_payload=True if with_text else _WITHOUT_TEXT,
                with_vectors=False,
            )
        return [dict(r.payload or {}) for r in records]

    def _scroll(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]:
        with self._backend(name):
            records, following = self._client.scroll(
                name, offset=offset, limit=limit, with_payload=True, with_vectors=True
            )
        points = [point_from(record.id, record.vector, record.payload) for record in records]
        return points, None if following is None else str(following)

    def _delete(self, name: str, where: Where) -> None:
        with self._backend(name):
            self._client.delete(name, points_selector=qm.FilterSelector(filter=_compile(where)), wait=True)

    def _write_guard(self, name: str) -> AbstractContextManager[object]:
        # Several API replicas may write the same server, so a local lock would promise nothing:
        # deletes go by filter, which the server applies atomically, and counts are best-effort.
        return nullcontext()

    def _indexed_paths(self, name: str) -> set[str]:
        found = self._indexed.get(name)
        if found is None:  # one round trip per collection and process: indexes are built only at creation
            info = self._info(name)
            spec = self._spec_of(name, info)
            found = set(info.payload_schema) | (set(payload_indexes(spec)) if spec is not None else set())
            self._indexed[name] = found
        return found

    def _query(self, name: str, plan: SearchPlan) -> list[Hit]:
        with self._backend(name):  # the client's models check the filter's values as they are built
            flt = _compile(plan.where)
            if plan.mode == "hybrid":
                branches = ["dense", "sparse"] if plan.sparse is not None else ["dense"]
                prefetch = []
                for branch in branches:
                    query, using = _nearest(plan, branch)
                    params = _RESCORED if branch == "dense" and name in self._quantized else None
                    prefetch.append(
                        qm.Prefetch(query=query, using=using, filter=flt, limit=plan.prefetch_limit, params=params)
                    )
                # As on Edge: the branches are filtered, the fused candidates need no second check.
                response = self._client.query_points(
                    name,
                    prefetch=prefetch,
                    query=qm.RrfQuery(rrf=qm.Rrf(k=RRF_K)),
                    limit=plan.limit,
                    with_payload=True,
                    with_vectors=False,
                )
            else:
                query, using = _nearest(plan, plan.mode)
                response = self._client.query_points(
                    name,
                    query=query,
                    using=using,
                    query_filter=flt,
                    limit=plan.limit,
                    with_payload=True,
                    search_params=_RESCORED if plan.mode == "dense" and name in self._quantized else None,
                )
        return [hit_from(p.id, p.score, p.payload) for p in response.points]

    # ------------------------------------------------------------------ lifecycle

    def optimize(self, name: str) -> None:
        """Nothing to do: the server's optimizer indexes in the background. Checks the collection."""
        self.get_collection(name)

    def ping(self) -> None:
        with self._backend():
            self._client.get_collections()

    def close(self) -> None:
        with self._backend():
            self._client.close()
