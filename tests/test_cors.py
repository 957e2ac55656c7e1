"""CORS over real HTTP: none by default; an allowlist from RAGKIT_CORS_ORIGINS, whose preflights
are answered, and every other origin refused without a single CORS header."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ragkit.core.errors import ConfigurationError
from ragkit.http.app import create_app
from tests.conftest import SECRET, make_settings

SEARCH = "/api/v1/rag/search"
COLLECTIONS = "/api/v1/rag/collections"
APP = "https://app.example.com"
UI = "http://localhost:8501"


def preflight(client: httpx.Client, origin: str, method: str = "POST", headers: str = "content-type, x-service-token"):  # noqa: ANN201
    return client.options(
        SEARCH,
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_no_origin_is_allowed_by_default(stack) -> None:  # noqa: ANN001
    assert cors_headers(preflight(stack.anon, APP)) == {}
    answered = stack.anon.get(COLLECTIONS, headers={"Origin": APP, "X-Service-Token": SECRET})
    assert answered.status_code == 200 and cors_headers(answered) == {}


def test_an_allowed_origin_gets_its_preflight_and_can_read_the_answers(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(cors_origins=f"{APP}, {UI}", service_rate_limit="100/minute")
    for origin in (APP, UI):
        answer = preflight(stack.anon, origin)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in answer.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-service-token", "authorization"} <= allowed
        assert "Origin" in answer.headers["Vary"]
        # Credentials are headers, never cookies: the browser is not asked to send cookies.
        assert "Access-Control-Allow-Credentials" not in answer.headers
    real = stack.anon.get(COLLECTIONS, headers={"Origin": APP, "X-Service-Token": SECRET})
    assert real.status_code == 200 and real.headers["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip().lower() for h in real.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= exposed
    # Errors too carry the header, so the page can read why it was refused.
    refused = stack.anon.get(COLLECTIONS, headers={"Origin": APP})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.com.evil.example",  # a suffix trick
        "http://app.example.com",  # another scheme is another origin
        "https://app.example.com:8443",  # and another port
        "null",  # sandboxed frames and file:// pages
    ],
)
def test_every_other_origin_is_refused_without_cors_headers(stack_factory, origin: str) -> None:  # noqa: ANN001
    stack = stack_factory(cors_origins=APP)
    answer = preflight(stack.anon, origin)
    assert answer.status_code == 400
    assert cors_headers(answer) == {}, answer.headers
    simple = stack.anon.get(COLLECTIONS, headers={"Origin": origin, "X-Service-Token": SECRET})
    assert simple.status_code == 200 and cors_headers(simple) == {}


def test_a_method_or_header_outside_the_list_is_refused(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(cors_origins=APP)
    assert preflight(stack.anon, APP, method="PUT").status_code == 400
    assert preflight(stack.anon, APP, headers="x-service-token, x-something-else").status_code == 400


@pytest.mark.parametrize(
    "bad", ["https://app.example.com/", "app.example.com", "https://app.example.com/path", "ftp://x"]
)
def test_a_bad_origin_setting_refuses_to_start(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match="RAGKIT_CORS_ORIGINS"):
        create_app(make_settings(tmp_path, cors_origins=bad))
