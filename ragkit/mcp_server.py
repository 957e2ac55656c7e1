"""The Model Context Protocol server over ragkit's collections, for agents (IDE assistants,
desktop chat apps, any MCP client).

One definition, two transports. ``ragkit mcp`` serves it over stdio as a client of the running
service (the service is the one owner of the embedded store); the service itself serves it over
streamable HTTP at ``/mcp``, behind the same gate as its API. Both hand ``build_server`` a
``Library``: what the tools may do, with results in the native API's JSON shapes, so a tool's
result says what the route would (citations, ``degraded`` and ``reasons`` included).

Tools: ``list_collections``, ``search``, ``ask`` and ``get_document``. Resources: the collections
(``ragkit://collections``), one collection with its first documents, and one document's text.
A failure is a tool error whose message says what to do (a collection that does not exist names
the tool that lists them); arguments out of bounds are refused by the SDK before any work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import BaseModel, ConfigDict, Field

from ragkit import __version__
from ragkit.core.errors import NotFound, RagkitError
from ragkit.core.types import DEFAULT_TOP_K, MAX_TOP_K
from ragkit.rag.conversation import MAX_HISTORY_TURNS, MAX_TURN_CHARS

# An absolute bound on what is parsed; the service's own (RAGKIT_MAX_QUERY_CHARS) is checked in the
# domain, with the message the native API gives.
MAX_TEXT_CHARS = 100_000
DEFAULT_DOCUMENT_CHARS = 20_000  # of a document's text in one tool result: a model's context is finite
MAX_DOCUMENT_CHARS = 200_000

INSTRUCTIONS = """\
ragkit searches document collections and answers from them with citations. Call \
list_collections first to learn the collection names. Use ask for an answer written from the \
documents (its [n] markers cite sources[n-1]); use search to see the matching passages \
themselves; use get_document to read a whole document by the doc_id a result names. When a \
result says degraded: true, its reasons say what fell back (for example keyword-only search)."""


class Library(Protocol):
    """What the tools may do, in the native API's JSON shapes; raises ragkit errors."""

    async def collections(self) -> list[dict[str, Any]]: ...

    async def search(
        self, collection: str, query: str, *, top_k: int, mode: str, filters: Mapping[str, Any] | None
    ) -> dict[str, Any]: ...

    async def ask(
        self, collection: str, question: str, *, top_k: int, history: Sequence[Mapping[str, str]]
    ) -> dict[str, Any]: ...

    async def document(self, collection: str, doc_id: str) -> dict[str, Any]: ...

    async def documents(self, collection: str, *, limit: int) -> list[dict[str, Any]]: ...


class HistoryTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1, max_length=MAX_TURN_CHARS)]


Collection = Annotated[str, Field(min_length=1, max_length=255, description="A name from list_collections")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many passages to retrieve")]


def _tool_error(exc: RagkitError) -> ToolError:
    """A message a model can act on: what went wrong and, where there is one, the next step."""
    message = exc.message
    if isinstance(exc, NotFound) or getattr(exc, "status", 0) == 404:
        message += " (list_collections shows the collections there are; a search names documents by doc_id)"
    elif getattr(exc, "status", 0) == 429:
        message += " (rate limited: wait before calling again)"
    elif getattr(exc, "status", 500) >= 500:
        message += " (the service or one of its dependencies is unavailable: try again shortly)"
    return ToolError(message)


def build_server(library: Library, *, name: str = "ragkit") -> MCPServer:
    """The MCP server whose tools and resources call ``library``."""
    server = MCPServer(name, instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    async def calling(call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except RagkitError as exc:
            raise _tool_error(exc) from exc

    @server.tool(title="List collections")
    async def list_collections() -> dict[str, Any]:
        """The collections that can be searched, with their sizes (documents, chunks)."""
        return {"collections": await calling(library.collections)}

    @server.tool(title="Search a collection")
    async def search(
        collection: Collection,
        query: Text,
        top_k: TopK = DEFAULT_TOP_K,
        mode: Literal["dense", "sparse", "hybrid"] = "hybrid",
        filters: Annotated[
            dict[str, Any] | None,
            Field(description='Metadata filters as on the native API, e.g. {"lang": "en"}'),
        ] = None,
    ) -> dict[str, Any]:
        """The passages of a collection that best match a query: hybrid (meaning and keywords,
        the default), dense (meaning) or sparse (BM25 keywords); each with its doc_id, title,
        page and section, and whether the search had to fall back (degraded, reasons)."""
        return await calling(lambda: library.search(collection, query, top_k=top_k, mode=mode, filters=filters))

    @server.tool(title="Ask a collection")
    async def ask(
        collection: Collection,
        question: Text,
        history: Annotated[
            list[HistoryTurn] | None,
            Field(max_length=MAX_HISTORY_TURNS, description="Earlier turns, oldest first, for a follow-up"),
        ] = None,
        top_k: TopK = DEFAULT_TOP_K,
    ) -> dict[str, Any]:
        """An answer written only from the collection's documents, citing them as [n]: [n] is
        sources[n-1]. With history, a follow-up ("and the other option?") is made standalone
        first. degraded/reasons say what fell back (a model that was down, keyword-only search)."""
        turns = [turn.model_dump() for turn in history or ()]
        return await calling(lambda: library.ask(collection, question, top_k=top_k, history=turns))

    @server.tool(title="Read a document")
    async def get_document(
        collection: Collection,
        doc_id: Annotated[str, Field(min_length=1, max_length=1024, description="A doc_id from a result")],
        max_chars: Annotated[int, Field(ge=100, le=MAX_DOCUMENT_CHARS)] = DEFAULT_DOCUMENT_CHARS,
    ) -> dict[str, Any]:
        """One document's text (its first max_chars characters), title, metadata, and where its
        passages start (chunk, page, section)."""
        found = await calling(lambda: library.document(collection, doc_id))
        return _readable(found, max_chars)

    @server.resource("ragkit://collections", mime_type="application/json", title="Collections")
    async def collections_resource() -> str:
        """Every collection, with its size and how it was built."""
        return json.dumps(await _reading(library.collections), ensure_ascii=False)

    @server.resource("ragkit://collections/{collection}", mime_type="application/json", title="A collection")
    async def collection_resource(collection: str) -> str:
        """One collection and its first 100 documents."""
        listed = await _reading(library.collections)
        found = next((c for c in listed if c.get("name") == collection), None)
        if found is None:
            raise ResourceError(f"no collection '{collection}': read ragkit://collections for the names")
        documents = await _reading(lambda: library.documents(collection, limit=100))
        return json.dumps({**found, "documents": documents}, ensure_ascii=False)

    @server.resource(
        "ragkit://collections/{collection}/documents/{+doc_id}", mime_type="text/plain", title="A document"
    )
    async def document_resource(collection: str, doc_id: str) -> str:
        """One document's text as stored."""
        return (await _reading(lambda: library.document(collection, doc_id)))["text"]

    return server


async def _reading(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except RagkitError as exc:
        raise ResourceError(exc.message) from exc


def _readable(document: Mapping[str, Any], max_chars: int) -> dict[str, Any]:
    text = document["text"]
    return {
        "collection": document["collection"],
        "doc_id": document["doc_id"],
        "title": document["title"],
        "metadata": document["metadata"],
        "text": text[:max_chars],
        "truncated": len(text) > max_chars or not document["complete"],
        "characters": len(text),
        "passages": [{k: p[k] for k in ("chunk_index", "page", "page_end", "section")} for p in document["passages"]],
    }
