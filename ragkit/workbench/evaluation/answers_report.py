"""The report of an answer evaluation, beside the retrieval report of the same run:
``answers.json`` (and its schema), a per-answer CSV and a plot, by generator and turn."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K
from ragkit.workbench.evaluation.answers import (
    FIRST,
    TURNS,
    AnswerClient,
    AnswerScore,
    AnswerSummary,
    run_answers,
    summarize,
)
from ragkit.workbench.evaluation.qa import QAItem

# The columns of the table and the plot: report key → what a reader sees.
SHOWN = {
    "token_recall": "token recall",
    "cited_gold_rate": "cited gold doc",
    "retrieved_gold_rate": "gold doc retrieved",
}


@dataclass
class AnswersReport:
    dataset: str
    collection: str
    config: dict[str, Any]
    scores: list[AnswerScore]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def summaries(self) -> list[AnswerSummary]:
        return summarize(self.scores)

    def metrics(self) -> dict[str, Any]:
        """The ``answers.json`` document (schema: ``ANSWERS_SCHEMA``)."""
        from ragkit import __version__

        generators: dict[str, dict[str, Any]] = {}
        for summary in self.summaries:
            generators.setdefault(summary.generator, {})[summary.turn] = summary.report()
        return {
            "dataset": self.dataset,
            "collection": self.collection,
            "questions": sum(s.turn == FIRST for s in self.scores),
            "follow_ups": sum(s.turn != FIRST for s in self.scores),
            "config": self.config,
            "generators": generators,
            "created_at": self.created_at,
            "ragkit_version": __version__,
        }

    def table(self) -> Any:
        """One row per generator and turn, rounded for display."""
        import pandas as pd

        rows = []
        for summary in self.summaries:
            report = summary.report()
            rows.append(
                {"generator": summary.generator, "turn": summary.turn, "answers": summary.questions}
                | {shown: report[key] for key, shown in SHOWN.items()}
                | {
                    "median chars": summary.median_chars,
                    "median words": summary.median_words,
                    "latency p50 (ms)": round(summary.latency_ms["p50"], 1),
                }
            )
        return pd.DataFrame(rows).set_index(["generator", "turn"])

    def summary(self) -> str:
        """A plain-text summary that depends only on the data and the system, not on timing."""
        lines = [
            f"{self.dataset} · collection {self.collection} · {sum(s.turn == FIRST for s in self.scores)} questions, "
            f"{sum(s.turn != FIRST for s in self.scores)} follow-ups · top_k {self.config.get('top_k')}",
            f"{'generator':<12}{'turn':<11}{'answers':>8}{'recall':>8}{'cited':>8}{'found':>8}{'words':>7}",
        ]
        for s in self.summaries:
            lines.append(
                f"{s.generator:<12}{s.turn:<11}{s.questions:>8}{s.token_recall:>8.3f}{s.cited_gold:>8.3f}"
                f"{s.retrieved_gold:>8.3f}{s.median_words:>7.0f}"
            )
            if s.degraded:
                lines.append(f"  ! {s.degraded} answers were degraded (see the service's reasons)")
        return "\n".join(lines)


def run_answer_evaluation(
    client: AnswerClient,
    items: Sequence[QAItem],
    collection: str,
    *,
    dataset: str = "manpages-qa",
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_MODE,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> AnswersReport:
    """Every item (and its follow-up) asked through the answer route; the report of their scores."""
    stats = client.collection(collection)
    scores = run_answers(client, items, collection, top_k=top_k, mode=mode, progress=progress)
    config = {
        "top_k": top_k,
        "mode": mode,
        "embedder": stats.get("embedder"),
        "chunk_size": stats.get("chunk_size"),
        "documents": stats.get("documents"),
        "chunks": stats.get("chunks"),
        **dict(extra_config or {}),
    }
    return AnswersReport(dataset=dataset, collection=collection, config=config, scores=scores)


_TURN_REPORT = {
    "type": "object",
    "required": ["questions", *SHOWN, "median_chars", "median_words", "latency_ms"],
    "properties": {
        "questions": {"type": "integer", "minimum": 1},
        **{key: {"type": "number", "minimum": 0, "maximum": 1} for key in SHOWN},
        "median_chars": {"type": "number", "minimum": 0},
        "median_words": {"type": "number", "minimum": 0},
        "degraded_answers": {"type": "integer", "minimum": 0},
        "latency_ms": {
            "type": "object",
            "required": ["p50", "p95", "p99"],
            "additionalProperties": {"type": "number", "minimum": 0},
        },
    },
}

ANSWERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "collection", "questions", "follow_ups", "config", "generators", "created_at"],
    "properties": {
        "dataset": {"type": "string"},
        "collection": {"type": "string"},
        "questions": {"type": "integer", "minimum": 1},
        "follow_ups": {"type": "integer", "minimum": 0},
        "config": {"type": "object", "required": ["top_k", "mode"]},
        "generators": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": [FIRST],
                "propertyNames": {"enum": list(TURNS)},
                "additionalProperties": _TURN_REPORT,
            },
        },
        "created_at": {"type": "string"},
        "ragkit_version": {"type": "string"},
    },
}


def write_answers_report(report: AnswersReport, output_dir: Path | str) -> dict[str, Path]:
    """answers.json, answers_per_question.csv and answers.png under ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "answers": output / "answers.json",
        "answers_per_question": output / "answers_per_question.csv",
        "answers_plot": output / "answers.png",
    }
    paths["answers"].write_text(json.dumps(report.metrics(), indent=2) + "\n", encoding="utf-8")
    write_answer_rows(report.scores, paths["answers_per_question"])
    plot_answers(report).savefig(paths["answers_plot"], dpi=110, bbox_inches="tight")
    return paths


def write_answer_rows(scores: Sequence[AnswerScore], path: Path) -> None:
    columns = ["qa_id", "turn", "generator", "gold_doc", "token_recall", "cited_gold", "retrieved_gold"]
    columns += ["chars", "words", "latency_ms", "degraded", "cited", "question", "standalone_query"]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for s in scores:
            writer.writerow(
                [s.qa_id, s.turn, s.generator, s.gold_doc, s.token_recall, int(s.cited_gold), int(s.retrieved_gold)]
                + [s.chars, s.words, round(s.latency_ms, 2), int(s.degraded), " ".join(s.cited), s.question]
                + [s.standalone_query]
            )


def plot_answers(report: AnswersReport) -> Any:
    """The rates by generator and turn, and the answers' lengths."""
    from matplotlib.figure import Figure

    summaries = report.summaries
    figure = Figure(figsize=(9, 3.6))
    rates, lengths = figure.subplots(1, 2, width_ratios=[2, 1])
    width = 0.8 / max(len(summaries), 1)
    positions = np.arange(len(SHOWN))
    for i, summary in enumerate(summaries):
        values = [summary.report()[key] for key in SHOWN]
        bars = rates.bar(positions + i * width, values, width, label=f"{summary.generator}, {summary.turn}")
        rates.bar_label(bars, fmt="%.2f", fontsize=7)
    rates.set_xticks(positions + width * (len(summaries) - 1) / 2, list(SHOWN.values()))
    rates.set_ylim(0, 1.2)  # headroom for the legend above the bars
    rates.legend(loc="upper center", ncols=2, frameon=False, fontsize=8)
    rates.set_title(f"{report.dataset}: answers ({len(report.scores)})")
    groups = [[s.words for s in report.scores if (s.generator, s.turn) == (m.generator, m.turn)] for m in summaries]
    lengths.boxplot(groups, tick_labels=[f"{m.generator}\n{m.turn}" for m in summaries], showfliers=False)
    lengths.set_ylabel("words per answer")
    lengths.set_title("answer length")
    return figure
