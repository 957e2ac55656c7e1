"""`/health`, `/health/live`, `/health/ready` and `/metrics`: open, and free of secrets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ragkit import __version__
from ragkit.services import Services

router = APIRouter(tags=["health"])


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


def _services(request: Request) -> Services:
    return request.app.state.services


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Overall status, every circuit breaker's state, and each dependency."""
    services = _services(request)
    store_error = await services.store.probe()
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


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready to serve: the store answers."""
    if await _services(request).store.probe() is not None:
        return JSONResponse(status_code=503, content={"status": "not_ready"}, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(_services(request).metrics.render(), media_type="text/plain; version=0.0.4")
