"""Part 4 of `make bench`: dense search as the collection grows, on the embedded store.

At each size the same synthetic clustered vectors go into two Qdrant Edge collections, one at full
precision and one with int8 scalar quantization (the collection option), and, up to
``LOCAL_UP_TO`` chunks, into qdrant-client's local mode (brute force; past that it holds a Python
object per point and takes minutes to fill, so it is left out). The same queries then run on
each, interleaved query by query so that all see the same machine; recall@10 is against exact
search over the same vectors.

Memory is measured where nothing else shares the process: a child process opens one collection
and runs the queries, and reports its resident memory before the first query and after the last
(the shard maps its files, so what searching touches is what it keeps resident).

    python loadtests/bench.py --parts 4 --sizes 100000,1000000   # about 40 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.core.types import CollectionSpec, Point, SparseVector

DIM = 384
LOCAL_UP_TO = 100_000
QUANTIZATIONS = ("none", "int8")
WARM_UP = 20  # queries before the measured ones, in the memory probe
TOPIC_SIZE = 50  # chunks per synthetic topic


def synthetic_vectors(n: int, rng: np.random.Generator, centroids: np.ndarray) -> np.ndarray:
    """Clustered unit vectors: uniform random ones would be an unfairly hard case for HNSW,
    and real embeddings are clustered by topic. Built in slices to keep the float64 noise small."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        end = min(start + 100_000, n)
        labels = rng.integers(0, len(centroids), size=end - start)
        block = centroids[labels] + rng.normal(0, 0.045, size=(end - start, DIM)).astype(np.float32)
        out[start:end] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top10(queries: np.ndarray, vectors: np.ndarray) -> list[set[int]]:
    top = []
    for query in queries:
        scores = vectors @ query
        best = np.argpartition(-scores, 10)[:10]
        top.append(set(best.tolist()))
    return top


def fill_store(
    store: Any, name: str, vectors: np.ndarray, texts: list[str], sparse: list[SparseVector], spec: CollectionSpec
) -> None:
    from ragkit.core.names import point_id

    store.create_collection(spec)
    for start in range(0, len(vectors), 2000):
        points = [
            Point(
                id=point_id(name, f"doc{i}", 0),
                dense=vectors[i].tolist(),
                sparse=sparse[i % len(sparse)],
                payload={
                    "doc_id": f"doc{i}",
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "content_hash": "synthetic",
                    "text": texts[i % len(texts)],
                    "title": "",
                    "metadata": {},
                },
            )
            for i in range(start, min(start + 2000, len(vectors)))
        ]
        store.upsert(name, points)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def probe(folder: Path, name: str, queries_file: Path) -> dict[str, Any]:
    """In a child process: open one collection, search, and say what it cost in memory."""
    from ragkit.adapters.stores.edge import EdgeStore

    queries = np.load(queries_file)
    store = EdgeStore(folder)
    before = _rss_bytes()
    samples = []
    for i, query in enumerate(queries.tolist()):
        start = time.perf_counter()
        store.search(name, mode="dense", dense=query, sparse=None, top_k=10)
        if i >= WARM_UP:
            samples.append((time.perf_counter() - start) * 1000)
    after = _rss_bytes()
    store.close()
    return {
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "growth_bytes": after - before,
        "p50_ms": float(np.percentile(samples, 50)),
        "p95_ms": float(np.percentile(samples, 95)),
    }


def _probe_in_child(folder: Path, name: str, queries_file: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, str(folder), name, str(queries_file)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"the memory probe of {name} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_scale(
    report: Any, work: Path, sizes: list[int], texts: list[str], embedder_name: str, n_queries: int, plot: Path | None
) -> Path:
    """Fills, measures and reports every size; returns the folder holding the largest one
    (part 5 serves it)."""
    from qdrant_client import QdrantClient
    from threadpoolctl import threadpool_limits

    from ragkit.adapters.stores.edge import EdgeStore
    from ragkit.adapters.stores.qdrant import QdrantStore
    from ragkit.rag.sparse import Bm25Encoder

    print(f"4. scale: {sizes} chunks, Edge full precision and int8 vs qdrant-client local mode", flush=True)
    encoder = Bm25Encoder(avg_len=max(sum(Bm25Encoder(avg_len=1.0).count_terms(t) for t in texts) / len(texts), 1.0))
    sparse = encoder.embed_documents(texts)
    results: dict[int, Any] = {}
    largest_dir = work / "scale-service"
    for size in sizes:
        # A topic per 50 chunks at every size, so that each size is as hard as the others: with a
        # fixed number of topics the smaller collections would have a few chunks per topic, and
        # their nearest neighbours past those few would be near-ties of unrelated chunks.
        rng = np.random.default_rng(11)
        centroids = rng.normal(size=(max(size // TOPIC_SIZE, 1), DIM)).astype(np.float32)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        vectors = synthetic_vectors(size, rng, centroids)
        queries = synthetic_vectors(n_queries, rng, centroids)
        queries_file = work / f"scale-queries-{size}.npy"
        np.save(queries_file, np.concatenate([queries[:WARM_UP], queries]))
        data_dir = largest_dir if size == max(sizes) else work / f"scale-{size}"
        folder = data_dir / "qdrant-edge"
        names = {q: f"synthetic-{size}" + ("" if q == "none" else f"-{q}") for q in QUANTIZATIONS}
        figures: dict[str, Any] = {}
        edge = EdgeStore(folder)
        for q, name in names.items():
            spec = CollectionSpec(
                name=name,
                embedder=embedder_name,
                dimension=DIM,
                chunk_size=200,
                chunk_overlap=30,
                bm25_avg_len=encoder.avg_len,
                quantization=q,
            )
            start = time.perf_counter()
            fill_store(edge, name, vectors, texts, sparse, spec)
            fill_s = time.perf_counter() - start
            start = time.perf_counter()
            edge.optimize(name)  # builds the HNSW index (and the 8-bit copy) and holds the GIL meanwhile
            figures[q] = {"fill_s": round(fill_s, 1), "optimize_s": round(time.perf_counter() - start, 1)}
            print(f"   {name}: filled in {fill_s:.0f} s, index built in {figures[q]['optimize_s']:.0f} s", flush=True)
        edge.close()
        # At rest: right after optimize() the replaced segments are still on disk (about twice this).
        disk = sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())
        for q, name in names.items():
            figures[q]["memory"] = _probe_in_child(folder, name, queries_file)

        stores: dict[str, tuple[Any, str]] = {}
        edge = EdgeStore(folder)
        for q, name in names.items():
            stores[f"edge_{q}"] = (edge, name)
        local = None
        if size <= LOCAL_UP_TO:
            local = QdrantStore(QdrantClient(":memory:"))
            spec = CollectionSpec(
                name=names["none"],
                embedder=embedder_name,
                dimension=DIM,
                chunk_size=200,
                chunk_overlap=30,
                bm25_avg_len=encoder.avg_len,
            )
            fill_store(local, names["none"], vectors, texts, sparse, spec)
            stores["qdrant_local"] = (local, names["none"])
        exact = exact_top10(queries, vectors)
        samples: dict[str, list[float]] = {k: [] for k in stores}
        recall: dict[str, list[float]] = {k: [] for k in stores}
        # numpy's BLAS threads (local mode's brute force) spin for a while after each call and would
        # take the core from the Edge query that follows: one BLAS thread keeps the comparison fair.
        blas = threadpool_limits(limits=1, user_api="blas")
        order = list(stores)
        for qi, query in enumerate(queries):
            dense = query.tolist()
            for label in order[qi % len(order) :] + order[: qi % len(order)]:  # rotate who goes first
                store, name = stores[label]
                start = time.perf_counter()
                hits = store.search(name, mode="dense", dense=dense, sparse=None, top_k=10)
                samples[label].append((time.perf_counter() - start) * 1000)
                recall[label].append(len({int(h.doc_id[3:]) for h in hits} & exact[qi]) / 10)
        blas.restore_original_limits()
        edge.close()
        if local is not None:
            local._client.close()
        results[size] = _report_size(report, size, samples, recall, figures, disk)
    report.data["scale"] = {str(k): v for k, v in results.items()}
    if plot is not None:
        draw_plot(results, plot)
        report.data["plot"] = str(plot)
    return largest_dir


def _report_size(
    report: Any,
    size: int,
    samples: dict[str, list[float]],
    recall: dict[str, list[float]],
    figures: dict[str, Any],
    disk_bytes: int,
) -> dict[str, Any]:
    from loadtests.bench import summary

    out: dict[str, Any] = {k: {**summary(v), "recall_at_10": float(np.mean(recall[k]))} for k, v in samples.items()}
    out["build"] = figures
    out["edge_disk_bytes"] = disk_bytes
    full, int8 = out["edge_none"], out["edge_int8"]
    part = "4 scale"
    for stat in ("p50_ms", "p95_ms"):
        report.add(
            part,
            f"{size:>7} chunks: Edge int8 vs full precision, {stat[:3]}",
            f"{int8[stat]:.2f} ms",
            f"full {full[stat]:.2f} ms",
            int8[stat] / full[stat],
        )
        if "qdrant_local" in out:
            local = out["qdrant_local"]
            report.add(
                part,
                f"{size:>7} chunks: Edge vs qdrant-client local, {stat[:3]}",
                f"{full[stat]:.2f} ms",
                f"local {local[stat]:.2f} ms",
                full[stat] / local[stat],
            )
    for q in QUANTIZATIONS:
        report.add(
            part,
            f"{size:>7} chunks: Edge {q} recall@10 vs exact search",
            f"{out[f'edge_{q}']['recall_at_10']:.3f}",
            "exact 1.000",
            out[f"edge_{q}"]["recall_at_10"],
            f"index built in {figures[q]['optimize_s']:.0f} s",
        )
    mib = 2**20
    grown = {q: figures[q]["memory"]["growth_bytes"] for q in QUANTIZATIONS}
    report.add(
        part,
        f"{size:>7} chunks: memory kept by searching, int8 vs full",
        f"+{grown['int8'] / mib:.0f} MiB",
        f"full +{grown['none'] / mib:.0f} MiB",
        grown["int8"] / max(grown["none"], 1),
        "resident growth of a process that opens the collection and searches",
    )
    # The operations guide's sizing: what the embedded store takes on disk (both collections),
    # against the raw float32 vectors they hold.
    raw = 2 * size * DIM * 4
    report.add(
        part,
        f"{size:>7} chunks: Edge on disk vs the raw vectors (both)",
        f"{disk_bytes / mib:.0f} MiB",
        f"raw {raw / mib:.0f} MiB",
        disk_bytes / raw,
    )
    return out


def draw_plot(results: dict[int, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for key, label, color in (
        ("edge_none", "Qdrant Edge (HNSW)", "tab:blue"),
        ("edge_int8", "Qdrant Edge, int8 + rescoring", "tab:green"),
        ("qdrant_local", "qdrant-client local (brute force)", "tab:orange"),
    ):
        shown = [s for s in sizes if key in results[s]]
        if not shown:
            continue
        ax.plot(shown, [results[s][key]["p50_ms"] for s in shown], "o-", color=color, label=f"{label} p50")
        ax.plot(shown, [results[s][key]["p95_ms"] for s in shown], "s--", color=color, alpha=0.6, label=f"{label} p95")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("chunks in the collection (384-d, synthetic)")
    ax.set_ylabel("dense search latency (ms)")
    ax.set_title("Search latency vs collection size (2 shared cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":  # the memory probe's child process
    REPO = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(REPO))
    print(json.dumps(probe(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
