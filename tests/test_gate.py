"""The gate's edges over real HTTP: which client address is believed (X-Forwarded-For only from
configured proxies), and an audit log that stays small whatever callers send (finding 8)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ragkit.core.errors import ConfigurationError
from ragkit.http.auth import AuditLog
from ragkit.http.gate import TrustedProxies
from tests.conftest import SECRET

COLLECTIONS = "/api/v1/rag/collections"
WRONG = {"X-Service-Token": "w" * 64}


def audit_entries(data_dir: Path) -> list[dict]:
    log = data_dir / "logs" / "auth-audit.jsonl"
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def refused_client(stack, *forwarded_for: str) -> str:  # noqa: ANN001
    """The client address the audit log records for one refused request."""
    headers = [*WRONG.items(), *(("X-Forwarded-For", value) for value in forwarded_for)]
    assert stack.anon.get(COLLECTIONS, headers=headers).status_code == 401
    return audit_entries(stack.settings.data_dir)[-1]["client"]


# -- X-Forwarded-For ---------------------------------------------------------------------------


def test_forwarded_for_is_ignored_unless_the_peer_is_a_configured_proxy(stack) -> None:  # noqa: ANN001
    # Nothing configured: whatever a caller claims, the address is the one it connected from.
    assert refused_client(stack, "203.0.113.9") == "127.0.0.1"
    assert refused_client(stack, "203.0.113.9, 10.0.0.1") == "127.0.0.1"


def test_the_client_is_the_right_most_hop_no_trusted_proxy_added(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    assert refused_client(stack, "203.0.113.9") == "203.0.113.9"
    # The left-most entry is whatever the caller sent; only what our proxies appended counts.
    assert refused_client(stack, "198.51.100.1, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    # Several headers are one list, in order.
    assert refused_client(stack, "198.51.100.1", "203.0.113.9, 10.1.2.3") == "203.0.113.9"
    # Every hop is a proxy of ours: the farthest one seen is the client.
    assert refused_client(stack, "10.0.0.7, 10.0.0.8") == "10.0.0.7"
    # A hop that is no address stops the walk at the proxy that handed it over.
    assert refused_client(stack, "203.0.113.9, not-an-address, 10.1.2.3") == "10.1.2.3"
    # An entry that is far too long is no address either (and cannot bloat the log).
    assert refused_client(stack, "1" * 5000) == "127.0.0.1"
    # No header: the peer itself.
    assert refused_client(stack) == "127.0.0.1"
    # The service token still decides: a trusted proxy's header admits no one.
    ok = stack.anon.get(COLLECTIONS, headers={"X-Service-Token": SECRET, "X-Forwarded-For": "203.0.113.9"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("peer", "hops", "client"),
    [
        ("::ffff:127.0.0.1", ["203.0.113.9"], "203.0.113.9"),  # an IPv4 peer on a dual-stack socket
        ("127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),  # bracketed IPv6 with a port
        ("127.0.0.1", ["203.0.113.9:51234"], "203.0.113.9"),  # IPv4 with a port
        ("127.0.0.1", ["2001:db8::1, fd00::5"], "2001:db8::1"),
        ("192.0.2.1", ["203.0.113.9"], "192.0.2.1"),  # not a proxy of ours
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_client_addresses_in_their_written_forms(peer: str | None, hops: list[str], client: str) -> None:
    proxies = TrustedProxies.parse("127.0.0.1, fd00::/8", "RAGKIT_TRUSTED_PROXIES")
    assert proxies.client_of(peer, hops) == client


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.example", "10.0.0.1/8/8"])
def test_a_bad_proxy_setting_refuses_to_start(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="RAGKIT_TRUSTED_PROXIES"):
        TrustedProxies.parse(bad, "RAGKIT_TRUSTED_PROXIES")


# -- finding 8: the audit log is bounded ------------------------------------------------------


def test_finding_8_a_60_kb_path_adds_a_short_line(stack) -> None:  # noqa: ANN001
    long_path = f"{COLLECTIONS}/{'p' * 60_000}/documents"
    assert stack.anon.get(long_path, headers=WRONG).status_code == 401
    log = stack.settings.data_dir / "logs" / "auth-audit.jsonl"
    assert log.stat().st_size < 1500, f"one refusal wrote {log.stat().st_size} bytes"
    [entry] = audit_entries(stack.settings.data_dir)
    assert entry["route"].startswith(f"{COLLECTIONS}/ppp") and entry["route"].endswith("…(60034 chars)")
    assert entry["reason"] == "invalid_service_token"


def test_a_flood_of_refusals_is_summarised_not_written_line_by_line(stack) -> None:  # noqa: ANN001
    started = time.monotonic()
    sent = 300
    for _ in range(sent):
        assert stack.anon.get(COLLECTIONS, headers=WRONG).status_code == 401
    seconds = time.monotonic() - started
    entries = audit_entries(stack.settings.data_dir)
    failures = [e for e in entries if e["event"] == "auth_failed"]
    windows = int(seconds) + 2  # the flood spans at most this many one-second windows
    assert len(failures) <= AuditLog.LINES_PER_SECOND * windows, f"{len(failures)} lines in {seconds:.1f} s"
    summaries = [e for e in entries if e["event"] == "audit_suppressed"]
    # Every refusal is either a line or counted in a summary (the last window's once it closes).
    assert len(failures) + sum(s["suppressed"] for s in summaries) <= sent
    assert len(failures) < sent


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refuse(audit: AuditLog, n: int, route: str = "/r") -> None:
    for _ in range(n):
        audit.failure(client="192.0.2.1", method="GET", route=route, reason="missing_credentials")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_audit_lines_are_rate_limited_then_summarised_once(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, lines_per_second=5, clock=clock)
    refuse(audit, 12)
    assert [e["event"] for e in lines(path)] == ["auth_failed"] * 5
    clock.now += 0.99  # the same second
    refuse(audit, 3)
    assert len(lines(path)) == 5
    clock.now += 0.01  # the next one: first the summary of the last, then the line
    refuse(audit, 1)
    written = lines(path)
    assert [e["event"] for e in written] == ["auth_failed"] * 5 + ["audit_suppressed", "auth_failed"]
    assert written[5]["suppressed"] == 10
    clock.now += 5
    refuse(audit, 7)
    audit.close()  # a summary still owed is written on close
    last = lines(path)[-1]
    assert last["event"] == "audit_suppressed" and last["suppressed"] == 2
    counted = sum(e["event"] == "auth_failed" for e in lines(path))
    suppressed = sum(e.get("suppressed", 0) for e in lines(path))
    assert counted + suppressed == 12 + 3 + 1 + 7


def test_audit_files_rotate_by_size(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=4_000, backups=2, lines_per_second=1000, clock=clock)
    for second in range(40):
        clock.now = float(second)
        refuse(audit, 10, route="/x" * 20)
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / name).stat().st_size <= 4_000 for name in files)


def test_every_field_is_clipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.failure(client="c" * 10_000, method="M" * 10_000, route="/" + "r" * 100_000, reason="x" * 10_000)
    audit.close()
    assert path.stat().st_size < 2_000
    [entry] = lines(path)
    assert entry["route"].endswith("…(100001 chars)") and len(entry["client"]) < 300
