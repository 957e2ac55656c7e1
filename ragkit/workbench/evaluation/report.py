"""The report of an evaluation: ``metrics.json`` (and its schema), a per-query CSV and plots, in a
folder of its own for every run."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.core.types import SEARCH_MODES
from ragkit.workbench.evaluation.datasets import BeirDataset
from ragkit.workbench.evaluation.metrics import REPORT_METRICS, ModeResult


@dataclass
class EvaluationReport:
    dataset: BeirDataset
    collection: str
    query_ids: list[str]
    config: dict[str, Any]
    modes: dict[str, ModeResult]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` document (schema: ``METRICS_SCHEMA``)."""
        from ragkit import __version__

        return {
            "dataset": self.dataset.name,
            "collection": self.collection,
            "queries": len(self.query_ids),
            "config": self.config,
            "modes": {mode: result.report() for mode, result in self.modes.items()},
            "created_at": self.created_at,
            "ragkit_version": __version__,
        }

    def table(self) -> Any:
        """Means by mode as a pandas DataFrame (rows: modes), rounded for display."""
        import pandas as pd

        rows = {}
        for mode, result in self.modes.items():
            report = result.report()
            rows[mode] = {name: report[name] for name in REPORT_METRICS.values()} | {
                f"latency {p} (ms)": round(v, 1) for p, v in report["latency_ms"].items()
            }
        return pd.DataFrame.from_dict(rows, orient="index")

    def summary(self) -> str:
        """A plain-text summary that depends only on the data and the system, not on timing."""
        names = list(REPORT_METRICS.values())
        lines = [
            f"{self.dataset.name} · collection {self.collection} · {len(self.query_ids)} queries · "
            f"{self.config['documents']} documents in {self.config['chunks']} chunks · top_k {self.config['top_k']}",
            f"{'mode':<8}" + "".join(f"{n:>12}" for n in names),
        ]
        for mode, result in self.modes.items():
            report = result.report()
            lines.append(f"{mode:<8}" + "".join(f"{report[n]:>12.4f}" for n in names))
            if result.degraded:
                lines.append(f"  ! {result.degraded} {mode} queries were answered degraded (see the service's reasons)")
        return "\n".join(lines)


METRICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "collection", "queries", "config", "modes", "created_at", "ragkit_version"],
    "properties": {
        "dataset": {"type": "string"},
        "collection": {"type": "string"},
        "queries": {"type": "integer", "minimum": 1},
        "config": {
            "type": "object",
            "required": ["embedder", "chunk_size", "chunk_overlap", "top_k"],
            "properties": {
                "embedder": {"type": "string"},
                "chunk_size": {"type": "integer"},
                "chunk_overlap": {"type": "integer"},
                "top_k": {"type": "integer"},
            },
        },
        "modes": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"enum": list(SEARCH_MODES)},
            "additionalProperties": {
                "type": "object",
                "required": ["ndcg@10", "recall@100", "mrr@10", "latency_ms"],
                "properties": {
                    **{name: {"type": "number", "minimum": 0, "maximum": 1} for name in REPORT_METRICS.values()},
                    "latency_ms": {
                        "type": "object",
                        "required": ["p50", "p95", "p99"],
                        "additionalProperties": {"type": "number", "minimum": 0},
                    },
                },
            },
        },
        "created_at": {"type": "string"},
        "ragkit_version": {"type": "string"},
    },
}


def default_output_dir(name: str, data_dir: Path | str | None = None) -> Path:
    """``<data_dir>/runs/<timestamp>-<name>/``: every run keeps its own report."""
    if data_dir is None:
        from ragkit.core.config import Settings

        # Read now rather than from get_settings()'s cache: a notebook kernel or a test may set
        # RAGKIT_DATA_DIR after something else in the process first asked for the settings.
        data_dir = Settings().data_dir
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(data_dir) / "runs" / f"{stamp}-{name}"


def write_report(report: EvaluationReport, output_dir: Path | str) -> dict[str, Path]:
    """metrics.json, per_query.csv, metrics_by_mode.png and latency.png under ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": output / "metrics.json",
        "per_query": output / "per_query.csv",
        "metrics_plot": output / "metrics_by_mode.png",
        "latency_plot": output / "latency.png",
    }
    paths["metrics"].write_text(json.dumps(report.metrics(), indent=2) + "\n", encoding="utf-8")
    write_per_query(report, paths["per_query"])
    plot_metrics(report).savefig(paths["metrics_plot"], dpi=110, bbox_inches="tight")
    plot_latency(report).savefig(paths["latency_plot"], dpi=110, bbox_inches="tight")
    return paths


def write_per_query(report: EvaluationReport, path: Path) -> None:
    names = list(REPORT_METRICS)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["query_id", "mode", *REPORT_METRICS.values(), "latency_ms", "retrieved", "query"])
        for mode, result in report.modes.items():
            for qid in report.query_ids:
                scores = result.per_query.get(qid, {})
                writer.writerow(
                    [
                        qid,
                        mode,
                        *(round(scores.get(n, 0.0), 4) for n in names),
                        round(result.query_latency_ms.get(qid, 0.0), 2),
                        result.retrieved.get(qid, 0),
                        report.dataset.queries[qid],
                    ]
                )


# --------------------------------------------------------------------------- plots


def plot_metrics(report: EvaluationReport) -> Any:
    from matplotlib.figure import Figure

    names = list(REPORT_METRICS.values())
    figure = Figure(figsize=(7, 3.6))
    axes = figure.subplots()
    width = 0.8 / max(len(report.modes), 1)
    positions = np.arange(len(names))
    for i, (mode, result) in enumerate(report.modes.items()):
        values = [result.report()[n] for n in names]
        bars = axes.bar(positions + i * width, values, width, label=mode)
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(positions + width * (len(report.modes) - 1) / 2, names)
    axes.set_ylim(0, 1.15)  # headroom for the legend above the bars
    axes.set_title(f"{report.dataset.name}: retrieval quality by mode ({len(report.query_ids)} queries)")
    axes.legend(loc="upper center", ncols=len(report.modes), frameon=False)
    return figure


def plot_latency(report: EvaluationReport) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.6))
    axes = figure.subplots()
    modes = list(report.modes)
    axes.boxplot(
        [report.modes[m].latencies_ms for m in modes], tick_labels=modes, showfliers=True, orientation="horizontal"
    )
    axes.set_xscale("log")
    axes.set_xlabel("search request latency, ms (client side, log scale)")
    axes.set_title(f"{report.dataset.name}: latency by mode")
    return figure


def plot_histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int = 30) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.2))
    axes = figure.subplots()
    axes.hist(values, bins=bins)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    return figure


def figure_png(figure: Any) -> bytes:
    """A figure as PNG bytes, for display without pyplot's global state."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
