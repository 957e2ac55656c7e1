"""What the Edge store keeps on disk beside its shards: the folder lock of its single owner, and
each collection's spec file."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ragkit.adapters.stores.common import spec_from_dict, spec_to_dict
from ragkit.core.errors import ConfigurationError
from ragkit.core.types import CollectionSpec

try:
    import fcntl
except ImportError:  # not POSIX: only the in-process guard below applies
    fcntl = None  # type: ignore[assignment]

SPEC_FILE = "spec.json"
SHARD_DIR = "shard"
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
            handle = open(self.folder / "edge.lock", "a+")  # noqa: SIM115 - held for the store's life
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



def read_spec(path: Path) -> CollectionSpec:
    return spec_from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_spec(path: Path, spec: CollectionSpec) -> None:
    # Write-then-rename, so a crash leaves the old spec or the new one, never half of one.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec_to_dict(spec), indent=2), encoding="utf-8")
    os.replace(tmp, path)


