"""compose.yaml and deploy/ describe the same system as the code, and each piece is checked with the
tool that runs it: docker-compose resolves compose.yaml for every profile from a fresh copy of the
committed files, haproxy and nginx check their configs, promtool the Prometheus config, and every
metric the Grafana dashboard and the alert rules query is served by a live service.
deploy/smoke.sh needs a container engine and an image registry, so it is only syntax-checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ragkit.core.config import DEFAULT_MAX_REQUEST_BYTES, MIN_SECRET_BYTES, Settings
from ragkit.core.errors import ConfigurationError
from ragkit.http.auth import ServiceTokens
from tests.conftest import REPO, Stack
from tests.support.fake_ollama import FakeOllama

DEPLOY = REPO / "deploy"
PROFILES = ("cluster", "scale", "observability")
# What each profile adds to the default services.
DEFAULT_SERVICES = {"api", "ui", "jupyter", "qdrant", "ollama", "ollama-pull", "redis"}
PROFILE_SERVICES = {
    "cluster": {"qdrant-node1", "qdrant-node2", "qdrant-node3", "qdrant-lb"},
    "scale": {"api-replica", "worker", "nginx"},
    "observability": {"prometheus", "alertmanager", "grafana"},
}
# The services built from ragkit's image, whose environment ragkit reads (the tools' own services
# take their own variables).
RAGKIT_SERVICES = ("api", "api-replica", "ui", "worker", "jupyter")
API_SERVICES = ("api", "api-replica")  # the ones running `ragkit serve`

HAPROXY = shutil.which("haproxy")
NGINX = shutil.which("nginx")
PROMTOOL = shutil.which("promtool")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run installs it)")


def compose_command() -> list[str] | None:
    """docker-compose (v1, Debian's package), else Docker's compose plugin (v2) if it is there."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return ["docker", "compose"]
    return None


COMPOSE = compose_command()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")


def setting_names() -> set[str]:
    return {field.validation_alias for field in Settings.model_fields.values()}


def compose_file() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


# -- compose.yaml as written --------------------------------------------------------------------------
def test_compose_uses_only_real_settings_and_has_every_dependency() -> None:
    services = compose_file()["services"]
    assert set(services) == DEFAULT_SERVICES.union(*PROFILE_SERVICES.values())
    for profile, names in PROFILE_SERVICES.items():
        assert {name for name, spec in services.items() if profile in spec.get("profiles", [])} == names
    assert len([name for name in PROFILE_SERVICES["cluster"] if name.startswith("qdrant-node")]) == 3
    for name in RAGKIT_SERVICES:
        unknown = set(services[name]["environment"]) - setting_names()
        assert not unknown, f"compose sets variables ragkit does not read on {name}: {unknown}"
    env = services["api"]["environment"]
    assert env["REDIS_URL"].startswith("redis://") and "@redis:6379/" in env["REDIS_URL"]
    assert "qdrant" in env["QDRANT_URL"] and env["RAGKIT_API_URL"] == "http://api:8000"
    assert services["worker"]["environment"]["RAGKIT_JOB_QUEUE"] == "redis"
    assert services["worker"]["command"] == ["ragkit", "worker"]


def test_every_image_is_pinned_to_a_version() -> None:
    for name, spec in compose_file()["services"].items():
        if "build" in spec:
            continue
        image, _, tag = spec["image"].rpartition(":")
        assert image and re.fullmatch(r"v?\d+(\.\d+)+(-[a-z0-9.]+)?", tag), f"{name}: {spec['image']} is not pinned"


def test_env_example_sets_every_variable_compose_requires() -> None:
    text = (REPO / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if re.match(r"\w+=", line)
    )
    assert required <= set(example), f".env.example lacks {required - set(example)}"
    # Placeholders only: a secret committed here would be everyone's.
    assert all(example[name] == "replace-me" for name in required)
    # The placeholder is too short to be a service secret: the api refuses it rather than run with it.
    with pytest.raises(ConfigurationError, match=f"at least {MIN_SECRET_BYTES}"):
        ServiceTokens([example["INTER_SERVICE_SECRET"].encode()])


def test_prometheus_scrapes_every_api_service_and_alerts_alertmanager() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ragkit", "the alert rules select up{job='ragkit'}"
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == set(API_SERVICES) and sd["type"] == "A" and sd["port"] == 8000
    services = compose_file()["services"]
    for name in API_SERVICES:
        assert services[name]["command"][:2] == ["ragkit", "serve"] and "--workers" not in services[name]["command"]
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


# -- compose.yaml as docker-compose resolves it ---------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed files a user starts from: compose.yaml, .env.example as .env, deploy/."""
    root = tmp_path_factory.mktemp("compose")
    shutil.copy(REPO / "compose.yaml", root / "compose.yaml")
    shutil.copy(REPO / ".env.example", root / ".env")
    shutil.copytree(DEPLOY, root / "deploy")
    return root


def resolved(root: Path, profiles: tuple[str, ...], **env: str) -> dict:
    # A clean environment: a developer's own QDRANT_URL (say) would override .env here.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), **env}
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    done = subprocess.run(
        [*COMPOSE, "--project-directory", str(root), "-f", str(root / "compose.yaml"), *args, "config"],
        cwd=root,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{' '.join(COMPOSE)} {' '.join(args)} config:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def volume_source(volume: str | dict) -> tuple[str, str]:
    """(type, source) of a service's volume, short ("src:dst:mode") or long syntax."""
    if isinstance(volume, dict):
        return volume["type"], volume.get("source", "")
    source = volume.split(":", 1)[0]
    return ("bind" if source.startswith(("/", ".")) else "volume"), source


@needs_compose
@pytest.mark.parametrize("profiles", [(), *((p,) for p in PROFILES), PROFILES], ids=["default", *PROFILES, "all"])
def test_compose_resolves_with_health_checked_dependencies(fresh_copy: Path, profiles: tuple[str, ...]) -> None:
    config = resolved(fresh_copy, profiles)
    every = config["services"]
    active = {
        name: spec for name, spec in every.items() if not spec.get("profiles") or set(spec["profiles"]) & set(profiles)
    }
    assert set(active) == DEFAULT_SERVICES.union(*(PROFILE_SERVICES[p] for p in profiles))
    one_shots = {
        target
        for spec in active.values()
        for target, dependency in (spec.get("depends_on") or {}).items()
        if dependency["condition"] == "service_completed_successfully"
    }
    assert one_shots == {"ollama-pull"}
    for name, spec in active.items():
        if name in one_shots:
            assert spec["restart"] == "no" and "healthcheck" not in spec
        else:
            test = spec.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL") and not spec["healthcheck"].get("disable"), (
                f"{name} has no healthcheck"
            )
            assert spec["restart"] == "unless-stopped", name
        for target, dependency in (spec.get("depends_on") or {}).items():
            assert target in active, f"{name} depends on {target}, which this profile does not start"
            expected = "service_completed_successfully" if target in one_shots else "service_healthy"
            assert dependency["condition"] == expected, f"{name} → {target}"
        limits = spec["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"], f"{name} has no resource limits"
        for volume in spec.get("volumes", []):
            kind, source = volume_source(volume)
            assert kind == "bind" or source in config["volumes"], f"{name}: volume {source} is not a named volume"
    for name in API_SERVICES:
        if name in active:
            assert {"qdrant", "redis", "ollama-pull"} <= set(active[name]["depends_on"])
    # What the ragkit services are given is a valid configuration of ragkit (compose passes strings;
    # an empty string, say, is no number). The secret's placeholder is refused later, by the api.
    for name in set(RAGKIT_SERVICES) & set(active):
        Settings(_env_file=None, **active[name]["environment"])


@needs_compose
def test_the_cluster_values_of_env_reach_the_api(fresh_copy: Path) -> None:
    """As .env.example documents for the cluster profile (set here as the shell's, which win)."""
    cluster = {
        "QDRANT_URL": "http://qdrant-lb:6333",
        "RAGKIT_QDRANT_SHARDS": "3",
        "RAGKIT_QDRANT_REPLICATION": "2",
        "RAGKIT_QDRANT_WRITE_CONSISTENCY": "1",
    }
    services = resolved(fresh_copy, ("cluster",), **cluster)["services"]
    settings = Settings(_env_file=None, **services["api"]["environment"])
    assert settings.qdrant_url == "http://qdrant-lb:6333"
    assert (settings.qdrant_shard_number, settings.qdrant_replication_factor, settings.qdrant_write_consistency) == (
        3,
        2,
        1,
    )
    assert "qdrant-lb" in services and services["qdrant-lb"]["profiles"] == ["cluster"]


# -- the proxies -----------------------------------------------------------------------------------------
@needs_haproxy
def test_haproxy_config_is_valid_and_checks_every_node() -> None:
    cfg = DEPLOY / "haproxy" / "haproxy.cfg"
    done = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Configuration file is valid" in output, output
    # The node names resolve on compose's network only; nothing else may be wrong.
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address 'qdrant-node" in line for line in warnings), warnings
    text = cfg.read_text()
    http = text.split("backend qdrant_http", 1)[1].split("frontend", 1)[0]
    assert "http-check send meth GET uri /readyz" in http and "http-check expect status 200" in http
    nodes = sorted(PROFILE_SERVICES["cluster"] - {"qdrant-lb"})
    assert re.findall(r"^\s*server (\S+) \1:6333$", http, re.M) == nodes
    assert "check" in re.search(r"^\s*default-server .*$", text, re.M).group(0)
    assert compose_file()["services"]["qdrant-lb"]["volumes"] == [
        "./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    ]


def upstream_servers(text: str) -> list[str]:
    return re.findall(r"^\s*server (\S+?)(?::\d+)?( .*)?;$", text, re.M)


@needs_nginx
def test_nginx_config_is_valid(tmp_path: Path) -> None:
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    servers = upstream_servers(text)
    assert {host for host, _ in servers} == set(API_SERVICES)
    assert all("max_fails=" in options and "fail_timeout=" in options for _, options in servers), servers
    # nginx resolves upstream names when it loads a config, `-t` included, and api / api-replica
    # exist on compose's network only: the copy checked here has them at local addresses instead.
    local = text
    for port, host in enumerate(API_SERVICES, start=18000):
        local = local.replace(f"server {host}:8000 ", f"server 127.0.0.1:{port} ")
    assert local != text and not re.search(r"server api(-replica)?:", local)
    (tmp_path / "nginx.conf").write_text(local)
    done = subprocess.run(
        [NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr


def test_nginx_streams_events_and_answers_and_takes_the_services_body_limit() -> None:
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert re.search(r"client_max_body_size (\d+)m;", text).group(1) == str(DEFAULT_MAX_REQUEST_BYTES // 2**20)

    def location(pattern: str) -> str:
        start = text.index(f"location {pattern} {{")
        return text[start : text.index("}", start)]

    events = location(r"~ ^/api/v1/rag/jobs/[^/]+/events$")
    assert "proxy_buffering off;" in events and "http://api_jobs" in events
    assert "proxy_buffering off;" in location(r"~ ^/api/(v1/)?rag/query$")
    assert "http://api_jobs" in location(r"~ ^/api/v1/rag/(jobs|collections/[^/]+/jobs)(/|$)")
    assert "hash $remote_addr consistent;" in text


# -- Prometheus, Alertmanager, Grafana -------------------------------------------------------------------
@needs_promtool
def test_prometheus_config_is_valid() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "config", "deploy/prometheus.yml"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "1 rule files found" in done.stdout + done.stderr, done.stdout + done.stderr


def test_alertmanager_routes_only_to_defined_receivers() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    defined = {receiver["name"] for receiver in config["receivers"]}

    def routed(route: dict) -> Iterator[str]:
        if "receiver" in route:
            yield route["receiver"]
        for child in route.get("routes", []):
            yield from routed(child)

    assert set(routed(config["route"])) <= defined and config["route"]["receiver"] in defined


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "ragkit.json").read_text())


def panels(items: list[dict]) -> Iterator[dict]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_grafana_is_provisioned_with_the_prometheus_of_compose() -> None:
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    board = dashboard()
    used = {p["datasource"]["uid"] for p in panels(board["panels"]) if "datasource" in p}
    used |= {t["datasource"]["uid"] for p in panels(board["panels"]) for t in p.get("targets", [])}
    assert used == {source["uid"]}
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/ragkit.yml").read_text())["providers"]
    grafana = compose_file()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    ids = [p["id"] for p in panels(board["panels"])]
    assert len(ids) == len(set(ids)) and board["uid"] == "ragkit"
    titles = " ".join(p["title"].lower() for p in panels(board["panels"]))
    for subject in ("request rate", "latency by route", "stage latency", "breaker states", "breaker transitions",
                    "degraded", "cache hit ratio", "job documents", "rate-limit"):  # fmt: skip
        assert subject in titles, f"the dashboard has no panel on {subject}"


# -- every metric queried is served ----------------------------------------------------------------------
_SELECTOR = re.compile(r"\b(ragkit_[A-Za-z0-9_]+)\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_BY = re.compile(r"\bby\s*\(([^)]*)\)\s*\(\s*(?:rate|increase)?\(?\s*(ragkit_[A-Za-z0-9_]+)")
ADDED_BY_PROMETHEUS = {"job", "instance", "service"}  # target labels, not the service's


def alert_exprs() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(dim=64) as server:
        yield server


def exercised(stack: Stack, fake: FakeOllama) -> str:
    """The service's /metrics once every event the dashboard shows has happened at least once: a
    labelled counter has no series until its first event."""
    docs = [
        {"id": "breakers", "text": "A breaker opens after five consecutive failures and fails fast while open."},
        {"id": "tokens", "text": "Rotate the service token by listing the new and the old secret."},
    ]
    search = {"query": "when does a breaker open", "collection": "docs"}
    question = {"question": "When does a breaker open?", "collection": "docs", "top_k": 2}
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    job = stack.http.post("/api/v1/rag/collections/docs/jobs", json={"documents": docs})
    assert job.status_code == 202, job.text
    with stack.http.stream("GET", f"/api/v1/rag/jobs/{job.json()['id']}/events") as events:
        assert [line for line in events.iter_lines() if line.startswith("event:")][-1] == "event: end"
    assert stack.http.get(f"/api/v1/rag/jobs/{job.json()['id']}").json()["state"] == "done"
    assert stack.http.post("/api/v1/rag/search", json=search).json()["degraded"] is False
    assert stack.http.post("/api/v1/rag/query", json=question).json()["generator"] == "ollama:llama3.2"
    # The LLM fails: a degraded answer opens its breaker (fail max 1), and the next is refused by it.
    fake.set_mode("error", "/api/chat")
    for _ in range(2):
        assert stack.http.post("/api/v1/rag/query", json=question).json()["degraded"] is True
    # The store goes away: the same search is answered from the cache.
    stack.services.store.close()
    cached = stack.http.post("/api/v1/rag/search", json=search).json()
    assert cached["degraded"] is True and any("cached result" in r for r in cached["reasons"])
    # Over the service-token limit (10 a minute: the calls above are 9, unless a window began meanwhile).
    statuses = [stack.http.get("/api/v1/rag/jobs").status_code for _ in range(25)]
    assert 429 in statuses, statuses
    return stack.anon.get("/metrics").text


def test_every_metric_of_the_dashboard_and_the_alerts_is_served(stack_factory, fake: FakeOllama) -> None:  # noqa: ANN001
    stack = stack_factory(
        embedder="local",
        generator="ollama",
        ollama_host=fake.url,
        ollama_timeout_s=10.0,
        breaker_fail_max=1,
        service_rate_limit="10/minute",
        optimize_after_ingest=False,
    )
    text = exercised(stack, fake)
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    checked = set()
    for expr in dashboard_exprs() + alert_exprs():
        for name, matchers in _SELECTOR.findall(expr):
            served = [s for s in samples if s.name == name]
            assert served, f"{expr!r} uses {name}, which /metrics does not serve"
            for label, op, value in _MATCHER.findall(matchers):
                if label in ADDED_BY_PROMETHEUS:
                    continue
                assert any(label in s.labels for s in served), f"{name} has no label {label}"
                if op == "=":
                    assert any(s.labels.get(label) == value for s in served), f"no {name} with {label}={value!r}"
            checked.add(name)
        for by, name in _BY.findall(expr):
            for label in {part.strip() for part in by.split(",")} - ADDED_BY_PROMETHEUS - {"le", ""}:
                assert any(label in s.labels for s in samples if s.name == name), f"{name} has no label {label}"
    assert {
        "ragkit_http_requests_total",
        "ragkit_http_request_duration_seconds_bucket",
        "ragkit_stage_duration_seconds_bucket",
        "ragkit_breaker_state",
        "ragkit_breaker_transitions_total",
        "ragkit_breaker_rejections_total",
        "ragkit_degraded_responses_total",
        "ragkit_cache_lookups_total",
        "ragkit_job_documents_total",
        "ragkit_ingested_chunks_total",
        "ragkit_rate_limit_rejections_total",
        "ragkit_ready",
    } <= checked


# -- deploy/smoke.sh ---------------------------------------------------------------------------------
def test_smoke_script_is_valid_bash_with_bounded_waits() -> None:
    script = DEPLOY / "smoke.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK)
    assert "not run" in text.split("set -euo", 1)[0], "its header says the tests do not run it"
    assert "--profile cluster" in text and "kill" in text and 'TIMEOUT="${SMOKE_TIMEOUT:-' in text


def test_the_qdrant_image_is_one_the_pinned_client_supports() -> None:
    """qdrant-client works with servers within one minor version of its own, and says so at start."""
    images = {spec["image"] for spec in compose_file()["services"].values() if "qdrant/qdrant" in spec.get("image", "")}
    pinned = re.search(r"^qdrant-client==(\d+)\.(\d+)", (REPO / "requirements.txt").read_text(), re.M)
    assert images and pinned
    for image in images:
        major, minor = re.search(r":v(\d+)\.(\d+)", image).groups()
        assert major == pinned[1] and abs(int(minor) - int(pinned[2])) <= 1, image
