"""Search P95 against concurrent users, for each local embedding backend, side by side in one run.

    python loadtests/sweep.py --data-dir DIR --collection scifact
    python loadtests/sweep.py --data-dir DIR --collection scifact --users 10,25,50,100 --run-time 30s

DIR must hold the collection already, for example::

    RAGKIT_DATA_DIR=DIR ragkit serve &   # then:
    ragkit ingest ../shared/data/beir/scifact/corpus.jsonl -c scifact

Both backends give the same vectors (tests/test_onnx_embedder.py), so one collection serves both.
Each backend gets its own copy of DIR and its own ``ragkit serve``; both run for the whole sweep,
and the runs alternate between them at each user count, so that a change in the machine's load
falls on both alike. Before each measured run the service is warmed up for ``--warm-up`` (a
service that has just started answers its first requests slowly). Every run is hybrid search with
unique queries (never a cache hit) and the default think time (0.5-1.5 s), through
``ragkit.workbench.loadtest``, as ``ragkit loadtest`` runs it.

Writes sweep.json under DIR/runs/sweep-<time>/ and the plot (default docs/search-p95-vs-users.png),
and prints one line per run with the machine's load average around it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ServiceProcess  # noqa: E402

from ragkit.workbench.loadtest import LoadTestConfig, run_locust  # noqa: E402

MIX = "search:hybrid=1"
ROUTE = "search:hybrid"


def measure(service: ServiceProcess, collection: str, users: int, run_time: str, run_dir: Path) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = LoadTestConfig(
        host=service.url,
        users=users,
        spawn_rate=max(10.0, users / 5),
        run_time=run_time,
        collection=collection,
        mix=MIX,
        extra_env={"INTER_SERVICE_SECRET": service.secret},
    )
    result = run_locust(config, run_dir, service_pid=service.pid)
    row = next((r for r in result.routes if r.name == ROUTE), None)
    if result.exit_code not in (0, 1) or row is None:
        raise RuntimeError(f"locust failed (exit {result.exit_code}); see {run_dir}/locust.log")
    return {
        "users": users,
        "p50_ms": row.p50_ms,
        "p95_ms": row.p95_ms,
        "p99_ms": row.p99_ms,
        "rps": round(row.rps, 1),
        "failures": row.failures,
        "requests": row.requests,
        "service_cpu": round(result.service_cpu.share_of_machine, 3) if result.service_cpu else None,
        "load_before": result.load_before,
        "load_after": result.load_after,
    }


def draw(results: dict[str, list[dict[str, Any]]], path: Path, target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for backend, rows in results.items():
        axes.plot([r["users"] for r in rows], [r["p95_ms"] for r in rows], marker="o", label=backend)
    axes.axhline(target_ms, color="grey", linestyle="--", linewidth=1, label=f"target {target_ms:.0f} ms")
    axes.set_xlabel("concurrent users (think time 0.5-1.5 s)")
    axes.set_ylabel("hybrid search P95 (ms)")
    axes.set_title("Search P95 against users, by embedding backend")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a data folder that holds the collection")
    parser.add_argument("--collection", required=True)
    parser.add_argument("--users", default="10,25,50,100", help="user counts, e.g. 10,25,50,100")
    parser.add_argument("--backends", default="onnx,torch", help="RAGKIT_LOCAL_BACKEND values to compare")
    parser.add_argument("--run-time", default="30s", help="each measured run (locust -t)")
    parser.add_argument("--warm-up", default="10s", help="load before each measured run, not counted")
    parser.add_argument("--target-ms", type=float, default=50.0, help="the P95 line drawn on the plot")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "search-p95-vs-users.png")
    args = parser.parse_args(argv)
    try:
        users = [int(u) for u in args.users.split(",") if u.strip()]
    except ValueError:
        parser.error("--users takes whole numbers separated by commas, e.g. 10,25,50")
    if not users or min(users) < 1:
        parser.error("--users needs at least one count of 1 or more")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"onnx", "torch"}:
        parser.error("--backends takes onnx and/or torch")
    source = args.data_dir.resolve()
    if not (source / "qdrant-edge" / "collections" / args.collection).is_dir():
        parser.error(f"{source} holds no collection {args.collection!r}: ingest it first (see --help)")

    work = source / "runs" / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    services: dict[str, ServiceProcess] = {}
    results: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    try:
        for backend in backends:
            copy = work / f"data-{backend}"
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("runs", "*.lock", "logs"))
            services[backend] = ServiceProcess(copy, {"RAGKIT_LOCAL_BACKEND": backend}).start()
        for count in users:
            for backend in backends:
                service = services[backend]
                measure(service, args.collection, min(count, 50), args.warm_up, work / f"warm-{backend}-{count}")
                row = measure(service, args.collection, count, args.run_time, work / f"{backend}-{count}")
                results[backend].append(row)
                print(
                    f"{backend:<6}{count:>5} users  p50 {row['p50_ms']:>5.0f}  p95 {row['p95_ms']:>5.0f}  "
                    f"p99 {row['p99_ms']:>5.0f} ms  {row['rps']:>6.1f} req/s  failures {row['failures']}  "
                    f"service CPU {row['service_cpu']:.0%}  load {row['load_before']:.2f} -> {row['load_after']:.2f}",
                    flush=True,
                )
    finally:
        for service in services.values():
            service.stop()
        for backend in backends:
            shutil.rmtree(work / f"data-{backend}", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sweep.json").write_text(json.dumps({"run_time": args.run_time, "results": results}, indent=2))
    draw(results, args.plot, args.target_ms)
    print(f"results: {work / 'sweep.json'}\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
