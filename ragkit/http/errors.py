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


OPENAI_PREFIX = "/openai/"
# OpenAI's error "type" for each status: its clients show it, and raise by the status.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


MCP_PATH = "/mcp"
MCP_REFUSED = -32000  # JSON-RPC's first implementation-defined server error


def _body(request: Request | None, status: int, error: dict) -> dict:
    """``{"error": {...}}``; on the OpenAI-compatible routes in OpenAI's shape too (``type`` and
    ``param`` beside ragkit's ``code`` and ``message``), so OpenAI clients read it as their own; on
    the MCP endpoint a JSON-RPC error (ragkit's error, with the status, as its ``data``), which MCP
    clients show with its message where they would otherwise say only that the server failed."""
    if request is not None and request.url.path == MCP_PATH:
        data = {**error, "status": status}
        return {"jsonrpc": "2.0", "id": None, "error": {"code": MCP_REFUSED, "message": error["message"], "data": data}}
    if request is not None and request.url.path.startswith(OPENAI_PREFIX):
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        error = {**error, "type": kind, "param": None}
    return {"error": error}


def error_response(exc: RagkitError, request: Request | None = None) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (DependencyError, RateLimited)) and retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(status_code=exc.status, content=_body(request, exc.status, exc.to_dict()), headers=headers)


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
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        ]
        return JSONResponse(
            status_code=422,
            content=_body(request, 422, {"code": "invalid_input", "message": "; ".join(problems), "fields": problems}),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # What FastAPI and Starlette answer for a body they could not read at all (JSON that is
            # not UTF-8, broken multipart): invalid input like any other malformed body, so a 422.
            message = f"the request body could not be read ({exc.detail}); send UTF-8 JSON or multipart files"
            body = _body(request, 422, {"code": "invalid_input", "message": message})
            return JSONResponse(status_code=422, content=body)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            "no such route; the API is under /api/v1/rag (see /docs)" if exc.status_code == 404 else str(exc.detail)
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        body = _body(request, exc.status_code, {"code": code, "message": message})
        return JSONResponse(status_code=exc.status_code, content=body, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Answered outside every middleware of ours (Starlette's error middleware is outermost),
        # so the request id is added here: it is what finds this error's traceback in the log.
        request_id = current_request_id()
        return JSONResponse(
            status_code=500,
            content=_body(request, 500, {"code": "internal", "message": "internal error; see the service log"}),
            headers={REQUEST_ID_HEADER: request_id} if request_id else None,
        )
