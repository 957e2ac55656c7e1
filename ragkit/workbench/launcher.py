"""`ragkit up`: the service and the UI as child processes, with a sample collection."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from dotenv import dotenv_values

from ragkit.core.config import DEFAULT_API_URL, new_secret
from ragkit.core.types import document_to_dict

SAMPLE_COLLECTION = "ragkit-docs"
ENV_FILE = Path(".env")
SERVICE_HOST = "127.0.0.1"
# Streamlit binds the dual-stack wildcard when no server.address is configured (and 0.0.0.0
# without IPv6), so the UI port is probed on the same address: a holder on any interface counts.
UI_HOST = "::" if socket.has_ipv6 else "0.0.0.0"


@dataclass(frozen=True)
class Holder:
    """A process with a socket on a port."""

    pid: int
    command: str


@dataclass(frozen=True)
class Child:
    label: str
    process: subprocess.Popen


def ensure_secret(env_file: Path = ENV_FILE) -> str:
    """The service token from the environment or .env; a fresh one written to .env if neither has it."""
    current = os.environ.get("INTER_SERVICE_SECRET") or (
        dotenv_values(env_file).get("INTER_SERVICE_SECRET") if env_file.is_file() else None
    )
    if current:
        return current
    secret = new_secret()
    with env_file.open("a", encoding="utf-8") as out:
        out.write(f"INTER_SERVICE_SECRET={secret}\n")
    env_file.chmod(0o600)
    click.echo(f"wrote a new INTER_SERVICE_SECRET to {env_file}")
    return secret


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, or None when it could.

    The probe binds the way uvicorn and Streamlit do (SO_REUSEADDR, and dual-stack for "::"), so a
    port left in TIME_WAIT by a previous run is free here exactly as it is free for them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        if family == socket.AF_INET6:  # no IPv6 in this kernel: Streamlit falls back to IPv4 too
            return port_problem("0.0.0.0", port)
        raise
    with probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return port_problem("0.0.0.0", port)
            return exc.strerror or str(exc)
    return None


def _socket_inodes(port: int) -> list[str]:
    """Inodes of the TCP sockets bound to a local port, listeners first (Linux /proc only)."""
    listening, other = [], []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode == "0" or int(local.rsplit(":", 1)[1], 16) != port:
                continue  # inode 0: TIME_WAIT and the like, owned by no process
            (listening if state == "0A" else other).append(inode)
    return listening + other


def port_holders(port: int) -> list[Holder]:
    """The processes holding a port, as far as this user may see them (other users' fds are hidden)."""
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(port)}
    if not wanted:
        return []
    holders: list[Holder] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                continue
            argv = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:  # gone meanwhile, or another user's process
            continue
        # One line however the arguments were written (a `python -c` script has newlines).
        command = " ".join(b" ".join(argv).decode(errors="replace").split())
        holders.append(Holder(int(proc.name), command if len(command) <= 200 else command[:197] + "..."))
    return holders


def describe_busy_port(role: str, port: int, problem: str) -> str:
    holders = port_holders(port)
    if not holders:
        return (
            f"port {port} ({role}) is not available: {problem}; its holder is not visible to this user "
            f"(`ss -ltnp 'sport = :{port}'` or `lsof -i :{port}` may show it)"
        )
    held_by = "; ".join(f"pid {h.pid}: {h.command}" for h in holders)
    return f"port {port} ({role}) is not available: {problem}; held by {held_by}"


def check_ports(ports: list[tuple[str, str, int]]) -> None:
    """Every port must be free before anything starts: a half-started system is worse than none."""
    busy = [
        describe_busy_port(role, port, problem)
        for role, host, port in ports
        if (problem := port_problem(host, port)) is not None
    ]
    if busy:
        raise click.ClickException(
            "\n".join(busy) + "\nStop that process, or choose other ports: ragkit up --port N --ui-port M"
        )


def wait_ready(url: str, child: Child, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise click.ClickException(
                f"the {child.label} exited with code {child.process.returncode} while starting; see its log above"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise click.ClickException(f"the {child.label} did not become ready at {url} within {timeout_s:.0f} s")


def ingest_samples(url: str, secret: str, samples: Path) -> None:
    from ragkit.client import RagkitClient
    from ragkit.rag.loaders import load_path

    with RagkitClient(url, secret) as client:
        if any(c["name"] == SAMPLE_COLLECTION for c in client.collections()):
            return
        if not samples.is_dir():
            click.echo(f"no sample folder at {samples}; skipping the sample collection")
            return
        client.ensure_collection(SAMPLE_COLLECTION)
        docs = [document_to_dict(d) for d in load_path(samples)]
        summary = client.ingest_documents(SAMPLE_COLLECTION, docs)
        click.echo(f"sample collection '{SAMPLE_COLLECTION}': {summary.ingested} documents, {summary.chunks} chunks")


def command_prefix() -> tuple[str, str | None]:
    """How to type `ragkit` here, and how to put it on PATH when it is not there."""
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "ragkit"
    found = shutil.which("ragkit")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "ragkit", None
    try:
        shown = bin_dir.relative_to(Path.cwd())
    except ValueError:
        shown = bin_dir
    how = f"source {shown / 'activate'}" if (bin_dir / "activate").is_file() else f'export PATH="{shown}:$PATH"'
    return str(shown / "ragkit"), (
        f"The ragkit command is in {shown}, which is not on your PATH; to type plain `ragkit`, run in each shell:\n"
        f"  {how}"
    )


def _start_ui(ui_port: int, env: dict[str, str]) -> Child:
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(ui_port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    return Child("UI (streamlit)", subprocess.Popen(command, env=env))


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` or a closing session stops as Ctrl+C does: children first


def run_workbench(*, port: int, ui_port: int, with_ui: bool, samples: Path) -> None:
    if with_ui and not Path("app.py").is_file():
        click.echo("no app.py in this folder, so no UI: run `ragkit up` from the project folder for the UI")
        with_ui = False
    if with_ui and port == ui_port:
        raise click.UsageError(f"--port and --ui-port are both {port}")
    check_ports([("the service", SERVICE_HOST, port)] + ([("the UI", UI_HOST, ui_port)] if with_ui else []))

    # Without this, SIGTERM would end ragkit up at once and leave the service and the UI running.
    signal.signal(signal.SIGTERM, _stop)
    secret = ensure_secret()
    url = f"http://{SERVICE_HOST}:{port}"
    env = {**os.environ, "INTER_SERVICE_SECRET": secret, "RAGKIT_API_URL": url, "HF_HUB_OFFLINE": "1"}
    serve = [sys.executable, "-m", "ragkit", "serve", "--host", SERVICE_HOST, "--port", str(port)]
    children = [Child("service", subprocess.Popen(serve, env=env))]
    try:
        wait_ready(f"{url}/health/ready", children[0])
        ingest_samples(url, secret, samples)
        ui_url = None
        if with_ui:
            children.append(_start_ui(ui_port, env))
            ui_url = f"http://127.0.0.1:{ui_port}"
            # "up" is printed only once the UI answers, so a UI that cannot start is never announced.
            wait_ready(f"{ui_url}/_stcore/health", children[-1], timeout_s=120.0)
        ragkit, path_hint = command_prefix()
        click.secho(f"\nragkit is up.\n  service  {url}  (API docs: {url}/docs)", fg="green")
        if ui_url:
            click.secho(f"  UI       {ui_url}", fg="green")
        click.echo(
            "\nEvery /api/v1 call needs the token from .env:\n"
            "  export INTER_SERVICE_SECRET=$(sed -n 's/^INTER_SERVICE_SECRET=//p' .env)\n"
            f'  curl -s -H "X-Service-Token: $INTER_SERVICE_SECRET" '
            f"'{url}/api/v1/rag/search?collection={SAMPLE_COLLECTION}&query=circuit+breakers'\n"
            f"  {'' if url == DEFAULT_API_URL else f'RAGKIT_API_URL={url} '}{ragkit} health"
        )
        if path_hint:
            click.echo(f"\n{path_hint}")
        click.echo("\nPress Ctrl+C to stop.")
        while all(child.process.poll() is None for child in children):
            time.sleep(1)
        dead = next(child for child in children if child.process.poll() is not None)
        raise click.ClickException(
            f"the {dead.label} exited with code {dead.process.returncode}; see its log above. "
            "Stopped the rest: ragkit is down."
        )
    except KeyboardInterrupt:
        pass  # Ctrl+C is how ragkit up is meant to stop: exit 0
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
