"""Prometheus metrics, one registry per service instance (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragkit_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "ragkit_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "ragkit_stage_duration_seconds",
            "Latency of pipeline stages (embed, search, generate, ingest)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_latency = Histogram(
            "ragkit_store_operation_duration_seconds",
            "Latency of vector store operations, breaker and worker thread included",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "ragkit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["breaker"], registry=r
        )
        self.breaker_transitions = Counter(
            "ragkit_breaker_transitions",
            "Circuit breaker state changes",
            ["breaker", "from_state", "to_state"],
            registry=r,
        )
        self.breaker_rejections = Counter(
            "ragkit_breaker_rejections", "Calls refused by an open breaker", ["breaker"], registry=r
        )
        self.ingested_documents = Counter(
            "ragkit_ingested_documents", "Documents ingested by outcome", ["collection", "outcome"], registry=r
        )
        self.ingested_chunks = Counter("ragkit_ingested_chunks", "Chunks written", ["collection"], registry=r)
        self.cache_lookups = Counter("ragkit_cache_lookups", "Cache lookups", ["kind", "result"], registry=r)
        self.degraded = Counter("ragkit_degraded_responses", "Responses served degraded", ["reason"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
