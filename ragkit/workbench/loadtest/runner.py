"""Running locust headless against a running service, in a child process, with its reports
and the CPU it used kept in the run folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ragkit.core.errors import InvalidInput
from ragkit.workbench.loadtest.gate import AGGREGATED, RouteStats, Verdict, read_stats, summary_line
from ragkit.workbench.loadtest.plan import parse_duration, parse_mix, parse_think_time

# Shipped in the package, so an installed ragkit finds it wherever it runs.
DEFAULT_LOCUSTFILE = Path(__file__).with_name("locustfile.py")



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
    # The machine's 1-minute load average when the run started and when it ended: on a shared
    # machine no latency figure means anything without it.
    load_before: float = 0.0
    load_after: float = 0.0

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
    if config.mix:
        env["RAGKIT_LOADTEST_MIX"] = config.mix
    if config.think_time:
        env["RAGKIT_LOADTEST_WAIT"] = config.think_time
    deadline_s = parse_duration(config.run_time) + 90.0  # start-up, ramp and the stop timeout
    service_before = _cpu_seconds(service_pid)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with (run_dir / "locust.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
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
        load_before=load_before,
        load_after=os.getloadavg()[0],
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
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1min": {"before": result.load_before, "after": result.load_after},
        },
    }


def _cpu_dict(cpu: CpuUse) -> dict[str, float]:
    return {"cpu_s": round(cpu.seconds, 2), "wall_s": round(cpu.wall_s, 2), "share_of_machine": cpu.share_of_machine}


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return path
