"""Who may call the service: the inter-service token, end-user JWTs, and the audit log.

Service tokens are compared as bytes with ``hmac.compare_digest`` against every accepted
secret (all of them, always), so neither timing nor an early exit tells how close a guess was.
Several secrets may be accepted at once while one is rotated in and the old one out.

End-user JWTs are HMAC-signed (RAGKIT_JWT_SECRET) or signed by a key pair whose public half is
RAGKIT_JWT_PUBLIC_KEY (PEM). The public key is loaded once, at start, and decides the algorithms
accepted (RSA: RS*/PS*, EC: the ES* of its curve, Ed25519/Ed448: EdDSA): a token signed with any
other algorithm — HS256 over the public key's text, or none — is refused.

The audit log is bounded whatever callers send: every field is clipped, at most
`AuditLog.LINES_PER_SECOND` lines are written per second (then one summary line says how many
were left out), and the file is rotated by size.
"""

from __future__ import annotations

import hmac
import json
import logging
import logging.handlers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from ragkit.core.config import MIN_SECRET_BYTES
from ragkit.core.errors import ConfigurationError, Unauthorized

log = logging.getLogger("ragkit.http.auth")

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
        self._key: Any
        if public_key:
            self._key, self._algorithms = load_public_key(public_key)
        else:
            self._key, self._algorithms = secret, ["HS256"]
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


def load_public_key(text: str) -> tuple[Any, list[str]]:
    """RAGKIT_JWT_PUBLIC_KEY (a PEM public key or certificate) and the algorithms it can verify."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:  # PyJWT without its [crypto] extra verifies HMAC tokens only
        raise ConfigurationError(
            "RAGKIT_JWT_PUBLIC_KEY needs the cryptography package (pip install 'PyJWT[crypto]')"
        ) from exc
    # An environment variable often carries a PEM on one line, its line breaks written as \n.
    pem = text.replace("\\n", "\n").strip() if "\n" not in text else text.strip()
    try:
        if "BEGIN CERTIFICATE" in pem:
            key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        else:
            key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigurationError(
            f"RAGKIT_JWT_PUBLIC_KEY is not a PEM public key ('-----BEGIN PUBLIC KEY-----' …) or certificate: {exc}"
        ) from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
        if key.curve.name not in by_curve:
            raise ConfigurationError(f"RAGKIT_JWT_PUBLIC_KEY: no JWT algorithm uses the curve {key.curve.name}")
        return key, [by_curve[key.curve.name]]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ["EdDSA"]
    raise ConfigurationError(f"RAGKIT_JWT_PUBLIC_KEY: a {type(key).__name__} cannot verify JWTs")


def _clip(value: object, limit: int) -> str:
    """At most ``limit`` characters of a caller-supplied value, saying how long it was."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


class _AuditFile(logging.handlers.RotatingFileHandler):
    """A rotating file that says once, not per line, when it cannot be written (a full disk)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._failing = False
        self._failed_now = False

    def write(self, line: str) -> None:
        self._failed_now = False
        self.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO, "levelname": "INFO"}))
        if not self._failed_now and self._failing:
            self._failing = False
            log.info(json.dumps({"event": "audit_log_writable", "path": self.baseFilename}))

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self._failed_now = True
        if not self._failing:
            self._failing = True
            message = "cannot write the audit log; refusals go unrecorded until it can"
            log.warning(json.dumps({"event": "audit_log_unwritable", "path": self.baseFilename, "message": message}))


class AuditLog:
    """Failed attempts as JSON lines: time, client address, route, reason — never a token.

    Bounded whatever callers send: each field clipped to `MAX_FIELD_CHARS`, at most
    ``lines_per_second`` lines a second (the rest counted, and said in one summary line when the
    next line is written or the log is closed), rotated at ``max_bytes`` keeping ``backups``
    older files. Several worker processes may share the file: each rotates on its own, so a
    backup may be overwritten early, but the files stay as few and as small.
    """

    LINES_PER_SECOND = 20
    MAX_FIELD_CHARS = 256
    MAX_BYTES = 5 * 1024 * 1024
    BACKUPS = 3

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
        lines_per_second: int = LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only or full data directory: the service still starts
            message = f"cannot create the folder ({exc.strerror}); refusals go unrecorded until it can"
            log.warning(json.dumps({"event": "audit_log_unwritable", "path": str(path.parent), "message": message}))
        self._file = _AuditFile(path, max_bytes, backups)  # opened at the first line (delay=True)
        self._lines_per_second = lines_per_second
        self._clock = clock
        self._redact = redact
        self._lock = threading.Lock()
        self._window_end = float("-inf")  # the current one-second window, on `clock`
        self._written = 0  # lines written in it
        self._suppressed = 0  # refusals left out since the last summary

    def failure(self, *, client: str, method: str, route: str, reason: str) -> None:
        with self._lock:
            now = self._clock()
            if now >= self._window_end:
                self._summarise()
                self._window_end = now + 1.0
                self._written = 0
            if self._written >= self._lines_per_second:
                self._suppressed += 1
                return
            self._written += 1
            self._file.write(
                json.dumps(
                    {
                        "time": _now(),
                        "event": "auth_failed",
                        # Redacted before clipped, so a secret is never cut to a recognisable prefix.
                        "client": _clip(self._redact(client), 64),
                        "method": _clip(method, 16),
                        "route": _clip(self._redact(route), self.MAX_FIELD_CHARS),
                        "reason": _clip(reason, 64),
                    },
                    ensure_ascii=False,
                )
            )

    def _summarise(self) -> None:
        if self._suppressed:
            line = {
                "time": _now(),
                "event": "audit_suppressed",
                "suppressed": self._suppressed,
                "reason": f"more than {self._lines_per_second} refused requests in a second",
            }
            self._file.write(json.dumps(line))
            self._suppressed = 0

    def close(self) -> None:
        with self._lock:
            self._summarise()
            self._file.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
