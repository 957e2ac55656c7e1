"""Secrets never reach a log: a real `ragkit serve`, called with its token in the URL (and the
secret hidden elsewhere in the query string and the path), must write none of it anywhere —
uvicorn's access log, its error log, ragkit's log file, the audit log. The same process shows
that `ragkit serve` believes no X-Forwarded-For unless its proxies are configured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

import httpx
import jwt
import pytest

from ragkit.core.logs import Redactor
from tests.support.live import free_port
from tests.support.serve import wait_for_startup

# 48 bytes, with characters a URL must encode: what is logged is the encoded form.
SERVE_SECRET = "k+y/With=Odd&Chars?" + "s" * 29
JWT_KEY = "jwt-secret-of-the-served-process-" + "j" * 16
COLLECTIONS = "/api/v1/rag/collections"
DOCUMENTS = f"{COLLECTIONS}/missing/documents"


def forms(secret: str) -> list[str]:
    return [secret, quote(secret), quote(secret, safe=""), quote_plus(secret)]


# The thread copying each service's stderr into its stderr.log, by the test's folder.
COPYING: dict[Path, threading.Thread] = {}


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201
    port = free_port()
    env = {
        **os.environ,
        "INTER_SERVICE_SECRET": SERVE_SECRET,
        "RAGKIT_DATA_DIR": str(tmp_path / "data"),
        "RAGKIT_JWT_SECRET": JWT_KEY,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAGKIT_TRUSTED_PROXIES", None)
    out = (tmp_path / "stdout.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ragkit", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ready when uvicorn says so; every stderr line still lands in stderr.log, which the test reads.
    COPYING[tmp_path] = wait_for_startup(process, tmp_path / "stderr.log")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client, process, tmp_path
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    out.close()


def everything_logged(tmp_path: Path) -> str:
    """Every log of the (stopped) service, its stderr copied to the last line."""
    copying = COPYING.pop(tmp_path, None)
    if copying is not None:
        copying.join(timeout=60)  # the process has exited: the copy ends at its last line
    files = [tmp_path / "stdout.log", tmp_path / "stderr.log", *(tmp_path / "data" / "logs").glob("*")]
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files if f.is_file())


def test_tokens_in_urls_never_reach_any_log(served) -> None:  # noqa: ANN001
    client, process, tmp_path = served
    user_jwt = jwt.encode({"sub": "ada", "scope": "read", "exp": int(time.time()) + 60}, JWT_KEY, algorithm="HS256")
    header = {"X-Service-Token": SERVE_SECRET}
    calls = [
        (client.get(COLLECTIONS, params={"token": SERVE_SECRET}), 401),
        (client.get(COLLECTIONS, params={"x-service-token": SERVE_SECRET}, headers=header), 200),
        (client.get(COLLECTIONS, params={"note": f"before{SERVE_SECRET}after"}), 401),
        (client.get(COLLECTIONS, params={"access_token": user_jwt}), 401),
        (client.get(COLLECTIONS, params={"api_key": "plain-value-42"}), 401),
        # In the path (a document id may hold any character, "/" included).
        (client.delete(f"{DOCUMENTS}/{quote(SERVE_SECRET, safe='')}", headers=header), 404),
        (client.delete(f"{DOCUMENTS}/{quote(SERVE_SECRET, safe='')}", headers={"X-Service-Token": "w" * 40}), 401),
        (client.get(COLLECTIONS, headers={"Authorization": f"Bearer {user_jwt}"}), 200),
    ]
    assert [r.status_code for r, _ in calls] == [code for _, code in calls]
    # A caller's X-Forwarded-For is not believed: no proxies are configured.
    spoofed = client.get(COLLECTIONS, headers={"X-Service-Token": "w" * 40, "X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 401
    process.send_signal(signal.SIGTERM)  # flush and close every log before reading them
    process.wait(timeout=60)

    logged = everything_logged(tmp_path)
    for form in forms(SERVE_SECRET):
        assert form not in logged, f"the service secret ({form!r}) is in a log"
    # However it was spelled: any mix of percent-encoded and plain characters decodes to it.
    assert SERVE_SECRET not in unquote(logged), "the service secret, partly percent-encoded, is in a log"
    assert user_jwt not in logged and "plain-value-42" not in logged
    # The requests were logged, with the values redacted: the filter ran, it did not drop lines.
    for expected in (
        f"GET {COLLECTIONS}?token=[redacted] HTTP/1.1",
        f"GET {COLLECTIONS}?x-service-token=[redacted] HTTP/1.1",
        f"GET {COLLECTIONS}?note=before[redacted]after HTTP/1.1",
        f"GET {COLLECTIONS}?access_token=[redacted] HTTP/1.1",
        f"GET {COLLECTIONS}?api_key=[redacted] HTTP/1.1",
        f"DELETE {DOCUMENTS}/[redacted] HTTP/1.1",
    ):
        assert expected in logged, f"{expected!r} is not in the access log:\n{logged[-3000:]}"
    audit = [json.loads(line) for line in (tmp_path / "data" / "logs" / "auth-audit.jsonl").read_text().splitlines()]
    assert {entry["client"] for entry in audit} == {"127.0.0.1"}
    assert any(entry["route"] == f"{DOCUMENTS}/[redacted]" for entry in audit)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?token=abc&page=2 HTTP/1.1", "GET /x?token=[redacted]&page=2 HTTP/1.1"),
        ("GET /x?page=2&ACCESS_TOKEN=abc HTTP/1.1", "GET /x?page=2&ACCESS_TOKEN=[redacted] HTTP/1.1"),
        ("GET /x?password=p%40ss;key=k HTTP/1.1", "GET /x?password=[redacted];key=[redacted] HTTP/1.1"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [redacted]"),
        ("id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2ln end", "id [redacted] end"),
        ("GET /x?tokens_seen=3 HTTP/1.1", "GET /x?tokens_seen=3 HTTP/1.1"),  # not a secret's name
        ("the secret is k%2By%2FWith%3DOdd", "the secret is k%2By%2FWith%3DOdd"),  # a prefix alone is no secret
    ],
)
def test_redaction_rules(text: str, expected: str) -> None:
    assert Redactor([SERVE_SECRET])(text) == expected


def test_known_secrets_are_redacted_in_every_written_form() -> None:
    redact = Redactor([SERVE_SECRET, b"another-secret-of-32-bytes-or-more!!"])
    mixed = SERVE_SECRET.replace("?", "%3F").replace("&", "%26")  # as Starlette's URL writes a path
    lowered = quote(SERVE_SECRET, safe="").replace("%2B", "%2b")
    for form in [*forms(SERVE_SECRET), mixed, lowered]:
        assert redact(f"x{form}y") == "x[redacted]y", form
    assert redact("…another-secret-of-32-bytes-or-more!!…") == "…[redacted]…"


def test_every_configured_credential_is_a_known_secret() -> None:
    from ragkit.core.config import Settings
    from ragkit.core.logs import known_secrets

    settings = Settings(
        _env_file=None,
        inter_service_secret="s" * 40,
        jwt_secret="j" * 40,
        qdrant_api_key="qdrant-key-123",
        openai_api_key="sk-openai-key-456",
    )
    assert set(known_secrets(settings)) == {"s" * 40, "j" * 40, "qdrant-key-123", "sk-openai-key-456"}
