"""Errors → HTTP: the ragkit error tree carries each status and code; a caller's mistake is never
a 500, and an unexpected error is logged and answered without its details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragkit.core.errors import DependencyError, RagkitError, RateLimited

log = logging.getLogger("ragkit.http")


def error_response(exc: RagkitError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (DependencyError, RateLimited)) and retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(status_code=exc.status, content={"error": exc.to_dict()}, headers=headers)


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
