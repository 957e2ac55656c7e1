"""Who may call the service: the inter-service token, end-user JWTs, and the audit log.

Service tokens are compared as bytes with ``hmac.compare_digest`` against every accepted
secret (all of them, always), so neither timing nor an early exit tells how close a guess was.
Several secrets may be accepted at once while one is rotated in and the old one out.
"""

from __future__ import annotations

import hmac
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt

from ragkit.core.config import MIN_SECRET_BYTES
from ragkit.core.errors import ConfigurationError, Unauthorized

SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    kind: str  # "service" or "user"


SERVICE_PRINCIPAL = Principal(subject="service", scopes=frozenset(SCOPES), kind="service")


class ServiceTokens:
    def __init__(self, accepted: list[bytes]) -> None:
        if not accepted:
            raise ConfigurationError(
                "INTER_SERVICE_SECRET is not set; create one with `ragkit secret` and put it in .env "
                "as INTER_SERVICE_SECRET=<value> (`make up` does this for you)"
            )
        for index, secret in enumerate(accepted, start=1):
            if len(secret) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"INTER_SERVICE_SECRET #{index} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are "
                    "required so it cannot be guessed. Create one with `ragkit secret`."
                )
        self._accepted = list(accepted)

    def matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        # Starlette decodes header bytes as latin-1; encoding back gives the bytes that were sent.
        try:
            token = presented.encode("latin-1")
        except UnicodeEncodeError:
            token = presented.encode("utf-8", "surrogateescape")
        found = False
        for secret in self._accepted:
            found |= hmac.compare_digest(token, secret)
        return found


class JwtVerifier:
    """End-user bearer tokens; the `scope` claim holds space-separated scopes."""

    def __init__(self, *, secret: str | None, public_key: str | None, audience: str | None, issuer: str | None) -> None:
        if not (secret or public_key):
            raise ConfigurationError("JwtVerifier needs RAGKIT_JWT_SECRET or RAGKIT_JWT_PUBLIC_KEY")
        self._key = public_key or secret
        self._algorithms = ["RS256", "ES256"] if public_key else ["HS256"]
        self._audience = audience
        self._issuer = issuer

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the bearer token has expired", reason="expired_jwt") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("the bearer token is not valid", reason="invalid_jwt") from exc
        scopes = frozenset(s for s in str(claims.get("scope", "")).split() if s in SCOPES)
        return Principal(subject=str(claims["sub"]), scopes=scopes, kind="user")


class AuditLog:
    """Failed attempts as JSON lines: time, client address, route, reason — never a token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def failure(self, *, client: str, method: str, route: str, reason: str) -> None:
        line = json.dumps(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "event": "auth_failed",
                "client": client,
                "method": method,
                "route": route,
                "reason": reason,
            }
        )
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
