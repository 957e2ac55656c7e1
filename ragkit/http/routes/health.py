"""`/health`, `/health/live`, `/health/ready` and `/metrics`: open, and free of secrets.

Readiness means the configured dependencies answer, not just that the process is up: the store,
the embedder and the generator are each checked with a cheap request of their own (a store ping;
for Ollama a one-word embedding and `POST /api/show` for the chat model; nothing for the
in-process backends, ready once loaded). The checks go around the breakers, so they see a host
come back while its breaker is still open, and each is bounded by a short timeout. Their results
are kept for a few seconds (`DependencyChecks`), so `/health`, `/health/ready` and `/metrics`
polled by several watchers cost the dependencies one request per check period, and `/health`
reports each dependency's last check: when, how long, and what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ragkit import __version__
from ragkit.services import Services

log = logging.getLogger("ragkit.health")
router = APIRouter(tags=["health"])

# Short: a probe waits for a host that does not answer, and /health waits for the probe.
PROBE_TIMEOUT_S = 2.0
# A dependency that answered is asked again after this long; one that failed sooner, so that a
# recovery shows within about a second, at a cost of one cheap request per second per replica.
CHECK_TTL_S = 5.0
FAILED_CHECK_TTL_S = 1.0


@dataclass(frozen=True)
class CheckResult:
    at: str  # ISO 8601, UTC: when the check started
    ok: bool
    error: str | None
    duration_ms: float


class _Check:
    """One dependency's check: the last result, reused until it expires, and at most one probe in
    flight however many requests ask at once."""

    def __init__(self, probe: Callable[[], Awaitable[str | None]]) -> None:
        self._probe = probe
        self.last: CheckResult | None = None
        self.answered_once = False
        self._expires = 0.0
        self._running: asyncio.Future[CheckResult] | None = None

    async def result(self) -> CheckResult:
        if self.last is not None and time.monotonic() < self._expires:
            return self.last
        running = self._running
        if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
            running = self._running = asyncio.ensure_future(self._run())
        # Shielded: a caller that goes away must not cancel the probe the others are waiting on.
        return await asyncio.shield(running)

    async def _run(self) -> CheckResult:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        started = time.perf_counter()
        try:
            error = await self._probe()
        except Exception as exc:  # a bug in a probe must not take /health down with it
            log.exception("health check failed")
            error = f"the check itself failed: {exc!r}"
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        result = CheckResult(at=at, ok=error is None, error=error, duration_ms=duration_ms)
        self.last = result
        self.answered_once = self.answered_once or result.ok
        self._expires = time.monotonic() + (CHECK_TTL_S if result.ok else FAILED_CHECK_TTL_S)
        return result


class DependencyChecks:
    """The checks of one app's store, embedder and generator (see the module docstring)."""

    def __init__(self, services: Services, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._checks = {
            "store": _Check(lambda: services.store.probe(timeout_s)),
            "embedder": _Check(lambda: services.embedder.probe(timeout_s)),
            "generator": _Check(lambda: services.generator.probe(timeout_s)),
        }

    async def results(self) -> dict[str, CheckResult]:
        """The current result of every check, probing (concurrently) those that are stale."""
        results = await asyncio.gather(*(check.result() for check in self._checks.values()))
        return dict(zip(self._checks, results, strict=True))

    async def not_ready(self) -> dict[str, str | None]:
        """What keeps this replica from serving: a store that does not answer now, or a model that
        has not answered once since start. A model that fails later does not take the replica out
        of rotation: its breaker and the degradation ladder answer for it (sparse search, the
        extractive answer), and /health says so."""
        results = await self.results()
        return {
            role: result.error
            for role, result in results.items()
            if not result.ok and (role == "store" or not self._checks[role].answered_once)
        }


def _checks(app: FastAPI) -> DependencyChecks:
    checks = getattr(app.state, "dependency_checks", None)
    if checks is None:  # made on first use, with no await in between: one per app
        checks = app.state.dependency_checks = DependencyChecks(app.state.services)
    return checks


def _dependencies(services: Services, checks: dict[str, CheckResult]) -> dict[str, Any]:
    states = services.breakers.states()

    def status(role: str, breaker: str | None) -> str:
        if not checks[role].ok:
            return "failing"
        if breaker is None:
            return "ok"
        return {"closed": "ok", "half_open": "recovering", "open": "failing"}[states[breaker]]

    def entry(role: str, backend: str, breaker: str | None, adapter: object = None) -> dict[str, Any]:
        check = checks[role]
        described = {
            "backend": backend,
            "status": status(role, breaker),
            "error": check.error,
            "last_check": asdict(check),
        }
        hosts = getattr(adapter, "hosts", None)  # several Ollama hosts: each one's breaker and check
        if hosts is not None:
            described["hosts"] = hosts()
        return described

    cache_status = "ok"
    if getattr(services.cache, "degraded", False):
        cache_status = "failing (using the in-process cache)"
    return {
        "store": entry("store", services.store.name, None),
        "embedder": entry("embedder", services.embedder.name, services.embedder.breaker_name, services.embedder),
        "generator": entry(
            "generator", services.generator.name, services.generator.breaker_name, services.generator
        ),
        "cache": {"backend": services.cache.name, "status": cache_status},
    }


def _services(request: Request) -> Services:
    return request.app.state.services


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Overall status, every circuit breaker's state, and each dependency with its last check."""
    services = _services(request)
    checks = await _checks(request.app).results()
    breakers = services.breakers.states()
    if not checks["store"].ok:
        status = "down"
    elif (
        any(state != "closed" for state in breakers.values())
        or getattr(services.cache, "degraded", False)
        or not all(check.ok for check in checks.values())
    ):
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "circuit_breakers": breakers,
        "dependencies": _dependencies(services, checks),
        "version": __version__,
    }


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "alive"}


@router.get(
    "/health/ready",
    responses={
        200: {"content": {"application/json": {"schema": {"type": "object"}}}},
        503: {"description": "Not ready: a dependency does not answer", "content": {"application/json": {}}},
    },
)
async def ready(request: Request) -> JSONResponse:
    """Ready to serve: the store answers, and the embedder and the generator configured have
    answered once since start. 503 names those that did not, with what went wrong."""
    failing = await _checks(request.app).not_ready()
    if failing:
        return JSONResponse(
            status_code=503, content={"status": "not_ready", "failing": failing}, headers={"Retry-After": "5"}
        )
    return JSONResponse({"status": "ready"})


# Prometheus' text exposition format, version 0.0.4 (what prometheus_client renders).
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus metrics", "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    services = _services(request)
    # Readiness as a series (ragkit_ready), judged by /health/ready itself at each scrape, so an
    # alert can watch it without a probe of its own (deploy/prometheus/alerts.yml).
    services.metrics.ready.set(1 if (await ready(request)).status_code == 200 else 0)
    return Response(services.metrics.render(), media_type=METRICS_MEDIA_TYPE)
