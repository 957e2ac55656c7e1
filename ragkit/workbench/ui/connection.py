"""Which service the workbench talks to, with which token, and whether that works.

The values come from `ragkit.client.resolve_connection` (environment, then `.env`), so the UI,
the CLI and the notebooks always agree; this module adds where each value came from, for the
sidebar and for error pages that tell a person what to change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from ragkit.client import RagkitClient, resolve_connection
from ragkit.core.config import DEFAULT_API_URL, DEFAULT_DATA_DIR, DEFAULT_MAX_REQUEST_BYTES
from ragkit.core.errors import RagkitError, ServiceError, ServiceUnreachable

ProbeState = Literal["ok", "unreachable", "unauthorized", "error"]


@dataclass(frozen=True)
class Connection:
    api_url: str
    token: str
    url_source: str  # "environment", ".env" or "default"
    token_source: str  # "environment", ".env" or "missing"


def _source(name: str, environ: Mapping[str, str], dotenv: Mapping[str, Any], missing: str) -> str:
    if environ.get(name):
        return "environment"
    if dotenv.get(name):
        return ".env"
    return missing


def _dotenv(env_file: str) -> dict[str, Any]:
    return dict(dotenv_values(env_file)) if Path(env_file).is_file() else {}


def current_connection(env_file: str = ".env", environ: Mapping[str, str] | None = None) -> Connection:
    environ = os.environ if environ is None else environ
    dotenv = _dotenv(env_file)
    url, token = resolve_connection(env_file=env_file)
    return Connection(
        api_url=url,
        token=token,
        url_source=_source("RAGKIT_API_URL", environ, dotenv, "default"),
        token_source=_source("INTER_SERVICE_SECRET", environ, dotenv, "missing"),
    )


def data_dir(env_file: str = ".env", environ: Mapping[str, str] | None = None) -> Path:
    """The data directory the notebooks write their runs to (same rule as `Settings`)."""
    environ = os.environ if environ is None else environ
    value = environ.get("RAGKIT_DATA_DIR") or _dotenv(env_file).get("RAGKIT_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(value).expanduser()


def max_upload_mb(env_file: str = ".env", environ: Mapping[str, str] | None = None) -> int:
    """The service's request size limit (RAGKIT_MAX_REQUEST_BYTES) in whole MB, so
    the uploader refuses a file the service would refuse anyway, before it is sent."""
    environ = os.environ if environ is None else environ
    raw = environ.get("RAGKIT_MAX_REQUEST_BYTES") or _dotenv(env_file).get("RAGKIT_MAX_REQUEST_BYTES")
    try:
        limit = int(str(raw)) if raw else DEFAULT_MAX_REQUEST_BYTES
    except ValueError:
        limit = DEFAULT_MAX_REQUEST_BYTES
    return max(1, limit // (1024 * 1024))


@dataclass(frozen=True)
class Probe:
    state: ProbeState
    message: str = ""
    health: dict[str, Any] | None = None
    collections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def probe(client: RagkitClient, connection: Connection) -> Probe:
    """One look at the service: is it there, is it ragkit, does it take our token."""
    try:
        health = client.health()
    except ServiceUnreachable as exc:
        return Probe("unreachable", exc.message)
    except (ServiceError, json.JSONDecodeError) as exc:
        # Something answers at that address, but not with ragkit's /health (another program on
        # the port, a proxy error page, a wrong RAGKIT_API_URL path).
        detail = exc.message if isinstance(exc, RagkitError) else "the answer is not JSON"
        return Probe(
            "error",
            f"{connection.api_url} answers, but not like a ragkit service ({detail}). "
            "Check RAGKIT_API_URL.",
        )
    if not isinstance(health, dict):
        return Probe("error", f"{connection.api_url}/health does not answer like ragkit; check RAGKIT_API_URL.")
    if not connection.token:
        return Probe(
            "unauthorized",
            "No service token is configured: set INTER_SERVICE_SECRET in the environment or in .env "
            "(`ragkit secret` makes one; `make up` writes it for you).",
            health=health,
        )
    try:
        collections = client.collections()
    except ServiceUnreachable as exc:
        return Probe("unreachable", exc.message)
    except ServiceError as exc:
        if exc.status in (401, 403):
            return Probe(
                "unauthorized",
                f"The service at {connection.api_url} refused the token "
                f"({describe_source(connection.token_source)}): {exc.message}.",
                health=health,
            )
        return Probe("error", f"Listing collections failed: {exc.message}", health=health)
    except json.JSONDecodeError:
        return Probe("error", f"{connection.api_url} did not answer like a ragkit service.", health=health)
    return Probe("ok", health=health, collections=list(collections))


def describe_source(source: str) -> str:
    return {
        "environment": "from the environment",
        ".env": "from .env",
        "default": f"the default ({DEFAULT_API_URL})",
        "missing": "not set",
    }.get(source, source)
