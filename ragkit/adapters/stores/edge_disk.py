"""What the Edge store keeps on disk beside its shards (the folder lock of its single owner, each
collection's spec file), and how it stays alive when that disk is full, read-only or held.

Why free space is checked before a write rather than its failure handled: Qdrant Edge maps its
segment and WAL files into memory and writes through the mappings. When the filesystem cannot
allocate a page that such a write touches, the kernel answers with SIGBUS and the whole process
dies (a 5 MB tmpfs and one `POST /collections` were enough); there is no error to catch. So every
call that makes Edge allocate claims its estimated size first (`DiskSpace.claim`) and is refused
with `InsufficientStorage` (507) while the disk could not hold it plus a reserve. Nothing is
written then, so what is stored stays intact and searchable.

The estimates, measured on qdrant-edge-py 0.9 with 384-dimensional vectors, on tmpfs and ext4
(in brackets). tmpfs is the worst case: it allocates every page a shared mapping touches, even to
read it; ext4 allocates only pages written.

* an empty shard 1.06 MiB (0.3), and each payload index built at creation 2.02 MiB (0.03):
  `shard_bytes` rounds them up to 2 and 3 MiB;
* an upsert 2.07x the points' raw bytes (JSON payload, vectors) overall, 2.27x (2.83x) in the worst
  64-point batch, its WAL record plus the segment: `upsert_bytes` takes 3x;
* `optimize()` writes the new segments before it drops the old ones: 2.4x (2.1x) the segments'
  allocated size above the state before: `optimize_bytes` takes 3x;
* opening a shard (the first use of a collection after a start) maps its dense vectors and payload
  indexes in full; on tmpfs that allocated all their holes, 43-48 MiB for a new collection, while
  the WAL and the blob stores (payload, sparse vectors: `payload_storage/`, `*/store/`) kept
  theirs. `open_bytes` counts every other hole there, and elsewhere 4 MiB (1.7 MiB measured on ext4
  after a kill -9, the WAL replayed).

The reserve (`RAGKIT_MIN_FREE_MB`, default 64 MiB) is what those estimates leave free for what they
do not see: ragkit's own logs, the feedback and audit logs, other programs on the disk, and an
estimate that is wrong. 64 MiB is above the largest allocation measured for one call (a first open
on tmpfs, 48 MiB), so even an estimate that missed one entirely does not reach a full disk. Claims
of calls running at the same time add up, so concurrent writes cannot each take the same space.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragkit.adapters.stores.common import DEPENDENCY, spec_from_dict, spec_to_dict
from ragkit.core.errors import ConfigurationError, DependencyUnavailable, InsufficientStorage, RagkitError
from ragkit.core.types import CollectionSpec, Point

try:
    import fcntl
except ImportError:  # not POSIX: only the in-process guard below applies
    fcntl = None  # type: ignore[assignment]

SPEC_FILE = "spec.json"
SHARD_DIR = "shard"
# Folders of a shard whose holes an open leaves alone: the WAL, and the blob stores that map pages
# as they fill.
_UNTOUCHED_ON_OPEN = frozenset({"wal", "payload_storage", "store"})
MIB = 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * MIB
SHARD_BYTES = 2 * MIB
INDEX_BYTES = 3 * MIB
OPEN_BYTES = 4 * MIB
WRITE_FACTOR = 3
OPTIMIZE_FACTOR = 3
# Filesystems that allocate a page when a shared mapping only reads it.
_ALLOCATE_ON_READ = frozenset({"tmpfs", "devtmpfs"})
# Edge reports an OS error inside its message: "... Read-only file system (os error 30)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_HELD = (errno.EAGAIN, errno.EWOULDBLOCK)

# Folders owned by an EdgeStore of this process. flock already refuses a second lock from the
# same process; this set gives the clearer message and covers systems without fcntl.
_OWNED: set[Path] = set()
_OWNED_LOCK = threading.Lock()


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._file: Any = None
        with _OWNED_LOCK:
            if self.folder in _OWNED:
                raise ConfigurationError(
                    f"{self.folder} is already open by another EdgeStore in this process; share that one "
                    "(the service owns the store, other tools go through its API)"
                )
            try:
                handle = open(self.folder / "edge.lock", "a+")  # noqa: SIM115 - held for the store's life
            except OSError as exc:
                # The first write of a start: a folder that refuses it would fail every open and
                # write later (Edge maps even the files it only reads for writing), so say so now.
                raise ConfigurationError(start_problem(self.folder, exc)) from exc
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    handle.close()
                    raise ConfigurationError(
                        f"{self.folder} is in use by another process (an embedded store has a single owner: "
                        "stop the other ragkit service, or set QDRANT_URL to share a Qdrant server)"
                    ) from exc
            self._file = handle
            _OWNED.add(self.folder)

    def release(self) -> None:
        with _OWNED_LOCK:
            if self._file is None:
                return
            if fcntl is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            _OWNED.discard(self.folder)


def check_folder(folder: Path) -> None:
    """Raise the ConfigurationError an EdgeStore would raise on this folder (not writable, full, held
    by another process) and leave it unlocked: for `ragkit serve` to refuse before it serves. The
    service builds its store inside the ASGI lifespan, where a failure ends in a traceback."""
    try:
        (folder / "collections").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(start_problem(folder, exc)) from exc
    FolderLock(folder).release()


def start_problem(folder: Path, exc: OSError) -> str:
    if exc.errno in _NOT_WRITABLE:
        return (
            f"the data directory {folder} is not writable ({exc.strerror}). The embedded store writes there "
            "even to answer searches (Qdrant Edge opens its files read-write): remount it read-write, give "
            "the service's user write access, or set RAGKIT_DATA_DIR to a writable folder"
        )
    if exc.errno in _FULL:
        return f"the disk under {folder} is full ({exc.strerror}): free some space, then start again"
    return f"cannot use {folder} for the embedded store: {exc}"


def read_spec(path: Path) -> CollectionSpec:
    return spec_from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_spec(path: Path, spec: CollectionSpec) -> None:
    # Write-then-rename, so a crash leaves the old spec or the new one, never half of one; the
    # fsync makes the rename carry the new content. A failed write (a full disk) leaves the old spec
    # and no temporary file behind.
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(spec_to_dict(spec), indent=2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- disk faults


def storage_error(exc: BaseException) -> RagkitError | None:
    """The ragkit error for a fault of the disk under the store (full, read-only, held by another
    process), from a Python OSError or Edge's message; None for any other error."""
    if isinstance(exc, OSError):
        code: int | None = exc.errno
    else:
        found = _OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    message = str(exc)
    if code in _FULL or "No space left on device" in message:
        return InsufficientStorage(
            DEPENDENCY,
            "the disk under the service's data directory is full; what was stored before is intact. Free space "
            "on it (deleting a collection you no longer need frees its files), then retry",
        )
    if code in _NOT_WRITABLE:
        return DependencyUnavailable(
            DEPENDENCY,
            "the service's data directory is not writable (read-only filesystem or missing permission); "
            "remount it read-write or give the service's user write access, then retry",
            retry_after=60.0,
        )
    if code in _HELD or "WouldBlock" in message:
        return DependencyUnavailable(
            DEPENDENCY,
            "the collection's files are held by another process; only the ragkit service may open its "
            "embedded store: stop the other process, then retry",
            retry_after=30.0,
        )
    return None


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding path, from /proc/self/mounts ("" where that is unknown)."""
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    target = Path(os.path.realpath(path))
    depth, kind = -1, ""
    for line in mounts.splitlines():
        fields = line.split(" ")
        if len(fields) < 3:
            continue
        # The file escapes spaces and tabs in paths as octal (\040); a later line over the same
        # point is the mount on top.
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (point == target or point in target.parents) and len(point.parts) >= depth:
            depth, kind = len(point.parts), fields[2]
    return kind


def shard_bytes(indexes: int) -> int:
    """What creating a shard with that many payload indexes allocates at most."""
    return SHARD_BYTES + INDEX_BYTES * indexes


def upsert_bytes(points: Sequence[Point]) -> int:
    """What writing these points allocates at most: the WAL record and the segment's copy."""
    raw = 0
    for point in points:
        payload = json.dumps(dict(point.payload), default=str, ensure_ascii=False)
        raw += len(payload.encode()) + 4 * len(point.dense) + 8 * len(point.sparse.indices) + 64
    return WRITE_FACTOR * raw


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def optimize_bytes(shard: Path) -> int:
    """What optimizing the shard allocates at most: new segments beside the old ones."""
    return OPTIMIZE_FACTOR * _allocated(shard / "segments")


def open_bytes(shard: Path) -> int:
    """What opening the shard allocates at most (see the module's notes on tmpfs)."""
    if filesystem_type(shard) not in _ALLOCATE_ON_READ:
        return OPEN_BYTES
    holes = 0
    for path in shard.rglob("*"):
        if path.is_file() and _UNTOUCHED_ON_OPEN.isdisjoint(path.relative_to(shard).parts):
            stat = path.stat()
            holes += max(0, stat.st_size - stat.st_blocks * 512)
    return OPEN_BYTES + holes


class DiskSpace:
    """The free space of the store's folder, claimed before each call that makes Edge allocate."""

    def __init__(self, folder: Path, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        self.folder = folder
        self.min_free_bytes = max(0, min_free_bytes)
        self._claimed = 0  # by calls still running: their pages may not be allocated yet
        self._lock = threading.Lock()

    def free(self) -> int:
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    @contextmanager
    def claim(self, needed: int, what: str) -> Iterator[None]:
        """Run the block only if the disk holds `needed` bytes more plus the reserve; else raise
        InsufficientStorage before anything is written."""
        with self._lock:
            try:
                free = self.free() - self._claimed
            except OSError as exc:
                problem = storage_error(exc) or DependencyUnavailable(DEPENDENCY, f"cannot read the free space: {exc}")
                raise problem from exc
            if free < needed + self.min_free_bytes:
                raise InsufficientStorage(
                    DEPENDENCY,
                    f"not enough free disk for {what}: {_mib(free)} free in the service's data directory, this "
                    f"needs about {_mib(needed)} and {_mib(self.min_free_bytes)} are kept free "
                    "(RAGKIT_MIN_FREE_MB). Nothing was written and what is stored is intact: free space on that "
                    "disk (deleting a collection you no longer need frees its files) or move RAGKIT_DATA_DIR "
                    "to a larger one, then retry",
                )
            self._claimed += needed
        try:
            yield
        finally:
            with self._lock:
                self._claimed -= needed


def _mib(count: int) -> str:
    return f"{max(count, 0) / MIB:.1f} MiB"
