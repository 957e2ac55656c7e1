"""Disk and data-directory faults, on real tmpfs mounts and real `ragkit serve` processes.

A full disk, a read-only data directory and one another process holds each end in an answer that
says what to do (507, 503, or a refusal to start with exit code 2), never in a dead process, and
nothing stored before the fault is lost. Before the free-space claims, creating one collection on
a 5 MB tmpfs ended the service with SIGBUS (exit 135) and the caller got no answer at all: Qdrant
Edge writes through memory-mapped files, and a page the filesystem cannot allocate kills the
process.

The tests mount their own small tmpfs, which needs root; elsewhere they skip and say why.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import qdrant_edge as qe

from ragkit.adapters.stores.edge import EdgeStore
from ragkit.adapters.stores.edge_disk import storage_error
from ragkit.core.errors import ConfigurationError, DependencyUnavailable, InsufficientStorage
from ragkit.core.names import point_id
from ragkit.core.types import CollectionSpec, Point, SparseVector
from ragkit.rag.feedback import FeedbackLog, validate_feedback
from tests.conftest import SECRET
from tests.support.live import free_port
from tests.support.serve import wait_for_startup
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

MIB = 1024 * 1024
RESERVE = 64 * MIB  # RAGKIT_MIN_FREE_MB's default: the services below run with it
COLLECTIONS = "/api/v1/rag/collections"
START_TIMEOUT_S = 180
BEFORE = [
    {"id": "tides", "text": "The Moon's gravity pulls on the oceans, so the tides rise and fall twice a day."},
    {"id": "bees", "text": "Honey bees collect nectar from flowers and store it in wax combs as honey."},
]
AFTER = [{"id": "volcano", "text": "A volcano erupts when molten magma rises through the crust as lava."}]


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """Grow or shrink a ballast file on the disk (outside the data directory) until `leave`
    bytes are free; what a runaway log or another program would do."""
    ballast = disk / "ballast"
    with ballast.open("ab") as out:
        size = out.seek(0, os.SEEK_END)
        room = free_bytes(disk) - leave
        if room > 0:
            os.posix_fallocate(out.fileno(), size, room)
        else:
            out.truncate(max(0, size + room))
    return ballast


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount("5m") -> a fresh tmpfs of that size, unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if sys.platform != "linux" or os.geteuid() != 0:
            pytest.skip("the disk-fault tests mount a small tmpfs, which needs root on Linux")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], capture_output=True, check=False)


def remount(point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(point)], check=True, capture_output=True)


@dataclass
class Served:
    process: subprocess.Popen
    http: httpx.Client
    stderr: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def search(self, query: str, collection: str = "notes") -> httpx.Response:
        return self.http.post("/api/v1/rag/search", json={"query": query, "collection": collection, "top_k": 5})

    def found(self, query: str) -> list[str]:
        answer = self.search(query)
        assert answer.status_code == 200, answer.text
        return [hit["doc_id"] for hit in answer.json()["results"]]

    def ingest(self, documents: list[dict]) -> httpx.Response:
        return self.http.post(f"{COLLECTIONS}/notes/documents", json={"documents": documents})

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.http.close()


@pytest.fixture
def serve(tmpfs, tmp_path: Path) -> Iterator[Callable[..., Served]]:  # noqa: ANN001 - tmpfs: unmounted after these stop
    """serve(data_dir) -> a running `ragkit serve` on it; serve(data_dir, ready=False) returns at once."""
    started: list[Served] = []

    def start(data_dir: Path, *, ready: bool = True, **env: str) -> Served:
        port = free_port()
        stderr = tmp_path / f"serve{len(started)}.stderr"
        process = subprocess.Popen(
            [sys.executable, "-m", "ragkit", "serve", "--port", str(port)],
            env={
                **os.environ,
                "INTER_SERVICE_SECRET": SECRET,
                "RAGKIT_DATA_DIR": str(data_dir),
                "HF_HUB_OFFLINE": "1",
                **env,
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            # Waited for: read through a pipe until uvicorn's startup line (and copied to the file);
            # expected to refuse: straight into the file, read once it has exited.
            stderr=subprocess.PIPE if ready else stderr.open("wb"),
            text=ready,
        )
        served = Served(
            process,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Service-Token": SECRET}, timeout=60),
            stderr,
        )
        started.append(served)
        if ready:
            wait_for_startup(process, stderr)
        return served

    yield start
    for served in reversed(started):
        served.stop()


def exit_code(served: Served, timeout_s: float = START_TIMEOUT_S) -> int:
    try:
        return served.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ragkit serve was expected to refuse to start; it still runs after {timeout_s} s")


def assert_insufficient_storage(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    error = answer.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert "free" in error["message"] and "intact" in error["message"], error["message"]
    assert int(answer.headers["Retry-After"]) >= 1


# ---------------------------------------------------------------------------- the service


def test_creating_a_collection_on_a_5_mb_disk_is_a_507_and_the_service_lives_on(tmpfs, serve) -> None:  # noqa: ANN001
    disk = tmpfs("5m")
    service = serve(disk / "data")

    answer = service.http.post(COLLECTIONS, json={"name": "notes"})

    assert_insufficient_storage(answer)
    assert "RAGKIT_MIN_FREE_MB" in answer.json()["error"]["message"]
    assert service.alive()
    assert service.http.get("/health/live").status_code == 200
    assert service.http.get(COLLECTIONS).json()["collections"] == []
    # Refused before anything was written: no half-made collection is left on the disk.
    assert list((disk / "data" / "qdrant-edge" / "collections").iterdir()) == []


def test_a_full_disk_refuses_writes_keeps_what_is_stored_and_writes_resume_once_space_is_freed(
    tmpfs,
    serve,  # noqa: ANN001
) -> None:
    disk = tmpfs("160m")
    data = disk / "data"
    # The ballast below is an outside writer that takes the whole reserve at once; an index build
    # running meanwhile would lose the race the reserve is there for. Optimizing on a full disk is
    # tested on the store below.
    service = serve(data, RAGKIT_OPTIMIZE_AFTER_INGEST="false")
    assert service.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201
    assert service.ingest(BEFORE).json()["ingested"] == 2
    vote = {"rating": "up", "question": "why tides?", "answer": "the Moon", "collection": "notes"}

    ballast = fill(disk, leave=RESERVE // 4)  # inside the reserve: every store write is refused
    assert_insufficient_storage(service.ingest(AFTER))
    assert_insufficient_storage(service.http.post(COLLECTIONS, json={"name": "more"}))
    assert service.found("moon gravity tides")[0] == "tides"  # reads go on
    assert service.http.post("/api/v1/rag/feedback", json=vote).status_code == 201  # a plain append: room enough

    fill(disk, leave=0)  # not one page left (a vote longer than the last page's rest, so it needs one)
    assert_insufficient_storage(service.http.post("/api/v1/rag/feedback", json={**vote, "answer": "lava " * 8000}))
    # A refused caller is written to the audit log on the same full disk: still a 401, from a live service.
    assert service.http.get(COLLECTIONS, headers={"X-Service-Token": "w" * 40}).status_code == 401
    assert service.found("honey bees nectar")[0] == "bees"
    assert service.alive()

    ballast.unlink()
    wait_until(lambda: service.ingest(AFTER).status_code == 200, "ingesting once the space was freed", timeout_s=60)
    assert service.found("lava magma volcano")[0] == "volcano"

    service.stop()
    service = serve(data)  # nothing stored before, during or after the fault is lost
    assert service.found("moon gravity tides")[0] == "tides"
    assert service.found("honey bees nectar")[0] == "bees"
    assert service.found("lava magma volcano")[0] == "volcano"
    votes = service.http.get("/api/v1/rag/feedback").json()
    assert [v["rating"] for v in votes] == ["up"]  # the refused vote left no torn line behind


def test_a_restart_on_a_full_tmpfs_refuses_to_open_a_collection_until_space_is_freed(tmpfs, serve) -> None:  # noqa: ANN001
    disk = tmpfs("128m")
    data = disk / "data"
    service = serve(data)
    assert service.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201
    assert service.ingest(BEFORE).json()["ingested"] == 2
    service.stop()

    # The first open of a shard maps its vectors and payload indexes in full, and tmpfs allocates
    # every page a mapping touches: 16 MiB and more for this one, which 8 MiB cannot hold.
    ballast = fill(disk, leave=8 * MIB)
    service = serve(data)
    assert_insufficient_storage(service.search("moon gravity tides"))
    assert service.alive()

    ballast.unlink()
    wait_until(
        lambda: service.search("moon gravity tides").status_code == 200,
        "searching once the space was freed",
        timeout_s=60,
    )
    assert service.found("moon gravity tides")[0] == "tides"


def test_a_read_only_data_directory_refuses_to_start_and_says_what_to_do(tmpfs, serve) -> None:  # noqa: ANN001
    # Qdrant Edge opens even the shards it only reads with writable mappings ("Failed to open mmap
    # payload storage: Read-only file system"), so a service started on a read-only directory could
    # answer nothing; refusing to start puts the reason where the operator looks.
    disk = tmpfs("128m")
    data = disk / "data"
    service = serve(data)
    assert service.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201
    assert service.ingest(BEFORE).json()["ingested"] == 2
    service.stop()

    remount(disk, "ro")
    refused = serve(data, ready=False)
    assert exit_code(refused) == 2
    message = refused.stderr.read_text()
    assert "not writable" in message and "RAGKIT_DATA_DIR" in message and "read-write" in message, message
    assert "Traceback" not in message, message

    remount(disk, "rw")
    service = serve(data)
    assert service.found("moon gravity tides")[0] == "tides"


def test_a_second_service_on_the_same_data_directory_refuses_to_start(serve, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    first = serve(data)
    assert first.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201

    second = serve(data, ready=False)

    assert exit_code(second) == 2
    message = second.stderr.read_text()
    assert "in use by another process" in message and "QDRANT_URL" in message, message
    assert first.alive() and first.ingest(BEFORE).json()["ingested"] == 2


def test_a_collection_another_process_holds_is_a_503_until_it_lets_go(serve, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    service = serve(data)
    assert service.http.post(COLLECTIONS, json={"name": "notes"}).status_code == 201
    assert service.ingest(BEFORE).json()["ingested"] == 2
    service.stop()
    # A tool that opens the shard itself, around the service's folder lock: Edge locks the WAL.
    shard = data / "qdrant-edge" / "collections" / "notes" / "shard"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, qdrant_edge
            shard = qdrant_edge.EdgeShard.load({str(shard)!r})
            print("holding", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        service = serve(data)
        answer = service.search("moon gravity tides")
        assert answer.status_code == 503, answer.text
        assert "held by another process" in answer.json()["error"]["message"]
        assert service.alive()
    finally:
        holder.stdin.close()  # the holder exits and its WAL lock goes with it
        holder.wait(timeout=30)
    wait_until(
        lambda: service.search("moon gravity tides").status_code == 200,
        "searching once the holder let go",
        timeout_s=60,
    )


# ---------------------------------------------------------------------------- the store and the logs


def spec(name: str = "notes") -> CollectionSpec:
    return CollectionSpec(name=name, embedder="test", dimension=4, chunk_size=200, chunk_overlap=30)


def points(count: int) -> list[Point]:
    return [
        Point(
            id=point_id("notes", f"d{i}", 0),
            dense=[1.0, float(i), 0.0, 0.5],
            sparse=SparseVector(indices=[i + 1], values=[1.0]),
            payload={"doc_id": f"d{i}", "chunk_index": 0, "chunk_count": 1, "content_hash": "h", "text": "x" * 500},
        )
        for i in range(count)
    ]


@pytest.fixture
def edge_on_tmpfs(tmpfs) -> Iterator[tuple[Path, EdgeStore]]:  # noqa: ANN001
    disk = tmpfs("128m")
    store = EdgeStore(disk / "edge", min_free_bytes=RESERVE)
    yield disk, store
    store.close()


def test_the_store_creates_nothing_the_disk_cannot_hold(tmpfs) -> None:  # noqa: ANN001
    disk = tmpfs("5m")
    store = EdgeStore(disk / "edge")
    try:
        with pytest.raises(InsufficientStorage, match="creating 'notes'"):
            store.create_collection(spec())
        assert store.list_collections() == []
        assert list((disk / "edge" / "collections").iterdir()) == []
    finally:
        store.close()


def test_a_spec_write_on_a_full_disk_is_a_507_and_keeps_the_old_spec(edge_on_tmpfs) -> None:  # noqa: ANN001
    disk, store = edge_on_tmpfs
    store.create_collection(spec())
    ballast = fill(disk, leave=0)

    with pytest.raises(InsufficientStorage):
        store.update_collection(dataclasses.replace(spec(), chunk_size=300))

    assert store.get_collection("notes").chunk_size == 200
    assert not list((disk / "edge" / "collections" / "notes").glob("*.tmp"))
    ballast.unlink()
    store.update_collection(dataclasses.replace(spec(), chunk_size=300))
    assert store.get_collection("notes").chunk_size == 300


def test_upserts_and_optimizing_are_refused_inside_the_reserve_and_lose_nothing(edge_on_tmpfs) -> None:  # noqa: ANN001
    disk, store = edge_on_tmpfs
    store.create_collection(spec())
    store.upsert("notes", points(50))
    ballast = fill(disk, leave=RESERVE // 2)

    with pytest.raises(InsufficientStorage, match="writing 10 chunks"):
        store.upsert("notes", points(60)[50:])
    with pytest.raises(InsufficientStorage, match="optimizing 'notes'"):
        store.optimize("notes")
    with pytest.raises(InsufficientStorage):
        store.delete_document("notes", "d1")

    assert store.stats("notes").chunks == 50
    ballast.unlink()
    store.upsert("notes", points(60)[50:])
    store.optimize("notes")
    assert store.stats("notes").chunks == 60


def test_a_read_only_data_directory_is_a_configuration_error_naming_the_fix(tmpfs) -> None:  # noqa: ANN001
    disk = tmpfs("8m")
    (disk / "edge" / "collections").mkdir(parents=True)  # as a store left it: the lock file is the first write
    remount(disk, "ro")
    with pytest.raises(ConfigurationError, match="not writable.*read-write.*RAGKIT_DATA_DIR"):
        EdgeStore(disk / "edge")


def test_disk_errors_from_python_and_from_edge_become_ragkit_errors(tmpfs) -> None:  # noqa: ANN001
    disk = tmpfs("128m")
    store = EdgeStore(disk / "edge")
    store.create_collection(spec())
    store.close()
    remount(disk, "ro")

    with pytest.raises(OSError) as from_python:
        (disk / "new-file").write_text("x")
    with pytest.raises(Exception) as from_edge:  # noqa: B017 - Edge raises a bare Exception
        qe.EdgeShard.load(str(disk / "edge" / "collections" / "notes" / "shard"))

    for raised in (from_python.value, from_edge.value):
        translated = storage_error(raised)
        assert isinstance(translated, DependencyUnavailable), raised
        assert translated.status == 503 and "read-write" in translated.message
    assert storage_error(ValueError("Wrong input: bad vector")) is None


def test_a_vote_the_disk_cannot_hold_is_a_507_and_leaves_no_torn_line(tmpfs) -> None:  # noqa: ANN001
    disk = tmpfs("8m")
    log = FeedbackLog(disk / "feedback")
    first = log.append(validate_feedback({"rating": "up", "question": "why tides?", "answer": "the Moon"}))
    size = log.path.stat().st_size
    # 8 KiB free and a 40 KB line: the write gets part of the way, then the disk is full.
    ballast = fill(disk, leave=8 * 1024)
    long_vote = validate_feedback({"rating": "down", "question": "and volcanoes?", "answer": "lava " * 8000})

    with pytest.raises(InsufficientStorage, match="not recorded"):
        log.append(long_vote)

    assert log.path.stat().st_size == size
    ballast.unlink()
    log.append(long_vote)
    assert [entry.id for entry in log.read()] == [first.id, long_vote.id]
