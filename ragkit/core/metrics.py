"""Prometheus metrics, one registry per service instance (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# The values of the `stage` label of ragkit_stage_duration_seconds, and what each one times.
# deploy/prometheus/alerts.yml budgets search_total and answer_total; the rest say where the time
# of a slow request went.
STAGES = {
    "condense": "a follow-up condensed into a standalone question by the LLM, before retrieval",
    "embed": "embedding the query (a repeated query is answered from the query-vector cache)",
    "retrieve": "the vector-store query: dense, sparse (BM25) or hybrid",
    "generate": "writing the answer, whole or streamed to its end",
    "first_token": "a streamed answer, from its start to its first token (retrieval included)",
    "search_total": "a whole search, from the request check to its results (also the retrieval of an answer)",
    "answer_total": "a whole answer: retrieval, then generation, streamed or not",
    "ingest": "one ingestion request: loading, chunking, embedding and writing its documents",
    "ingest_embed": "embedding one batch of chunks during ingestion",
    "optimize": "building a collection's index after ingestion, off the request path",
}


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
            "Latency of pipeline stages, by stage: " + ", ".join(STAGES),
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
        self.rate_limit_rejections = Counter(
            "ragkit_rate_limit_rejections",
            "Requests refused with 429 by a rate limit, by kind of caller (service, user)",
            ["kind"],
            registry=r,
        )
        # Unlabelled, so the series exists (at 0) from start-up and a rate() over it is defined.
        self.dropped_citations = Counter(
            "ragkit_dropped_citations",
            "Citations [n] removed from generated answers because they point at no retrieved source",
            registry=r,
        )
        self.ready = Gauge(
            "ragkit_ready",
            "1 when /health/ready answers 200, else 0; evaluated on each scrape of /metrics",
            registry=r,
        )

        # Ingestion jobs. Documents and chunks per second are rate() over ragkit_job_documents and
        # ragkit_ingested_chunks; the gauges are set by the job runner at each change of state.
        self.jobs = Gauge("ragkit_jobs", "Ingestion jobs by state (queued, running)", ["state"], registry=r)
        for state in ("queued", "running"):
            self.jobs.labels(state).set(0)
        self.job_documents = Counter(
            "ragkit_job_documents",
            "Documents of ingestion jobs, by outcome (ingested, skipped, failed)",
            ["outcome"],
            registry=r,
        )
        self.job_failures = Counter(
            "ragkit_job_failures",
            "Documents of ingestion jobs that failed, by reason (the error code)",
            ["reason"],
            registry=r,
        )
        self.job_queue_wait = Histogram(
            "ragkit_job_queue_wait_seconds",
            "Time from a job's submission to its start",
            buckets=(0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
