"""Shared fixtures: the real embedded stack (Qdrant Edge, MiniLM, FastAPI over real HTTP)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One ONNX export of the local model for every service the tests start (in-process or `ragkit serve`
# children, which inherit this): each would otherwise export into its own fresh data directory.
os.environ.setdefault("RAGKIT_MODEL_DIR", str(Path(tempfile.gettempdir()) / "ragkit-test-models"))

from ragkit.core.config import Settings  # noqa: E402
from ragkit.http.app import create_app  # noqa: E402
from ragkit.services import Services, build_services  # noqa: E402
from tests.support.live import LiveServer  # noqa: E402

SECRET = "a" * 24 + "-test-secret-" + "b" * 27  # 64 bytes
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SCIFACT = SHARED_DATA / "beir" / "scifact"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "inter_service_secret": SECRET,
        "data_dir": data_dir,
        "breaker_reset_s": 30.0,
    }
    values.update(overrides)
    # _env_file=None: a developer's own .env must not leak into tests.
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def local_embedder():
    from ragkit.adapters.embedders.local import LocalEmbedder

    return LocalEmbedder(batch_size=64, threads=2)


@pytest.fixture(scope="session")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory):
    """MiniLM on ONNX Runtime, exported once per session into a fresh folder (the real export)."""
    from ragkit.adapters.embedders.onnx import OnnxEmbedder

    return OnnxEmbedder(tmp_path_factory.mktemp("models"), batch_size=64)


class Stack:
    """A running service on the real embedded stack, with an authenticated HTTP client."""

    def __init__(self, settings: Settings, services: Services, server: LiveServer) -> None:
        self.settings = settings
        self.services = services
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, headers={"X-Service-Token": SECRET}, timeout=60)
        self.anon = httpx.Client(base_url=server.url, timeout=60)

    def close(self) -> None:
        self.http.close()
        self.anon.close()


def start_stack(data_dir: Path, shared_embedder, **overrides: object) -> tuple[Stack, LiveServer]:  # noqa: ANN001
    settings = make_settings(data_dir, **overrides)
    # The loaded MiniLM model is shared between stacks; an Ollama embedder is built per stack.
    embedder = shared_embedder if settings.embedder_kind == "local" else None
    services = build_services(settings, embedder=embedder)
    server = LiveServer(create_app(settings, services))
    server.__enter__()
    return Stack(settings, services, server), server


@pytest.fixture
def stack(tmp_path: Path, local_embedder) -> Iterator[Stack]:  # noqa: ANN001
    s, server = start_stack(tmp_path, local_embedder)
    try:
        yield s
    finally:
        s.close()
        server.__exit__()
        s.services.store.close()


@pytest.fixture
def stack_factory(tmp_path: Path, local_embedder):  # noqa: ANN001, ANN201
    """Start services with chosen settings; all are stopped at the end of the test."""
    started: list[tuple[Stack, LiveServer]] = []

    def factory(**overrides: object) -> Stack:
        data_dir = tmp_path / f"stack{len(started)}"
        s, server = start_stack(data_dir, local_embedder, **overrides)
        started.append((s, server))
        return s

    yield factory
    for s, server in started:
        s.close()
        server.__exit__()
        s.services.store.close()
