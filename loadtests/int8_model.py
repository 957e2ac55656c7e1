"""Would an int8 copy of the local model do? Its retrieval quality against the fp32 export's.

ONNX Runtime's dynamic quantization turns the fp32 export's weights into int8; both models then
embed the same BEIR corpus and queries (title and text, as ragkit embeds a chunk, cut at the
model's 256 tokens), and exact dense search over each gives nDCG@10 and recall@100. Exact search
keeps the index out of it: what differs is the model alone. Also reported: the mean cosine between
the two models' vectors and their batch throughput, measured round by round in the same run.

    python loadtests/int8_model.py                      # SciFact and ArguAna (about 10 minutes)
    python loadtests/int8_model.py --datasets scifact --limit 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ragkit.adapters.embedders.onnx import OnnxEmbedder  # noqa: E402
from ragkit.core.config import Settings  # noqa: E402
from ragkit.workbench.evaluation.datasets import SHARED_BEIR, load_beir  # noqa: E402
from ragkit.workbench.evaluation.metrics import evaluate_run  # noqa: E402


class _Int8Embedder(OnnxEmbedder):
    """The same embedder (tokenizer, pooling, batching) over a quantized copy of the export."""

    def __init__(self, cache_dir: Path, int8_dir: Path) -> None:
        super().__init__(cache_dir)
        self._int8_dir = int8_dir

    def _session_of(self, onnxruntime: Any, path: Path) -> Any:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = self._int8_dir / f"{path.stem}-int8.onnx"
        if not target.exists():
            # The weights of the linear layers only: its quantized attention op rejects the export's
            # attention node (opset 23).
            quantize_dynamic(
                str(path), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
            )
        return super()._session_of(onnxruntime, target)


def _embed(embedder: OnnxEmbedder, texts: list[str]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    vectors = np.asarray(embedder.embed_sync(texts), dtype=np.float32)
    return vectors, time.perf_counter() - start


def compare(name: str, embedders: dict[str, OnnxEmbedder], limit: int | None) -> dict[str, Any]:
    dataset = load_beir(SHARED_BEIR / name)
    documents = list(dataset.corpus())[:limit] if limit else list(dataset.corpus())
    ids = [d["id"] for d in documents]
    texts = [f"{d['title']}\n{d['text']}".strip() for d in documents]
    present = set(ids)
    qids = [q for q in dataset.queries if set(dataset.qrels[q]) & present]
    questions = [dataset.queries[q] for q in qids]
    vectors: dict[str, np.ndarray] = {}
    seconds = {k: 0.0 for k in embedders}
    # Round by round, the order alternating, so both models see the same machine.
    order = list(embedders)
    halves = [texts[: len(texts) // 2], texts[len(texts) // 2 :]]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in embedders}
    for i, half in enumerate(halves):
        for label in order if i % 2 == 0 else reversed(order):
            block, took = _embed(embedders[label], half)
            parts[label].append(block)
            seconds[label] += took
    result: dict[str, Any] = {"documents": len(texts), "queries": len(qids)}
    for label, embedder in embedders.items():
        vectors[label] = np.concatenate(parts[label])
        queries, _ = _embed(embedder, questions)
        scores = queries @ vectors[label].T
        run = {}
        for qi, qid in enumerate(qids):
            best = np.argpartition(-scores[qi], 100)[:100]
            run[qid] = {ids[j]: float(scores[qi, j]) for j in best}
        means = evaluate_run(dataset.qrels, run, ["ndcg@10", "recall@100"]).means
        result[label] = {**means, "texts_per_s": round(len(texts) / seconds[label], 1)}
    result["mean_cosine"] = float(np.mean(np.sum(vectors["fp32"] * vectors["int8"], axis=1)))
    result["ndcg_delta"] = round(result["int8"]["ndcg@10"] - result["fp32"]["ndcg@10"], 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="int8 against fp32 ONNX export: retrieval quality and speed")
    parser.add_argument("--datasets", default="scifact,arguana", help="BEIR folders under the shared data")
    parser.add_argument("--limit", type=int, help="only the first N documents of each corpus")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 200:
        parser.error("--limit must be at least 200 documents (recall@100 needs more than 100)")
    cache = Settings().model_cache_dir
    with tempfile.TemporaryDirectory(prefix="ragkit-int8-") as tmp:
        embedders: dict[str, OnnxEmbedder] = {"fp32": OnnxEmbedder(cache), "int8": _Int8Embedder(cache, Path(tmp))}
        for embedder in embedders.values():
            embedder.load()
        results = {}
        for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
            results[name] = r = compare(name, embedders, args.limit)
            print(
                f"{name}: nDCG@10 fp32 {r['fp32']['ndcg@10']:.4f}, int8 {r['int8']['ndcg@10']:.4f} "
                f"(delta {r['ndcg_delta']:+.4f}); recall@100 {r['fp32']['recall@100']:.4f} / "
                f"{r['int8']['recall@100']:.4f}; mean cosine {r['mean_cosine']:.4f}; texts/s "
                f"{r['fp32']['texts_per_s']} / {r['int8']['texts_per_s']}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
