"""A real `ragkit serve` child process, started and waited for on its own word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


def ctrl_c_works() -> None:
    """A ``preexec_fn`` for children a test stops with SIGINT, as a person's Ctrl+C would.

    A shell starts a background job (``make test &``) with SIGINT ignored, children inherit that,
    and Python then leaves it ignored: the child would never see the test's Ctrl+C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_serve(data_dir: Path, port: int, **env: str) -> subprocess.Popen:
    """Start `ragkit serve` on ``port`` and return once uvicorn says it is listening (after the
    app's lifespan, model warm-up included): the read blocks until that line, and ends if the
    process exits first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ragkit", "serve", "--port", str(port)],
        env={**os.environ, "RAGKIT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **env},
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_startup(process)
    return process


def wait_for_startup(process: subprocess.Popen, log: Path | None = None) -> threading.Thread:
    """Block until the child's stderr (a text pipe) says uvicorn is listening, copying every
    line to ``log`` when given; then keep draining it, so a full pipe never blocks the service.
    RuntimeError, with what it wrote, if it exits first. Returns the draining thread: join it once
    the process has exited to have every line in ``log``."""
    assert process.stderr is not None
    sink = log.open("a", encoding="utf-8") if log is not None else None
    seen: list[str] = []

    def copy(line: str) -> None:
        if sink is not None:
            sink.write(line)
            sink.flush()

    for line in process.stderr:
        seen.append(line)
        copy(line)
        # uvicorn binds its socket after the app's startup, then says so: before this line a
        # connection is refused.
        if "Uvicorn running on" in line:

            def drain() -> None:
                for rest in process.stderr:
                    copy(rest)

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            return drainer
    raise RuntimeError(f"the service exited with {process.wait()} before it started:\n{''.join(seen)[-3000:]}")
