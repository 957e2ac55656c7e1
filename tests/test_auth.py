"""Service tokens, rotation, the audit log, JWT scopes, rate limits and refusing to start."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.core.errors import ConfigurationError
from ragkit.http.app import create_app
from tests.conftest import REPO, SECRET, make_settings

NEW_SECRET = "n" * 40 + "-rotated-in-" + "m" * 20


@pytest.mark.parametrize(("secret", "says"), [("", "ragkit secret"), ("short", "32"), (SECRET + ",tiny", "#2")])
def test_service_refuses_to_start_without_a_strong_secret(tmp_path: Path, secret: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_app(make_settings(tmp_path, inter_service_secret=secret))
    assert says in refused.value.message


def test_ragkit_serve_exits_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "INTER_SERVICE_SECRET": "too-short", "RAGKIT_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "ragkit", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refuses to start" in done.stderr and "32" in done.stderr


def test_ragkit_secret_prints_a_fresh_64_hex_secret() -> None:
    first = CliRunner().invoke(main, ["secret"]).output.strip()
    second = CliRunner().invoke(main, ["secret"]).output.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first != second


def test_rotation_accepts_every_listed_secret(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(inter_service_secret=f"{NEW_SECRET}, {SECRET}")
    for token in (NEW_SECRET, SECRET):
        assert stack.anon.get("/api/v1/rag/collections", headers={"X-Service-Token": token}).status_code == 200
    assert stack.anon.get("/api/v1/rag/collections", headers={"X-Service-Token": SECRET[:-1]}).status_code == 401
    assert stack.anon.get("/api/v1/rag/collections", headers={"X-Service-Token": SECRET + "x"}).status_code == 401


def test_failures_are_audit_logged_without_the_token(stack) -> None:  # noqa: ANN001
    attempted = "guess-" + "z" * 40
    stack.anon.get("/api/v1/rag/collections", headers={"X-Service-Token": attempted})
    stack.anon.post("/api/v1/rag/search", json={"query": "x", "collection": "c"})
    log = stack.settings.data_dir / "logs" / "auth-audit.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["reason"] for entry in lines] == ["invalid_service_token", "missing_credentials"]
    assert lines[0]["route"] == "/api/v1/rag/collections" and lines[0]["client"] == "127.0.0.1"
    assert all({"time", "client", "route", "reason"} <= set(entry) for entry in lines)
    text = log.read_text()
    assert attempted not in text and SECRET not in text


JWT_KEY = "jwt-signing-key-" + "k" * 32


def user_token(scope: str, *, expires_in: float = 60, **claims: object) -> str:
    payload = {"sub": "ada", "scope": scope, "exp": int(time.time() + expires_in), "aud": "ragkit", **claims}
    return jwt.encode(payload, JWT_KEY, algorithm="HS256")


def test_end_user_tokens_carry_scopes(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(jwt_secret=JWT_KEY, jwt_audience="ragkit")
    stack.http.post("/api/v1/rag/collections", json={"name": "docs"})

    def as_user(token: str, method: str, path: str, body: dict | None = None) -> int:
        return stack.anon.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code

    reader = user_token("read")
    assert as_user(reader, "GET", "/api/v1/rag/collections") == 200
    assert as_user(reader, "POST", "/api/v1/rag/collections/docs/documents", {"documents": [{"text": "x"}]}) == 403
    writer = user_token("read write")
    assert as_user(writer, "POST", "/api/v1/rag/collections/docs/documents", {"documents": [{"text": "x"}]}) == 200
    assert as_user(writer, "DELETE", "/api/v1/rag/collections/docs") == 403
    assert as_user(user_token("read write admin"), "DELETE", "/api/v1/rag/collections/docs") == 200
    assert as_user(user_token("read", expires_in=-10), "GET", "/api/v1/rag/collections") == 401
    assert as_user(user_token("read", aud="someone-else"), "GET", "/api/v1/rag/collections") == 401
    forged = jwt.encode(
        {"sub": "eve", "scope": "admin", "exp": int(time.time()) + 60, "aud": "ragkit"},
        "not-the-key-" + "x" * 32,
        algorithm="HS256",
    )
    assert as_user(forged, "GET", "/api/v1/rag/collections") == 401


def test_rate_limits_answer_429_with_retry_after(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(
        service_rate_limit="3/minute", jwt_secret=JWT_KEY, jwt_audience="ragkit", rate_limit="2/minute"
    )
    codes = [stack.http.get("/api/v1/rag/collections").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = stack.http.get("/api/v1/rag/collections")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
    # End users are counted per subject, apart from service callers.
    headers = {"Authorization": f"Bearer {user_token('read')}"}
    user_codes = [stack.anon.get("/api/v1/rag/collections", headers=headers).status_code for _ in range(3)]
    assert user_codes == [200, 200, 429]
    assert stack.anon.get("/health").status_code == 200  # health is never limited


def test_bad_rate_limit_setting_refuses_to_start(tmp_path: Path, local_embedder) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from ragkit.services import build_services

    settings = make_settings(tmp_path, service_rate_limit="lots")
    app = create_app(settings, build_services(settings, embedder=local_embedder))
    with pytest.raises(ConfigurationError, match="100/minute"), TestClient(app):
        pass


def test_readme_quickstart_token_command_matches_launcher() -> None:
    readme = (REPO / "README.md").read_text()
    assert "sed -n 's/^INTER_SERVICE_SECRET=//p' .env" in readme


# -- finding 7: one credential per request -----------------------------------------------------

COLLECTIONS = "/api/v1/rag/collections"
WRONG = "w" * 64


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Service-Token", SECRET), ("X-Service-Token", WRONG)],  # the right one first: it used to pass
        [("X-Service-Token", WRONG), ("X-Service-Token", SECRET)],
        [("X-Service-Token", SECRET), ("X-Service-Token", SECRET)],  # even the same one twice
    ],
)
def test_finding_7_several_service_tokens_are_refused(stack, headers) -> None:  # noqa: ANN001
    refused = stack.anon.get(COLLECTIONS, headers=headers)
    assert refused.status_code == 401
    assert refused.json() == stack.anon.get(COLLECTIONS).json()  # the same body as any other failure
    assert stack.anon.get(COLLECTIONS, headers={"X-Service-Token": SECRET}).status_code == 200
    log = stack.settings.data_dir / "logs" / "auth-audit.jsonl"
    reasons = [json.loads(line)["reason"] for line in log.read_text().splitlines()]
    assert reasons[0] == "several_service_tokens"


def test_finding_7_several_authorization_headers_are_refused(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(jwt_secret=JWT_KEY, jwt_audience="ragkit")
    good = f"Bearer {user_token('read')}"
    assert stack.anon.get(COLLECTIONS, headers={"Authorization": good}).status_code == 200
    for headers in (
        [("Authorization", good), ("Authorization", "Bearer forged")],
        [("Authorization", good), ("Authorization", good)],
    ):
        assert stack.anon.get(COLLECTIONS, headers=headers).status_code == 401
    log = stack.settings.data_dir / "logs" / "auth-audit.jsonl"
    assert {json.loads(line)["reason"] for line in log.read_text().splitlines()} == {"several_authorization_headers"}


# -- finding 9: asymmetric JWTs (RS256, ES256) ---------------------------------------------------


ALGORITHM = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}


def _key_pair(kind: str):  # noqa: ANN202 - a private key of the cryptography package
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _public_pem(private_key) -> str:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    public = private_key.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _certificate_pem(private_key) -> str:  # noqa: ANN001
    """A self-signed certificate of the key, as identity providers often publish theirs."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ragkit test issuer")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _signed(private_key, algorithm: str, scope: str = "read") -> str:  # noqa: ANN001
    claims = {"sub": "ada", "scope": scope, "exp": int(time.time()) + 60, "aud": "ragkit"}
    return jwt.encode(claims, private_key, algorithm=algorithm)


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_finding_9_asymmetric_tokens_are_verified_with_the_public_key(stack_factory, kind: str) -> None:  # noqa: ANN001
    key, algorithm = _key_pair(kind), ALGORITHM[kind]
    public_pem = _public_pem(key)
    # As it often arrives from an environment variable: on one line, with \n escapes.
    stack = stack_factory(jwt_public_key=public_pem.replace("\n", "\\n"), jwt_audience="ragkit")

    def status(token: str, method: str = "GET") -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return stack.anon.request(method, COLLECTIONS, headers=headers, json={"name": "docs"}).status_code

    assert status(_signed(key, algorithm)) == 200
    assert status(_signed(key, algorithm), "POST") == 403  # verified, and its scopes still apply
    assert status(_signed(_key_pair(kind), algorithm)) == 401  # signed by another key of the same type
    for other in set(ALGORITHM) - {kind}:
        assert status(_signed(_key_pair(other), ALGORITHM[other])) == 401  # by a key of another type
    # The public key used as an HMAC secret (algorithm confusion), or no signature at all.
    assert status(_hand_made("HS256", public_pem.encode())) == 401
    assert status(_hand_made("none", None)) == 401


def test_a_certificate_may_stand_for_the_public_key(stack_factory) -> None:  # noqa: ANN001
    key = _key_pair("rsa")
    stack = stack_factory(jwt_public_key=_certificate_pem(key))
    ok = stack.anon.get(COLLECTIONS, headers={"Authorization": f"Bearer {_signed(key, 'RS256')}"})
    assert ok.status_code == 200


def test_without_cryptography_a_public_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 9's cause: PyJWT without its [crypto] extra silently refused every RS256 token.
    from ragkit.http.auth import JwtVerifier

    pem = _public_pem(_key_pair("ec"))
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match="PyJWT\\[crypto\\]"):
        JwtVerifier(secret=None, public_key=pem, audience=None, issuer=None)


def _hand_made(algorithm: str, hmac_key: bytes | None) -> str:
    """A token PyJWT would refuse to make: signed with HMAC over ``hmac_key``, or unsigned."""
    claims = {"sub": "eve", "scope": "admin", "exp": int(time.time()) + 60, "aud": "ragkit"}
    header = jwt.utils.base64url_encode(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signature = b"" if hmac_key is None else hmac.new(hmac_key, header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + jwt.utils.base64url_encode(signature)).decode()


def test_a_malformed_public_key_refuses_to_start(tmp_path: Path, local_embedder) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from ragkit.services import build_services

    settings = make_settings(tmp_path, jwt_public_key="-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----")
    app = create_app(settings, build_services(settings, embedder=local_embedder))
    with pytest.raises(ConfigurationError, match="RAGKIT_JWT_PUBLIC_KEY"), TestClient(app):
        pass
