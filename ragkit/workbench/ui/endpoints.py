"""The service's two other faces, the OpenAI-compatible API and the MCP server, checked the way
their clients reach them: with the key as a bearer token, one cheap request each (the model list,
the MCP tool list). A check says what a user would need to know: up and what it offers, or why not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

CHECK_TIMEOUT_S = 5.0
# A stateless MCP server answers a tools/list without a session; clients send both media types.
MCP_ACCEPT = "application/json, text/event-stream"
MCP_TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
REFUSALS = {
    401: "the workbench's token is refused",
    403: "the workbench's token lacks the read scope",
    404: "not offered by this service (an older version?)",
    429: "rate limited: try again in a moment",
}


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    url: str  # what a client is configured with
    ok: bool
    detail: str  # what it offers, or why it failed
    elapsed_ms: float | None = None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failing"


def _failure(response: httpx.Response) -> str:
    try:
        message = response.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        message = None
    reason = REFUSALS.get(response.status_code, "the endpoint answered with an error")
    return f"HTTP {response.status_code}: {reason}" + (f" ({message})" if message else "")


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check(
    name: str, url: str, send: Callable[[], httpx.Response], describe: Callable[[Any], tuple[bool, str]]
) -> EndpointStatus:
    """Time one request; ``describe`` turns a 2xx answer into (ok, detail)."""
    started = time.perf_counter()
    try:
        response = send()
    except httpx.HTTPError as exc:
        return EndpointStatus(name, url, False, f"not reachable ({type(exc).__name__})")
    elapsed = (time.perf_counter() - started) * 1000
    if not response.is_success:
        return EndpointStatus(name, url, False, _failure(response), elapsed)
    try:
        ok, detail = describe(response.json())
    except (ValueError, AttributeError, KeyError, TypeError):
        ok, detail = False, "the answer is not in the protocol's shape"
    return EndpointStatus(name, url, ok, detail, elapsed)


def _models(body: Any) -> tuple[bool, str]:
    models = [str(m["id"]) for m in body["data"]]
    if not models:
        return True, "up, no models yet: create a collection"
    return True, f"{len(models)} model{'s' * (len(models) != 1)}: {_names(models)}"


def _tools(body: Any) -> tuple[bool, str]:
    if "error" in body:
        return False, f"MCP error: {body['error'].get('message', body['error'])}"
    tools = [str(t["name"]) for t in body["result"]["tools"]]
    return True, f"{len(tools)} tools: {_names(tools)}"


def check_endpoints(api_url: str, token: str) -> list[EndpointStatus]:
    base = api_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=CHECK_TIMEOUT_S) as http:
        return [
            _check(
                "OpenAI-compatible API",
                f"{base}/openai/v1",
                lambda: http.get(f"{base}/openai/v1/models", headers=headers),
                _models,
            ),
            _check(
                "MCP server",
                f"{base}/mcp",
                lambda: http.post(f"{base}/mcp", json=MCP_TOOLS_LIST, headers={**headers, "Accept": MCP_ACCEPT}),
                _tools,
            ),
        ]
