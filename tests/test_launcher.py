"""`ragkit up` as a person runs it: a real process, real ports, real children."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SECRET
from tests.support.live import free_port
from tests.support.serve import ctrl_c_works

APP = "import streamlit as st\n\nst.write('ragkit launcher test')\n"
# Holds a port in a process of its own, so the pid and command line `ragkit up` names are not ours.
HOLDER = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "s.listen()\n"
    "print('listening', flush=True)\n"
    "sys.stdin.read()\n"
)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.05)


@contextmanager
def port_holder(port: int) -> Iterator[subprocess.Popen]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "listening"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line contains text, e.g. a child `ragkit up` left behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


class Up:
    """`ragkit up` in a fresh folder, its output collected by a reader thread."""

    def __init__(self, workdir: Path, *args: str, path: str | None = None) -> None:
        (workdir / "app.py").write_text(APP, encoding="utf-8")
        env = {
            **os.environ,
            "INTER_SERVICE_SECRET": SECRET,
            "RAGKIT_DATA_DIR": str(workdir / "data"),
            "HF_HUB_OFFLINE": "1",
            "PATH": path if path is not None else os.environ.get("PATH", ""),
        }
        self.data_dir = workdir / "data"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ragkit", "up", "--samples", str(REPO / "samples" / "docs"), *args],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=ctrl_c_works,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        wait_for(lambda: text in self.output or self.process.poll() is not None, timeout_s, f"{text!r} printed")
        assert text in self.output, self.output

    def finish(self, timeout_s: float = 60) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.mark.parametrize("busy", ["service", "ui"])
def test_a_busy_port_is_named_with_its_holder_and_nothing_starts(tmp_path: Path, busy: str) -> None:
    port, ui_port = free_port(), free_port()
    held = port if busy == "service" else ui_port
    with port_holder(held) as holder:
        up = Up(tmp_path, "--port", str(port), "--ui-port", str(ui_port))
        code = up.finish()
        other = ui_port if busy == "service" else port
        # Checked while the holder still runs: had a child started, it would still be starting.
        assert not processes_mentioning(f"--port {port}") and not processes_mentioning(f"--server.port {ui_port}")
        assert port_is_free(other)
    output = up.output
    assert code == 1, output
    role = "the service" if busy == "service" else "the UI"
    assert f"port {held} ({role}) is not available" in output, output
    assert f"pid {holder.pid}:" in output and "sys.stdin.read()" in output, output
    assert "ragkit is up" not in output and "Traceback" not in output
    assert not up.data_dir.exists(), "the service must not have started"


def test_both_ports_are_checked_before_anything_starts(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    with port_holder(port) as service_holder, port_holder(ui_port) as ui_holder:
        up = Up(tmp_path, "--port", str(port), "--ui-port", str(ui_port))
        code = up.finish()
    assert code == 1
    assert f"port {port} (the service)" in up.output and f"pid {service_holder.pid}:" in up.output
    assert f"port {ui_port} (the UI)" in up.output and f"pid {ui_holder.pid}:" in up.output


def test_a_ui_that_dies_after_the_check_makes_up_fail_and_stops_the_service(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    up = Up(tmp_path, "--port", str(port), "--ui-port", str(ui_port))
    try:
        # The service listens only after the ports were checked, and the UI starts only after the
        # service is ready and the samples are in: taking the UI port now makes Streamlit fail to bind.
        wait_for(lambda: accepts(port) or up.process.poll() is not None, 180, "the service listening")
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", ui_port))
            squatter.listen()
            code = up.finish(timeout_s=240)
    finally:
        up.stop()
    assert code == 1, up.output
    assert "the UI (streamlit) exited with code 1" in up.output, up.output
    assert "ragkit is up" not in up.output
    assert not accepts(port), "the service must be stopped when the UI dies"


def test_up_with_the_ui_says_how_to_reach_ragkit_and_ctrl_c_exits_0(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    # A shell where the virtual environment is not activated: ragkit's bin folder is not on PATH.
    shutil.copytree(REPO / ".streamlit", tmp_path / ".streamlit")  # the project's own Streamlit settings
    up = Up(tmp_path, "--port", str(port), "--ui-port", str(ui_port), path="/usr/bin:/bin")
    try:
        up.wait_for_output("Press Ctrl+C to stop", 240)
        assert f"UI       http://127.0.0.1:{ui_port}" in up.output
        assert httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=10).text == "ok"
        bin_dir = Path(sys.executable).parent
        assert re.search(rf"ragkit command is in {re.escape(str(bin_dir))}, which is not on your PATH", up.output)
        assert f"source {bin_dir / 'activate'}" in up.output
        assert f"RAGKIT_API_URL=http://127.0.0.1:{port} {bin_dir / 'ragkit'} health" in up.output
        up.process.send_signal(signal.SIGINT)
        assert up.finish() == 0, up.output
    finally:
        up.stop()
    assert not accepts(port) and not accepts(ui_port)


def test_the_ui_watches_no_files_outside_development() -> None:
    # Streamlit's own reading of the project's settings: a watcher over .venv and data/ overflows inotify.
    shown = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    effective = dict(re.findall(r"^(fileWatcherType|runOnSave) = (.+)$", shown.stdout, re.M))
    assert effective == {"fileWatcherType": '"none"', "runOnSave": "false"}


def test_sigterm_stops_the_children_too(tmp_path: Path) -> None:
    port = free_port()
    up = Up(tmp_path, "--no-ui", "--port", str(port))
    try:
        up.wait_for_output("Press Ctrl+C to stop", 180)
        (service,) = processes_mentioning(f"serve --host 127.0.0.1 --port {port}")
        up.process.terminate()
        assert up.finish() == 0, up.output
    finally:
        up.stop()
    assert not Path(f"/proc/{service}").exists() and not accepts(port)
