"""The gate every /api route passes: who is calling (service token or end-user JWT), may they do
this (scope), and are they within their rate limit. Every refusal is audit-logged."""

from __future__ import annotations

from fastapi import Request

from ragkit.core.config import Settings
from ragkit.core.errors import Forbidden, Unauthorized
from ragkit.core.types import Cache
from ragkit.http.auth import SERVICE_PRINCIPAL, AuditLog, JwtVerifier, Principal, ServiceTokens
from ragkit.http.ratelimit import RateLimit, RateLimiter

UNAUTHORIZED_MESSAGE = "missing or invalid credentials: send the service token in the X-Service-Token header"


class Gate:
    """Authenticates every /api route and applies rate limits; audit-logs each refusal."""

    def __init__(self, settings: Settings, cache: Cache) -> None:
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
            cache,
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
