"""The request id: accepted from the caller or made here, returned on every response, and set in
`ragkit.core.context` for everything that runs on the request's behalf.

A caller (or a proxy in front) may send ``X-Request-ID`` to follow its request through our logs
and on to Ollama. The value goes into every log line and an upstream header, so it is accepted
only when it is short and made of characters that cannot break a log line or a header: letters,
digits and ``._:-``, at most 128 of them (a UUID, a W3C trace id, a ULID all fit). Anything else
— too long, spaces, quotes, control characters, non-ASCII, or several ``X-Request-ID`` headers —
is replaced by a fresh id rather than refused: a request id is for following a request, never a
reason to fail one.

`RequestId` is plain ASGI middleware, installed outermost of ours so the id is set before the
body limit, the gate or any handler runs, and written on whatever response goes out (413s,
401s, event streams). It also writes one access line per request: the route template (never the
raw path, which may carry a token), the status and the duration.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkit.core.context import REQUEST_ID_HEADER, request_id_var

MAX_REQUEST_ID_CHARS = 128
_SAFE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}")
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
# Polled every few seconds by orchestrators and Prometheus: their lines at DEBUG, not INFO.
_PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})

access_log = logging.getLogger("ragkit.http.access")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(values: list[bytes]) -> str:
    """The caller's id when there is exactly one and it is safe, else a new one."""
    if len(values) == 1:
        text = values[0].decode("latin-1")
        if _SAFE.fullmatch(text):  # fullmatch: `$` would let a trailing newline through
            return text
    return new_request_id()


class RequestId:
    def __init__(self, app: ASGIApp, route_label: Callable[[Scope], str] | None = None) -> None:
        self.app = app
        self._route_label = route_label or (lambda scope: str(scope.get("path", "")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id([value for name, value in scope.get("headers", []) if name == _HEADER])
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # what the caller gets if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The id stays set: Starlette's outermost error middleware logs and answers an
            # unhandled error after this returns, and both must still carry the id.
            self._log_access(scope, status, started)
            raise
        # Once the app is done, streams included: a moment after the caller has its answer.
        self._log_access(scope, status, started)
        request_id_var.reset(token)

    def _log_access(self, scope: Scope, status: int, started: float) -> None:
        path = scope.get("path", "")
        level = logging.DEBUG if path in _PROBE_PATHS else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        access_log.log(
            level,
            json.dumps(
                {
                    "event": "request",
                    "method": scope.get("method", ""),
                    "route": self._route_label(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                }
            ),
        )
