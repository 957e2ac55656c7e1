"""Logging set-up for the service process: readable on the console, kept under data/logs."""

from __future__ import annotations

import logging
from pathlib import Path


def configure_logging(data_dir: Path, level: int = logging.INFO) -> None:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(logs / "ragkit.log")]
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger("ragkit")
    root.setLevel(level)
    root.handlers = handlers
