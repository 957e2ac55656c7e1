"""Service tokens, rotation, the audit log, JWT scopes, rate limits and refusing to start."""

from __future__ import annotations

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
