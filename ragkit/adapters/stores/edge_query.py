"""The neutral filter tree and search plans in Qdrant Edge's own classes."""

from __future__ import annotations

from typing import Any

import numpy as np
import qdrant_edge as qe

from ragkit.adapters.stores.common import DENSE_VECTOR, RRF_K, SPARSE_VECTOR, SearchPlan
from ragkit.adapters.stores.filters import AtLeast, Match, Where

SCHEMAS: dict[str, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "bool": qe.PayloadSchemaType.Bool,
}


def _scalar(value: str | int | bool) -> Any:
    # qdrant-edge-py 0.9 converts a Python bool in MatchValue to the integer 0/1 (bool is an int
    # subclass and the binding tries int first), so `flag == True` would never match a boolean.
    # numpy.bool_ is not an int, so the binding falls through to its bool case.
    return np.bool_(value) if isinstance(value, bool) else value


def compile_filter(where: Where | None) -> qe.Filter | None:
    if where is None:
        return None

    def condition(c: Match | AtLeast | Where) -> Any:
        if isinstance(c, Where):
            return compile_filter(c)
        if isinstance(c, AtLeast):
            return qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=float(c.value)))
        if len(c.values) == 1:
            return qe.FieldCondition(key=c.key, match=qe.MatchValue(_scalar(c.values[0])))
        if c.kind in ("keyword", "integer"):
            return qe.FieldCondition(key=c.key, match=qe.MatchAny(list(c.values)))
        # MatchAny takes only strings or only integers: booleans and mixtures become a should.
        return qe.Filter(
            should=[qe.FieldCondition(key=c.key, match=qe.MatchValue(_scalar(v))) for v in c.values]
        )

    return qe.Filter(
        must=[condition(c) for c in where.must] or None,
        should=[condition(c) for c in where.should] or None,
        must_not=[condition(c) for c in where.must_not] or None,
    )


def nearest(plan: SearchPlan, branch: str) -> qe.Query:
    if branch == "dense":
        return qe.Query.Nearest(plan.dense, using=DENSE_VECTOR)
    assert plan.sparse is not None
    return qe.Query.Nearest(
        qe.SparseVector(list(plan.sparse.indices), list(plan.sparse.values)), using=SPARSE_VECTOR
    )


# A quantized collection's dense search: twice the candidates walked on the 8-bit vectors, then
# ranked again on the originals, which keeps its recall where full precision has it.
RESCORED = qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=True, oversampling=2.0))


def query_request(plan: SearchPlan, quantized: bool = False) -> qe.QueryRequest:
    """The query of a search plan, without payloads (the store fetches them in pages after)."""
    flt = compile_filter(plan.where)

    def params(branch: str) -> qe.SearchParams | None:
        return RESCORED if quantized and branch == "dense" else None

    if plan.mode == "hybrid":
        branches = ["dense", "sparse"] if plan.sparse is not None else ["dense"]
        return qe.QueryRequest(
            limit=plan.limit,
            prefetches=[
                qe.Prefetch(limit=plan.prefetch_limit, query=nearest(plan, b), filter=flt, params=params(b))
                for b in branches
            ],
            # No filter here: both branches are filtered already, and checking the fused candidates
            # again would double the work of a filter on unindexed fields.
            query=qe.Fusion.Rrf(k=RRF_K),
            with_payload=False,
            with_vector=False,
        )
    return qe.QueryRequest(
        limit=plan.limit,
        query=nearest(plan, plan.mode),
        filter=flt,
        params=params(plan.mode),
        with_payload=False,
        with_vector=False,
    )
