"""The gate every /api route passes: who is calling (service token or end-user JWT), may they do
this (scope), and are they within their rate limit. Every refusal is audit-logged.

One credential per request: several X-Service-Token headers, or several Authorization headers,
are refused even when one of them is right, since a proxy or a framework in front may read a
different one than this gate does (the first, the last, or all of them joined by commas).

The client address (for the audit log) is the peer that connected, unless that peer is one of
RAGKIT_TRUSTED_PROXIES: then X-Forwarded-For is walked from the right, over the hops our own
proxies appended, to the first one that is not a proxy of ours — everything left of it is
whatever the caller chose to send. For this to hold, the server must hand the app the real peer:
uvicorn rewrites it from X-Forwarded-For on its own by default (trusting 127.0.0.1), so
`ragkit serve` runs it with `SERVER_OPTIONS`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fastapi import Request

from ragkit.core.config import Settings
from ragkit.core.errors import ConfigurationError, Forbidden, Unauthorized
from ragkit.core.logs import Redactor, known_secrets
from ragkit.core.metrics import Metrics
from ragkit.core.types import Cache
from ragkit.http.auth import SERVICE_PRINCIPAL, AuditLog, JwtVerifier, Principal, ServiceTokens
from ragkit.http.ratelimit import QUOTA_STATE, RateLimit, RateLimiter

UNAUTHORIZED_MESSAGE = "missing or invalid credentials: send the service token in the X-Service-Token header"
# How uvicorn must run the app: the gate reads X-Forwarded-For itself, from trusted proxies only.
SERVER_OPTIONS = {"proxy_headers": False}
_MAX_HOPS = 32  # X-Forwarded-For entries looked at, from the right: bounded work per request
_MAX_HOP_CHARS = 64  # longer than any written address: not one

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    """An address as X-Forwarded-For writes it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip()
    if not text or len(text) > _MAX_HOP_CHARS:
        return None
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class TrustedProxies:
    """RAGKIT_TRUSTED_PROXIES: the addresses and networks whose X-Forwarded-For is believed."""

    def __init__(self, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self._networks = tuple(networks)

    @classmethod
    def parse(cls, text: str, variable: str) -> TrustedProxies:
        networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ConfigurationError(
                    f"{variable}: '{item}' is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8)"
                ) from exc
        return cls(networks)

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def client_of(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The right-most address that is not a trusted proxy: the client, as far as we can know."""
        if peer is None:
            return "unknown"
        current = _address(peer)
        if current is None or not self.trusts(current) or not forwarded_for:
            return str(current) if current is not None else peer
        hops = [hop for value in forwarded_for for hop in value.split(",")][-_MAX_HOPS:]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # Not an address: nothing left of it can be believed; the proxy that passed it on
                # is as far as we can see.
                return str(current)
            current = address
            if not self.trusts(current):
                return str(current)
        return str(current)  # every hop is a proxy of ours: the farthest one is the client


class Gate:
    """Authenticates every /api route and applies rate limits; audit-logs each refusal."""

    def __init__(self, settings: Settings, cache: Cache, metrics: Metrics | None = None) -> None:
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
        self._proxies = TrustedProxies.parse(settings.trusted_proxies, "RAGKIT_TRUSTED_PROXIES")
        # A path may carry the secret too (a caller's mistake): the audit log redacts as the logs do.
        self._audit = AuditLog(
            settings.data_dir / "logs" / "auth-audit.jsonl", redact=Redactor(known_secrets(settings))
        )
        self._limiter = RateLimiter(
            cache,
            RateLimit.parse(settings.rate_limit, "RAGKIT_RATE_LIMIT") if settings.rate_limit else None,
            RateLimit.parse(settings.service_rate_limit, "RAGKIT_SERVICE_RATE_LIMIT")
            if settings.service_rate_limit
            else None,
            metrics,
        )

    def client_address(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return self._proxies.client_of(peer, request.headers.getlist("x-forwarded-for"))

    def _refuse(self, request: Request, reason: str) -> Unauthorized:
        self._audit.failure(
            client=self.client_address(request), method=request.method, route=request.url.path, reason=reason
        )
        # One body for every failure, so a caller cannot tell a wrong token from a missing one.
        return Unauthorized(UNAUTHORIZED_MESSAGE)

    async def admit(self, request: Request, scope: str) -> Principal:
        principal = self._authenticate(request)
        if scope not in principal.scopes:
            raise Forbidden(f"this token lacks the '{scope}' scope", required_scope=scope)
        quota = await self._limiter.count(principal.subject, principal.kind)
        if quota is not None:
            # Sent as RateLimit-* headers on this response, whatever it turns out to be.
            setattr(request.state, QUOTA_STATE, quota)
            if quota.exceeded:
                raise quota.refusal()
        return principal

    def _authenticate(self, request: Request) -> Principal:
        tokens = request.headers.getlist("x-service-token")
        if len(tokens) > 1:
            raise self._refuse(request, "several_service_tokens")
        if tokens:
            if self._tokens.matches(tokens[0]):
                return SERVICE_PRINCIPAL
            raise self._refuse(request, "invalid_service_token")
        authorizations = request.headers.getlist("authorization")
        if len(authorizations) > 1:
            raise self._refuse(request, "several_authorization_headers")
        bearer = authorizations[0] if authorizations else ""
        # OpenAI clients send their key as a bearer token: the service token is accepted that way too.
        if bearer.lower().startswith("bearer ") and self._tokens.matches(bearer[7:].strip()):
            return SERVICE_PRINCIPAL
        if bearer.lower().startswith("bearer ") and self._jwt is not None:
            try:
                return self._jwt.verify(bearer[7:].strip())
            except Unauthorized as exc:
                raise self._refuse(request, str(exc.details.get("reason", "invalid_jwt"))) from exc
        if bearer.lower().startswith("bearer "):
            raise self._refuse(request, "invalid_bearer_token")  # not the service token, and no JWTs here
        raise self._refuse(request, "missing_credentials")

    def close(self) -> None:
        self._audit.close()
