"""docs/operations.md stays true: every setting, command, route, alert and breaker it names exists."""

from __future__ import annotations

import re

import yaml
from click.testing import CliRunner

from ragkit.cli import main
from ragkit.core.config import Settings
from ragkit.http.app import create_app
from tests.conftest import REPO

GUIDE = (REPO / "docs" / "operations.md").read_text()
# Variables of other programs the guide mentions on purpose.
FOREIGN = {"OLLAMA_NUM_PARALLEL"}


def test_every_setting_the_guide_names_is_one_ragkit_reads() -> None:
    named = set(re.findall(r"`((?:RAGKIT|OLLAMA|QDRANT|REDIS|INTER_SERVICE)_[A-Z_]+)", GUIDE)) - FOREIGN
    known = {field.validation_alias for field in Settings.model_fields.values()}
    assert named, "the guide names settings"
    assert named <= known, f"not settings: {sorted(named - known)}"


def test_every_command_the_guide_names_exists() -> None:
    commands = set(re.findall(r"`ragkit ((?:[a-z]+)(?: [a-z]+)?)", GUIDE))
    assert {"collections export", "collections import", "loadtest"} <= {c.strip() for c in commands}
    runner = CliRunner()
    for command in sorted(commands):
        result = runner.invoke(main, [*command.split(), "--help"])
        assert result.exit_code == 0, f"`ragkit {command}` --help: {result.output}"


def test_every_route_alert_and_breaker_the_guide_names_exists(tmp_path) -> None:  # noqa: ANN001
    from tests.conftest import make_settings

    routes = set(create_app(make_settings(tmp_path)).openapi()["paths"])
    for path in re.findall(r"`GET (/health[a-z/]*)`", GUIDE):
        assert path in routes, path
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    for alert in re.findall(r"`(Ragkit[A-Za-z]+)`", GUIDE):
        assert alert in alerts, alert
    from ragkit.adapters.breakers import STORE_READ, STORE_WRITE
    from ragkit.adapters.embedders.ollama import BREAKER as OLLAMA_EMBEDDING
    from ragkit.adapters.generators.ollama import BREAKER as OLLAMA_GENERATION

    breakers = {STORE_READ, STORE_WRITE, OLLAMA_EMBEDDING, OLLAMA_GENERATION}
    named = {name.split("@")[0] for name in re.findall(r"`((?:qdrant|ollama)_[a-z_]+(?:@host:port)?)`", GUIDE)}
    assert named and named <= breakers, f"not breakers: {sorted(named - breakers)}"
