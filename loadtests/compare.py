"""Load-test the service under several embedder settings, interleaved, and compare them.

Each variant is a service process on a copy of the same collection; the variants take turns
(A B C, then C B A, ...) so that every one meets the same mix of background load on a shared
machine, and the result is each variant's P95 as a ratio of the first one's.

    python loadtests/compare.py --docs 500 --rounds 2 -u 50 -t 30s

Variants (name=threads/query_batch/omp_wait_policy):
  before   2 torch threads, no query micro-batching, OpenMP threads spinning (the old defaults)
  tuned    2 torch threads, micro-batching up to 16 queries, OpenMP waiting passively (defaults now)
  one      1 torch thread, micro-batching, passive
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from loadtests.harness import BENCH_SECRET, SCIFACT, ServiceProcess, beir_documents  # noqa: E402

VARIANTS = {"before": (2, 0, "ACTIVE"), "tuned": (2, 16, "PASSIVE"), "one": (1, 16, "PASSIVE")}


def serve(data_dir: Path, port: int, threads: int, query_batch: int) -> None:
    """A service whose embedder has the given settings (run in a child process)."""
    import uvicorn

    from ragkit.adapters.embedders.local import LocalEmbedder
    from ragkit.core.config import Settings
    from ragkit.http.app import create_app
    from ragkit.services import build_services

    settings = Settings(_env_file=None, inter_service_secret=BENCH_SECRET, data_dir=data_dir)
    embedder = LocalEmbedder(batch_size=settings.embed_batch_size, threads=threads, query_batch=query_batch)
    uvicorn.run(create_app(settings, build_services(settings, embedder=embedder)), host="127.0.0.1", port=port,
                log_level="warning")


def build_collection(data_dir: Path, documents: int) -> int:
    from ragkit.adapters.embedders.local import LocalEmbedder
    from ragkit.core.config import Settings
    from ragkit.core.types import CollectionSpec, Document
    from ragkit.services import build_services

    settings = Settings(_env_file=None, inter_service_secret=BENCH_SECRET, data_dir=data_dir)
    embedder = LocalEmbedder(batch_size=settings.embed_batch_size, threads=settings.torch_threads)
    services = build_services(settings, embedder=embedder)
    services.store.backend.create_collection(CollectionSpec(
        name="scifact", embedder=embedder.name, dimension=embedder.dimension, chunk_size=settings.chunk_size,
        chunk_overlap=min(settings.chunk_overlap, settings.chunk_size // 2)))
    docs = [Document(id=d["id"], text=d["text"], title=d["title"]) for d in beir_documents(SCIFACT, documents)]
    report = asyncio.run(services.ingestor.ingest("scifact", docs))
    services.store.backend.optimize("scifact")
    services.store.close()
    return report.chunks


class VariantService(ServiceProcess):
    def __init__(self, data_dir: Path, variant: str) -> None:
        threads, query_batch, omp = VARIANTS[variant]
        super().__init__(data_dir, {"OMP_WAIT_POLICY": omp})
        self._args = [str(threads), str(query_batch)]

    def _command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "serve", str(self.data_dir), str(self.port), *self._args]


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "serve":
        serve(Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description="interleaved load tests of embedder settings")
    parser.add_argument("--variants", default="before,tuned,one")
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-u", "--users", type=int, default=50)
    parser.add_argument("-t", "--run-time", default="30s")
    parser.add_argument("--base", type=Path, help="an already built data folder with a 'scifact' collection")
    parser.add_argument("--out", type=Path, help="where the JSON result goes")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    work = Path(tempfile.mkdtemp(prefix="ragkit-compare-"))
    base = args.base
    if base is None:
        base = work / "base"
        print(f"building a collection of {args.docs} SciFact documents ...", flush=True)
        print(f"{build_collection(base, args.docs)} chunks", flush=True)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants if round_ % 2 == 0 else list(reversed(variants)):
            data_dir = work / f"{variant}-{round_}"
            shutil.copytree(base, data_dir)
            (data_dir / "qdrant-edge" / "edge.lock").unlink(missing_ok=True)
            with VariantService(data_dir, variant) as service:
                command = [sys.executable, "-m", "ragkit", "loadtest", "--host", service.url, "-u", str(args.users),
                           "-r", str(max(args.users // 2, 1)), "-t", args.run_time, "--data-dir", str(data_dir),
                           "--default-budget", "600000"]
                env = {**os.environ, "INTER_SERVICE_SECRET": service.secret, "PYTHONPATH": str(REPO)}
                subprocess.run(command, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
            (summary_file,) = (data_dir / "runs").glob("loadtest-*/summary.json")
            summary = json.loads(summary_file.read_text())
            total = next(r for r in summary["routes"] if r["name"] == "Aggregated")
            results[variant].append({"round": round_, "p50_ms": total["p50_ms"], "p95_ms": total["p95_ms"],
                                     "p99_ms": total["p99_ms"], "rps": total["rps"],
                                     "failure_ratio": total["failure_ratio"],
                                     "locust_cpu": summary["locust_cpu"]["share_of_machine"],
                                     "service_cpu": (summary["service_cpu"] or {}).get("share_of_machine"),
                                     "load_average": os.getloadavg()[0]})
            print(f"round {round_} {variant:<7} {summary['summary']}", flush=True)
    first = variants[0]
    base_p95 = sum(r["p95_ms"] for r in results[first]) / len(results[first])
    table = {}
    for variant in variants:
        p95 = sum(r["p95_ms"] for r in results[variant]) / len(results[variant])
        p50 = sum(r["p50_ms"] for r in results[variant]) / len(results[variant])
        table[variant] = {"mean_p50_ms": p50, "mean_p95_ms": p95, "p95_vs_" + first: p95 / base_p95}
        print(f"{variant:<7} mean p50 {p50:.0f} ms  mean p95 {p95:.0f} ms  = {p95 / base_p95:.2f}x {first}")
    from ragkit.core.config import Settings

    out = args.out or Settings().data_dir / "runs" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"variants": {v: VARIANTS[v] for v in variants}, "runs": results, "table": table,
                               "users": args.users, "run_time": args.run_time, "time": time.time()}, indent=2))
    print(f"written to {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
