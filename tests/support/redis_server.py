"""A real redis-server process on a free loopback port, for the cache and shared-state tests.

Besides starting and stopping it, it can be killed outright or frozen in place (SIGSTOP), so
the tests see Redis fail the ways it does in production: a crashed server, and one that
accepts connections but never answers.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from pathlib import Path

from tests.support.live import free_port


class RedisServer:
    def __init__(self, workdir: Path, *args: str) -> None:
        """``args`` are extra redis-server options, e.g. ``"--requirepass", "secret"``."""
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._args = args
        self._process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
                *self._args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Wait on the event itself: redis-server says so on its log when it accepts connections
        # (the read blocks until a line comes, and ends if the server exits).
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if "Ready to accept connections" in line:
                # Keep reading its log, so a full pipe never blocks the server later.
                threading.Thread(target=self._process.stdout.read, daemon=True).start()
                return self
        raise RuntimeError(f"redis-server exited at start (status {self._process.wait()})")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self.thaw()  # a frozen server cannot act on SIGTERM
            self._process.terminate()
            self._process.wait(timeout=10)

    def kill(self) -> None:
        """Crash it: SIGKILL, so open connections are cut without a goodbye."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def freeze(self) -> None:
        """Stop the process in place (SIGSTOP): the kernel still accepts connections, nothing
        answers, as with a server stuck in a long command or a paused VM. `stop` thaws it."""
        assert self._process is not None and self._process.poll() is None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
