"""Health: breakers, dependencies and backends from /health, the OpenAI-compatible and MCP
endpoints as their clients see them, traffic and latency from /metrics. Refreshes itself; the
charts grow as the page keeps watching."""

from __future__ import annotations

import json
import time
from datetime import datetime

import altair as alt
import pandas as pd
import streamlit as st

from ragkit.core.errors import RagkitError, ServiceUnreachable
from ragkit.workbench.ui import common, display, endpoints, prometheus

HISTORY_KEY = "metrics_history"
HISTORY_LENGTH = 180  # snapshots kept: 15 minutes at the default 5 s
ENDPOINTS_KEY = "endpoint_checks"
ENDPOINT_CHECK_EVERY_S = 30  # each check is a request in the traffic below: not on every refresh
ROLES = {"store": "Vector store", "embedder": "Embeddings", "generator": "Answers", "cache": "Cache"}

st.title("Health")
interval = st.segmented_control(
    "Refresh every", [2, 5, 10, 30], default=5, format_func=lambda s: f"{s} s", key="health_interval",
    required=True, persist_state="session",
)


def show_health(health: dict) -> None:
    status = str(health.get("status", "?"))
    top = st.columns([2, 2, 3])
    top[0].markdown(f"**Status**  \n{common.status_badge(status)}")
    top[1].markdown(f"**Version**  \n`{health.get('version', '?')}`")
    top[2].markdown(f"**Checked**  \n{datetime.now().strftime('%H:%M:%S')}")
    if status == "down":
        st.error("The vector store does not answer: searches fail unless a cached result exists.",
                 icon=":material/error:")
    elif status == "degraded":
        st.warning(
            "Degraded: a dependency is failing. Requests keep working through the fallbacks "
            "(sparse search, extractive answers, in-process cache).",
            icon=":material/warning:",
        )

    st.subheader("Dependencies")
    dependencies = health.get("dependencies") or {}
    columns = st.columns(max(1, len(dependencies)))
    for column, (role, info) in zip(columns, dependencies.items(), strict=False):
        with column.container(border=True):
            st.markdown(f"**{ROLES.get(role, role)}**")
            st.markdown(f"`{info.get('backend', '?')}`  \n{common.status_badge(str(info.get('status', '?')))}")
            if info.get("error"):
                st.caption(str(info["error"]))

    st.subheader("Circuit breakers")
    breakers = health.get("circuit_breakers") or {}
    columns = st.columns(4)
    for index, (name, state) in enumerate(sorted(breakers.items())):
        colour = display.BREAKER_COLOURS.get(state, "gray")
        columns[index % 4].markdown(f"`{name}`  \n:{colour}-badge[{state.replace('_', '-')}]")
    st.caption("closed: calls go through · open: failing, calls fail fast · half-open: one probe call decides")


def endpoint_checks() -> list[endpoints.EndpointStatus]:
    conn = common.connection()
    api_url, checked_at, checks = st.session_state.get(ENDPOINTS_KEY, (None, 0.0, []))
    if api_url != conn.api_url or time.time() - checked_at >= ENDPOINT_CHECK_EVERY_S:
        checks = endpoints.check_endpoints(conn.api_url, conn.token)
        st.session_state[ENDPOINTS_KEY] = (conn.api_url, time.time(), checks)
    return checks


def show_endpoints(checks: list[endpoints.EndpointStatus]) -> None:
    st.subheader("Endpoints")
    for column, check in zip(st.columns(len(checks)), checks, strict=True):
        with column.container(border=True):
            took = f" · {check.elapsed_ms:.0f} ms" if check.elapsed_ms is not None else ""
            st.markdown(f"**{check.name}**  \n{common.status_badge(check.status)}{took}")
            st.code(check.url, language=None)
            st.caption(check.detail)
    st.caption(
        f"Checked every {ENDPOINT_CHECK_EVERY_S} s with the workbench's token, the way their clients "
        "call them (the model list, the MCP tool list). The README shows how to connect Open WebUI, "
        "the openai SDK and MCP clients."
    )


def time_chart(frame: pd.DataFrame, series: list[str], colours: list[str]) -> alt.Chart:
    """Lines with points (a single sample is still visible), clock time on the x axis."""
    long = frame.melt(id_vars="time", value_vars=series, var_name="series", value_name="value").dropna()
    return (
        alt.Chart(long, height=220)
        .mark_line(point=True)
        .encode(
            x=alt.X("time:T", axis=alt.Axis(format="%H:%M:%S", title=None, labelAngle=0)),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("series:N", scale=alt.Scale(domain=series, range=colours),
                            legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["time:T", "series:N", "value:Q"],
        )
    )


def show_traffic(history: list[prometheus.Snapshot]) -> None:
    st.subheader("Traffic")
    latest = history[-1]
    points = prometheus.rate_series(history)
    if not points:
        st.info(f"Collecting samples: the charts start after the next refresh (every {interval} s).")
    else:
        frame = pd.DataFrame(points)
        left, right = st.columns(2)
        with left:
            st.markdown("**API requests per second**")
            st.altair_chart(time_chart(frame, ["requests/s", "5xx/s"], ["#1f77b4", "#d62728"]), width="stretch")
        with right:
            st.markdown("**API latency (ms)**")
            st.altair_chart(time_chart(frame, ["p50 ms", "p95 ms"], ["#2ca02c", "#ff7f0e"]), width="stretch")
        st.caption("Health checks and metric scrapes (this page's own polling) are left out.")
    routes = prometheus.route_table(latest)
    stages = prometheus.stage_table(latest)
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Routes since the service started**")
        if routes:
            narrow = st.column_config.Column(width="small")
            st.dataframe(
                pd.DataFrame(routes), hide_index=True, width="stretch",
                column_config={"method": narrow, "requests": narrow, "4xx": narrow, "5xx": narrow,
                               "mean ms": narrow, "p95 ms": narrow},
            )
        else:
            st.caption("No API requests yet.")
    with right:
        st.markdown("**Pipeline stages**")
        if stages:
            st.dataframe(pd.DataFrame(stages), hide_index=True, width="stretch")
        else:
            st.caption("No searches or ingestion yet.")
    degraded = prometheus.counter_by(latest, "ragkit_degraded_responses_total", "reason")
    if degraded:
        st.markdown("**Degraded responses**  \n" + " · ".join(f"{k}: {v}" for k, v in sorted(degraded.items())))


@st.fragment(run_every=interval)
def live() -> None:
    client = common.client()
    try:
        health = client.health()
        text = client.metrics_text()
    except ServiceUnreachable as exc:
        common.service_down_page(common.connection(), exc.message)
        return
    except (RagkitError, json.JSONDecodeError) as exc:
        st.error(f"The service's health could not be read: {display.error_text(exc)}")
        return
    show_health(health)
    show_endpoints(endpoint_checks())
    history: list[prometheus.Snapshot] = st.session_state.setdefault(HISTORY_KEY, [])
    try:
        history.append(prometheus.parse_metrics(text, time.time()))
    except ValueError as exc:  # the parser's word for "not Prometheus text"
        st.warning(f"The service's /metrics could not be read ({exc}).")
        return
    del history[:-HISTORY_LENGTH]
    show_traffic(history)


live()
