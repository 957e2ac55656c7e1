"""The service's `/metrics` (Prometheus text) turned into what the Health page charts.

Counters only ever grow, so a rate needs two snapshots: the page keeps the last few and charts
the difference between neighbours. Latency percentiles are estimated from histogram buckets the
way Prometheus' `histogram_quantile` does (linear within the bucket). The UI's own polling of
`/health` and `/metrics` is left out of the API numbers, or an idle service would look busy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "ragkit_http_requests_total"
LATENCY = "ragkit_http_request_duration_seconds"
STAGE = "ragkit_stage_duration_seconds"
POLLING_ROUTES = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Snapshot:
    at: float  # seconds since the epoch, taken by the UI when it read /metrics
    samples: tuple[Sample, ...]

    def named(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]


def parse_metrics(text: str, at: float) -> Snapshot:
    """Raises ValueError on text that is not Prometheus exposition format."""
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append(Sample(s.name, dict(s.labels), float(s.value)))
    return Snapshot(at, tuple(samples))


def is_api(labels: Mapping[str, str]) -> bool:
    return labels.get("route") not in POLLING_ROUTES


def _sum(snapshot: Snapshot, name: str, keep: Callable[[Mapping[str, str]], bool]) -> float:
    return sum(s.value for s in snapshot.named(name) if keep(s.labels))


def _is_error(labels: Mapping[str, str]) -> bool:
    status = labels.get("status", "")
    return status.isdigit() and int(status) >= 500


def buckets(snapshot: Snapshot, histogram: str, keep: Callable[[Mapping[str, str]], bool]) -> dict[float, float]:
    """Cumulative counts per upper bound (`le`), summed over the label sets `keep` accepts."""
    out: dict[float, float] = defaultdict(float)
    for s in snapshot.named(histogram + "_bucket"):
        if keep(s.labels):
            out[float(s.labels["le"])] += s.value
    return dict(out)


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The q-quantile from cumulative bucket counts, in the buckets' unit; None without data."""
    bounds = sorted(cumulative)
    if not bounds:
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # the best a histogram can say: above the largest finite bound
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _delta(current: Mapping[float, float], previous: Mapping[float, float]) -> dict[float, float]:
    return {le: value - previous.get(le, 0.0) for le, value in current.items()}


def rate_point(previous: Snapshot, current: Snapshot) -> dict[str, Any] | None:
    """API traffic between two snapshots: requests/s, 5xx/s and latency (ms). None if the
    counters went backwards (the service restarted) or no time passed."""
    seconds = current.at - previous.at
    if seconds <= 0:
        return None
    requests = _sum(current, REQUESTS, is_api) - _sum(previous, REQUESTS, is_api)
    errors = _sum(current, REQUESTS, lambda lb: is_api(lb) and _is_error(lb)) - _sum(
        previous, REQUESTS, lambda lb: is_api(lb) and _is_error(lb)
    )
    if requests < 0 or errors < 0:
        return None
    window = _delta(buckets(current, LATENCY, is_api), buckets(previous, LATENCY, is_api))
    count = _sum(current, LATENCY + "_count", is_api) - _sum(previous, LATENCY + "_count", is_api)
    total = _sum(current, LATENCY + "_sum", is_api) - _sum(previous, LATENCY + "_sum", is_api)
    p50, p95 = histogram_quantile(0.5, window), histogram_quantile(0.95, window)
    return {
        "time": datetime.fromtimestamp(current.at),  # local clock time, as a person reads it
        "requests/s": round(requests / seconds, 3),
        "5xx/s": round(errors / seconds, 3),
        "mean ms": round(total / count * 1000, 1) if count > 0 else None,
        "p50 ms": round(p50 * 1000, 1) if p50 is not None else None,
        "p95 ms": round(p95 * 1000, 1) if p95 is not None else None,
    }


def rate_series(snapshots: Iterable[Snapshot]) -> list[dict[str, Any]]:
    points, previous = [], None
    for snapshot in snapshots:
        if previous is not None:
            point = rate_point(previous, snapshot)
            if point is not None:
                points.append(point)
        previous = snapshot
    return points


def route_table(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Per API route since the service started: requests, errors, mean and p95 latency."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for s in snapshot.named(REQUESTS):
        if not is_api(s.labels):
            continue
        key = (s.labels.get("method", ""), s.labels.get("route", ""))
        row = rows.setdefault(key, {"method": key[0], "route": key[1], "requests": 0, "4xx": 0, "5xx": 0})
        row["requests"] += int(s.value)
        status = s.labels.get("status", "")
        if status.startswith("4"):
            row["4xx"] += int(s.value)
        elif _is_error(s.labels):
            row["5xx"] += int(s.value)
    for (method, route), row in rows.items():

        def same(labels: Mapping[str, str], method: str = method, route: str = route) -> bool:
            return labels.get("method") == method and labels.get("route") == route

        count = _sum(snapshot, LATENCY + "_count", same)
        total = _sum(snapshot, LATENCY + "_sum", same)
        p95 = histogram_quantile(0.95, buckets(snapshot, LATENCY, same))
        row["mean ms"] = round(total / count * 1000, 1) if count else None
        row["p95 ms"] = round(p95 * 1000, 1) if p95 is not None else None
    return sorted(rows.values(), key=lambda r: -r["requests"])


def stage_table(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Pipeline stages (`ragkit.core.metrics.STAGES`: embed, retrieve, generate, ...) since the service started."""
    stages = sorted({s.labels.get("stage", "") for s in snapshot.named(STAGE + "_count")})
    rows = []
    for stage in stages:

        def same(labels: Mapping[str, str], stage: str = stage) -> bool:
            return labels.get("stage") == stage

        count = _sum(snapshot, STAGE + "_count", same)
        if not count:
            continue
        cumulative = buckets(snapshot, STAGE, same)
        p50, p95 = histogram_quantile(0.5, cumulative), histogram_quantile(0.95, cumulative)
        rows.append({
            "stage": stage,
            "count": int(count),
            "mean ms": round(_sum(snapshot, STAGE + "_sum", same) / count * 1000, 1),
            "p50 ms": round(p50 * 1000, 1) if p50 is not None else None,
            "p95 ms": round(p95 * 1000, 1) if p95 is not None else None,
        })
    return rows


def counter_by(snapshot: Snapshot, name: str, label: str) -> dict[str, int]:
    """A counter summed by one label, e.g. degraded responses by reason."""
    out: dict[str, int] = defaultdict(int)
    for s in snapshot.named(name):
        out[s.labels.get(label, "")] += int(s.value)
    return dict(out)
