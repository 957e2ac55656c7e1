"""The whole ragkit error tree.

Every failure that crosses a module boundary is one of these. Adapters (embedders,
generators, stores, cache) translate third-party exceptions into this tree at their
boundary (``raise ... from exc``), so the pipeline, the breakers and the HTTP layer only
ever see ragkit errors. Each class carries the HTTP status and the machine-readable
``code`` the service answers with; ``message`` is written for a person to act on.

    RagkitError                         500 internal
    ├── CallerError                     the caller's mistake: never counts against a breaker
    │   ├── InvalidInput                422 invalid_input
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── NotFound                    404
    │   │   ├── CollectionNotFound          collection_not_found
    │   │   ├── DocumentNotFound            document_not_found
    │   │   └── JobNotFound                 job_not_found
    │   ├── Conflict                    409
    │   │   ├── CollectionExists            collection_exists
    │   │   ├── EmbedderMismatch            embedder_mismatch
    │   │   └── JobFinished                 job_finished (a finished job cannot be cancelled)
    │   ├── Unauthorized                401 unauthorized
    │   ├── Forbidden                   403 forbidden
    │   ├── RateLimited                 429 rate_limited (+ Retry-After)
    │   └── UpstreamRejected            502 upstream_rejected (a dependency said 4xx:
    │                                       unknown model, bad request; not an outage)
    ├── DependencyError                 503: a dependency is down; counts against its breaker
    │   ├── DependencyUnavailable           dependency_unavailable (transport, 5xx, busy)
    │   ├── DependencyTimeout           504 dependency_timeout
    │   ├── InsufficientStorage         507 insufficient_storage (the disk under the data
    │   │                                   directory is too full for the write; + Retry-After)
    │   └── BreakerOpen                     breaker_open (fails fast, + Retry-After)
    ├── ConfigurationError              refuses to start; never raised per request
    ├── NotebookFailed                  (workbench) a notebook cell raised; the executed copy shows where
    ├── ServiceError                    (client side) an error the service answered with
    └── ServiceUnreachable              (client side) the service could not be reached
"""

from __future__ import annotations


class RagkitError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.details}


class CallerError(RagkitError):
    """Raised for the caller's mistakes; breakers treat it as a healthy dependency."""


class InvalidInput(CallerError):
    status = 422
    code = "invalid_input"


class PayloadTooLarge(CallerError):
    status = 413
    code = "payload_too_large"


class NotFound(CallerError):
    status = 404
    code = "not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"collection '{name}' does not exist; list them with GET /api/v1/rag/collections",
            collection=name,
        )


class DocumentNotFound(NotFound):
    code = "document_not_found"

    def __init__(self, collection: str, doc_id: str) -> None:
        super().__init__(
            f"document '{doc_id}' is not in collection '{collection}'",
            collection=collection,
            doc_id=doc_id,
        )


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job '{job_id}' does not exist; list them with GET /api/v1/rag/jobs", job_id=job_id)


class Conflict(CallerError):
    status = 409
    code = "conflict"


class CollectionExists(Conflict):
    code = "collection_exists"

    def __init__(self, name: str, hint: str = "") -> None:
        super().__init__(f"collection '{name}' already exists{hint}", collection=name)


class EmbedderMismatch(Conflict):
    code = "embedder_mismatch"

    def __init__(
        self, collection: str, stored: str, stored_dim: int, current: str, current_dim: int, who: str = "the service"
    ) -> None:
        super().__init__(
            f"collection '{collection}' was built with embedder '{stored}' ({stored_dim} dimensions) "
            f"but {who} now uses '{current}' ({current_dim} dimensions); switch the embedder "
            f"back or re-ingest into a new collection",
            collection=collection,
            collection_embedder=stored,
            service_embedder=current,
        )


class JobFinished(Conflict):
    code = "job_finished"

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job '{job_id}' is already {state}; there is nothing to cancel", job_id=job_id, state=state)


class Unauthorized(CallerError):
    status = 401
    code = "unauthorized"


class Forbidden(CallerError):
    status = 403
    code = "forbidden"


class RateLimited(CallerError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=round(retry_after, 3))
        self.retry_after = retry_after


class UpstreamRejected(CallerError):
    status = 502
    code = "upstream_rejected"


class DependencyError(RagkitError):
    status = 503
    code = "dependency_error"
    retry_after: float = 5.0

    def __init__(self, dependency: str, message: str, retry_after: float | None = None) -> None:
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(message, dependency=dependency, retry_after=round(self.retry_after, 3))
        self.dependency = dependency


class DependencyUnavailable(DependencyError):
    code = "dependency_unavailable"


class DependencyTimeout(DependencyError):
    status = 504
    code = "dependency_timeout"


class InsufficientStorage(DependencyError):
    """Not enough free disk for a write. Refused before the write starts: the embedded store maps its
    files into memory, and a mapped page the filesystem cannot allocate kills the process (SIGBUS)."""

    status = 507
    code = "insufficient_storage"
    retry_after = 60.0  # a full disk does not empty itself; someone has to act first


class BreakerOpen(DependencyError):
    code = "breaker_open"

    def __init__(self, breaker: str, retry_after: float) -> None:
        super().__init__(
            breaker,
            f"'{breaker}' is failing; its circuit breaker is open and calls fail fast for another {retry_after:.1f} s",
            retry_after=max(retry_after, 0.1),
        )


class ConfigurationError(RagkitError):
    code = "configuration_error"


class NotebookFailed(RagkitError):
    """The notebook ran and one of its cells raised; the executed notebook shows where."""

    code = "notebook_failed"


class ServiceError(RagkitError):
    """An error answered by the ragkit service, as seen by `ragkit.client`."""

    def __init__(self, status: int, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.status = status
        self.code = code


class ServiceUnreachable(RagkitError):
    """`ragkit.client` could not reach the service at all."""

    status = 503
    code = "service_unreachable"

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(
            f"the ragkit service at {url} is not reachable ({cause}). Start it with `make up` or "
            f"`ragkit serve`, or point RAGKIT_API_URL at a running one.",
            url=url,
        )
