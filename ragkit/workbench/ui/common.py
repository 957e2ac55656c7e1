"""What every page of the workbench shares: the client, the service probe, the sidebar and the
pages shown instead of a traceback when the service is down or refuses the token."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ragkit import __version__
from ragkit.client import RagkitClient
from ragkit.core.errors import RagkitError, ServiceError, ServiceUnreachable
from ragkit.workbench.ui.connection import Connection, Probe, current_connection, describe_source, probe
from ragkit.workbench.ui.display import STATUS_COLOURS, error_text

log = logging.getLogger("ragkit.workbench.ui")
T = TypeVar("T")
PROBE_KEY = "_ragkit_probe"
# Generation on a slow Ollama can take a while; a hung service must still not hang the page.
CLIENT_TIMEOUT_S = 90.0


@st.cache_resource(show_spinner=False)
def _client_for(api_url: str, token: str) -> RagkitClient:
    # One pooled HTTP client per service and token, shared by the sessions of this UI process.
    return RagkitClient(api_url, token, timeout=CLIENT_TIMEOUT_S)


def connection() -> Connection:
    return current_connection()


def client() -> RagkitClient:
    conn = connection()
    return _client_for(conn.api_url, conn.token)


def run_probe() -> Probe:
    result = probe(client(), connection())
    st.session_state[PROBE_KEY] = result
    return result


def last_probe() -> Probe:
    return st.session_state.get(PROBE_KEY) or run_probe()


def collections() -> list[dict[str, Any]]:
    return list(last_probe().collections)


def collection_names() -> list[str]:
    return [str(c["name"]) for c in collections()]


def refresh_collections() -> None:
    """After a change (create, upload, delete) so every control lists what now exists."""
    run_probe()


def attempt(action: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run a service call; on failure show why (never a traceback) and return None."""
    try:
        return action(*args, **kwargs)
    except ServiceUnreachable as exc:
        st.error(f"{exc.message}", icon=":material/cloud_off:")
    except RagkitError as exc:
        st.error(error_text(exc), icon=":material/error:")
    except json.JSONDecodeError as exc:  # an answer that is not JSON: something else answers at the URL
        st.error(f"The service's answer could not be read ({exc}).", icon=":material/error:")
    return None


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status.split(" ")[0], "gray")
    return f":{colour}-badge[{status}]"


def sidebar(conn: Connection, result: Probe) -> None:
    with st.sidebar:
        st.caption("Service")
        st.markdown(f"`{conn.api_url}`")
        health = result.health or {}
        if result.state == "unreachable":
            st.markdown(":red-badge[not reachable]")
        elif result.state == "unauthorized":
            st.markdown(f"{status_badge(str(health.get('status', '?')))} :red-badge[token refused]")
        elif result.state == "error":
            st.markdown(":red-badge[not a ragkit service]")
        else:
            st.markdown(f"{status_badge(str(health.get('status', '?')))} version {health.get('version', '?')}")
        st.caption(
            f"URL {describe_source(conn.url_source)} · token {describe_source(conn.token_source)} · "
            f"workbench {__version__}"
        )


def service_down_page(conn: Connection, message: str) -> None:
    st.title("The ragkit service is not reachable")
    st.error(message, icon=":material/cloud_off:")
    st.markdown(
        f"""
The workbench is a client of the ragkit service and found nothing listening at **`{conn.api_url}`**
(RAGKIT_API_URL, {describe_source(conn.url_source)}).

**Start it**, then press *Try again*:

- `make up` — starts the service and this workbench, with a sample collection;
- `ragkit serve` — starts only the service (`ragkit serve --port 8000`).

If the service runs elsewhere, set `RAGKIT_API_URL` in the environment or in `.env` and restart the workbench.
"""
    )
    st.button("Try again", icon=":material/refresh:", type="primary", key="retry_service")


def token_problem_page(conn: Connection, message: str) -> None:
    st.title("The service refused the token")
    st.error(message, icon=":material/key_off:")
    st.markdown(
        f"""
Every `/api/v1` call carries the service token `INTER_SERVICE_SECRET`
({describe_source(conn.token_source)}). The service at **`{conn.api_url}`** does not accept it.

- Set `INTER_SERVICE_SECRET` in `.env` (or the environment) to the service's token — with a rotation in
  progress, any one of the service's comma-separated secrets — and restart the workbench.
- `make up` starts both with the same token from `.env`; `ragkit secret` makes a new one.

The **Health** page works without a token.
"""
    )
    st.button("Try again", icon=":material/refresh:", key="retry_token")


def not_ragkit_page(conn: Connection, message: str) -> None:
    st.title("This is not a ragkit service")
    st.error(message, icon=":material/error:")
    st.markdown(f"`RAGKIT_API_URL` is `{conn.api_url}` ({describe_source(conn.url_source)}).")
    st.button("Try again", icon=":material/refresh:", key="retry_other")


def unexpected_error(exc: BaseException) -> None:
    """Last line of defence: a message and the log, never a traceback on screen."""
    log.exception("unexpected error in the workbench")
    if isinstance(exc, ServiceUnreachable):
        service_down_page(connection(), exc.message)
        return
    if isinstance(exc, ServiceError) and exc.status == 401:
        token_problem_page(connection(), exc.message)
        return
    st.error(
        f"Something went wrong: {error_text(exc)}. The details are in the workbench's log; "
        "reload the page to carry on.",
        icon=":material/error:",
    )
