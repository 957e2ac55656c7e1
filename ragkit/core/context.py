"""What the code serving one request may know about that request, without being handed it.

The request id lives in a context variable: the HTTP layer sets it when a request arrives, and
anything running on that request's behalf reads it — log records (`ragkit.core.logs`), the Ollama
client's outgoing calls (`ragkit.adapters.ollama_client`) — with no parameter threaded through
every signature. It lives here, at the bottom layer, so adapters can read it without importing
the HTTP package. asyncio tasks and `asyncio.to_thread` copy the context, so work a request
starts carries its id; another request's work never sees it.

The collection an answer is written from travels the same way (set by the pipeline once it has
searched), so the extractive answerer can say "not found in <collection>" without every
generator's signature growing a parameter only one of them uses.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"

request_id_var: ContextVar[str | None] = ContextVar("ragkit_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, or None outside one (start-up, background work)."""
    return request_id_var.get()


collection_var: ContextVar[str | None] = ContextVar("ragkit_collection", default=None)


def current_collection() -> str | None:
    """The collection the request being served searched, or None before it has (or outside one)."""
    return collection_var.get()
