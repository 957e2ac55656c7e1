"""The HTTP service: `create_app(settings)` builds a FastAPI app that owns the services.

The app wires the pieces of this package together: the gate (auth + rate limits) every /api,
/openai and /mcp route passes, the body-size limit, the error → HTTP mapping, the routes by resource, request
metrics, and the deprecated unversioned alias of the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request

from ragkit import __version__
from ragkit.core.config import Settings, get_settings
from ragkit.core.errors import RagkitError
from ragkit.http.auth import ServiceTokens
from ragkit.http.body_limit import BodyLimit
from ragkit.http.cors import StrictCORS, cors_options, parse_origins
from ragkit.http.errors import install_error_handlers
from ragkit.http.gate import Gate
from ragkit.http.observe import Observe
from ragkit.http.openapi import install_openapi
from ragkit.http.ratelimit import RateLimitHeaders
from ragkit.http.request_id import RequestId
from ragkit.http.routes import collections, documents, feedback, health, jobs, mcp, openai_compat, rag, transfer
from ragkit.rag.ingest import learn_dimension
from ragkit.services import Services, build_services

log = logging.getLogger("ragkit.http")

API_PREFIX = "/api/v1/rag"
DEPRECATED_PREFIX = "/api/rag"  # the unversioned API of old clients: same handlers, a Deprecation header


def _route_label(request: Request) -> str:
    """The route template (`/api/v1/rag/collections/{name}`), never the raw path: label values
    must stay few, whatever callers put in their URLs."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    for prefix in (API_PREFIX, DEPRECATED_PREFIX, openai_compat.PREFIX):
        # A route of an included router may carry its path without the prefix it is mounted at.
        if request.url.path.startswith(prefix + "/") and not template.startswith(prefix):
            return prefix + template
    return template


async def _warm_up(services: Services) -> None:
    """Load the model and learn the embedding size before the first request, not during it."""
    load = getattr(services.embedder, "load", None)
    if load is not None:
        await asyncio.to_thread(load)
    try:
        await learn_dimension(services.embedder)
    except RagkitError as exc:  # Ollama may be down at start; it is retried on first use
        log.warning("could not reach the embedder at start: %s", exc.message)


def _freeze_heap() -> None:
    """Keep the garbage collector off what was loaded to serve (the model, torch, the libraries):
    it lives as long as the process, and every full collection traversed all of it again, some
    300 ms with every thread waiting, one caller's large answer enough to trigger one. Only for a
    service that owns its process (`ragkit serve`); frozen objects are never collected."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The service app. Refuses to start (ConfigurationError) without valid service secrets."""
    settings = settings or get_settings()
    ServiceTokens(settings.service_secrets)  # fail at once, before loading any model
    cors_origins = parse_origins(settings.cors_origins)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        built = services or await asyncio.to_thread(build_services, settings)
        await _warm_up(built)
        if owned:
            _freeze_heap()
        app.state.services = built
        app.state.gate = Gate(settings, built.cache, built.metrics)
        app.state.mcp = mcp.McpEndpoint(built)
        jobs = asyncio.create_task(built.jobs.run(), name="ingestion jobs")
        try:
            async with app.state.mcp.running():
                yield
        finally:
            # A job cut off here is still `running` in the journal: the next start resumes it.
            jobs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jobs
            app.state.gate.close()  # the audit log's pending summary line, and its file
            await built.optimizer.wait()
            if owned:
                await built.close()

    app = FastAPI(
        title="ragkit",
        version=__version__,
        description="Retrieval-augmented generation over your document collections. "
        "Every /api/v1 route needs the X-Service-Token header.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_openapi(app, settings)
    for module in (rag, collections, documents, feedback):
        app.include_router(module.router, prefix=API_PREFIX, tags=[module.TAG])
        app.include_router(module.router, prefix=DEPRECATED_PREFIX, tags=["deprecated"], deprecated=True)
    app.include_router(jobs.router, prefix=API_PREFIX, tags=[jobs.TAG])  # newer than the deprecated alias
    app.include_router(transfer.router, prefix=API_PREFIX, tags=[transfer.TAG])  # so is this
    app.include_router(openai_compat.router, prefix=openai_compat.PREFIX, tags=[openai_compat.TAG])
    app.include_router(mcp.router, tags=[mcp.TAG])
    app.include_router(health.router)

    app.add_middleware(
        Observe,
        route_label=lambda scope: _route_label(Request(scope)),
        deprecated_prefix=DEPRECATED_PREFIX,
        successor_prefix=API_PREFIX,
    )
    # An import's body is a whole collection: its route bounds each line instead (routes/transfer.py).
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, streamed={API_PREFIX + transfer.IMPORT_PATH})
    app.add_middleware(RateLimitHeaders)  # the caller's quota (left by the gate) on every answer
    if cors_origins:  # outermost, so that errors (401, 413, 429) reach an allowed page readable
        app.add_middleware(StrictCORS, **cors_options(cors_origins))
    # Outermost of all: the request id is set before anything else runs, so every log line and
    # every response (a CORS preflight, a 413, a 429) carries it.
    app.add_middleware(RequestId, route_label=lambda scope: _route_label(Request(scope)))
    return app
