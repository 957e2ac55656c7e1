"""The domain checks a search once, whoever calls it (HTTP, MCP, jobs, in-process): the query,
top_k within the configured limit, a known mode, filters as an object."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ragkit.core.errors import InvalidInput
from ragkit.services import build_services
from tests.conftest import make_settings


@pytest.fixture
def services(tmp_path: Path, local_embedder):  # noqa: ANN001, ANN201
    built = build_services(make_settings(tmp_path, max_top_k=20), embedder=local_embedder)
    asyncio.run(built.collections.create("docs"))
    yield built
    built.store.close()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"query": "   "}, "empty"),
        ({"query": "x" * 5000}, "limit is"),
        ({"top_k": 0}, "top_k must be"),
        ({"top_k": 21}, "from 1 to 20"),
        ({"top_k": True}, "top_k must be"),
        ({"mode": "fuzzy"}, "mode must be one of dense, sparse, hybrid"),
        ({"filters": ["a"]}, "filters must be an object"),
    ],
)
def test_bad_searches_are_refused_before_any_work(services, kwargs: dict, says: str) -> None:  # noqa: ANN001
    arguments = {"query": "breakers", "top_k": 5, "mode": "hybrid", "filters": None} | kwargs
    query = arguments.pop("query")
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(services.pipeline.search("docs", query, **arguments))
    assert says in refused.value.message
