"""`ragkit mcp`: the MCP server over stdio, for MCP clients that start their servers as commands
(desktop assistants, IDEs). Its tools call the running service's API, which owns the collections;
the service also offers the same server over HTTP at /mcp."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import click

from ragkit.cli.common import client_from_environment, friendly_errors


class ClientLibrary:
    """The MCP tools' `Library` over the service's HTTP API. The client is synchronous: each call
    runs in a worker thread, so the protocol keeps reading while a slow answer is written."""

    def __init__(self, client: Any) -> None:  # noqa: ANN401 - a RagkitClient, imported lazily
        self._client = client

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        return await anyio.to_thread.run_sync(lambda: getattr(self._client, method)(*args, **kwargs))

    async def collections(self) -> list[dict[str, Any]]:
        return await self._call("collections")

    async def search(
        self, collection: str, query: str, *, top_k: int, mode: str, filters: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        return await self._call("search", query, collection, top_k=top_k, mode=mode, filters=filters)

    async def ask(
        self, collection: str, question: str, *, top_k: int, history: Sequence[Mapping[str, str]]
    ) -> dict[str, Any]:
        return await self._call("query", question, collection, top_k=top_k, history=history)

    async def document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return await self._call("document", collection, doc_id)

    async def documents(self, collection: str, *, limit: int) -> list[dict[str, Any]]:
        listed = await self._call("documents", collection, limit=limit)
        return [{k: d[k] for k in ("doc_id", "title", "chunks")} for d in listed]


@click.command()
@friendly_errors
def mcp() -> None:
    """Serve ragkit's collections to an MCP client over stdio.

    The client starts this command; its tools (search, ask, list_collections, get_document) and
    resources call the service at RAGKIT_API_URL with INTER_SERVICE_SECRET (or `.env`). Only the
    protocol is written to stdout.

    Example: ragkit mcp
    """
    from ragkit.mcp_server import build_server

    client = client_from_environment()
    click.echo(f"ragkit MCP server on stdio, for the service at {client.api_url}", err=True)
    try:
        build_server(ClientLibrary(client)).run("stdio")
    finally:
        client.close()
