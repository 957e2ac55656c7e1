"""CORS: which web pages (origins) may call the API from a browser — RAGKIT_CORS_ORIGINS, none by
default. Credentials travel in headers (X-Service-Token, Authorization), never in cookies, so
no origin is told it may send credentials; a page still needs a token to be let in.

Starlette's CORSMiddleware answers the preflights. One change: an origin that is not on the list
gets no CORS header at all, on a preflight (refused, 400) or on any other answer — Starlette
would still list the allowed methods, headers and exposed headers — so the service tells a
stranger's page nothing about itself.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Send

from ragkit.core.errors import ConfigurationError

ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Service-Token", "X-Request-ID")
# What a page may read of an answer besides the safelisted headers: when to come back, and how
# much of its limit is left.
EXPOSED_HEADERS = (
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Deprecation",
    "Link",
    "X-Request-ID",
)
_ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")


def parse_origins(text: str, variable: str = "RAGKIT_CORS_ORIGINS") -> list[str]:
    """The allowed origins, each exactly as a browser sends it in ``Origin`` (or ``*``)."""
    origins = [item.strip() for item in text.split(",") if item.strip()]
    for origin in origins:
        # A browser sends scheme://host[:port], never a path or a trailing slash: an entry
        # written otherwise would silently never match, so it is refused at start instead.
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigurationError(
                f"{variable}: '{origin}' is not an origin; write scheme://host[:port] "
                "(e.g. https://app.example.com, http://localhost:8501), with no path or trailing /"
            )
    return origins


class StrictCORS(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"})
        return super().preflight_response(request_headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if message["type"] == "http.response.start" and origin is not None and not self.is_allowed_origin(origin):
            message.setdefault("headers", [])
            MutableHeaders(scope=message).add_vary_header("Origin")  # the answer depends on the origin
            await send(message)
            return
        await super().send(message, send, request_headers)


def cors_options(origins: list[str]) -> dict[str, object]:
    """The keyword arguments of `StrictCORS` for ``app.add_middleware``."""
    return {
        "allow_origins": origins,
        "allow_methods": ALLOWED_METHODS,
        "allow_headers": ALLOWED_HEADERS,
        "expose_headers": EXPOSED_HEADERS,
        "allow_credentials": False,
        "max_age": 600,
    }
