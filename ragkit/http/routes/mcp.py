"""`/mcp`: the MCP server (`ragkit.mcp_server`) over streamable HTTP, behind the gate.

Every request passes the gate as a native route does (the service token or an end-user JWT, as
``X-Service-Token`` or ``Authorization: Bearer``; the ``read`` scope; the rate limit), and is then
handed to the SDK's transport. It runs stateless, answering each POST with JSON: no session is
kept between requests, so replicas behind a load balancer serve any client without sticky
sessions, and every tool call is admitted (and counted) on its own.

The tools call the same services as the routes, and answer in the routes' shapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from ragkit.http.deps import require
from ragkit.http.routes.collections import collection_out
from ragkit.http.routes.documents import document_out
from ragkit.http.routes.rag import answer_response, search_response
from ragkit.http.schemas import DEPENDENCIES, GATED, error_responses
from ragkit.mcp_server import build_server
from ragkit.rag.conversation import Turn
from ragkit.services import Services

TAG = "mcp"
PATH = "/mcp"
router = APIRouter()


class ServiceLibrary:
    """The MCP tools' `Library` on this service's own collections and pipeline."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def collections(self) -> list[dict[str, Any]]:
        return [collection_out(s) for s in await self._services.collections.all_stats()]

    async def search(
        self, collection: str, query: str, *, top_k: int, mode: str, filters: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        found = await self._services.pipeline.search(collection, query, top_k=top_k, mode=mode, filters=filters)
        return search_response(found)

    async def ask(
        self, collection: str, question: str, *, top_k: int, history: Sequence[Mapping[str, str]]
    ) -> dict[str, Any]:
        turns = [Turn(t["role"], t["content"]) for t in history]
        return answer_response(await self._services.pipeline.answer(collection, question, top_k=top_k, history=turns))

    async def document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return document_out(collection, await self._services.collections.document(collection, doc_id))

    async def documents(self, collection: str, *, limit: int) -> list[dict[str, Any]]:
        states = await self._services.collections.documents(collection, limit=limit)
        return [{"doc_id": s.doc_id, "title": s.title, "chunks": s.present} for s in states]


class McpEndpoint:
    """The MCP server of one app and its transport, run for the app's lifetime (``running``)."""

    def __init__(self, services: Services) -> None:
        self.server = build_server(ServiceLibrary(services))
        # The SDK's DNS-rebinding check (Host and Origin allow-lists) is for servers without
        # credentials; here every request needs the token, which a rebound page never has, and
        # the Host a deployment is reached by is not known in advance.
        self.server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.transport: ASGIApp = self.server.session_manager.handle_request

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield


class _Handover(Response):
    """A response the MCP transport writes itself, once the gate has let the request in."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


_ERRORS = error_responses(*GATED, *DEPENDENCIES)
_MESSAGE = {"description": "JSON-RPC messages of the Model Context Protocol"}
_REFUSED = {"description": "A JSON-RPC error: a message that is not one, or a method or version not served"}
_RESPONSES = {
    200: {**_MESSAGE, "content": {"application/json": {}, "text/event-stream": {}}},
    202: {"description": "A notification, accepted"},
    400: _REFUSED,
    404: _REFUSED,
    406: {"description": "The client does not accept JSON answers"},
    **_ERRORS,
}
_STREAM = {200: {**_MESSAGE, "content": {"text/event-stream": {}}}, 405: _REFUSED, 406: _RESPONSES[406], **_ERRORS}
# What the SDK reads: one JSON-RPC message (request, notification or response) per POST.
_MESSAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["jsonrpc"],
                    # The rest is the protocol's to check: a wrong method or params is answered
                    # with a JSON-RPC error, as the SDK decides.
                    "properties": {
                        "jsonrpc": {"type": "string", "enum": ["2.0"]},
                        "method": {},
                        "id": {},
                        "params": {},
                    },
                }
            }
        },
    }
}
_DESCRIPTION = (
    "The Model Context Protocol over streamable HTTP (stateless, JSON answers): tools search, ask, "
    "list_collections and get_document, and the collections and documents as resources. Point an MCP "
    "client here with the service token as a bearer token."
)


@router.post(
    PATH, dependencies=[require("read")], responses=_RESPONSES, description=_DESCRIPTION, openapi_extra=_MESSAGE_BODY
)
async def mcp_message(request: Request) -> Response:
    """One MCP message (a JSON-RPC request or notification) from a client."""
    return _Handover(request.app.state.mcp.transport)


@router.get(PATH, dependencies=[require("read")], responses=_STREAM, description=_DESCRIPTION)
async def mcp_stream(request: Request) -> Response:
    """The server-to-client stream of the protocol (a stateless server sends nothing on it). No
    DELETE: a stateless server has no session to end, and its clients get no session id to send."""
    return _Handover(request.app.state.mcp.transport)
