"""The HTTP service: `create_app(settings)` builds a FastAPI app that owns the services.

Cross-cutting concerns live here: authentication and rate limits (the `Gate`), request size
limits, error → HTTP mapping (a caller's mistake is never a 500), health and metrics, and
the deprecated unversioned alias of the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragkit import __version__
from ragkit.auth import SERVICE_PRINCIPAL, AuditLog, JwtVerifier, Principal, ServiceTokens
from ragkit.config import Settings, get_settings
from ragkit.errors import DependencyError, Forbidden, RagkitError, RateLimited, Unauthorized
from ragkit.feedback_routes import feedback_router
from ragkit.ingest import learn_dimension
from ragkit.ratelimit import RateLimit, RateLimiter
from ragkit.routes import router
from ragkit.services import Services, build_services

log = logging.getLogger("ragkit.service")

UNAUTHORIZED_MESSAGE = "missing or invalid credentials: send the service token in the X-Service-Token header"


class Gate:
    """Authenticates every /api route and applies rate limits; audit-logs each refusal."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self._tokens = ServiceTokens(settings.service_secrets)
        self._jwt = (
            JwtVerifier(
                secret=settings.jwt_secret,
                public_key=settings.jwt_public_key,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
            )
            if settings.jwt_secret or settings.jwt_public_key
            else None
        )
        self._audit = AuditLog(settings.data_dir / "logs" / "auth-audit.jsonl")
        self._limiter = RateLimiter(
            services.cache,
            RateLimit.parse(settings.rate_limit, "RAGKIT_RATE_LIMIT") if settings.rate_limit else None,
            RateLimit.parse(settings.service_rate_limit, "RAGKIT_SERVICE_RATE_LIMIT")
            if settings.service_rate_limit
            else None,
        )

    def _refuse(self, request: Request, reason: str) -> Unauthorized:
        client = request.client.host if request.client else "unknown"
        self._audit.failure(client=client, method=request.method, route=request.url.path, reason=reason)
        # One body for every failure, so a caller cannot tell a wrong token from a missing one.
        return Unauthorized(UNAUTHORIZED_MESSAGE)

    async def admit(self, request: Request, scope: str) -> Principal:
        principal = self._authenticate(request)
        if scope not in principal.scopes:
            raise Forbidden(f"this token lacks the '{scope}' scope", required_scope=scope)
        await self._limiter.check(principal.subject, principal.kind)
        return principal

    def _authenticate(self, request: Request) -> Principal:
        token = request.headers.get("x-service-token")
        if token is not None:
            if self._tokens.matches(token):
                return SERVICE_PRINCIPAL
            raise self._refuse(request, "invalid_service_token")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and self._jwt is not None:
            try:
                return self._jwt.verify(bearer[7:].strip())
            except Unauthorized as exc:
                raise self._refuse(request, str(exc.details.get("reason", "invalid_jwt"))) from exc
        raise self._refuse(request, "missing_credentials")


class Optimizer:
    """Builds a collection's HNSW index off the request path after ingestion.

    Qdrant Edge has no background optimizer: until this runs, new points are searched by
    brute force. Requests for the same collection while it runs coalesce into one more run.
    """

    def __init__(self, services: Services) -> None:
        self._services = services
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()

    def schedule(self, collection: str) -> None:
        if not self._services.settings.optimize_after_ingest:
            return
        if collection in self._running:
            self._again.add(collection)
            return
        self._running[collection] = asyncio.create_task(self._run(collection))

    async def _run(self, collection: str) -> None:
        try:
            while True:
                self._again.discard(collection)
                started = time.perf_counter()
                try:
                    await self._services.pipeline.store_call("qdrant_upsert", self._services.store.optimize, collection)
                except RagkitError as exc:
                    log.warning("optimizing %s failed: %s", collection, exc.message)
                    return
                self._services.metrics.stage_latency.labels("optimize").observe(time.perf_counter() - started)
                if collection not in self._again:
                    return
        finally:
            self._running.pop(collection, None)

    async def wait(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)


API_PREFIXES = ("/api/v1/rag", "/api/rag")


def _route_label(request: Request) -> str:
    """The route template (`/api/v1/rag/collections/{name}`), never the raw path: label values
    must stay few, whatever callers put in their URLs."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return "unmatched"
    for prefix in API_PREFIXES:
        if request.url.path.startswith(prefix + "/") and not template.startswith(prefix):
            return prefix + template
    return template


async def _warm_up(services: Services) -> None:
    """Load the model and learn the embedding size before the first request, not during it."""
    load = getattr(services.embedder, "load", None)
    if load is not None:
        await asyncio.to_thread(load)
    try:
        await learn_dimension(services.embedder, services.breakers)
    except RagkitError as exc:  # Ollama may be down at start; it is retried on first use
        log.warning("could not reach the embedder at start: %s", exc.message)


def _error_response(exc: RagkitError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (DependencyError, RateLimited)) and retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(status_code=exc.status, content={"error": exc.to_dict()}, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagkitError)
    async def ragkit_error(request: Request, exc: RagkitError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s %s → %s: %s", request.method, request.url.path, exc.status, exc.message)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        ]
        return JSONResponse(
            status_code=422,
            content={"error": {"code": "invalid_input", "message": "; ".join(problems), "fields": problems}},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            "no such route; the API is under /api/v1/rag (see /docs)" if exc.status_code == 404 else str(exc.detail)
        )
        return JSONResponse(status_code=exc.status_code, content={"error": {"code": code, "message": message}})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500, content={"error": {"code": "internal", "message": "internal error; see the service log"}}
        )


class BodyLimit:
    """Refuses request bodies over the limit with 413, by header or by counting the stream."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        seen = 0
        overflow = False
        started = False

        async def counting_receive() -> dict:
            nonlocal seen, overflow
            if overflow:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # Stop reading: to the app it looks like the client went away; we answer 413.
                overflow = True
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if overflow and not started:
                return  # whatever the app makes of a cut-off body is moot
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not overflow:
                raise
        if overflow and not started:
            await self._too_large(send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes; send smaller batches"

    async def _too_large(self, send: Any) -> None:
        response = JSONResponse(
            status_code=413,
            content={"error": {"code": "payload_too_large", "message": self._message()}},
        )
        await response({"type": "http"}, None, send)


async def _store_problem(services: Services) -> str | None:
    """None when the store answers a ping within 2 s, else what went wrong."""
    try:
        await asyncio.wait_for(asyncio.to_thread(services.store.ping), timeout=2.0)
    except RagkitError as exc:
        return exc.message
    except TimeoutError:
        return "no answer within 2 s"
    return None


def _dependencies(services: Services, store_ok: bool, store_error: str | None) -> dict[str, Any]:
    states = services.breakers.states()

    def status(breaker: str) -> str:
        return {"closed": "ok", "half_open": "recovering", "open": "failing"}[states[breaker]]

    cache_status = "ok"
    if getattr(services.cache, "degraded", False):
        cache_status = "failing (using the in-process cache)"
    return {
        "store": {"backend": services.store.name, "status": "ok" if store_ok else "failing", "error": store_error},
        "embedder": {"backend": services.embedder.name, "status": status(services.embedder.breaker_name)},
        "generator": {"backend": services.generator.name, "status": status(services.generator.breaker_name)},
        "cache": {"backend": services.cache.name, "status": cache_status},
    }


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The service app. Refuses to start (ConfigurationError) without valid service secrets."""
    settings = settings or get_settings()
    ServiceTokens(settings.service_secrets)  # fail at once, before loading any model

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        built = services or await asyncio.to_thread(build_services, settings)
        await _warm_up(built)
        app.state.services = built
        app.state.gate = Gate(settings, built)
        app.state.optimizer = Optimizer(built)
        try:
            yield
        finally:
            await app.state.optimizer.wait()
            if owned:
                await built.close()

    app = FastAPI(
        title="ragkit",
        version=__version__,
        description="Retrieval-augmented generation over your document collections. "
        "Every /api/v1 route needs the X-Service-Token header.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.include_router(router, prefix="/api/v1/rag", tags=["rag"])
    app.include_router(router, prefix="/api/rag", tags=["deprecated"], deprecated=True)
    app.include_router(feedback_router, prefix="/api/v1/rag", tags=["feedback"])
    app.include_router(feedback_router, prefix="/api/rag", tags=["deprecated"], deprecated=True)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        path = _route_label(request)
        if request.url.path.startswith("/api/rag/"):
            response.headers["Deprecation"] = "true"
            response.headers["Link"] = (
                f'<{request.url.path.replace("/api/rag/", "/api/v1/rag/", 1)}>; rel="successor-version"'
            )
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
            services.metrics.request_latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        """Overall status, every circuit breaker's state, and each dependency."""
        services: Services = request.app.state.services
        store_error = await _store_problem(services)
        store_ok = store_error is None
        breakers = services.breakers.states()
        if not store_ok:
            status = "down"
        elif any(state != "closed" for state in breakers.values()) or getattr(services.cache, "degraded", False):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "circuit_breakers": breakers,
            "dependencies": _dependencies(services, store_ok, store_error),
            "version": __version__,
        }

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> JSONResponse:
        """Ready to serve: the store answers."""
        services: Services = request.app.state.services
        if await _store_problem(services) is not None:
            return JSONResponse(status_code=503, content={"status": "not_ready"}, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
