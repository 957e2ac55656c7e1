"""The ONNX Runtime backend of the local model: the same vectors as sentence-transformers, an export
made once and shared safely, calls that really run side by side, and the setting that picks it.

What every embedder promises is in test_embedder_contract.py (this backend is one of its cases).
Everything here runs the real export (torch.onnx), the real session and the real model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ragkit.adapters.embedders.local import LocalEmbedder, QueryBatcher, model_path
from ragkit.adapters.embedders.onnx import OnnxEmbedder
from ragkit.adapters.embedders.onnx_export import ensure_export, export_path, lock_path, source_digest
from ragkit.core.config import Settings
from ragkit.core.errors import ConfigurationError
from ragkit.services import build_embedder
from tests.conftest import REPO, SCIFACT, make_settings

# Long enough for any one export on two loaded cores (about 10-30 s each), short enough to end a hang.
BARRIER_S = 60.0


def read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line, _ in zip(lines, range(limit), strict=False)]


def model_copy(folder: Path, change: str | None = None) -> Path:
    """The model folder as links to the installed files; ``change`` names one file made a changed copy."""
    folder.mkdir()
    for item in model_path().iterdir():
        if item.name == change:
            data = bytearray(item.read_bytes())
            if item.suffix == ".json":
                config = json.loads(data)
                config["ragkit_test_marker"] = 1  # a key the model ignores: loads the same, hashes apart
                data = bytearray(json.dumps(config).encode())
            else:
                data[len(data) // 2] ^= 0x01  # one bit of one weight
            (folder / item.name).write_bytes(bytes(data))
        else:
            (folder / item.name).symlink_to(item)
    return folder


# --------------------------------------------------------------------------- the vectors


@pytest.mark.skipif(
    not (SCIFACT / "corpus.jsonl").is_file(), reason=f"the SciFact corpus is not at {SCIFACT} (shared data)"
)
def test_vectors_are_sentence_transformers_own_on_1000_real_texts(
    onnx_embedder: OnnxEmbedder, local_embedder: LocalEmbedder
) -> None:
    # Real queries (short) and real abstracts (most past 256 word pieces, so truncation is compared
    # too), each embedded in padded batches of mixed lengths by both backends.
    queries = [row["text"] for row in read_jsonl(SCIFACT / "queries.jsonl", 850)]
    abstracts = [f"{row['title']}\n{row['text']}" for row in read_jsonl(SCIFACT / "corpus.jsonl", 150)]
    texts = queries + abstracts
    assert len(texts) == 1000
    assert sum(onnx_embedder.count_tokens(t) > onnx_embedder.max_tokens for t in abstracts) > 50

    ours = np.array(onnx_embedder.embed_sync(texts), dtype=np.float64)
    theirs = np.array(local_embedder.embed_sync(texts), dtype=np.float64)

    cosines = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"ONNX vs sentence-transformers over {len(texts)} texts: mean cosine 1 - {1 - cosines.mean():.2e}, "
          f"min 1 - {1 - cosines.min():.2e} (text {int(cosines.argmin())}), "
          f"largest difference in a component {np.abs(ours - theirs).max():.1e}")
    assert cosines.mean() >= 0.9999
    assert cosines.min() >= 0.999, f"text {int(cosines.argmin())}: {cosines.min()}"
    assert np.abs(ours - theirs).max() < 1e-3
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- the export


def test_construction_exports_nothing_and_knows_its_limits(tmp_path: Path) -> None:
    embedder = OnnxEmbedder(tmp_path / "models")
    assert embedder.max_tokens == 256  # chunking needs it before any model is loaded
    assert not (tmp_path / "models").exists(), "the export waits for the first embed"
    assert (embedder.name, embedder.breaker_name, embedder.dimension) == (
        LocalEmbedder.name, LocalEmbedder.breaker_name, LocalEmbedder.dimension
    ), "the same name as torch's: collections need no re-ingestion when the backend changes"


def test_the_export_is_reused_and_named_after_its_weights(
    onnx_embedder: OnnxEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime

    onnx_embedder.load()
    path = onnx_embedder.onnx_path
    assert path is not None and path == export_path(model_path(), onnx_embedder.cache_dir)
    assert source_digest(model_path())[:16] in path.name
    meta = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.custom_metadata_map["ragkit.source_digest"] == source_digest(model_path())
    assert not list(onnx_embedder.cache_dir.glob("*.tmp")) and not list(onnx_embedder.cache_dir.glob(".*"))
    before = path.stat()

    with caplog.at_level(logging.INFO, logger="ragkit.embedders.onnx"):
        again = OnnxEmbedder(onnx_embedder.cache_dir)
        vectors = again.embed_sync(["reused, not exported again"])

    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert vectors == onnx_embedder.embed_sync(["reused, not exported again"])


@pytest.mark.parametrize("change", ["config.json", "model.safetensors"])
def test_changed_weights_or_config_get_their_own_export(tmp_path: Path, change: str) -> None:
    same = model_copy(tmp_path / "same")
    changed = model_copy(tmp_path / "changed", change=change)
    assert source_digest(same) == source_digest(model_path()), "the digest reads the files, not their paths"
    assert source_digest(changed) != source_digest(model_path())
    assert export_path(changed, tmp_path) != export_path(model_path(), tmp_path)


CHILD = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from ragkit.adapters.embedders.onnx_export import ensure_export
print(ensure_export(Path(sys.argv[1]), Path(sys.argv[2])), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the export lock is an flock (POSIX)")
def test_two_processes_starting_at_once_export_once(onnx_embedder: OnnxEmbedder, tmp_path: Path) -> None:
    import fcntl

    import onnxruntime

    # A folder that already holds the export of the installed weights, and a changed model (its
    # config differs) that must get an export of its own next to it.
    cache = tmp_path / "models"
    cache.mkdir()
    onnx_embedder.load()
    assert onnx_embedder.onnx_path is not None
    old = shutil.copy2(onnx_embedder.onnx_path, cache)
    source = model_copy(tmp_path / "model", change="config.json")
    target = export_path(source, cache)
    stale = cache / f".{target.name}.killed.tmp"
    stale.write_bytes(b"half an export from a process that was killed")

    # Holding the lock makes both children find no export and queue on it: the race is certain
    # instead of a matter of timing. Each says when it starts waiting.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    with lock_path(target).open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(source), str(cache)],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(2)
        ]
        early: list[list[str]] = []
        for child in children:
            assert child.stderr is not None
            lines = []
            for line in child.stderr:
                lines.append(line)
                if "waiting for it" in line:
                    break
            else:
                pytest.fail(f"the child ended before waiting for the lock: {''.join(lines)}")
            early.append(lines)
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    outputs = [child.communicate(timeout=BARRIER_S * 5) for child in children]

    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == str(target)
    logs = ["".join(lines) + err for lines, (_, err) in zip(early, outputs, strict=True)]
    assert sum("exporting all-MiniLM-L6-v2 to ONNX once" in log for log in logs) == 1, logs
    assert target.is_file() and Path(old).is_file(), "the export of the other weights stays"
    assert not stale.exists() and not list(cache.glob(".*.tmp")), "temporary files never outlive the export"
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["ragkit.source_digest"] == source_digest(source)


def test_a_damaged_export_is_made_again_without_the_network(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    target = export_path(model_path(), cache)
    target.write_bytes(b"\x08\x07not a model: a disk error, or a hand-edited file")

    def refuse(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"the export tried to connect to {address}")
        return original(self, address)

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    embedder = OnnxEmbedder(cache)
    vectors = embedder.embed_sync(["made again from the installed weights"])

    assert embedder.onnx_path == target and target.stat().st_size > 50_000_000
    assert vectors[0] == pytest.approx(onnx_embedder.embed_sync(["made again from the installed weights"])[0], abs=1e-6)


def test_a_model_folder_that_cannot_be_made_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="RAGKIT_MODEL_DIR"):
        ensure_export(model_path(), blocker / "models")


# --------------------------------------------------------------------------- concurrency


def meeting_point(embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """Makes every model call wait inside the session until a second call is in it too.

    With calls one at a time the first would wait alone and the barrier break: the test fails
    instead of passing on a serial embedder. Returns an event set when the first call is inside, and
    the batch sizes seen.
    """
    session = embedder.load()
    run = session.run
    barrier = threading.Barrier(2, timeout=BARRIER_S)
    inside = threading.Event()
    sizes: list[int] = []

    def run_together(outputs: Any, feed: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(feed["input_ids"]))
        inside.set()
        barrier.wait()
        return run(outputs, feed, *args, **kwargs)

    monkeypatch.setattr(session, "run", run_together)
    return inside, sizes


@pytest.mark.anyio
async def test_two_queries_run_at_once(onnx_embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = OnnxEmbedder(onnx_embedder.cache_dir, workers=2)
    inside, sizes = meeting_point(embedder, monkeypatch)
    first = asyncio.ensure_future(embedder.embed(["What do honey bees store in wax combs?"]))
    # The second query is sent only once the first is inside the model, so it cannot share its
    # batch: it needs the second worker, or the first call waits at the barrier for ever.
    await asyncio.to_thread(inside.wait, BARRIER_S)
    second = await embedder.embed(["Why does the Moon raise the tides?"])
    (one,) = await first

    assert sizes == [1, 1]
    monkeypatch.undo()
    assert one == pytest.approx(embedder.embed_sync(["What do honey bees store in wax combs?"])[0], abs=1e-6)
    assert second[0] == pytest.approx(embedder.embed_sync(["Why does the Moon raise the tides?"])[0], abs=1e-6)


def test_ingestion_batches_run_on_both_workers(onnx_embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = OnnxEmbedder(onnx_embedder.cache_dir, batch_size=4, workers=2)
    texts = [f"Chunk {i} of a document about {'bees' if i % 2 else 'tides'}." for i in range(8)]
    meeting_point(embedder, monkeypatch)

    vectors = embedder.embed_sync(texts)

    monkeypatch.undo()
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(embedder.embed_sync([text])[0], abs=1e-5)


@pytest.mark.anyio
async def test_a_query_goes_ahead_of_the_ingestion_batches_waiting_for_a_core(
    onnx_embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = OnnxEmbedder(onnx_embedder.cache_dir, batch_size=1, workers=2)
    question = "What do honey bees store in wax combs?"
    chunks = [f"Chunk {i} of a long document about {'bees' if i % 2 else 'tides'}." for i in range(6)]
    session = embedder.load()
    query_ids = embedder._tokenize([question])[0].ids
    run = session.run
    lock = threading.Lock()
    release = [threading.Event(), threading.Event()]  # the first two ingestion calls wait on these
    calls: list[tuple[str, int]] = []  # (kind, ingestion calls inside the model when it entered)
    inside = 0

    def observed_run(outputs: Any, feed: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal inside
        kind = "query" if feed["input_ids"][0].tolist() == query_ids else "ingest"
        with lock:
            number = len(calls)
            calls.append((kind, inside))
            inside += kind == "ingest"
        try:
            if number < len(release):
                assert release[number].wait(BARRIER_S)
            return run(outputs, feed, *args, **kwargs)
        finally:
            with lock:
                inside -= kind == "ingest"

    monkeypatch.setattr(session, "run", observed_run)
    ingestion = asyncio.ensure_future(asyncio.to_thread(embedder.embed_sync, chunks))
    assert await asyncio.to_thread(embedder.slots.wait_until, lambda s: s.busy == 2, BARRIER_S)
    query = asyncio.ensure_future(embedder.embed([question]))
    assert await asyncio.to_thread(embedder.slots.wait_until, lambda s: s.urgent_waiting == 1, BARRIER_S)

    release[0].set()  # one core comes free: the query takes it, not the third ingestion batch
    (vector,) = await query
    release[1].set()
    vectors = await ingestion

    monkeypatch.undo()
    kinds = [kind for kind, _ in calls]
    assert kinds[:3] == ["ingest", "ingest", "query"], calls
    assert calls[2] == ("query", 1), "the query ran beside one ingestion batch, not two"
    assert kinds.count("ingest") == len(chunks)
    assert vector == pytest.approx(embedder.embed_sync([question])[0], abs=1e-6)
    for text, got in zip(chunks, vectors, strict=True):
        assert got == pytest.approx(embedder.embed_sync([text])[0], abs=1e-5)


def test_ingestion_batches_are_bounded_by_padded_tokens(
    onnx_embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = OnnxEmbedder(onnx_embedder.cache_dir, batch_size=8, batch_tokens=600)
    long = [" ".join(["Retrieval augmented generation grounds answers in passages."] * 60)] * 5
    short = [f"Query {i} about bees and tides?" for i in range(10)]
    texts = long[:2] + short + long[2:]
    session = embedder.load()
    run = session.run
    shapes: list[tuple[int, int]] = []

    def recording_run(outputs: Any, feed: Any, *args: Any, **kwargs: Any) -> Any:
        shapes.append(feed["input_ids"].shape)
        return run(outputs, feed, *args, **kwargs)

    monkeypatch.setattr(session, "run", recording_run)
    vectors = embedder.embed_sync(texts)
    monkeypatch.undo()

    assert all(rows <= 8 and (rows == 1 or rows * width <= 600) for rows, width in shapes), shapes
    # The batches run on two workers, so the order in which they reach the session is not fixed.
    narrowest = min(width for _, width in shapes)
    assert (8, narrowest) in shapes, "short texts still share a call, up to batch_size"
    assert sorted(width for _, width in shapes)[-1] == embedder.max_tokens, "long texts are truncated"
    assert sum(rows for rows, _ in shapes) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(embedder.embed_sync([text])[0], abs=1e-5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_workers_and_threads_are_checked(tmp_path: Path) -> None:
    for bad in ({"workers": 0}, {"threads": 0}, {"batch_size": 0}, {"query_batch": -1}, {"query_call_texts": 0}):
        with pytest.raises(ConfigurationError):
            OnnxEmbedder(tmp_path, **bad)
    with pytest.raises(ConfigurationError):
        QueryBatcher(lambda texts: [], max_texts=4, workers=0)
    assert OnnxEmbedder(tmp_path).workers == len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- the setting


def test_the_setting_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAGKIT_LOCAL_BACKEND", "RAGKIT_MODEL_DIR", "RAGKIT_EMBED_WORKERS"):
        monkeypatch.delenv(name, raising=False)  # the defaults, whatever the test session set
    default = build_embedder(make_settings(tmp_path))
    assert isinstance(default, OnnxEmbedder)
    assert default.cache_dir == tmp_path / "models"
    assert default.batch_size == 64

    monkeypatch.setenv("RAGKIT_LOCAL_BACKEND", "torch")
    torch_backend = build_embedder(make_settings(tmp_path))
    assert isinstance(torch_backend, LocalEmbedder) and torch_backend.threads == 2

    monkeypatch.setenv("RAGKIT_LOCAL_BACKEND", "onnx")
    monkeypatch.setenv("RAGKIT_MODEL_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RAGKIT_EMBED_WORKERS", "3")
    moved = build_embedder(make_settings(tmp_path))
    assert isinstance(moved, OnnxEmbedder)
    assert (moved.cache_dir, moved.workers) == (tmp_path / "elsewhere", 3)
    assert moved.name == torch_backend.name and moved.breaker_name == torch_backend.breaker_name

    monkeypatch.setenv("RAGKIT_LOCAL_BACKEND", "tensorflow")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)

