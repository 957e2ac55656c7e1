"""Evaluation runs for the Evaluation page: read them, compare them, start a new one.

A run is a folder `<data_dir>/runs/<name>/` holding the `metrics.json` the evaluation notebook
writes (issue 4):

    {"dataset", "collection", "queries",
     "config": {"embedder", "chunk_size", "chunk_overlap", "top_k", ...},
     "modes": {"hybrid": {"ndcg@10", "recall@100", "mrr@10", "latency_ms": {"p50", "p95", "p99"}}, ...},
     "created_at", "ragkit_version"}

New runs are started with `ragkit notebook run evaluate -p KEY VALUE ... --output-dir DIR` in a
child process whose output goes to a log file, so a run outlives a page switch. Progress comes
from the executed notebook papermill saves in DIR after every cell (its progress bar is off when
output is not a terminal), and from the log as a fallback.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

QUALITY_METRICS = ("ndcg@10", "recall@100", "mrr@10")
LATENCY_METRICS = ("p50", "p95", "p99")
METRIC_LABELS = {
    "ndcg@10": "nDCG@10", "recall@100": "Recall@100", "mrr@10": "MRR@10",
    "p50": "latency p50 (ms)", "p95": "latency p95 (ms)", "p99": "latency p99 (ms)",
}
CONFIG_COLUMNS = ("embedder", "chunk_size", "chunk_overlap", "top_k")
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Run:
    name: str
    path: Path
    dataset: str
    collection: str
    queries: int | None
    config: Mapping[str, Any]
    modes: Mapping[str, Mapping[str, Any]]
    created_at: str
    ragkit_version: str


def _number(value: Any) -> float | None:
    """A metric as a float: plain numbers, or the mean of {"mean": ..., "per_query": ...}."""
    if isinstance(value, Mapping):
        value = value.get("mean")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def read_run(path: Path) -> Run:
    """Raises ValueError with a person-readable reason if the file is not a usable run."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("modes"), dict) or not data["modes"]:
        raise ValueError(f"{path} has no 'modes' with metrics")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    queries = data.get("queries")
    return Run(
        name=path.parent.name,
        path=path,
        dataset=str(data.get("dataset") or "?"),
        collection=str(data.get("collection") or ""),
        queries=queries if isinstance(queries, int) and not isinstance(queries, bool) else None,
        config=config,
        modes={str(k): v for k, v in data["modes"].items() if isinstance(v, dict)},
        created_at=str(data.get("created_at") or _mtime(path)),
        ragkit_version=str(data.get("ragkit_version") or ""),
    )


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")


def load_runs(runs_dir: Path) -> tuple[list[Run], list[str]]:
    """Every readable run, newest first, and one problem line per unreadable one."""
    runs, problems = [], []
    if not runs_dir.is_dir():
        return runs, problems
    for path in sorted(runs_dir.glob("*/metrics.json")):
        try:
            runs.append(read_run(path))
        except ValueError as exc:
            problems.append(str(exc))
    runs.sort(key=lambda r: r.created_at, reverse=True)
    return runs, problems


def comparison_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run and mode: what was run (dataset, config) and what came out."""
    rows = []
    for run in runs:
        for mode, metrics in run.modes.items():
            latency = metrics.get("latency_ms") if isinstance(metrics.get("latency_ms"), Mapping) else {}
            row: dict[str, Any] = {
                "run": run.name,
                "created_at": run.created_at,
                "dataset": run.dataset,
                "collection": run.collection,
                "queries": run.queries,
                **{c: run.config.get(c) for c in CONFIG_COLUMNS},
                "mode": mode,
            }
            row.update({m: _number(metrics.get(m)) for m in QUALITY_METRICS})
            row.update({f"{p} ms": _number(latency.get(p)) for p in LATENCY_METRICS})
            rows.append(row)
    # Results first: on a narrow screen the metrics stay visible and the configuration scrolls.
    columns = ["run", "mode", *QUALITY_METRICS, *(f"{p} ms" for p in LATENCY_METRICS), "dataset", "queries",
               *CONFIG_COLUMNS, "collection", "created_at"]
    return pd.DataFrame(rows, columns=columns)


def chart_frame(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """run × mode → value of one metric column, ready for a grouped bar chart."""
    column = metric if metric in table.columns else f"{metric} ms"
    frame = table[["run", "mode", column]].dropna().rename(columns={column: "value"})
    return frame.reset_index(drop=True)


# -- starting a run -------------------------------------------------------------------------------
def notebook_command_available() -> tuple[bool, str]:
    """Whether this installation can run the evaluation notebook, and if not, why."""
    from ragkit.workbench.notebooks import NOTEBOOK_DIR, available_notebooks

    if "evaluate" not in available_notebooks():
        return False, (
            f"this installation has no evaluation notebook (looked in {NOTEBOOK_DIR}). "
            "Runs written by the evaluation notebook are still listed here."
        )
    return True, ""


def parse_extra_parameters(text: str) -> tuple[dict[str, str], list[str]]:
    """`KEY=VALUE` lines → parameters, and a problem line per line that is not one."""
    params, problems = {}, []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _PARAM_KEY.match(key):
            problems.append(f"line {number}: write KEY=VALUE with a name of letters, digits and _ ({line[:40]!r})")
            continue
        params[key] = value.strip()
    return params, problems


def new_run_dir(data_dir: Path, now: datetime | None = None) -> Path:
    """Where a run started here writes: named like the notebook's own default, so runs sort by time."""
    return data_dir / "runs" / f"{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}-evaluate"


def evaluate_command(params: Mapping[str, Any], output_dir: Path, python: str = sys.executable) -> list[str]:
    """`None` values are passed as the text None, which the runner reads as Python's None."""
    command = [python, "-m", "ragkit", "notebook", "run", "evaluate"]
    for key, value in params.items():
        command += ["-p", str(key), str(value)]
    return [*command, "--output-dir", str(output_dir)]


def notebook_progress(path: Path) -> tuple[int, int] | None:
    """(finished, total) code cells of a notebook papermill is executing, or None if unreadable.

    papermill rewrites the file after each cell; a read that meets a half-written file is just
    retried on the next refresh.
    """
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    code = [c for c in cells if isinstance(c, dict) and c.get("cell_type") == "code"]
    done = sum(
        1 for c in code if ((c.get("metadata") or {}).get("papermill") or {}).get("status") in ("completed", "failed")
    )
    return (done, len(code)) if code else None


_FRACTION = re.compile(r"(\d+)/(\d+)\s*\[")  # tqdm/papermill: "Executing:  40%|####  | 4/10 [00:02<..."
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


def parse_progress(output: str) -> float | None:
    """The latest progress in a run's output (0..1), or None if it printed none yet.

    tqdm redraws its bar with carriage returns, so the last piece of either kind of line wins.
    """
    for piece in reversed(re.split(r"[\r\n]+", output)):
        match = _FRACTION.search(piece)
        if match and int(match.group(2)) > 0:
            return min(1.0, int(match.group(1)) / int(match.group(2)))
        match = _PERCENT.search(piece)
        if match:
            return min(1.0, float(match.group(1)) / 100)
    return None


def _tail(path: Path, max_bytes: int = 16_384) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


_NO_SUCH_COMMAND = re.compile(r"No such command '?notebook'?|No such command .?run|Error: No such command")


@dataclass
class EvaluationJob:
    """A running (or finished) `ragkit notebook run evaluate` child process."""

    command: list[str]
    log_path: Path
    process: subprocess.Popen
    output_dir: Path | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stopped: bool = False

    @property
    def returncode(self) -> int | None:
        code = self.process.poll()
        if code is not None and self.finished is None:
            self.finished = time.time()
        return code

    @property
    def running(self) -> bool:
        return self.returncode is None

    def output(self) -> str:
        return _tail(self.log_path)

    def cells(self) -> tuple[int, int] | None:
        if self.output_dir is None:
            return None
        return notebook_progress(self.output_dir / "evaluate.ipynb")

    def progress(self) -> float | None:
        if self.returncode == 0:
            return 1.0
        cells = self.cells()
        if cells is not None:
            return cells[0] / cells[1]
        return parse_progress(self.output())

    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def failure(self) -> str | None:
        """Why it failed, for a person, or None while running or after success."""
        code = self.returncode
        if code is None or code == 0:
            return None
        if self.stopped:
            return "The run was stopped; what it wrote so far is in its folder."
        output = self.output()
        if _NO_SUCH_COMMAND.search(output):
            return (
                "`ragkit notebook run` is not available in this installation yet (issue 4 brings it). "
                "Runs written by the evaluation notebook are still listed above."
            )
        last = [line for line in re.split(r"[\r\n]+", output) if line.strip()][-3:]
        return f"the run exited with code {code}" + (": " + " / ".join(last) if last else "")

    def stop(self) -> None:
        """End the run and what it started (the kernel), by the group this job created."""
        if self.process.poll() is not None:
            return
        self.stopped = True
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


def start_evaluation(
    command: Sequence[str],
    logs_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output_dir: Path | None = None,
) -> EvaluationJob:
    """Start the run in the background; its output (stdout and stderr) goes to a log file."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"evaluation-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
            # Its own process group: Stop ends the notebook's kernel too, and a run is not cut
            # short by a Ctrl+C meant for the UI.
            start_new_session=True,
        )
    return EvaluationJob(command=list(command), log_path=log_path, process=process, output_dir=output_dir)
