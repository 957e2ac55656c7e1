"""Results as frozen dataclasses, and the ports (Protocols) every backend implements.

Implementations never inherit these Protocols; they just match them. Pipeline code sees
only these names, so a store, embedder, generator or cache can be swapped by configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# The search vocabulary, defined here once: the HTTP schemas, the CLI, the UI, the evaluation and
# the stores all import it.
SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
DEFAULT_MODE: SearchMode = "hybrid"
DEFAULT_TOP_K = 5
MAX_TOP_K = 1000  # the most results one search returns (RAGKIT_MAX_TOP_K may lower it)
# What one search may filter on. Each condition is checked against every candidate point (there is
# an index only for the fields a collection declares), so these bound a read's work.
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 100  # values of one key (any of)
MAX_FILTER_VALUE_CHARS = 1024
# Qdrant stores integers as 64-bit signed numbers; a larger one cannot match anything stored.
MIN_FILTER_INT = -(2**63)
MAX_FILTER_INT = 2**63 - 1
# The payload indexes a collection may declare, built when it is created (never by a read).
IndexKind = Literal["keyword", "integer", "bool"]
INDEX_KINDS: tuple[IndexKind, ...] = ("keyword", "integer", "bool")
QUANTIZATIONS = ("none", "int8")  # what a collection's dense vectors may also be kept as
MAX_INDEXED_FIELDS = MAX_FILTER_KEYS
# A filter on a field without an index is checked point by point, inside the store, for every
# search: 4-8 µs per point and field on Qdrant Edge, during which the embedded store holds the
# GIL (every thread of the service waits, the event loop included). A search may do at most this
# many such checks (chunks × unindexed fields × 2 for hybrid, whose two branches each filter);
# beyond, the fields must be indexed.
MAX_UNINDEXED_CHECKS = 4096


@dataclass(frozen=True)
class Document:
    """A source document before chunking. ``id`` is stable across re-ingestion."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Where each page (of a PDF; a slide of a deck) starts in ``text``, ascending: page n starts
    # at page_starts[n - 1]. Empty for formats without pages.
    page_starts: tuple[int, ...] = ()


def document_to_dict(doc: Document) -> dict[str, Any]:
    """A document as the ingestion route takes it (what a client sends of one it loaded)."""
    body: dict[str, Any] = {"id": doc.id, "text": doc.text, "title": doc.title, "metadata": dict(doc.metadata)}
    if doc.page_starts:
        body["page_starts"] = list(doc.page_starts)
    return body


def document_from_dict(raw: Mapping[str, Any]) -> Document:
    """The inverse of `document_to_dict` (a document kept by a job, or sent to a worker)."""
    return Document(
        id=raw["id"],
        text=raw["text"],
        title=raw.get("title", ""),
        metadata=raw.get("metadata", {}),
        page_starts=tuple(raw.get("page_starts", ())),
    )


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    page: int | None = None  # first page the chunk is on (1-based), None without pages
    page_end: int | None = None  # last page
    section: str = ""  # the heading the chunk's text sits under, "" before any


@dataclass(frozen=True)
class SparseVector:
    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Point:
    """One stored chunk: its id, both vectors and the payload the store keeps."""

    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    text: str
    doc_id: str
    chunk_index: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""
    page: int | None = None
    page_end: int | None = None
    section: str = ""


def hit_to_dict(hit: Hit) -> dict[str, Any]:
    # Field by field: asdict deep-copies, which on a thousand hits is tens of milliseconds of the
    # event loop per search.
    return {
        "id": hit.id,
        "score": hit.score,
        "text": hit.text,
        "doc_id": hit.doc_id,
        "chunk_index": hit.chunk_index,
        "metadata": dict(hit.metadata),
        "title": hit.title,
        "page": hit.page,
        "page_end": hit.page_end,
        "section": hit.section,
    }


def source_location(hit: Mapping[str, Any]) -> str:
    """Where a source (a hit as a dict) comes from, as a citation says it: "manual.pdf, p. 4–5 · Installing"."""
    metadata = hit.get("metadata") or {}
    where = str(metadata.get("source") or hit.get("title") or hit.get("doc_id") or "?")
    page, page_end = hit.get("page"), hit.get("page_end")
    if isinstance(page, int):
        where += f", p. {page}" if not isinstance(page_end, int) or page_end == page else f", pp. {page}–{page_end}"
    if hit.get("section"):
        where += f" · {hit['section']}"
    return where


def hit_from_dict(data: Mapping[str, Any]) -> Hit:
    return Hit(**data)


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection remembers about how it was built."""

    name: str
    embedder: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    bm25_avg_len: float = 0.0  # 0: not yet known (set from the first ingestion)
    created_at: str = ""
    # metadata key → payload index type; fixed at creation, when the indexes are built
    indexed_fields: Mapping[str, IndexKind] = field(default_factory=dict)
    quantization: str = "none"  # or "int8": also 8-bit vectors in RAM, searched and then rescored


@dataclass(frozen=True)
class CollectionStats:
    spec: CollectionSpec
    documents: int
    chunks: int


@dataclass(frozen=True)
class DocumentState:
    """What the store holds of one document: enough to decide skip / replace / finish."""

    doc_id: str
    content_hash: str
    chunk_count: int  # chunks the document should have (from the payload)
    present: int  # chunks actually stored with that hash
    total: int = 0  # all stored chunks of the document, any version (more than present: stale ones left)
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """What a search returns: the hits, the mode actually used and every fallback taken."""

    query: str
    collection: str
    hits: tuple[Hit, ...]
    mode_used: SearchMode
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)


TurnRole = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a conversation, as the caller sends it with a follow-up."""

    role: TurnRole
    content: str


@dataclass(frozen=True)
class AnswerResult:
    answer: str
    sources: tuple[Hit, ...]
    generator: str
    mode_used: SearchMode
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    standalone_query: str = ""  # what was searched: the question, made standalone from the history


class Embedder(Protocol):
    """Turns text into dense vectors; also owns the tokenizer chunks are sized with."""

    name: str  # e.g. "local:all-MiniLM-L6-v2"; stored with each collection
    dimension: int
    breaker_name: str  # "local_embedding" or "ollama_embedding"
    max_tokens: int  # longest input (in the tokenizer's tokens) the model reads in full

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass(frozen=True)
class GenerationOptions:
    """What a caller asks of how the answer is written, for a generator that is an LLM: a chat
    client's system messages (added to the prompt's rules, never replacing them), its sampling
    temperature and a cap on the answer's tokens. ``None`` leaves the model's own setting. The
    extractive generator quotes passages and has nothing to apply them to."""

    instructions: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None


DEFAULT_GENERATION = GenerationOptions()


class Generator(Protocol):
    """Writes an answer from a question and numbered context passages."""

    name: str
    breaker_name: str  # "local_generation" or "ollama_generation"

    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str: ...

    def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]: ...


class Condenser(Protocol):
    """Rewrites a follow-up into one standalone question from the conversation before it: what is
    searched instead of the follow-up. Only LLM backends have one; the logic checks its reply."""

    name: str
    breaker_name: str  # "ollama_condense" or "openai_condense": apart from the answers' breaker

    async def condense(self, history: Sequence[Turn], question: str) -> str: ...


class VectorStore(Protocol):
    """A Qdrant-backed chunk store. Methods are synchronous and thread-safe; the pipeline
    calls them from a worker thread. Every method raises ragkit errors only."""

    name: str  # "edge" or "qdrant"

    def create_collection(self, spec: CollectionSpec) -> None: ...

    def get_collection(self, name: str) -> CollectionSpec: ...

    def update_collection(self, spec: CollectionSpec) -> None: ...

    def list_collections(self) -> list[CollectionSpec]: ...

    def delete_collection(self, name: str) -> None: ...

    def stats(self, name: str) -> CollectionStats: ...

    def upsert(self, name: str, points: Sequence[Point]) -> None: ...

    def scroll_points(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]: ...

    def document_state(self, name: str, doc_id: str) -> DocumentState | None: ...

    def document_chunks(self, name: str, doc_id: str) -> tuple[DocumentState, list[Chunk]] | None: ...

    def delete_stale(self, name: str, doc_id: str, keep_hash: str, keep_count: int) -> int: ...

    def delete_document(self, name: str, doc_id: str) -> int: ...

    def list_documents(self, name: str, limit: int = 100, offset: int = 0) -> list[DocumentState]: ...

    def search(
        self,
        name: str,
        *,
        mode: SearchMode,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]: ...

    def optimize(self, name: str) -> None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class Store(Protocol):
    """The store as the logic layer sees it: `VectorStore`'s operations, awaitable, each already
    behind its circuit breaker and deadline (`ragkit.adapters.guarded.GuardedStore`)."""

    name: str

    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionSpec:
        """``fresh=False`` may answer from a short-lived cache (the search path)."""

    async def create_collection(self, spec: CollectionSpec) -> None: ...

    async def update_collection(self, spec: CollectionSpec) -> None: ...

    async def delete_collection(self, name: str) -> None: ...

    async def list_collections(self) -> list[CollectionSpec]: ...

    async def stats(self, name: str) -> CollectionStats: ...

    async def optimize(self, name: str) -> None: ...

    async def upsert(self, name: str, points: Sequence[Point]) -> None: ...

    async def scroll_points(self, name: str, offset: str | None, limit: int) -> tuple[list[Point], str | None]: ...

    async def document_state(self, name: str, doc_id: str) -> DocumentState | None: ...

    async def document_chunks(self, name: str, doc_id: str) -> tuple[DocumentState, list[Chunk]] | None: ...

    async def delete_stale(self, name: str, doc_id: str, keep_hash: str, keep_count: int) -> int: ...

    async def delete_document(self, name: str, doc_id: str) -> int: ...

    async def list_documents(self, name: str, limit: int = 100, offset: int = 0) -> list[DocumentState]: ...

    async def search(
        self,
        name: str,
        *,
        mode: SearchMode,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        top_k: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True)
class WindowCount:
    """One hit counted by `Cache.incr_window`."""

    count: int  # hits in the current window, this one included
    resets_in: float  # seconds until this window ends and the count starts again from 1


class Cache(Protocol):
    """Bytes by key with a time to live, plus fixed-window counters for rate limits."""

    name: str  # "memory" or "redis"

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def incr_window(self, key: str, window_seconds: float) -> WindowCount:
        """Count one hit on ``key`` in the current fixed window of ``window_seconds``.

        Windows are aligned to the epoch, ``[k * window, (k + 1) * window)``, never opened by a
        key's first hit: every backend and replica then agrees on when a window ends, and
        ``resets_in`` (from the backend's own clock) is when the next hit counts as 1 again.
        """

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
