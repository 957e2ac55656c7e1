"""Run locust headless against a running service, keep its reports, and gate on latency budgets.

Everything here is plain functions over files, so the gate can be checked on any locust CSV:

* ``run_locust`` starts ``python -m locust`` on ``loadtests/locustfile.py`` in a child process,
  writes its CSV and HTML reports into the run folder and measures the CPU the child used
  (locust shares the machine with the service, so its share is part of every result);
* ``read_stats`` reads ``<prefix>_stats.csv``; ``evaluate`` compares each route's P95 with its
  budget and the failure ratio with the allowed one;
* ``summary_line`` is the one line a person or a CI log reads: ``p50=… p95=… p99=… rps=… failures=…``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ragkit.core.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
DEFAULT_BUDGET_MS = 500.0
DEFAULT_MAX_FAILURE_RATIO = 0.01
# Ingestion is measured, not gated, unless a budget names it: it is expected to take seconds.
UNGATED_BY_DEFAULT = ("ingest",)
AGGREGATED = "Aggregated"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
_BUDGET_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


# -- arguments ---------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """Locust's run-time syntax (``60s``, ``2m``, ``1h30m``, ``90``) in seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise InvalidInput(f"invalid run time {text!r}: use e.g. 60s, 2m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidInput(f"the run time must be positive, got {text!r}")
    return float(total)


def parse_budget(text: str) -> tuple[str, float]:
    """``ROUTE=MS`` (``search=50``, ``search:hybrid=50ms``, ``ask=1.5s``) → (route, milliseconds)."""
    route, sep, value = text.partition("=")
    route = route.strip()
    match = _BUDGET_VALUE.match(value)
    if not sep or not route or match is None:
        raise InvalidInput(f"invalid budget {text!r}: use ROUTE=MILLISECONDS, e.g. search=50 or ask=1.5s")
    amount = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if amount <= 0:
        raise InvalidInput(f"a budget must be positive, got {text!r}")
    return route, amount


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


# The request names the locustfile reports, which --mix weighs and --budget gates.
TASK_NAMES = ("search:hybrid", "search:dense", "search:sparse", "ask", "collections", "health")


def parse_mix(spec: str) -> dict[str, float]:
    """``search:hybrid=6,ask=2`` → weights; a name without ``=W`` weighs 1."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        if name not in TASK_NAMES:
            raise InvalidInput(f"unknown task {name!r} in the mix; known: {', '.join(TASK_NAMES)}")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError as exc:
            raise InvalidInput(f"the weight of {name!r} in the mix must be a number, got {weight!r}") from exc
        if weights[name] < 0:
            raise InvalidInput(f"the weight of {name!r} in the mix must not be negative")
    if not any(w > 0 for w in weights.values()):
        raise InvalidInput(f"the mix {spec!r} gives no task a positive weight")
    return weights


def parse_think_time(spec: str) -> tuple[float, float]:
    """``MIN,MAX`` seconds (or one number for a constant wait)."""
    low, _, high = spec.partition(",")
    try:
        bounds = (float(low), float(high or low))
    except ValueError as exc:
        raise InvalidInput(f"the think time takes 'MIN,MAX' seconds, got {spec!r}") from exc
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise InvalidInput(f"the think time needs 0 <= MIN <= MAX, got {spec!r}")
    return bounds


# -- queries -------------------------------------------------------------------------------------

def read_queries(path: Path) -> list[str]:
    """Query texts from a BEIR queries.jsonl (field "text") or a plain file with one per line."""
    texts: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        text = str(json.loads(line).get("text", "")).strip() if line.startswith("{") else line
        if text:
            texts.append(text)
    if not texts:
        raise InvalidInput(f"{path} holds no queries")
    return texts


def widened(text: str, variant: int) -> str:
    """``text`` with one gap between words widened: a new cache key, the same tokens.

    Variant v widens gap v % gaps to v // gaps + 2 spaces, so every variant is a distinct string.
    """
    words = text.split(" ")
    gaps = len(words) - 1
    if gaps < 1:
        return text + " " * (variant + 1)
    quotient, remainder = divmod(variant, gaps)
    words[remainder] += " " * (quotient + 1)
    return " ".join(words)


class QueryStream:
    """Queries for all users of a process from one shuffled stream: none is sent twice before all
    were sent once; after that each comes back widened (``repeat=False``) or as it was."""

    def __init__(self, texts: Sequence[str], *, repeat: bool = False, seed: int = 7) -> None:
        if not texts:
            raise InvalidInput("no queries to send")
        self._texts = list(texts)
        random.Random(seed).shuffle(self._texts)
        self._repeat = repeat
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        round_, index = divmod(n, len(self._texts))
        text = self._texts[index]
        return text if round_ == 0 or self._repeat else widened(text, round_ - 1)


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


# -- running locust ------------------------------------------------------------------------------

@dataclass
class LoadTestConfig:
    host: str
    users: int = 50
    spawn_rate: float = 10.0
    run_time: str = "60s"
    collection: str | None = None
    queries: Path | None = None
    scenario: str = "read"  # "read", or "ingest": one more user ingests while the others read
    mix: str | None = None
    think_time: str | None = None
    locustfile: Path = DEFAULT_LOCUSTFILE
    request_log: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.users < 1:
            raise InvalidInput(f"--users must be at least 1, got {self.users}")
        if self.spawn_rate <= 0:
            raise InvalidInput(f"--spawn-rate must be positive, got {self.spawn_rate}")
        parse_duration(self.run_time)
        if self.scenario not in ("read", "ingest"):
            raise InvalidInput(f"--scenario must be read or ingest, got {self.scenario!r}")
        parts = urlsplit(self.host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"invalid service URL {self.host!r}: use e.g. http://127.0.0.1:8000")
        if not self.locustfile.is_file():
            raise InvalidInput(f"no locustfile at {self.locustfile}")
        if self.queries is not None and not self.queries.is_file():
            raise InvalidInput(f"no query file at {self.queries}")
        if self.mix:
            parse_mix(self.mix)
        if self.think_time:
            parse_think_time(self.think_time)


@dataclass
class CpuUse:
    seconds: float
    wall_s: float
    cores: int

    @property
    def share_of_machine(self) -> float:
        """Fraction of all the machine's cores over the run (1.0 = every core, all the time)."""
        return self.seconds / (self.wall_s * self.cores) if self.wall_s > 0 else 0.0


@dataclass
class LoadTestResult:
    run_dir: Path
    exit_code: int
    wall_s: float
    stats: list[RouteStats]
    locust_cpu: CpuUse
    service_cpu: CpuUse | None
    command: list[str]

    @property
    def total(self) -> RouteStats | None:
        return next((r for r in self.stats if r.name == AGGREGATED), None)

    @property
    def routes(self) -> list[RouteStats]:
        return [r for r in self.stats if r.name != AGGREGATED]

    def report_files(self) -> dict[str, Path]:
        return {
            "stats": self.run_dir / "locust_stats.csv",
            "history": self.run_dir / "locust_stats_history.csv",
            "failures": self.run_dir / "locust_failures.csv",
            "html": self.run_dir / "report.html",
            "log": self.run_dir / "locust.log",
        }


def new_run_dir(data_dir: Path, prefix: str = "loadtest") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(data_dir) / "runs" / f"{prefix}-{stamp}"
    suffix = 1
    while run_dir.exists():  # two runs in the same second
        suffix += 1
        run_dir = Path(data_dir) / "runs" / f"{prefix}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def listening_pid(url: str) -> int | None:
    """The pid of the process listening on the URL's port on this machine, if it can be seen."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (ImportError, OSError, RuntimeError):  # psutil missing, or not allowed to look
        return None
    return None


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except (ImportError, OSError, RuntimeError, ValueError):
        return None
    except Exception:  # psutil.NoSuchProcess/AccessDenied derive from psutil.Error
        return None


def locust_command(config: LoadTestConfig, run_dir: Path) -> list[str]:
    command = [
        sys.executable, "-m", "locust",
        "-f", str(config.locustfile),
        "--headless",
        "--host", config.host.rstrip("/"),
        "-u", str(config.users),
        "-r", str(config.spawn_rate),
        "-t", config.run_time,
        "--csv", str(run_dir / "locust"),
        "--html", str(run_dir / "report.html"),
        "--only-summary",
        "--stop-timeout", "5",
        "--loglevel", "WARNING",
    ]
    if config.collection:
        command += ["--collection", config.collection]
    if config.queries:
        command += ["--queries", str(config.queries)]
    if config.request_log:
        command += ["--request-log", str(config.request_log)]
    if config.scenario == "read":
        command += ["--exclude-tags", "ingest"]
    return command


def run_locust(config: LoadTestConfig, run_dir: Path, *, service_pid: int | None = None) -> LoadTestResult:
    """Run locust to the end and collect what it measured (and what it cost)."""
    config.check()
    command = locust_command(config, run_dir)
    env = {**os.environ, **config.extra_env}
    env.setdefault("PYTHONPATH", str(REPO))
    if config.mix:
        env["RAGKIT_LOADTEST_MIX"] = config.mix
    if config.think_time:
        env["RAGKIT_LOADTEST_WAIT"] = config.think_time
    deadline_s = parse_duration(config.run_time) + 90.0  # start-up, ramp and the stop timeout
    service_before = _cpu_seconds(service_pid)
    started = time.perf_counter()
    with (run_dir / "locust.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        status, usage = _wait_with_usage(process, started + deadline_s)
    wall_s = time.perf_counter() - started
    service_after = _cpu_seconds(service_pid)
    cores = os.cpu_count() or 1
    service_cpu = None
    if service_before is not None and service_after is not None:
        service_cpu = CpuUse(service_after - service_before, wall_s, cores)
    stats_file = run_dir / "locust_stats.csv"
    stats = read_stats(stats_file) if stats_file.is_file() else []
    return LoadTestResult(
        run_dir=run_dir,
        exit_code=status,
        wall_s=wall_s,
        stats=stats,
        locust_cpu=CpuUse(usage, wall_s, cores),
        service_cpu=service_cpu,
        command=command,
    )


def _wait_with_usage(process: subprocess.Popen, deadline: float) -> tuple[int, float]:
    """Wait for the child and return (exit code, CPU seconds it used).

    ``os.wait4`` reports the resources of exactly this child, which ``RUSAGE_CHILDREN`` would
    mix with any other child that ends meanwhile (a service started by the same process).
    """
    interrupted = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            code = os.waitstatus_to_exitcode(status)
            process.returncode = code  # reaped here; keep Popen from waiting again
            return code, usage.ru_utime + usage.ru_stime
        if time.perf_counter() > deadline:
            # Locust overran its own -t: ask it to stop and write its reports, then insist.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL if interrupted else signal.SIGINT)
            interrupted = True
            deadline = time.perf_counter() + 15.0
        time.sleep(0.1)


def result_summary(result: LoadTestResult, verdicts: Sequence[Verdict], config: LoadTestConfig) -> dict[str, Any]:
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k != "extra_env"},
        "command": result.command,
        "locust_exit_code": result.exit_code,
        "wall_s": round(result.wall_s, 2),
        "summary": summary_line(result.total),
        "routes": [asdict(r) | {"failure_ratio": r.failure_ratio} for r in result.stats],
        "gate": [asdict(v) | {"passed": v.passed} for v in verdicts],
        "passed": all(v.passed for v in verdicts),
        "locust_cpu": _cpu_dict(result.locust_cpu),
        "service_cpu": _cpu_dict(result.service_cpu) if result.service_cpu else None,
        "machine": {"cores": os.cpu_count()},
    }


def _cpu_dict(cpu: CpuUse) -> dict[str, float]:
    return {"cpu_s": round(cpu.seconds, 2), "wall_s": round(cpu.wall_s, 2), "share_of_machine": cpu.share_of_machine}


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return path
