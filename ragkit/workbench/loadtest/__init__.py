"""Run locust headless against a running service, keep its reports, and gate on latency budgets.

Everything here is plain functions over files, so the gate can be checked on any locust CSV:

* ``run_locust`` starts ``python -m locust`` on ``locustfile.py`` (shipped in this package) in a child process,
  writes its CSV and HTML reports into the run folder and measures the CPU the child used
  (locust shares the machine with the service, so its share is part of every result);
* ``read_stats`` reads ``<prefix>_stats.csv``; ``evaluate`` compares each route's P95 with its
  budget and the failure ratio with the allowed one;
* ``summary_line`` is the one line a person or a CI log reads: ``p50=… p95=… p99=… rps=… failures=…``.
"""

from ragkit.workbench.loadtest.gate import (
    AGGREGATED,
    DEFAULT_BUDGET_MS,
    DEFAULT_MAX_FAILURE_RATIO,
    UNGATED_BY_DEFAULT,
    RouteStats,
    Verdict,
    budget_for,
    evaluate,
    read_stats,
    summary_line,
)
from ragkit.workbench.loadtest.plan import (
    TASK_NAMES,
    QueryStream,
    parse_budget,
    parse_duration,
    parse_mix,
    parse_think_time,
    read_queries,
    widened,
)
from ragkit.workbench.loadtest.runner import (
    DEFAULT_LOCUSTFILE,
    CpuUse,
    LoadTestConfig,
    LoadTestResult,
    listening_pid,
    locust_command,
    new_run_dir,
    result_summary,
    run_locust,
    write_summary,
)

__all__ = [
    "AGGREGATED",
    "DEFAULT_BUDGET_MS",
    "DEFAULT_MAX_FAILURE_RATIO",
    "RouteStats",
    "UNGATED_BY_DEFAULT",
    "Verdict",
    "budget_for",
    "evaluate",
    "read_stats",
    "summary_line",
    "QueryStream",
    "TASK_NAMES",
    "parse_budget",
    "parse_duration",
    "parse_mix",
    "parse_think_time",
    "read_queries",
    "widened",
    "CpuUse",
    "DEFAULT_LOCUSTFILE",
    "LoadTestConfig",
    "LoadTestResult",
    "listening_pid",
    "locust_command",
    "new_run_dir",
    "result_summary",
    "run_locust",
    "write_summary",
]
