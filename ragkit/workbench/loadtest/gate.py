"""Reading locust's statistics and passing or failing them on latency budgets and failure ratio."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BUDGET_MS = 500.0
DEFAULT_MAX_FAILURE_RATIO = 0.01
# Ingestion is measured, not gated, unless a budget names it: it is expected to take seconds.
UNGATED_BY_DEFAULT = ("ingest",)
AGGREGATED = "Aggregated"


def budget_for(route: str, budgets: Mapping[str, float], default_ms: float) -> float | None:
    """The budget of a route: its own, else its family's (``search`` covers ``search:dense``),
    else the default; None for a route that is not gated."""
    if route in budgets:
        return budgets[route]
    family = route.split(":", 1)[0]
    if family in budgets:
        return budgets[family]
    if route in UNGATED_BY_DEFAULT or family in UNGATED_BY_DEFAULT or route.endswith(":setup"):
        return None
    return default_ms


# -- reading locust's CSV ------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteStats:
    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _number(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


def read_stats(path: Path) -> list[RouteStats]:
    """Rows of locust's ``*_stats.csv``; the ``Aggregated`` row is kept under that name."""
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append(
                RouteStats(
                    name=row["Name"],
                    requests=int(_number(row["Request Count"])),
                    failures=int(_number(row["Failure Count"])),
                    p50_ms=_number(row.get("50%")),
                    p95_ms=_number(row.get("95%")),
                    p99_ms=_number(row.get("99%")),
                    rps=_number(row.get("Requests/s")),
                )
            )
    return rows


# -- the gate ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    route: str
    measured: float
    limit: float
    kind: str  # "p95_ms" or "failure_ratio"

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit

    def describe(self) -> str:
        if self.kind == "p95_ms":
            return f"{self.route}: P95 {self.measured:.0f} ms {'<=' if self.passed else '>'} budget {self.limit:.0f} ms"
        return (
            f"{self.route}: {self.measured:.2%} of requests failed "
            f"({'within' if self.passed else 'over'} the {self.limit:.2%} allowed)"
        )


def evaluate(
    stats: Sequence[RouteStats],
    budgets: Mapping[str, float],
    *,
    default_ms: float = DEFAULT_BUDGET_MS,
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO,
) -> list[Verdict]:
    verdicts = []
    total: RouteStats | None = None
    for row in stats:
        if row.name == AGGREGATED:
            total = row
            continue
        limit = budget_for(row.name, budgets, default_ms)
        if limit is not None and row.requests:
            verdicts.append(Verdict(row.name, row.p95_ms, limit, "p95_ms"))
    if total is None or total.requests == 0:
        # No request at all is a failed run, not a fast one.
        verdicts.append(Verdict("all requests", 1.0, max_failure_ratio, "failure_ratio"))
    else:
        verdicts.append(Verdict("all requests", total.failure_ratio, max_failure_ratio, "failure_ratio"))
    return verdicts


def summary_line(total: RouteStats | None) -> str:
    if total is None:
        return "p50=n/a p95=n/a p99=n/a rps=0.0 failures=n/a"
    return (
        f"p50={total.p50_ms:.0f}ms p95={total.p95_ms:.0f}ms p99={total.p99_ms:.0f}ms "
        f"rps={total.rps:.1f} failures={total.failure_ratio:.2%}"
    )
