"""A real redis-server process on a free loopback port, for the cache and shared-state tests.

Besides starting and stopping it, it can be killed outright or frozen in place (SIGSTOP), so
the tests see Redis fail the ways it does in production: a crashed server, and one that
accepts connections but never answers.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (status {self._process.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)  # polling for the port, bounded by the deadline
        raise RuntimeError("redis-server did not start")

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
