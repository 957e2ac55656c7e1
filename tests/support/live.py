"""Run a real uvicorn server for an app in a background thread, on an ephemeral port."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from ragkit.http.gate import SERVER_OPTIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app, port: int | None = None) -> None:  # noqa: ANN001 - any ASGI app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As `ragkit serve` runs it (the app, not uvicorn, reads X-Forwarded-For).
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            # Longer than any pause inside a test: uvicorn's 5 s default closes an idle keep-alive
            # connection just as a test's client reuses it on a loaded machine ("Server disconnected").
            timeout_keep_alive=120,
            **SERVER_OPTIONS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
