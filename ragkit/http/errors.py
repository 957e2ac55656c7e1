"""Errors → HTTP: the ragkit error tree carries each status and code; a caller's mistake is never
a 500, and an unexpected error is logged and answered without its details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from ragkit.core.context import REQUEST_ID_HEADER, current_request_id
from ragkit.core.errors import DependencyError, RagkitError, RateLimited

log = logging.getLogger("ragkit.http")


def error_response(exc: RagkitError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (DependencyError, RateLimited)) and retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(status_code=exc.status, content={"error": exc.to_dict()}, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path. Starlette names only those of the first route
    that matched the path, and a path may have several (`GET` and `POST /search`)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagkitError)
    async def ragkit_error(request: Request, exc: RagkitError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s %s → %s: %s", request.method, request.url.path, exc.status, exc.message)
        return error_response(exc)

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
        if exc.status_code == 400:
            # What FastAPI and Starlette answer for a body they could not read at all (JSON that is
            # not UTF-8, broken multipart): invalid input like any other malformed body, so a 422.
            message = f"the request body could not be read ({exc.detail}); send UTF-8 JSON or multipart files"
            return JSONResponse(status_code=422, content={"error": {"code": "invalid_input", "message": message}})
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            "no such route; the API is under /api/v1/rag (see /docs)" if exc.status_code == 404 else str(exc.detail)
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(
            status_code=exc.status_code, content={"error": {"code": code, "message": message}}, headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Answered outside every middleware of ours (Starlette's error middleware is outermost),
        # so the request id is added here: it is what finds this error's traceback in the log.
        request_id = current_request_id()
        return JSONResponse(
            status_code=500,
            content={"error": {"code": "internal", "message": "internal error; see the service log"}},
            headers={REQUEST_ID_HEADER: request_id} if request_id else None,
        )
