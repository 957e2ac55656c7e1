"""`pytest --nbval-lax notebooks/`: run the notebooks, with their default parameters, against a
live service on the real embedded stack (Qdrant Edge, MiniLM, uvicorn over real HTTP).

nbval starts a notebook's kernel when the notebook's first cell is set up, before any fixture
runs, and the kernel inherits the environment as it is then. So the service is started from
a `pytest_runtest_setup` hook that runs first, and handed to the kernels through the
environment the notebooks read anyway: RAGKIT_API_URL, INTER_SERVICE_SECRET and
RAGKIT_DATA_DIR (where the evaluation writes its report).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.support is imported from the checkout, not installed
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SECRET = "n" * 24 + "-notebook-secret-" + "b" * 23  # 64 bytes, never a real one
_live: dict[str, Any] = {}


def _start_service() -> None:
    from ragkit.core.config import Settings
    from ragkit.http.app import create_app
    from ragkit.services import build_services
    from tests.support.live import LiveServer

    root = Path(tempfile.mkdtemp(prefix="ragkit-nbval-"))
    # _env_file=None: a developer's own .env must not leak into the notebooks' service.
    settings = Settings(_env_file=None, inter_service_secret=SECRET, data_dir=root / "service")
    services = build_services(settings)
    server = LiveServer(create_app(settings, services)).__enter__()
    saved = {name: os.environ.get(name) for name in ("RAGKIT_API_URL", "INTER_SERVICE_SECRET", "RAGKIT_DATA_DIR")}
    os.environ.update(RAGKIT_API_URL=server.url, INTER_SERVICE_SECRET=SECRET, RAGKIT_DATA_DIR=str(root / "client"))
    _live.update(root=root, services=services, server=server, saved=saved)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.path.suffix == ".ipynb" and not _live:
        _start_service()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _live:
        return
    _live["server"].__exit__()
    _live["services"].store.close()
    for name, value in _live["saved"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(_live["root"], ignore_errors=True)
    _live.clear()
