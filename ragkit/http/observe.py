"""Request metrics and the deprecation headers, as plain ASGI middleware.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs every
request's handler in a task of its own and copies the response body through a memory stream. Under
50 concurrent searches that wrapper held the GIL for about a fifth of the time the whole request
did (a profile of the service: 22% of samples inside its ``call_next``).

The latency recorded is the time to the response's first byte, so a streamed answer counts as long
as it took to start, not as long as the caller kept reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Observe:
    def __init__(
        self, app: ASGIApp, *, route_label: Callable[[Scope], str], deprecated_prefix: str, successor_prefix: str
    ) -> None:
        self.app = app
        self._route_label = route_label
        self._deprecated = deprecated_prefix + "/"
        self._successor = successor_prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope.get("path", "")

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if path.startswith(self._deprecated):
                    headers = MutableHeaders(scope=message)
                    headers["Deprecation"] = "true"
                    successor = path.replace(self._deprecated, self._successor, 1)
                    headers["Link"] = f'<{successor}>; rel="successor-version"'
                services = getattr(scope["app"].state, "services", None)
                if services is not None:
                    label = self._route_label(scope)
                    method = scope["method"]
                    services.metrics.requests.labels(method, label, str(message["status"])).inc()
                    services.metrics.request_latency.labels(method, label).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observed_send)
