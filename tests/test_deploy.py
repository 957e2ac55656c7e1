"""compose.yaml describes the same system as the code: real settings, every dependency present."""

from __future__ import annotations

import yaml

from ragkit.core.config import Settings
from tests.conftest import REPO


def setting_names() -> set[str]:
    return {field.validation_alias for field in Settings.model_fields.values()}


def test_compose_uses_only_real_settings_and_has_every_dependency() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"ragkit", "ui", "qdrant", "ollama", "redis", "prometheus"} <= set(services)
    cluster = [name for name, spec in services.items() if "cluster" in spec.get("profiles", [])]
    assert len(cluster) == 3, "the Qdrant cluster profile has three nodes"
    env = services["ragkit"]["environment"]
    unknown = set(env) - setting_names()
    assert not unknown, f"compose sets variables ragkit does not read: {unknown}"
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert "qdrant" in env["QDRANT_URL"]


def test_prometheus_scrapes_the_service() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["ragkit:8000"]
