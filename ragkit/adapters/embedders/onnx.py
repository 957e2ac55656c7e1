"""all-MiniLM-L6-v2 through ONNX Runtime: the default local embedder (``RAGKIT_LOCAL_BACKEND=onnx``).

The same weights as ``LocalEmbedder`` (sentence-transformers on torch), exported to ONNX once, at
first use (``onnx_export``), tokenized by the ``tokenizers`` fast tokenizer from the model folder's
tokenizer.json, truncated at the model's max_seq_length, mean-pooled over the attention mask and
L2-normalised exactly as sentence-transformers does. The vectors agree with torch's to a cosine of
1.0 within float rounding (tests/test_onnx_embedder.py), so both backends carry the same embedder
name: a collection ingested with one is searched with the other unchanged.

Threads and calls, measured on this 2-core machine while other work ran on it (load average 2-4
before ragkit's own), SciFact queries, ``loadtests/bench.py``-style rounds interleaved in one process:

* N queries sent at once, 1 intra-op thread x 2 calls in parallel against 2 threads x 1 call:
  2 at once p50 19.7 against 16.7 ms (both about 95 queries/s); 16 at once 127-150 against 106-128
  queries/s. One query alone, idle cores: 2 threads 7.9 ms, 1 thread 11.1 ms (torch: 23.4 ms).
* 256 chunk-sized texts (~200 word pieces): 18.7 texts/s (1 x 2) against 22.7 (2 x 1) and torch's
  19.8, each round varying by up to 2x: about equal.
* Texts per call for queued queries, with 1 x 2 workers, 16 at once: 1 text 127 queries/s, 2 texts
  147, 4 texts 150, 16 texts 94 (one worker takes the whole queue while the other idles).

So each call runs on one thread and ``workers`` calls (one per core) run at once on one shared
session (``run`` is thread-safe and ONNX Runtime releases the GIL): two queries run side by side on
two cores, and nothing waits at the barrier of a thread that lost its core (a call split over two
threads does, whenever the event loop or anything else wants a core). Queued queries are still
micro-batched, but only ``query_call_texts`` (2) to a call, so that the queue is shared between the
workers; ingestion batches run on the same number of threads.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ragkit.adapters.embedders.local import (
    BREAKER,
    DIMENSION,
    MODEL_NAME,
    QueryBatcher,
    checked_texts,
    configured_max_seq_length,
    count_wordpieces,
    model_path,
)
from ragkit.adapters.embedders.onnx_export import INPUTS, OUTPUT, ensure_export
from ragkit.adapters.embedders.slots import CoreSlots
from ragkit.core.errors import ConfigurationError, DependencyUnavailable, RagkitError

if TYPE_CHECKING:
    import numpy as np
    from onnxruntime import InferenceSession
    from tokenizers import Encoding, Tokenizer


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not every core of the host."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OnnxEmbedder:
    """Implements ``ragkit.core.types.Embedder`` with all-MiniLM-L6-v2 on ONNX Runtime (CPU).

    ``cache_dir`` holds the export (``RAGKIT_MODEL_DIR``). Nothing heavy happens before the first
    embed (or ``load()``): then the export is made if missing and the session opened. Queries (up to
    ``query_batch`` texts) go through a ``QueryBatcher`` with ``workers`` threads, which puts up to
    ``query_call_texts`` queued texts in one call (a request is never split); larger requests
    (ingestion) are tokenized in one call, sorted by length and cut into batches of up to
    ``batch_size`` texts and ``batch_tokens`` padded tokens that run on the same number of threads.
    ONNX Runtime releases the GIL while it computes, so those threads really run in parallel, and
    the event loop keeps serving meanwhile. Both kinds of call share ``slots`` (one per worker):
    a waiting query takes the next free core before any further ingestion batch does.
    """

    name = f"local:{MODEL_NAME}"
    dimension = DIMENSION
    breaker_name = BREAKER

    def __init__(
        self,
        cache_dir: Path,
        batch_size: int = 32,
        workers: int | None = None,
        threads: int = 1,
        query_batch: int = 16,
        query_call_texts: int = 2,
        batch_tokens: int = 512,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise ConfigurationError(f"workers must be at least 1, got {workers}")
        if threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {threads}")
        if query_batch < 0:
            raise ConfigurationError(f"query_batch must be 0 (off) or more, got {query_batch}")
        if query_call_texts < 1:
            raise ConfigurationError(f"query_call_texts must be at least 1, got {query_call_texts}")
        if batch_tokens < 1:
            raise ConfigurationError(f"batch_tokens must be at least 1, got {batch_tokens}")
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.workers = workers or available_cores()
        self.threads = threads
        self.query_batch = query_batch
        self.batch_tokens = batch_tokens
        self._path = model_path()
        self.max_tokens = configured_max_seq_length(self._path)
        # One model call per core at a time, queries first (see slots.py).
        self.slots = CoreSlots(self.workers)
        self._batcher = QueryBatcher(self._embed_batch, max_texts=query_call_texts, workers=self.workers)
        # Ingestion batches, bounded to one per worker however many requests ingest at once.
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ragkit-embed")
        self._session: InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self.onnx_path: Path | None = None
        self._load_lock = threading.Lock()

    # --- model ---------------------------------------------------------------------------

    def load(self) -> InferenceSession:
        """Export if needed and open the session now (else done on first embed); safe to call twice."""
        if self._session is not None:
            return self._session
        with self._load_lock:
            if self._session is None:
                self._tokenizer = self._load_tokenizer()
                self._session = self._open()
        return self._session

    def _open(self) -> InferenceSession:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigurationError(
                f"the ONNX backend needs onnxruntime ({exc}); install it or set RAGKIT_LOCAL_BACKEND=torch"
            ) from exc
        path = ensure_export(self._path, self.cache_dir)
        stat = path.stat()
        try:
            session = self._session_of(onnxruntime, path)
        except Exception:  # any load failure of a cached file: make it again, once
            path = ensure_export(self._path, self.cache_dir, broken=stat)
            try:
                session = self._session_of(onnxruntime, path)
            except Exception as exc:
                raise ConfigurationError(f"cannot load the ONNX export {path}: {exc}") from exc
        (output,) = session.get_outputs()
        if output.shape[-1] != DIMENSION:
            raise ConfigurationError(f"{path} gives {output.shape[-1]}-dimensional vectors, expected {DIMENSION}")
        self.onnx_path = path
        return session

    def _session_of(self, onnxruntime: Any, path: Path) -> InferenceSession:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Only matters with threads > 1: a pool that spins at each barrier steals the core the other
        # worker (or the event loop) needs (measured: see the module doc).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are about graph passes, not requests
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _load_tokenizer(self) -> Tokenizer:
        try:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self._path / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ConfigurationError(f"cannot load the MiniLM tokenizer: {exc}") from exc
        # What sentence-transformers does: truncate to max_seq_length, [CLS]/[SEP] included; padding is
        # done per batch below (the file's own setting pads everything to 128).
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.no_padding()
        return tokenizer

    # --- Embedder protocol -------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = checked_texts(texts)
        if not texts:
            return []
        if self._session is None:  # an export takes tens of seconds: never on the event loop
            await anyio.to_thread.run_sync(self.load)
        if len(texts) <= self.query_batch:
            return await asyncio.wrap_future(self._batcher.submit(texts))
        return await anyio.to_thread.run_sync(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The same as ``embed``, for callers without an event loop (notebooks, scripts)."""
        texts = checked_texts(texts)
        if not texts:
            return []
        encodings = self._tokenize(texts)
        # Batches of similar length, by the exact token count: a batch is padded to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        slices = self._slices(order, [len(encoding.ids) for encoding in encodings])
        vectors: list[list[float]] = [[] for _ in texts]
        batches = self._pool.map(lambda indices: self._infer_background([encodings[i] for i in indices]), slices)
        for indices, batch in zip(slices, batches, strict=True):
            for index, vector in zip(indices, batch, strict=True):
                vectors[index] = vector
        return vectors

    def _slices(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """``order`` (shortest first) cut into batches of at most ``batch_size`` texts and
        ``batch_tokens`` padded tokens.

        The token bound is for ONNX Runtime: attention holds batch x 12 heads x length^2 floats per
        call, and its arena keeps its largest allocation. Full 256-token chunks in batches of 64, two
        calls at once, took the process to 2.1 GB (batches of 16: 0.7 GB) and about twice the CPU
        time per text (user time for 128 chunks, 3 runs: 40-51 s against 20-32 s).

        It is also how long a query can wait for a core held by ingestion (see slots.py): 512 tokens
        are two full chunks, about 0.1 s on one core. Smaller batches cost no throughput here: 160
        SciFact abstracts embedded at 20-28 texts/s with 512 tokens, 22-27 with 1024 and 20 with
        4096 (two workers, load average 1-1.5, each setting run twice).
        """
        slices: list[list[int]] = []
        current: list[int] = []
        for index in order:
            if current and (len(current) >= self.batch_size or (len(current) + 1) * lengths[index] > self.batch_tokens):
                slices.append(current)
                current = []
            current.append(index)
        if current:
            slices.append(current)
        return slices

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """One model call for the texts of a query batch (already checked), ahead of ingestion."""
        encodings = self._tokenize(texts)
        with self.slots.urgent():
            return self._infer(encodings)

    def _infer_background(self, encodings: list[Encoding]) -> list[list[float]]:
        """One ingestion batch, started only when no query is waiting for a core."""
        with self.slots.background():
            return self._infer(encodings)

    def _tokenize(self, texts: list[str]) -> list[Encoding]:
        self.load()
        assert self._tokenizer is not None
        try:
            return self._tokenizer.encode_batch(texts)
        except Exception as exc:  # checked text that the tokenizer still refuses: its failure, not the caller's
            raise DependencyUnavailable(
                BREAKER, f"{MODEL_NAME} failed to tokenize a batch of {len(texts)}: {type(exc).__name__}: {exc}"
            ) from exc

    def _infer(self, encodings: list[Encoding]) -> list[list[float]]:
        import numpy as np

        session = self.load()
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = dict(zip(INPUTS, (ids, mask, np.zeros_like(ids)), strict=True))
        try:
            (hidden,) = session.run([OUTPUT], feed)
        except RagkitError:
            raise
        except MemoryError as exc:
            raise DependencyUnavailable(
                BREAKER, f"{MODEL_NAME} failed to encode a batch of {len(encodings)}: out of memory"
            ) from exc
        except Exception as exc:
            # onnxruntime's errors (Fail, RuntimeException, InvalidArgument ...) derive from Exception
            # alone; whatever comes from it, the model failed, not the request: the texts were checked.
            raise DependencyUnavailable(
                BREAKER,
                f"{MODEL_NAME} failed to encode a batch of {len(encodings)}: {type(exc).__name__}: {exc}",
            ) from exc
        return mean_pooled(hidden, mask).tolist()

    def count_tokens(self, text: str) -> int:
        """Word pieces as the model's tokenizer splits them (no [CLS]/[SEP]); no session needed."""
        return count_wordpieces(text)

    async def ensure_dimension(self) -> int:
        return self.dimension


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling and Normalize, in numpy (float32 throughout, as there).

    The token vectors are averaged over the attention mask (padding never counts; the count is clamped
    at 1e-9 like theirs), then each vector is divided by its L2 norm (clamped at 1e-12, as
    ``torch.nn.functional.normalize``).
    """
    import numpy as np

    weights = mask.astype(np.float32)[..., None]
    summed = (hidden * weights).sum(axis=1)
    mean = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norms, 1e-12)).astype(np.float32)
